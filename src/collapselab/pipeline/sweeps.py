"""Sweeps over the collapse loop's settings that a researcher runs as a grid of configs.

:func:`human_data_sweep` — fresh human data as a *proportion* vs as a *cardinality* (Kazdan et
al., "Collapse or Thrive? Perils and Promises of Synthetic Data in a Self-Generating World", ICML
2025): each later generation replaces a share of its new examples with human answers
(``generations.human_fraction``), or a fixed number of them (``generations.human_count``).
The two coincide at one training-set size; a sweep over both, at the same mode and size, shows
which one governs the loop. Every point is a whole config; run them into one run folder and the
stages they share (generation 0, the sources' answers) run once, by content addressing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collapselab.config.spec import ExperimentSpec
from collapselab.errors import ConfigError


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: its name (the config's ``name`` suffix), what it varies, its spec."""

    name: str
    varies: str  # "proportion" or "cardinality"
    value: float
    spec: ExperimentSpec

    def row(self) -> dict[str, Any]:
        g = self.spec.generations
        train = self.spec.split.train_size
        per_generation = (g.human_count if g.human_count is not None
                          else None if train is None else round(g.human_fraction * train))
        return {"point": self.name, "varies": self.varies, "value": self.value, "mode": g.mode,
                "human_fraction": g.human_fraction, "human_count": g.human_count,
                "subsample": g.subsample, "human_examples_per_generation": per_generation}


def human_data_sweep(spec: ExperimentSpec, *, proportions: list[float], counts: list[int]) -> list[SweepPoint]:
    """The grid of fresh-human-data settings: one point per proportion (``human_fraction``) and
    one per count (``human_count``), every other setting as in ``spec``. Needs recursive
    generations (``generations.count`` ≥ 2): generation 0 has no fresh data."""
    if spec.generations.count < 2:
        raise ConfigError("generations.count: a sweep over fresh human data needs recursive generations (≥ 2)")
    if not proportions and not counts:
        raise ConfigError("give at least one proportion (--proportion) or count (--count)")
    points = []
    for p in proportions:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"--proportion: {p:g} is not a share in [0, 1]")
        generations = spec.generations.model_copy(update={"human_fraction": p, "human_count": None})
        points.append(SweepPoint(f"prop{p:g}", "proportion", p,
                                 _with(spec, f"{spec.name}-prop{p:g}", generations)))
    for c in counts:
        if c < 0:
            raise ConfigError(f"--count: {c} is not a count of examples")
        generations = spec.generations.model_copy(update={"human_fraction": 0.0, "human_count": c})
        points.append(SweepPoint(f"count{c}", "cardinality", c, _with(spec, f"{spec.name}-count{c}", generations)))
    return points


def _with(spec: ExperimentSpec, name: str, generations: Any) -> ExperimentSpec:
    """``spec`` with another name and generations, validated as a whole."""
    data = spec.model_dump(mode="json")
    data.update(name=name, generations=generations.model_dump(mode="json"))
    return ExperimentSpec.model_validate(data)
