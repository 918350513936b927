"""Experiment 3 — self-preference bias.

* ``items``      — the items: a configured corpus (e.g. CNN/DailyMail articles, human text = the
                   highlights) or, by default, the experiment's held-out test records (never
                   training data; human text = the real continuation);
* ``candidates`` — each source model writes one text per item (the experiment's decoding);
* ``prefer``     — a judge (the vanilla target, and every fine-tuned model) sees every pair of
                   sources in both orders and we read P("A") against P("B") from its next-token
                   distribution; it also rates every text 1–5 (expected rating);
* ``preference`` — S per source, self-preference and pro-synthetic bias, position bias, the
                   preference matrices, ratings and the tests across judge conditions.

One vanilla judge per target: reading probabilities involves no sampling, so the vanilla judge's
verdicts do not depend on the training seed; its rows carry the first seed.
"""

from __future__ import annotations

from collapselab.config.spec import ExperimentSpec
from collapselab.pipeline.experiments.preference import plan, run
from collapselab.pipeline.experiments.preference.params import CandidatesParams
from collapselab.pipeline.experiments.spine import Spine
from collapselab.pipeline.experiments.spine.params import CellParams
from collapselab.pipeline.keying import model_key_settings, path_fingerprint
from collapselab.pipeline.kinds import StageKind, register_kind
from collapselab.pipeline.sizing import plan_summary
from collapselab.pipeline.stage import Stage

EXPERIMENT = "preference"

register_kind(StageKind(
    "items", 1, run.run_items, plan.plan_items, unit="items", experiment=EXPERIMENT,
    outputs=("items.jsonl", "summary.json"), description="the items and their human texts"))
register_kind(StageKind(
    "candidates", 1, run.run_candidates, plan.plan_candidates, unit="items", params=CandidatesParams,
    loads_model=True, experiment=EXPERIMENT, outputs=("candidates.jsonl", "summary.json"),
    description="one source writes a text for every item"))
register_kind(StageKind(
    "prefer", 1, run.run_prefer, plan.plan_prefer, unit="comparisons+ratings", params=CellParams,
    loads_model=True, experiment=EXPERIMENT, outputs=("comparisons.jsonl", "ratings.jsonl", "summary.json"),
    report=True, description="one judge compares every pair of sources in both orders and rates every text"))
# version 2: tests paired by item where the conditions answer the same items
# version 3: mixed-model family (run as random effect) with several seeds; unit column; the reason for
# paired/unpaired in each note; whole items resampled in pooled paired intervals
register_kind(StageKind(
    "preference", 3, run.run_preference, plan_summary, unit="judges", experiment=EXPERIMENT,
    outputs=("source_scores.parquet", "bias.parquet", "position.parquet", "matrix.parquet", "per_item.parquet",
             "rating_scores.parquet", "tests.parquet", "comparisons.parquet", "ratings.parquet", "summary.json"),
    report=True, description="S per source, self-preference and pro-synthetic bias, position bias, matrices, tests"))


def preference_sources(spec: ExperimentSpec, target_name: str | None = None) -> list[str]:
    """The sources whose texts a target's judges compare (``preference.sources_by_target``, else
    ``preference.sources``, else every source); without ``target_name``, every source some
    target's judges compare, in order of first appearance (the candidates to write)."""
    if target_name is not None:
        return list(spec.preference_sources(target_name))
    out: list[str] = []
    for target in spec.target_names:
        out += [s for s in spec.preference_sources(target) if s not in out]
    return out


def own_sources(spec: ExperimentSpec, target_names: list[str]) -> dict[str, str | None]:
    """Per target name, the source that counts as its own family: ``preference.own`` or, by
    default, the source among those its judges compare whose model is the target's model (same
    weights, whatever the batch size)."""
    out: dict[str, str | None] = {}
    for target, tname in zip(spec.targets, target_names, strict=True):
        if tname in spec.preference.own:
            out[tname] = spec.preference.own[tname]
            continue
        sources = preference_sources(spec, tname)
        same = [s for s in sources if model_key_settings(spec.source(s).model) == model_key_settings(target)]
        out[tname] = same[0] if same else None
    return out


def templates(spec: ExperimentSpec) -> dict[str, str | None]:
    """The pairwise and (``preference.ratings``) rating templates, validated."""
    from collapselab.judges import JUDGES

    p = spec.preference
    return {"pairwise": JUDGES.get("pairwise").template(p.pair_template),
            "rating": JUDGES.get("rating").template(p.rating_template) if p.ratings else None}


def add_stages(spec: ExperimentSpec, spine: Spine) -> list[Stage]:
    """Experiment 3's stages (none when ``preference.enabled`` is false)."""
    p = spec.preference
    if not p.enabled:
        return []
    corpus = None if p.corpus is None else {**p.corpus.model_dump(mode="json"),
                                             "fingerprint": path_fingerprint(p.corpus.path)}
    items = Stage("items", "preference",
                  settings={"corpus": corpus, "items": p.items, "seed": p.seed, "instruction": p.instruction},
                  inputs=() if p.corpus else (spine.prepare,))
    new: list[Stage] = [items]
    decoding = spec.decoding.model_copy(update={"max_new_tokens": p.max_new_tokens or spec.decoding.max_new_tokens})
    candidates: dict[str, Stage] = {}  # every source some target's judges compare, written once
    for name in preference_sources(spec):
        src = spec.source(name)
        dec = (src.decoding or decoding).model_copy(update={"max_new_tokens": decoding.max_new_tokens})
        candidates[name] = Stage("candidates", name,
                                 settings={"source": name, "model": model_key_settings(src.model),
                                           "decoding": dec.model_dump(mode="json")},
                                 inputs=(items,), params=CandidatesParams(name, src.model, dec))
    new += candidates.values()

    texts = templates(spec)
    prefers = []
    for cell, train in spine.cells(vanilla_seeds="first"):
        vanilla = cell.condition.kind == "vanilla"
        settings = {"judge": model_key_settings(cell.target), "condition": cell.condition.label,
                    "seed": None if vanilla else cell.seed, "templates": texts,
                    "max_text_chars": p.max_text_chars, "system_prompt": spec.decoding.system_prompt}
        if cell.generation:
            settings["generation"] = cell.generation
        name = f"{cell.target_name}-{cell.condition.slug}" + ("" if vanilla else f"-seed{cell.seed}")
        prefers.append(Stage(
            "prefer", name + (f"-gen{cell.generation}" if cell.generation else ""), settings=settings,
            inputs=(items, *(candidates[s] for s in preference_sources(spec, cell.target_name)),
                    *((train,) if train else ())), params=cell,
        ))
    new += prefers
    new.append(Stage("preference", "summary",
                     settings={"own": own_sources(spec, spine.target_names), "bootstrap": p.bootstrap,
                               "confidence": p.confidence, "seed": p.seed, **spec.stats.key_settings()},
                     inputs=tuple(prefers)))
    return new
