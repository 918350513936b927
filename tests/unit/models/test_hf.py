"""The transformers backend on the tiny random-init models (seconds, no network)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from collapselab.config.spec import DecodingSpec, ModelSpec  # noqa: E402
from collapselab.errors import ModelError  # noqa: E402
from collapselab.models.base import ChatPrompt, LanguageModel, check_model, load_model  # noqa: E402
from collapselab.models.formatting import encode_example, render_prompt_ids  # noqa: E402
from collapselab.models.hf import HFModel, resolve_weights, sample_rows  # noqa: E402

SYSTEM = "You are a helpful assistant."
PROMPTS = [
    ChatPrompt("a", "Continue the passage: It is a truth universally acknowledged", SYSTEM),
    ChatPrompt("b", "Hi", SYSTEM),
    ChatPrompt("c", "The quick brown fox jumps over the lazy dog. " * 6, SYSTEM),
    ChatPrompt("d", "Answer the question with care and kindness.", None),
    ChatPrompt("e", "0123456789", SYSTEM),
]
SAMPLE = DecodingSpec(temperature=0.9, top_p=0.9, max_new_tokens=12, seed=7)
GREEDY = DecodingSpec(temperature=0.0, max_new_tokens=12)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny model is fastest on one thread, and a busy machine then costs no spin-waiting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(path: Path, **kw) -> ModelSpec:
    return ModelSpec(id=f"hf/{path}", **{"dtype": "float32", "batch_size": 8, **kw})


@pytest.fixture(scope="module")
def chat_model(tiny_model_dir) -> HFModel:
    model = load_model(_spec(tiny_model_dir))
    yield model
    model.close()


@pytest.fixture(scope="module")
def base_model(tiny_base_model_dir) -> HFModel:
    model = load_model(_spec(tiny_base_model_dir))
    yield model
    model.close()


def _with_batch_size(model: HFModel, size: int) -> HFModel:
    """The same loaded weights with another batch size (no reload)."""
    return HFModel(model.spec.model_copy(update={"batch_size": size}), model.model, model.tokenizer)


# -- naming and checking -------------------------------------------------------------------------


def test_loaded_model_follows_the_protocol(chat_model, base_model):
    assert isinstance(chat_model, LanguageModel)
    assert chat_model.is_chat and not base_model.is_chat
    assert chat_model.max_context == 512  # the config's max_position_embeddings


def test_spec_max_context_overrides_the_config(tiny_model_dir):
    assert load_model(_spec(tiny_model_dir, max_context=64)).max_context == 64


def test_check_accepts_folders_gguf_files_and_hub_ids(tiny_model_dir, tmp_path):
    check_model(_spec(tiny_model_dir))
    check_model(ModelSpec(id="hf/HuggingFaceTB/SmolLM2-135M-Instruct"))  # users with the internet
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    check_model(ModelSpec(id=f"hf/{gguf}"))  # checked for existence only: nothing is loaded
    assert resolve_weights(_spec(tiny_model_dir)) == Path(tiny_model_dir)


def test_unknown_name_suggests_a_packaged_model():
    with pytest.raises(ModelError, match="did you mean 'hf/smollm2-135m-instruct'"):
        check_model(ModelSpec(id="hf/smollm2-135m"))


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/model.gguf", "not a model"])
def test_missing_paths_and_odd_names_are_rejected(name):
    with pytest.raises(ModelError):
        check_model(ModelSpec(id=f"hf/{name}"))


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        check_model(ModelSpec(id=f"hf/{tmp_path}"))


def test_bad_adapter_paths_are_rejected(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        check_model(_spec(tiny_model_dir, adapter=str(tmp_path / "missing")))
    with pytest.raises(ModelError, match="adapter_config.json"):
        check_model(_spec(tiny_model_dir, adapter=str(tmp_path)))
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="safetensors"):  # never unpickled
        check_model(_spec(tiny_model_dir, adapter=str(tmp_path)))


# -- generation ----------------------------------------------------------------------------------


def test_sampling_is_deterministic_per_prompt(chat_model):
    first = chat_model.generate(PROMPTS, SAMPLE)
    assert chat_model.generate(PROMPTS, SAMPLE) == first
    other_seed = chat_model.generate(PROMPTS, SAMPLE.model_copy(update={"seed": 8}))
    assert [g.text for g in other_seed] != [g.text for g in first]
    # the prompt id seeds the sampling too: same text, new id, new answer
    renamed = chat_model.generate([ChatPrompt("z", p.user, p.system) for p in PROMPTS], SAMPLE)
    assert [g.text for g in renamed] != [g.text for g in first]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_text_does_not_depend_on_batch_order_or_company(tiny_model_dir, dtype):
    """Bitwise batch invariance (see hf._PAD_MULTIPLE): alone, reversed, in other batch sizes."""
    model = load_model(_spec(tiny_model_dir, dtype=dtype))
    reference = model.generate(PROMPTS, SAMPLE)
    assert model.generate(PROMPTS[::-1], SAMPLE)[::-1] == reference
    assert _with_batch_size(model, 2).generate(PROMPTS, SAMPLE) == reference
    assert [model.generate([p], SAMPLE)[0] for p in PROMPTS] == reference
    assert model.generate(PROMPTS[1:4], SAMPLE) == reference[1:4]


def _unpadded_greedy(model: HFModel, prompt: ChatPrompt, max_new_tokens: int) -> list[int]:
    """Plain transformers greedy decoding of one prompt, no padding at all."""
    ids = torch.tensor([render_prompt_ids(model.tokenizer, prompt, model.is_chat)])
    with torch.inference_mode():
        out = model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=max_new_tokens, eos_token_id=model.stop_ids,
                                   pad_token_id=model.pad_id)
    return out[0, ids.shape[1]:].tolist()


def test_left_padded_batches_match_unpadded_greedy_decoding(chat_model):
    batched = _with_batch_size(chat_model, 3).generate(PROMPTS, GREEDY)
    for prompt, gen in zip(PROMPTS, batched, strict=True):
        tokens = _unpadded_greedy(chat_model, prompt, GREEDY.max_new_tokens)
        assert gen.text == chat_model.tokenizer.decode(tokens, skip_special_tokens=True).strip()


def test_length_finish_reason_and_token_counts(chat_model):
    gens = chat_model.generate(PROMPTS, GREEDY)
    for prompt, gen in zip(PROMPTS, gens, strict=True):
        assert gen.prompt_tokens == len(render_prompt_ids(chat_model.tokenizer, prompt, True))
        # a random model does not end its turn within 12 tokens
        assert (gen.finish_reason, gen.new_tokens) == ("length", GREEDY.max_new_tokens)


def test_generation_stops_at_an_end_token(tiny_model_dir, monkeypatch):
    """A random model never ends its turn, so one of the tokens it samples is made an end token:
    generation must stop there, count it, and leave it out of the text."""
    model = load_model(_spec(tiny_model_dir))
    outputs = []
    plain_generate = model.model.generate

    def recording_generate(**kwargs):
        out = plain_generate(**kwargs)
        outputs.append(out[0, kwargs["input_ids"].shape[1]:].tolist())
        return out

    monkeypatch.setattr(model.model, "generate", recording_generate)
    first = model.generate(PROMPTS[:1], SAMPLE)[0]
    tokens = outputs[0]
    assert first.finish_reason == "length"
    stop_at = next(j for j in range(1, len(tokens)) if tokens[j] not in tokens[:j])
    model.stop_ids = [*model.stop_ids, tokens[stop_at]]
    gen = model.generate(PROMPTS[:1], SAMPLE)[0]  # same seed: the same tokens up to the stop
    assert gen.finish_reason == "stop"
    assert gen.new_tokens == stop_at + 1  # the end token counts as generated
    assert gen.text == model.tokenizer.decode(tokens[:stop_at], skip_special_tokens=True).strip()


def test_base_model_gets_the_raw_prompt(base_model):
    gens = base_model.generate(PROMPTS[:2], GREEDY)
    # no template and no system turn: the prompt is the user text alone
    assert gens[0].prompt_tokens == len(base_model.tokenizer(PROMPTS[0].user)["input_ids"])
    with_system = base_model.generate([ChatPrompt("a", PROMPTS[0].user, "Be terse.")], GREEDY)
    assert with_system[0] == gens[0]


def test_models_own_generation_config_does_not_leak_in(tiny_model_dir, tmp_path):
    """Shipped generation_config.json files set sampling knobs (Qwen: repetition_penalty, top_k);
    the study's decoding alone must decide."""
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    config = json.loads((folder / "generation_config.json").read_text())
    config.update(repetition_penalty=5.0, no_repeat_ngram_size=1, do_sample=True, top_k=1, min_new_tokens=12)
    (folder / "generation_config.json").write_text(json.dumps(config))
    plain = load_model(_spec(tiny_model_dir)).generate(PROMPTS, GREEDY)
    assert load_model(_spec(folder)).generate(PROMPTS, GREEDY) == plain


