"""Experiment 1's text sets and the typed runtime parameters of its stage kinds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collapselab.config.spec import ModelSpec
from collapselab.pipeline.stage import Stage


@dataclass(frozen=True)
class SetInfo:
    """Where a text set comes from and how it is labelled in the result tables."""

    name: str
    kind: str  # condition | source | human
    producers: tuple[Stage, ...]
    file: str  # responses.jsonl | synthetic.jsonl | train.jsonl | test.jsonl
    labels: dict[str, Any]


@dataclass(frozen=True)
class SetParams:
    """A stage about one text set (embed, evaluate)."""

    text_set: SetInfo


@dataclass(frozen=True)
class ScoreParams:
    """A model scores one text set's texts: ``role`` "outputs" (the vanilla target scores the
    set's own texts) or "human" (the set's model scores the human test references)."""

    text_set: SetInfo
    role: str
    model: ModelSpec
    batch_size: int
