"""The LoRA recipe on the tiny random-init chat model (each run takes about a second)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from collapselab.config.spec import STUDY_LORA_TARGETS, LoraSpec  # noqa: E402
from collapselab.errors import TrainingError  # noqa: E402
from collapselab.models.base import ChatPrompt  # noqa: E402
from collapselab.models.formatting import encode_example  # noqa: E402
from collapselab.train.lora import (  # noqa: E402
    IGNORE_INDEX,
    TrainExample,
    collate,
    encode_examples,
    matching_targets,
    split_validation,
    train_lora,
)

SYSTEM = "You are a helpful assistant."
ANSWERS = ("The quick brown fox jumps over the lazy dog.", "It is a truth universally acknowledged.")


def make_examples(n: int = 12) -> list[TrainExample]:
    prompts = [ChatPrompt(f"p{i}", f"Continue the passage number {i}.", SYSTEM) for i in range(n)]
    return [TrainExample(prompt, ANSWERS[i % 2], f"e{i}") for i, prompt in enumerate(prompts)]


def spec(**overrides) -> LoraSpec:
    """Small, fast settings: a high constant learning rate, evaluation every step, no warmup."""
    settings = dict(
        learning_rate=5e-3, scheduler="constant", warmup_ratio=0.0, epochs=2, batch_size=4,
        val_fraction=0.25, eval_every=1, patience=0,
    )
    return LoraSpec(**(settings | overrides))


def read_curve(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "loss_curve.jsonl").read_text().splitlines()]


def adapter_tensors(out_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out_dir / "adapter" / "adapter_model.safetensors")


def tokenizer_of(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One ordinary run, shared by the tests that only inspect its outputs."""
    out_dir = tmp_path_factory.mktemp("lora") / "out"
    calls: list[tuple[int, int, float]] = []
    result = train_lora(
        tiny_model_dir, make_examples(), spec(), seed=0, out_dir=out_dir,
        progress=lambda *args: calls.append(args),
    )
    return result, out_dir, calls


