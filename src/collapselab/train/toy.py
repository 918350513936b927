"""Training a toy model (:mod:`collapselab.models.toy`): the maximum-likelihood fit of a categorical
distribution, i.e. counting tokens. The recipe reads top to bottom: check → count → save."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collapselab.config.spec import ModelSpec
from collapselab.errors import TrainingError
from collapselab.models.toy import ADAPTER_FILE, ADAPTER_FORMAT, parse_toy_name
from collapselab.store.atomic import write_json, write_jsonl
from collapselab.train.lora import TrainExample, TrainProgress


def train_toy(target: ModelSpec, examples: Sequence[TrainExample], *, out_dir: Path, seed: int,
              progress: TrainProgress | None = None) -> None:
    """Fit a toy unigram model to ``examples``' answers and write it to ``out_dir``.

    The fit is the maximum-likelihood estimate of a categorical distribution: p̂_i = c_i / N with
    c_i the count of whitespace token i over *all* examples' answers and N = Σ c_i. There is no
    validation split: the closed form of :mod:`collapselab.loop.closed_form` assumes each
    generation's model is fitted on all of its n samples, and a held-out share would change that
    n. The answer length of the fitted model is the answers' mean token count, rounded half up
    (in the toy loop every answer has the same length, so it is kept exactly). The target's id
    (``toy/unigram:...``) is checked, its base distribution is not used: the fit replaces it.

    Writes, each atomically: ``adapter/toy_unigram.json`` (``tokens`` sorted, their ``counts``,
    ``length``, ``examples``, ``seed`` — the seed enters the model's sampling fingerprint, so two
    chains whose fits happen to coincide still sample independently), ``loss_curve.jsonl`` (one
    row in the LoRA trainer's schema: ``step`` 1, ``epoch`` 1.0, ``train_loss`` = the in-sample
    negative log-likelihood per token −Σ c_i log p̂_i / N — the empirical entropy in nats —,
    ``lr`` 0.0) and ``train_summary.json`` (the LoRA trainer's keys where they apply:
    ``best_val_loss`` is that in-sample NLL, flagged by ``val_loss_in_sample`` true since nothing
    is held out, ``stopped_early`` false; plus ``tokens``, ``types``). ``progress(1, 1, nll)``
    is called once.
    """
    started = time.perf_counter()
    parse_toy_name(target.name)  # a ModelError names a bad toy id
    answers = [e.response.split() for e in examples]
    counts = Counter(token for tokens in answers for token in tokens)
    n_tokens = sum(counts.values())
    if n_tokens == 0:
        raise TrainingError(f"toy target {target.id}: the {len(examples)} training answers have no tokens")
    tokens = sorted(counts)
    nll = -sum(c * math.log(c / n_tokens) for c in counts.values()) / n_tokens
    # round half up (not Python's half-to-even): a documented, order-free rule
    length = max(1, math.floor(n_tokens / len(answers) + 0.5))
    out_dir = Path(out_dir)
    write_json(out_dir / "adapter" / ADAPTER_FILE, {
        "format": ADAPTER_FORMAT, "base": target.id, "tokens": tokens, "counts": [counts[t] for t in tokens],
        "length": length, "examples": len(examples), "seed": seed,
    })
    write_jsonl(out_dir / "loss_curve.jsonl", [{"step": 1, "epoch": 1.0, "train_loss": nll, "lr": 0.0}])
    summary: dict[str, Any] = {
        "n_train": len(examples), "n_val": 0, "n_truncated": 0, "n_dropped": 0, "total_steps": 1, "steps_run": 1,
        "stopped_early": False, "best_step": 1, "best_val_loss": nll, "val_loss_in_sample": True,
        "final_train_loss": nll, "train_tokens": n_tokens, "seconds": round(time.perf_counter() - started, 3),
        "seed": seed, "val_ids": [], "tokens": n_tokens, "types": len(tokens), "length": length, "loss": "toy-mle",
    }
    write_json(out_dir / "train_summary.json", summary)
    if progress is not None:
        progress(1, 1, nll)


def read_counts(adapter: Path) -> dict[str, int]:
    """A toy adapter's fit as ``{token: count}`` (for checks and the trajectory stage)."""
    data = json.loads((Path(adapter) / ADAPTER_FILE).read_text())
    return dict(zip(data["tokens"], data["counts"], strict=True))
