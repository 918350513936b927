"""Preference leakage: how each judge is related to each source whose texts it judges (Li et al. 2025,
"Preference Leakage: A Contamination Problem in LLM-as-a-judge", arXiv:2502.01534 — a judge
favours texts of a related generator: the same model, a model with an inheritance relation, or the
same model family).

The relation of one judge–source pair, the first that applies:

* ``fine-tuned on its data`` — the judge was fine-tuned on a condition that includes the source
  (``single:SRC``, or a ``multi`` mix containing it; in later generations the chain descended from
  it); for the human text, a judge fine-tuned on the human condition;
* ``same model`` — the judge's weights before any adapter are the source's model (same model id
  and adapter): the vanilla judge and its own model's texts, or a judge fine-tuned on other data
  whose base model wrote them;
* ``same family`` — the same model family by name (:func:`~collapselab.safety.names.infer_family`
  on the names and model ids; the judge's family may also come from ``safety.target_names``), or
  the source is the judge's configured own family (``preference.own``);
* ``unrelated`` — none of these; ``human text`` — the human source for a judge not trained on
  human data.

Every pair also carries the three facts separately (``trained_on``, ``same_model``,
``same_family``), since several can hold at once (a judge fine-tuned on its own model's texts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from collapselab.config.spec import Condition, ExperimentSpec, ModelSpec

TRAINED_ON = "fine-tuned on its data"
SAME_MODEL = "same model"
SAME_FAMILY = "same family"
UNRELATED = "unrelated"
HUMAN_TEXT = "human text"
#: the relation types, strongest first
RELATIONS = (TRAINED_ON, SAME_MODEL, SAME_FAMILY, UNRELATED, HUMAN_TEXT)


@dataclass(frozen=True)
class Relation:
    """One judge–source pair: the ``relation`` (see the module docstring) and the facts behind it."""

    relation: str
    trained_on: bool
    same_model: bool
    same_family: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_family(name: str, model_id: str | None, safety: Any = None) -> str | None:
    """A model's family by its name and id (:func:`~collapselab.safety.names.target_naming`: the
    config's ``safety.target_names``, else the family table); None when neither names one."""
    from collapselab.safety.names import target_naming

    naming = target_naming(safety, name, model_id)
    return None if naming.source.split("+")[0] == "fallback" else naming.family


def same_weights(a: ModelSpec, b: ModelSpec) -> bool:
    """Whether two model specs name the same weights (id, case-insensitive, and adapter; dtype,
    batch size and chat handling aside)."""
    return a.id.lower() == b.id.lower() and a.adapter == b.adapter


def relation_of(condition: Condition, judge_model: ModelSpec, judge_family: str | None, source: str,
                source_model: ModelSpec | None, source_family: str | None, *, human: str = "human",
                own: str | None = None) -> Relation:
    """The relation of a judge (its base model, its family and the condition it was fine-tuned on)
    to one source (``source_model`` None for the human text)."""
    if source_model is None or source == human:
        trained = condition.kind == "human"
        return Relation(TRAINED_ON if trained else HUMAN_TEXT, trained, False, False)
    trained = condition.kind in ("single", "multi") and source in condition.sources
    same = same_weights(judge_model, source_model)
    family = same or source == own or (judge_family is not None and judge_family == source_family)
    relation = TRAINED_ON if trained else SAME_MODEL if same else SAME_FAMILY if family else UNRELATED
    return Relation(relation, trained, same, family)


def judge_relations(spec: ExperimentSpec, target: ModelSpec, target_name: str, condition: Condition,
                    sources: list[str], *, human: str = "human", own: str | None = None) -> dict[str, dict[str, Any]]:
    """Per source (and the human text), the relation of the judge ``target`` fine-tuned on
    ``condition`` (vanilla: not fine-tuned), as :meth:`Relation.to_dict`."""
    judge_family = model_family(target_name, target.id, spec.safety)
    out = {}
    for name in sources:
        model = spec.source(name).model
        out[name] = relation_of(condition, target, judge_family, name, model, model_family(name, model.id),
                                human=human, own=own).to_dict()
    out[human] = relation_of(condition, target, judge_family, human, None, None, human=human).to_dict()
    return out