def test_outputs_summary_and_curve(trained):
    result, out_dir, calls = trained
    assert sorted(p.name for p in out_dir.iterdir()) == ["adapter", "loss_curve.jsonl", "train_summary.json"]
    adapter_files = {p.name for p in (out_dir / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= adapter_files
    assert json.loads((out_dir / "train_summary.json").read_text()) == result.to_dict()

    # 9 train examples in batches of 4 -> 3 steps per epoch, 2 epochs
    assert (result.n_train, result.n_val, result.total_steps, result.steps_run) == (9, 3, 6, 6)
    assert result.target_modules == list(STUDY_LORA_TARGETS) and result.chat
    curve = read_curve(out_dir)
    assert [r["step"] for r in curve] == [1, 2, 3, 4, 5, 6]
    assert all(set(r) == {"step", "epoch", "train_loss", "lr", "val_loss"} for r in curve)
    assert [step for step, total, _ in calls] == [1, 2, 3, 4, 5, 6] and {c[1] for c in calls} == {6}
    assert [loss for *_, loss in calls] == [r["train_loss"] for r in curve]
    assert result.final_train_loss == curve[-1]["train_loss"]
    assert result.best_val_loss == min(r["val_loss"] for r in curve)


def test_adapter_loads_with_peft_and_changes_logits(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, out_dir, _ = trained
    ids = torch.tensor([tokenizer_of(tiny_model_dir)("The quick brown fox")["input_ids"]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, out_dir / "adapter").eval()
        after = tuned(input_ids=ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_loss_decreases(tiny_model_dir, tmp_path, dtype):
    lora = spec(epochs=4, dtype=dtype)
    result = train_lora(tiny_model_dir, make_examples(), lora, seed=0, out_dir=tmp_path)
    curve = read_curve(tmp_path)
    last = sum(r["train_loss"] for r in curve[-3:]) / 3
    assert last < curve[0]["train_loss"] - 0.3
    assert result.best_val_loss < curve[0]["val_loss"] - 0.3


def test_labels_mask_prompt_and_padding(tiny_model_dir):
    tokenizer = tokenizer_of(tiny_model_dir)
    short = encode_example(tokenizer, ChatPrompt("a", "Hi.", SYSTEM), ANSWERS[0], chat=True)
    long = encode_example(tokenizer, ChatPrompt("b", "Continue the passage, with care and kindness.", SYSTEM),
                          ANSWERS[0], chat=True)
    assert len(long.prompt_ids) > len(short.prompt_ids)
    input_ids, attention_mask, labels = collate([short, long], pad_id=0)
    for row, e in enumerate([short, long]):
        n_prompt, n_all = len(e.prompt_ids), len(e.input_ids)
        assert input_ids[row, :n_all].tolist() == e.input_ids
        assert attention_mask[row].tolist() == [1] * n_all + [0] * (input_ids.shape[1] - n_all)
        assert (labels[row, :n_prompt] == IGNORE_INDEX).all() and (labels[row, n_all:] == IGNORE_INDEX).all()
        assert labels[row, n_prompt:n_all].tolist() == e.answer_ids
    # only answer tokens count: the same answer after a longer prompt gives as many loss tokens
    assert (labels[0] != IGNORE_INDEX).sum() == (labels[1] != IGNORE_INDEX).sum() == len(short.answer_ids)


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"),
    [(12, 0.25, 3), (12, 0.2, 3), (40, 0.05, 2), (2, 0.05, 1), (3, 0.9, 2), (1, 0.5, 0), (12, 0.0, 0)],
)
def test_validation_split_sizes(n, fraction, n_val):
    examples = make_examples(n)
    train, val = split_validation(examples, fraction, seed=42)
    assert len(val) == n_val and len(train) == n - n_val
    assert {e.id for e in train}.isdisjoint({e.id for e in val})
    assert {e.id for e in train} | {e.id for e in val} == {e.id for e in examples}


def test_validation_split_is_seeded_and_order_independent():
    examples = make_examples(40)
    val_ids = {e.id for e in split_validation(examples, 0.25, seed=42)[1]}
    assert val_ids == {e.id for e in split_validation(examples[::-1], 0.25, seed=42)[1]}
    assert val_ids != {e.id for e in split_validation(examples, 0.25, seed=43)[1]}
    with pytest.raises(TrainingError, match="unique"):
        split_validation(examples + examples[:1], 0.25, seed=42)


def test_run_uses_the_split(trained):
    result, _, _ = trained
    assert result.val_ids == [e.id for e in split_validation(make_examples(), 0.25, seed=0)[1]]


def val_loss_of_adapter(model_dir: Path, adapter: Path, val: list[TrainExample]) -> float:
    """An independent token-weighted validation loss, computed example by example."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer_of(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for example in val:
            e = encode_example(tokenizer, example.prompt, example.response, chat=True)
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            logprobs = torch.log_softmax(logits[len(e.prompt_ids) - 1 : -1], dim=-1)
            total -= logprobs.gather(1, torch.tensor(e.answer_ids)[:, None]).sum().item()
            count += len(e.answer_ids)
    return total / count


def assert_early_stopping_consistent(curve: list[dict], patience: int, stopped_early: bool) -> None:
    """stopped_early ⇔ the run ended on the ``patience``-th evaluation in a row without a new best."""
    losses = [r["val_loss"] for r in curve if "val_loss" in r]
    since_best = 0
    for i, loss in enumerate(losses):
        since_best = 0 if loss < min(losses[:i], default=math.inf) else since_best + 1
        if patience and since_best >= patience:
            assert stopped_early and i == len(losses) - 1
            return
    assert not stopped_early


def test_early_stopping_keeps_the_best_adapter(tiny_model_dir, tmp_path):
    # validation answers unlike every training answer: learning the training answers makes the
    # validation loss rise, so patience 1 stops the run right after its first evaluation
    examples = make_examples()
    val_ids = {e.id for e in split_validation(examples, 0.25, seed=0)[1]}
    examples = [
        TrainExample(e.prompt, "0123456789 ABCDEFGHIJ" if e.id in val_ids else ANSWERS[0], e.id)
        for e in examples
    ]
    lora = spec(learning_rate=1e-2, epochs=5, batch_size=3, patience=1, dtype="float32")
    result = train_lora(tiny_model_dir, examples, lora, seed=0, out_dir=tmp_path)
    curve = read_curve(tmp_path)
    assert result.stopped_early and result.steps_run < result.total_steps and len(curve) == result.steps_run
    assert result.best_step == 1 and result.steps_run == 2
    assert_early_stopping_consistent(curve, 1, result.stopped_early)
    # the saved adapter is the best one, not the last one
    val = [e for e in examples if e.id in val_ids]
    assert val_loss_of_adapter(tiny_model_dir, tmp_path / "adapter", val) == pytest.approx(
        result.best_val_loss, rel=1e-5
    )
    assert curve[-1]["val_loss"] > result.best_val_loss


def test_no_early_stopping_with_patience_zero(trained):
    result, out_dir, _ = trained
    assert not result.stopped_early
    assert_early_stopping_consistent(read_curve(out_dir), 0, result.stopped_early)


def test_non_finite_loss_raises_and_writes_nothing(tiny_model_dir, tmp_path):
    out_dir = tmp_path / "out"
    # Adam's first step moves every weight by about lr: 1e30 overflows the next forward pass
    with pytest.raises(TrainingError, match=r"training loss became nan at optimizer step 2 of \d+"):
        train_lora(tiny_model_dir, make_examples(), spec(learning_rate=1e30, val_fraction=0.0), seed=0,
                   out_dir=out_dir)
    assert not out_dir.exists()
    # with validation every step, the validation after step 1 is the first to see it
    with pytest.raises(TrainingError, match=r"validation loss became nan at optimizer step 1 of \d+"):
        train_lora(tiny_model_dir, make_examples(), spec(learning_rate=1e30), seed=0, out_dir=out_dir)
    assert not out_dir.exists()


def test_same_seed_same_adapter_other_seed_other_adapter(tiny_model_dir, tmp_path):
    runs = {}
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        lora = spec(epochs=1, val_fraction=0.0)
        train_lora(tiny_model_dir, make_examples(), lora, seed=seed, out_dir=tmp_path / name)
        runs[name] = adapter_tensors(tmp_path / name)
    assert runs["a"].keys() == runs["b"].keys() == runs["c"].keys()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert read_curve(tmp_path / "a") == read_curve(tmp_path / "b")
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_truncation_and_dropping_are_counted(tiny_model_dir, tmp_path):
    tokenizer = tokenizer_of(tiny_model_dir)
    examples = make_examples()
    n_prompt = len(encode_example(tokenizer, examples[0].prompt, "", chat=True).prompt_ids)
    max_length = n_prompt + 3  # every answer is longer than 3 tokens (with its end token)
    examples.append(TrainExample(ChatPrompt("long", "Continue the passage. " * 20, SYSTEM), "Yes.", "long"))

    kept, truncated, dropped = encode_examples(tokenizer, examples, True, max_length)
    assert (len(kept), truncated, dropped) == (12, 12, 1)
    assert all(len(e.input_ids) <= max_length and len(e.answer_ids) >= 1 for _, e in kept)

    lora = spec(epochs=1, max_length=max_length)
    result = train_lora(tiny_model_dir, examples, lora, seed=0, out_dir=tmp_path)
    assert (result.n_truncated, result.n_dropped, result.n_train + result.n_val) == (12, 1, 12)

    with pytest.raises(TrainingError, match="no training examples left"):
        train_lora(tiny_model_dir, examples[-1:], spec(max_length=8), seed=0, out_dir=tmp_path / "none")


def test_fractional_epochs_and_warmup(tiny_model_dir, tmp_path):
    # 12 examples, batches of 5, 2 accumulated -> 3 micro-batches = 2 steps per epoch; 1.5 epochs -> 3 steps
    lora = spec(
        epochs=1.5, batch_size=5, grad_accum=2, val_fraction=0.0, scheduler="cosine", warmup_ratio=0.5
    )
    result = train_lora(tiny_model_dir, make_examples(), lora, seed=0, out_dir=tmp_path)
    curve = read_curve(tmp_path)
    assert (result.total_steps, result.steps_run, result.n_val, result.best_step) == (3, 3, 0, None)
    assert [r["epoch"] for r in curve] == [round(2 / 3, 6), 1.0, round(5 / 3, 6)]
    # ceil(0.5 * 3) = 2 warmup steps from 0, then cosine from the peak
    assert [r["lr"] for r in curve] == pytest.approx([0.0, 2.5e-3, 5e-3])
    assert all("val_loss" not in r for r in curve)


def test_gradient_accumulation_matches_one_big_batch(tiny_model_dir, tmp_path):
    # one optimizer step over the same 4 examples: as 1 batch of 4 or as 2 accumulated batches of 2
    common = dict(epochs=1 / 3, val_fraction=0.0, dropout=0.0, dtype="float32")
    for name, lora in [
        ("big", spec(batch_size=4, **common)),
        ("accum", spec(batch_size=2, grad_accum=2, **common)),
    ]:
        train_lora(tiny_model_dir, make_examples(), lora, seed=0, out_dir=tmp_path / name)
    big, accum = read_curve(tmp_path / "big"), read_curve(tmp_path / "accum")
    assert len(big) == len(accum) == 1
    assert big[0]["train_loss"] == pytest.approx(accum[0]["train_loss"], rel=1e-6)
    big_w, accum_w = adapter_tensors(tmp_path / "big"), adapter_tensors(tmp_path / "accum")
    assert all(torch.allclose(big_w[k], accum_w[k], atol=1e-5) for k in big_w)  # Adam steps are ~lr = 5e-3


def test_only_existing_target_modules_are_used(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert matching_targets(model, ("q_proj", "c_attn", "down_proj")) == ["q_proj", "down_proj"]
    with pytest.raises(TrainingError, match="q_proj"):  # the message lists the layers there are
        matching_targets(model, ("c_attn", "c_proj"))


def test_base_model_trains_on_raw_text(tiny_base_model_dir, tmp_path):
    result = train_lora(tiny_base_model_dir, make_examples(), spec(epochs=1), seed=0, out_dir=tmp_path)
    assert not result.chat and (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_validation_split_keeps_a_prompts_generations_together():
    """Accumulate mode: prompt p has examples p, p@g1, p@g2. Split by example id (before the fix),
    some prompt lands in both training and validation; split by group, none does (audit c7)."""
    import re

    base = make_examples(30)
    examples = [TrainExample(e.prompt, e.response, f"{e.id}{suffix}", group=e.id)
                for suffix in ("", "@g1", "@g2") for e in base]

    def leaked(train, val):
        prompt = lambda e: re.sub(r"@g\d+$", "", e.id)  # noqa: E731
        return {prompt(e) for e in train} & {prompt(e) for e in val}

    ungrouped = [TrainExample(e.prompt, e.response, e.id) for e in examples]
    assert leaked(*split_validation(ungrouped, 0.2, seed=42))  # the old behaviour leaks
    train, val = split_validation(examples, 0.2, seed=42)
    assert not leaked(train, val)
    assert len(val) >= 18 and len(val) % 3 == 0 and len(train) + len(val) == 90
    assert {e.id for e in val} == {e.id for e in split_validation(examples[::-1], 0.2, seed=42)[1]}
    # singleton groups give exactly the plain split
    singles = [TrainExample(e.prompt, e.response, e.id, group=e.id) for e in base]
    ids = lambda split: [[e.id for e in side] for side in split]  # noqa: E731
    assert ids(split_validation(singles, 0.25, seed=1)) == ids(split_validation(base, 0.25, seed=1))
