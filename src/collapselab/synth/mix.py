"""Build a condition's training set: human answers, or synthetic answers from one or more sources.

Every synthetic example keeps its provenance (source, model, decoding settings, seed, shard,
prompt id). Empty synthetic answers are dropped and counted, never silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def human_examples(train: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The human condition: each train prompt with its human response."""
    return [
        {"id": r["id"], "prompt": r["user"], "response": r["response"], "category": r["category"],
         "origin": "human", "shard": r["shard"]}
        for r in train
    ]


def synthetic_examples(synthetic: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Synthetic answers as training examples; returns (examples, the empty answers dropped, each
    as a ``dropped.jsonl`` row: prompt_id, source, reason)."""
    out, dropped = [], []
    for r in synthetic:
        if not r["response"].strip():
            dropped.append({"prompt_id": r["prompt_id"], "source": r["source"], "shard": r["shard"],
                            "reason": "empty answer"})
            continue
        out.append({
            "id": r["prompt_id"], "prompt": r["prompt"], "response": r["response"], "category": r["category"],
            "origin": r["source"], "model": r["model"], "decoding": r["decoding"], "seed": r["seed"],
            "shard": r["shard"],
        })
    return out, dropped