def test_too_long_prompt_fails_before_any_generation(tiny_model_dir):
    model = load_model(_spec(tiny_model_dir, max_context=64))
    finished: list[int] = []
    long_prompt = ChatPrompt("long-one", "word " * 80)
    with pytest.raises(ModelError, match=r"'long-one'.*\+ 12 new tokens = \d+ > max_context 64"):
        model.generate([PROMPTS[1], long_prompt], GREEDY, progress=finished.append)
    assert finished == []
    with pytest.raises(ModelError, match="'long-one'"):
        model.continuation_logprobs([long_prompt], ["x"])


def test_progress_counts_every_prompt(chat_model):
    finished: list[int] = []
    _with_batch_size(chat_model, 2).generate(PROMPTS, GREEDY, progress=finished.append)
    assert finished == [2, 2, 1]


# -- sampling ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature", "top_p", "candidates"), [(0.7, 0.9, 256), (1.3, 1.0, 256), (1.0, 0.99, 3)]
)
def test_sampler_matches_transformers_temperature_and_top_p(monkeypatch, temperature, top_p, candidates):
    """The empirical distribution equals softmax(logits / T) restricted to the top-p nucleus (as
    transformers' warpers define it), also when the nucleus overflows the first candidates."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    import collapselab.models.hf as hf

    monkeypatch.setattr(hf, "_NUCLEUS_CANDIDATES", candidates)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 10, generator=gen) * 2
    warped = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_p < 1:
        warped = TopPLogitsWarper(top_p)(None, warped)
    expected = torch.softmax(warped, -1)[0]
    n = 40_000
    picks = sample_rows(logits.expand(n, -1), torch.rand(n, 10, generator=gen), temperature, top_p)
    observed = torch.bincount(picks, minlength=10).float() / n
    assert torch.allclose(observed, expected, atol=0.01)
    assert set(picks.tolist()) == set(expected.nonzero().squeeze(-1).tolist())


# -- scoring -------------------------------------------------------------------------------------


def _reference_logprobs(model: HFModel, prompt: ChatPrompt, answer: str) -> list[float]:
    """Token by token: feed the prefix alone, read the next token's log-softmax."""
    ex = encode_example(model.tokenizer, prompt, answer, model.is_chat)
    ids = ex.prompt_ids + ex.answer_ids[: ex.n_content]
    out = []
    with torch.inference_mode():
        for pos in range(len(ex.prompt_ids), len(ids)):
            logits = model.model(input_ids=torch.tensor([ids[:pos]])).logits[0, -1]
            out.append(torch.log_softmax(logits.float(), -1)[ids[pos]].item())
    return out


