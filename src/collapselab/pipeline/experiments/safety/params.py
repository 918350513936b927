"""Experiment 2's roles, judge choice and the typed runtime parameters of its stage kinds."""

from __future__ import annotations

from dataclasses import dataclass

from collapselab.config.spec import DecodingSpec, ExperimentSpec, ModelSpec
from collapselab.pipeline.experiments.spine.params import CellParams
from collapselab.pipeline.stage import Stage

#: the two judges' roles: harmfulness and quality of an answer
ROLES = ("harm", "quality")


def judge_spec(spec: ExperimentSpec, role: str) -> ModelSpec:
    """The model that judges ``role`` (harm / quality): configured, else the first target as it
    is before any fine-tuning."""
    s = spec.safety
    if role == "quality" and s.quality_judge is not None:
        return s.quality_judge
    return s.judge or spec.targets[0]


@dataclass(frozen=True)
class PromptsParams:
    """The safety prompts of one target; ``model_id`` (its model's id) helps find its family and
    maker for the jailbreak renaming (:mod:`collapselab.safety.names`)."""

    target_name: str
    model_id: str | None = None


@dataclass(frozen=True)
class SafetyRespondParams(CellParams):
    """One cell's model answers every safety prompt with the experiment's decoding."""

    decoding: DecodingSpec | None = None


@dataclass(frozen=True)
class CalibrateParams:
    """A judge rates the labelled calibration set."""

    role: str
    model: ModelSpec


@dataclass(frozen=True)
class JudgeParams:
    """A judge rates one safety_respond stage's answers."""

    role: str
    model: ModelSpec
    respond: Stage
