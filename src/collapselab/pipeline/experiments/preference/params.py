"""Typed runtime parameters of Experiment 3's stage kinds."""

from __future__ import annotations

from dataclasses import dataclass

from collapselab.config.spec import DecodingSpec, ModelSpec


@dataclass(frozen=True)
class CandidatesParams:
    """One source writes a text for every item."""

    source: str
    model: ModelSpec
    decoding: DecodingSpec