@pytest.mark.parametrize("which", ["chat_model", "base_model"])
def test_continuation_logprobs_match_a_token_by_token_loop(request, which):
    model = _with_batch_size(request.getfixturevalue(which), 2)
    answers = ["It is a truth.", "Hello there, kind fox", "", "ABC abc 123!", "x"]
    got = model.continuation_logprobs(PROMPTS, answers)
    for prompt, answer, scores in zip(PROMPTS, answers, got, strict=True):
        expected = _reference_logprobs(model, prompt, answer)
        assert len(scores) == len(expected)
        assert scores == pytest.approx(expected, abs=1e-4)
    assert got[2] == []  # an empty answer has no content tokens
    # batch-invariant like generation
    assert [model.continuation_logprobs([p], [a])[0] for p, a in zip(PROMPTS, answers, strict=True)] == got


def test_continuation_logprobs_checks_lengths_match(chat_model):
    with pytest.raises(ValueError):
        chat_model.continuation_logprobs(PROMPTS, ["only one"])


# -- adapters ------------------------------------------------------------------------------------


def test_lora_adapter_changes_the_model(tiny_model_dir, tmp_path, chat_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # init_lora_weights=False: random B matrices, so the adapter is not a no-op
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    spec = _spec(tiny_model_dir, adapter=str(tmp_path / "adapter"))
    check_model(spec)
    adapted = load_model(spec)
    answers = ["It is a truth."] * len(PROMPTS)
    base_scores = chat_model.continuation_logprobs(PROMPTS, answers)
    assert adapted.continuation_logprobs(PROMPTS, answers) != base_scores
    assert adapted.generate(PROMPTS, SAMPLE) != chat_model.generate(PROMPTS, SAMPLE)


# -- next-token choice read-out (pairwise and rating judges) -------------------------------------


def _reference_choice_logprobs(model: HFModel, prompt: ChatPrompt, choices: list[str]) -> dict[str, float]:
    """One unpadded forward pass of the prompt alone; sum the probabilities of each choice's
    one-token spellings found by encoding them by hand."""
    ids = render_prompt_ids(model.tokenizer, prompt, model.is_chat)
    with torch.inference_mode():
        logits = model.model(input_ids=torch.tensor([ids])).logits[0, -1]
    probs = torch.softmax(logits.float(), -1)
    out = {}
    for c in choices:
        variants = {model.tokenizer.encode(v, add_special_tokens=False)[0] for v in (c, " " + c)
                    if len(model.tokenizer.encode(v, add_special_tokens=False)) == 1}
        out[c] = float(torch.log(sum(probs[i] for i in variants)))
    return out


@pytest.mark.parametrize("which", ["chat_model", "base_model"])
def test_choice_logprobs_match_a_hand_computation(request, which):
    model = _with_batch_size(request.getfixturevalue(which), 2)
    choices = ["A", "B"]
    got = model.choice_logprobs(PROMPTS, choices)
    for prompt, row in zip(PROMPTS, got, strict=True):
        expected = _reference_choice_logprobs(model, prompt, choices)
        assert row == pytest.approx(expected, abs=1e-4)
        assert sum(torch.tensor(list(row.values())).exp()) < 1.0  # mass over the whole vocabulary
    # batch-invariant: alone or in any company
    assert [model.choice_logprobs([p], choices)[0] for p in PROMPTS] == got


def test_choice_token_ids_reject_multi_token_and_shared_choices(chat_model):
    ids = chat_model.choice_token_ids(["1", "2", "3", "4", "5"])
    assert all(ids.values()) and len({i for v in ids.values() for i in v}) == sum(map(len, ids.values()))
    with pytest.raises(ModelError, match="not a single token"):
        chat_model.choice_token_ids(["A", "a very long choice that no vocabulary holds as one token"])
