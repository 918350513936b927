"""Typed runtime parameters of the spine's stage kinds (not part of any key)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from collapselab.config.spec import Condition, DecodingSpec, ModelSpec

if TYPE_CHECKING:
    from collapselab.pipeline.stage import Stage


@dataclass(frozen=True)
class GenerateParams:
    """A model answers one shard of the train prompts: a source (generation 0) or, in a later
    generation, the previous generation's fine-tuned model (``chain_train``, its train stage).
    With ``part`` (a multi-source condition), only the prompts of the shard that this condition
    assigns to the source (:func:`collapselab.corpora.shares.assign_examples`)."""

    source: str
    shard: int
    model: ModelSpec
    decoding: DecodingSpec
    data_seed: int | None = None
    generation: int = 0
    chain_train: Stage | None = None
    part: Condition | None = None


@dataclass(frozen=True)
class MixParams:
    """One condition's training set (with seed_scope "data": one seed's draw)."""

    condition: Condition
    data_seed: int | None = None
    generation: int = 0


@dataclass(frozen=True)
class CellParams:
    """One cell of the design: a target fine-tuned (or not: vanilla) on a condition with a seed,
    in a generation. Shared by train, respond and the experiments' per-model stages."""

    target: ModelSpec
    target_name: str
    condition: Condition
    seed: int
    generation: int = 0

    @property
    def cell(self) -> tuple[str, str, int, int]:
        """``(target name, condition label, seed, generation)``: the spine's index key."""
        return (self.target_name, self.condition.label, self.seed, self.generation)
