"""The LM head on the label positions alone (``logits_to_keep`` mask) against the full-logits path
it replaced (``train_lora(..., full_logits=True)``): same per-step train and validation losses, same
adapter, for both objectives and both precisions; and the check that decides which path a model gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import collapselab.train.lora as lora_module  # noqa: E402
from collapselab.config.spec import LoraSpec  # noqa: E402
from collapselab.models.base import ChatPrompt  # noqa: E402
from collapselab.train.lora import TrainExample, takes_logit_mask, train_lora  # noqa: E402

SYSTEM = "You are a helpful assistant."
ANSWERS = ("The quick brown fox jumps over the lazy dog.", "It is a truth universally acknowledged.", "Yes.")

#: Tolerances, relative. float32: the head's matrix product on fewer rows may round differently
#: (on this machine both paths are bit-identical), so the losses agree to 1e-5 and the adapters to
#: 1e-4. bfloat16 autocast: the head's output is rounded to bf16 (8 bits of mantissa, 0.4% a step),
#: so a different summation order can move a logit by one bf16 step: losses to 1e-3; the adapter
#: (AdamW divides by the gradient's running RMS, so a tiny gradient difference on a near-zero entry
#: can move it by up to a learning rate per step) to 1e-2 in norm.
TOLERANCE = {"float32": {"loss": 1e-5, "adapter": 1e-4}, "bfloat16": {"loss": 1e-3, "adapter": 1e-2}}


def make_examples(n: int) -> list[TrainExample]:
    # prompts and answers of different lengths, so that micro-batches are padded and rows keep different positions
    return [TrainExample(ChatPrompt(f"p{i}", "Continue the passage number " + "and so on " * (i % 3) + f"{i}.",
                                    SYSTEM), ANSWERS[i % 3], f"e{i}") for i in range(n)]


def run(model_dir: Path, out_dir: Path, lora: LoraSpec, *, full_logits: bool) -> tuple[list[dict], dict]:
    from safetensors.torch import load_file

    train_lora(model_dir, make_examples(12), lora, seed=0, out_dir=out_dir, full_logits=full_logits)
    curve = [json.loads(line) for line in (out_dir / "loss_curve.jsonl").read_text().splitlines()]
    return curve, load_file(out_dir / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("loss", ["completion", "full"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kept_logits_train_like_full_logits(tiny_model_dir, tmp_path, monkeypatch, dtype, loss):
    torch.set_num_threads(1)
    decided: list[bool] = []

    def spy(model):
        decided.append(takes_logit_mask(model))
        return decided[-1]

    monkeypatch.setattr(lora_module, "takes_logit_mask", spy)
    # dropout on (the default 0.1): both paths must draw the same dropout masks; 2 micro-batches a step
    lora = LoraSpec(batch_size=3, grad_accum=2, epochs=3, val_fraction=0.25, eval_every=1, patience=0,
                    learning_rate=5e-3, scheduler="constant", warmup_ratio=0.0, dtype=dtype, loss=loss)
    kept_curve, kept = run(tiny_model_dir, tmp_path / "kept", lora, full_logits=False)
    assert decided == [True]  # the tiny Llama takes the mask: the kept-logits path really ran
    full_curve, full = run(tiny_model_dir, tmp_path / "full", lora, full_logits=True)
    assert decided == [True]  # full_logits does not even ask

    tol = TOLERANCE[dtype]
    assert len(kept_curve) == len(full_curve) == 6
    for a, b in zip(kept_curve, full_curve, strict=True):
        assert set(a) == set(b) and a["step"] == b["step"] and a["lr"] == b["lr"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=tol["loss"])
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=tol["loss"])
    assert full_curve[-1]["train_loss"] < full_curve[0]["train_loss"]  # it trained: the comparison is not vacuous
    assert kept.keys() == full.keys()
    for name, w in full.items():
        assert float((kept[name] - w).norm()) <= tol["adapter"] * float(w.norm()) + 1e-12, name
    kept_summary, full_summary = ({k: v for k, v in json.loads((tmp_path / side / "train_summary.json").read_text())
                                   .items() if k not in ("seconds", "final_train_loss", "best_val_loss")}
                                  for side in ("kept", "full"))
    assert kept_summary == full_summary  # same steps, tokens, split, best step


def peft_tiny(model_dir: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))


class IgnoresMask(torch.nn.Module):
    """A causal LM whose forward takes ``logits_to_keep`` but returns every position's logits."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, input_ids, attention_mask=None, use_cache=None, logits_to_keep=0):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


class Scrambles(IgnoresMask):
    """Takes the mask and returns logits of the right shape, but not those rows' logits."""

    def forward(self, input_ids, attention_mask=None, use_cache=None, logits_to_keep=0):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits
        if isinstance(logits_to_keep, torch.Tensor):
            logits = logits.flip(1)[logits_to_keep]
        return type("Out", (), {"logits": logits})


def test_takes_logit_mask_decides_the_path(tiny_model_dir):
    torch.set_num_threads(1)
    model = peft_tiny(tiny_model_dir)
    model.train()
    rng = torch.get_rng_state()
    assert takes_logit_mask(model)
    assert model.training and torch.equal(torch.get_rng_state(), rng)  # mode restored, no random number drawn
    assert takes_logit_mask(model.get_base_model())  # a plain transformers model too
    assert not takes_logit_mask(IgnoresMask(model.get_base_model()))
    assert not takes_logit_mask(Scrambles(model.get_base_model()))
    headless = IgnoresMask(model.get_base_model())
    headless.get_output_embeddings = lambda: None
    assert not takes_logit_mask(headless)
