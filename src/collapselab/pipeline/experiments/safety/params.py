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


#: the parse judge of each role (the study's way), and the judge ``auto`` picks where the judge
#: model exposes next-token probabilities
PARSE_METHOD = {"harm": "harm", "quality": "quality"}
PROBABILITY_METHOD = {"harm": "harm-rating", "quality": "quality-rating"}
#: backends whose probabilities ``auto`` does not rely on (an HTTP API may not return them)
NO_PROBABILITIES = ("openai",)


def resolve_method(method: str, role: str, model: ModelSpec) -> str:
    """The registered judge ``method`` names (``auto``: the probability read-out, or the parse
    judge for a model behind an HTTP API)."""
    if method != "auto":
        return method
    return PARSE_METHOD[role] if model.backend in NO_PROBABILITIES else PROBABILITY_METHOD[role]


@dataclass(frozen=True)
class SafetyJudge:
    """One judge of Experiment 2: its ``label`` (``harm`` and ``quality`` for the main judges, in
    stage names and the judged table), the ``role`` it rates, the registered judge (``method``)
    that reads its verdicts, its model, a template file (None: the packaged one), and its
    harmful ``threshold`` setting (:class:`~collapselab.config.spec.SafetyJudgeSpec`)."""

    label: str
    role: str
    method: str
    model: ModelSpec
    template_path: str | None = None
    threshold: float | str | None = None

    @property
    def main(self) -> bool:
        """Whether this is one of the two main judges (their scores feed the study's metrics)."""
        return self.label in ROLES


def safety_judges(spec: ExperimentSpec) -> list[SafetyJudge]:
    """The main harm and quality judges, then every ``safety.judges`` entry."""
    s = spec.safety
    out = []
    for role in ROLES:
        model = judge_spec(spec, role)
        method = resolve_method(s.harm_method if role == "harm" else s.quality_method, role, model)
        out.append(SafetyJudge(role, role, method, model, s.harm_template if role == "harm" else s.quality_template))
    for j in s.judges:
        out.append(SafetyJudge(j.label, "harm", j.method, j.model, j.template, j.threshold))
    return out


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
    judge: SafetyJudge | None = None


@dataclass(frozen=True)
class JudgeParams:
    """A judge rates one safety_respond stage's answers."""

    role: str
    model: ModelSpec
    respond: Stage
    judge: SafetyJudge | None = None
