"""Experiment 3 — self-preference bias.

* ``items``      — the items: a configured corpus (e.g. CNN/DailyMail articles, human text = the
                   highlights) or, by default, the experiment's held-out test records (never
                   training data; human text = the real continuation);
* ``candidates`` — each source model writes one text per item (the experiment's decoding);
* ``prefer``     — a judge (the vanilla target, and every fine-tuned model) sees every pair of
                   sources in both orders and we read P("A") against P("B") from its next-token
                   distribution; it also rates every text 1–5 (expected rating);
* ``preference`` — S per source, self-preference and pro-synthetic bias, position bias, the
                   preference matrices, ratings and the tests across judge conditions;
* ``familiarity`` — (``preference.familiarity``) each judge teacher-forces every text as the answer
                   to its item's instruction: its log-perplexity on it (the familiarity confound);
* ``recognize``  — (``preference.recognition``) each judge with an own source sees its own text
                   against every other source's, both orders, and says which one it wrote;
* ``preference_controls`` — SPB next to the familiarity-adjusted own effect (regression on
                   Δ log-perplexity, and stratified by it), recognition accuracy, and the
                   preference-leakage relation of every judge–source pair.

The control stages are new kinds, so adding them changes no existing stage's key: an old run
folder keeps every comparison and only computes the controls.

One vanilla judge per target: reading probabilities involves no sampling, so the vanilla judge's
verdicts do not depend on the training seed; its rows carry the first seed.
"""

from __future__ import annotations

from collapselab.config.spec import ExperimentSpec
from collapselab.pipeline.experiments.preference import plan, run
from collapselab.pipeline.experiments.preference.params import CandidatesParams
from collapselab.pipeline.experiments.spine import Spine
from collapselab.pipeline.experiments.spine.params import CellParams
from collapselab.pipeline.keying import model_key_settings, path_fingerprint, scorer_key_settings
from collapselab.pipeline.kinds import StageKind, register_kind
from collapselab.pipeline.sizing import plan_summary
from collapselab.pipeline.stage import Stage
from collapselab.preference.relations import judge_relations

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
register_kind(StageKind(
    "familiarity", 1, run.run_familiarity, plan.plan_familiarity, unit="texts", params=CellParams,
    loads_model=True, experiment=EXPERIMENT, outputs=("familiarity.jsonl", "summary.json"),
    description="one judge's log-perplexity on every text, given the item's instruction"))
register_kind(StageKind(
    "recognize", 1, run.run_recognize, plan.plan_recognize, unit="prompts", params=CellParams,
    loads_model=True, experiment=EXPERIMENT, outputs=("recognition.jsonl", "summary.json"),
    description="one judge picks which of two texts (its own and another source's) it wrote, both orders"))
register_kind(StageKind(
    "preference_controls", 1, run.run_controls, plan_summary, unit="judges", experiment=EXPERIMENT,
    outputs=tuple(f"{name}.parquet" for name in run.CONTROL_TABLES) + ("summary.json",), report=True,
    description="SPB adjusted for familiarity, recognition accuracy, judge–source relations"))


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


def recognition_template(spec: ExperimentSpec) -> str | None:
    """The recognition template (``preference.recognition_template`` or the packaged one),
    validated; None when ``preference.recognition`` is off."""
    from collapselab.judges.recognition import RECOGNITION

    p = spec.preference
    return RECOGNITION.template(p.recognition_template) if p.recognition else None


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
    recognition = recognition_template(spec)
    own = own_sources(spec, spine.target_names)
    prefers, controls, relations = [], [], {}
    for cell, train in spine.cells(vanilla_seeds="first", generations=p.generations):
        vanilla = cell.condition.kind == "vanilla"
        judge = {"judge": model_key_settings(cell.target), "condition": cell.condition.label,
                 "seed": None if vanilla else cell.seed}
        shown = {"max_text_chars": p.max_text_chars, "system_prompt": spec.decoding.system_prompt}
        settings = {**judge, "templates": texts, **shown}
        if cell.generation:
            settings["generation"] = judge["generation"] = cell.generation
        name = f"{cell.target_name}-{cell.condition.slug}" + ("" if vanilla else f"-seed{cell.seed}")
        name += f"-gen{cell.generation}" if cell.generation else ""
        sources = preference_sources(spec, cell.target_name)
        inputs = (items, *(candidates[s] for s in sources), *((train,) if train else ()))
        prefers.append(Stage("prefer", name, settings=settings, inputs=inputs, params=cell))
        new.append(prefers[-1])
        # the controls right after their judge's comparisons: the model pool keeps the judge loaded
        if p.familiarity:
            # the judge scores the texts: its scorer key (the openai backend's offset reading)
            controls.append(Stage("familiarity", name, settings={**judge, "judge": scorer_key_settings(cell.target),
                                                                 **shown}, inputs=inputs, params=cell))
            new.append(controls[-1])
        own_source = own[cell.target_name]
        if recognition is not None and own_source is not None:
            controls.append(Stage("recognize", name, settings={**judge, **shown, "template": recognition,
                                                               "own": own_source},
                                  inputs=inputs, params=cell))
            new.append(controls[-1])
        relations[name] = judge_relations(spec, cell.target, cell.target_name, cell.condition, sources,
                                          human=run.HUMAN, own=own_source)
    new.append(Stage("preference", "summary",
                     settings={"own": own, "bootstrap": p.bootstrap,
                               "confidence": p.confidence, "seed": p.seed, **spec.stats.key_settings()},
                     inputs=tuple(prefers)))
    new.append(Stage("preference_controls", "summary",
                     settings={"own": own, "relations": relations, "bins": p.familiarity_bins,
                               "bootstrap": p.bootstrap, "confidence": p.confidence, "seed": p.seed},
                     inputs=(*prefers, *controls)))
    return new
