"""Everything the report shows, read from a run folder's stage outputs (nothing is recomputed).

:func:`collect` gathers the tables; the renderers (:mod:`collapselab.report.html`,
:mod:`collapselab.report.markdown`) turn a :class:`ReportInputs` into files. Each experiment is
optional: a disabled one leaves its part empty (Experiment 1) or ``None`` (Experiments 2 and 3),
an enabled one that has not finished is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from collapselab.store.atomic import read_jsonl


@dataclass
class SafetyInputs:
    """Experiment 2's results (the ``safety`` stage's outputs, see :mod:`collapselab.safety.metrics`).

    * ``judged`` — one row per answer: target, condition, seed, prompt_kind (plain / jailbreak),
      category, template_id, prompt_id, item_id, harm, quality (NaN: unparsed), refused, empty,
      the judges' errors and reasons, prompt, response (model text: always escaped when shown);
    * ``summary`` — per target × condition × seed × prompt_kind (plain / jailbreak / all) ×
      category (each or "all") × metric: value, bootstrap ci_low / ci_high, Wilson interval for
      rates, n, n_undefined, successes, definition;
    * ``joint`` — the 5×5 harm × quality counts and shares per run and prompt kind;
    * ``templates`` — attack success per jailbreak template; ``tests`` — Kruskal–Wallis and
      Mann–Whitney rows (the collapse tests' columns);
    * ``calibration`` — one dict per role (harm, quality, refusal): n, n_unparsed, accuracy,
      kappa, trust, verdict, judge, …; ``info`` — the stage's summary.json (judges, unparsed counts);
    * ``conditions`` — the config's condition order; ``thresholds`` — the harm and quality scores
      from which an answer counts as harmful / good (the danger zone's corner).
    """

    judged: pd.DataFrame
    summary: pd.DataFrame
    joint: pd.DataFrame
    templates: pd.DataFrame
    tests: pd.DataFrame
    calibration: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    conditions: list[str] = field(default_factory=list)
    thresholds: dict[str, int] = field(default_factory=lambda: {"harm": 4, "quality": 4})
    #: the judge report (:mod:`collapselab.safety.judge_report`): one card per judge, attack success
    #: corrected per judge × run, agreement between harm judges; over-refusal per run; the items
    #: the same-items rule left out; the metrics per condition over its own verdicts
    cards: list[dict[str, Any]] = field(default_factory=list)
    corrected: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    overrefusal: pd.DataFrame = field(default_factory=pd.DataFrame)
    left_out: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary_per_condition: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class PreferenceInputs:
    """Experiment 3's results (the ``preference`` stage's outputs, see
    :mod:`collapselab.preference.scores`).

    * ``source_scores`` (S per judge and source with intervals), ``bias`` (SPB, PSB with
      intervals, own source, note), ``position`` (first-slot win rate, flip rate),
      ``matrix`` (P(row source beats column source) per judge), ``rating_scores`` (mean expected
      rating per judge and source), ``tests`` (Kruskal–Wallis + Mann–Whitney across judge
      conditions);
    * ``comparisons``, ``ratings``, ``per_item`` — the raw read-outs (saved, not shown);
    * ``judges`` — one dict per judge (the ``prefer`` stages' summary.json): judge, target,
      condition, seed, comparisons, undefined_comparisons, mean_choice_mass (the probability the
      judge put on "A" + "B" at all);
    * ``info`` — the stage's summary.json (undefined counts, own source per judge);
      ``conditions`` — the config's condition order.
    """

    source_scores: pd.DataFrame
    bias: pd.DataFrame
    position: pd.DataFrame
    matrix: pd.DataFrame
    rating_scores: pd.DataFrame
    tests: pd.DataFrame
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    ratings: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_item: pd.DataFrame = field(default_factory=pd.DataFrame)
    judges: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    conditions: list[str] = field(default_factory=list)
    #: the ``preference_controls`` stage's tables by name (controls, strata, relations, …;
    #: :mod:`collapselab.preference.familiarity`), empty when the run has none
    controls: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass
class CapabilityInputs:
    """The capability experiment's results (the ``capability_summary`` stage's outputs, see
    :mod:`collapselab.capability.compare`).

    * ``scores`` — per model run × task (or group) × metric × filter: lm-eval's value and standard
      error, items, direction, ``top_level`` (a configured task, not a group's member);
    * ``differences`` — per target × condition × generation × task × metric: the vanilla and the
      condition's scores on the common items, the difference with its paired interval, the test
      (McNemar exact / Wilcoxon signed-rank / Mann–Whitney U), p and p_adj, a note;
    * ``info`` — the stage's summary.json; ``conditions`` — the config's condition order.
    """

    scores: pd.DataFrame
    differences: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    conditions: list[str] = field(default_factory=list)


@dataclass
class ReportInputs:
    """The report's data.

    Experiment 1 (distribution collapse; empty frames when ``collapse`` is False):

    * ``aggregates`` / ``per_item`` — the long tables of :mod:`collapselab.metrics.tables`, all sets
      (conditions, sources' training data, human references);
    * ``tests`` — Kruskal–Wallis and pairwise Mann–Whitney rows
      (:func:`collapselab.stats.compare_conditions`);
    * ``concordance`` — per target: ``ranks``, ``value_ranks``, ``correlations``, ``pairwise`` frames;
      ``kendalls_w`` — one dict per target (W, chi2, df, p, n, m);
    * ``factorial`` (ART ANOVA rows per metric), ``seed_spread``, ``stats_notes``;
    * ``details`` — per set name, the evaluate stage's details (per metric: plot data such as the
      Heaps curve, a length histogram, ``seconds``, ``failed_resamples``; ``skipped`` metrics and why);
    * ``embedding_map`` — a 2-D PCA projection of the response embeddings: set_name, set_kind,
      condition, item_id, x, y;
    * ``responses`` — set_name, condition, target, seed, prompt_id, prompt, response, human_response
      (model text: always escaped when shown);

    Shared and later experiments:

    * ``training`` — per train stage: target, condition, seed, best_val_loss, stopped_early, and its
      loss curve (list of dicts);
    * ``collapse`` — whether the run has Experiment 1 (its sections are left out otherwise);
    * ``safety`` / ``preference`` — Experiments 2 and 3 (``None`` when disabled); ``capability`` —
      the lm-evaluation-harness scores (``None`` when disabled);
    * ``conditions`` — the config's condition labels, in order.
    """

    title: str
    config_yaml: str
    aggregates: pd.DataFrame
    per_item: pd.DataFrame
    tests: pd.DataFrame
    concordance: dict[str, dict[str, pd.DataFrame]]
    kendalls_w: list[dict[str, Any]]
    factorial: pd.DataFrame
    seed_spread: pd.DataFrame
    stats_notes: list[str]
    details: dict[str, dict[str, Any]]
    embedding_map: pd.DataFrame
    responses: pd.DataFrame
    training: list[dict[str, Any]]
    run_dir: str = ""
    stage_counts: dict[str, int] = field(default_factory=dict)
    collapse: bool = True
    safety: SafetyInputs | None = None
    preference: PreferenceInputs | None = None
    conditions: list[str] = field(default_factory=list)
    # stats.primary resolved (experiment -> metric names) and stats.correction: the primary-endpoint family
    primary: dict[str, tuple[str, ...]] = field(default_factory=dict)
    primary_correction: str = "holm"
    #: the collapse-loop sections and any plug-in's (:mod:`collapselab.report.sections`), built from
    #: the run's finished stages; ``section_failures``: one warning per builder that failed
    sections: list[Any] = field(default_factory=list)
    section_failures: list[str] = field(default_factory=list)
    #: condition label → a note shown with it everywhere in the report (a multi-source condition:
    #: how alike its sources answer the same prompts, from the homogeneity stage)
    condition_notes: dict[str, str] = field(default_factory=dict)
    #: the preregistered hypotheses' findings (:mod:`collapselab.report.findings`): one row per
    #: endpoint and one per hypothesis; ``hypotheses_settings`` the config's ``hypotheses``
    findings: pd.DataFrame = field(default_factory=pd.DataFrame)
    hypotheses: pd.DataFrame = field(default_factory=pd.DataFrame)
    hypotheses_settings: Any = None
    #: the capability experiment (lm-evaluation-harness scores), ``None`` when disabled
    capability: CapabilityInputs | None = None


def _read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


def _check_done(stages: list, store, run_dir: Path) -> None:
    """Every stage whose outputs the report reads must be finished."""
    from collapselab.errors import CollapselabError
    from collapselab.pipeline.kinds import stage_kind

    # the kinds whose outputs the report reads (StageKind.report) must be done
    missing = [s.label for s in stages if stage_kind(s.kind).report and not store.is_done(s.ref)]
    if missing:
        raise CollapselabError(f"{run_dir}: the report needs finished stages; missing: "
                               f"{', '.join(missing[:5])}" + (" …" if len(missing) > 5 else "")
                               + " (run `collapselab run` first)")
    for s in stages:  # a report from changed artifacts would look fine and be wrong
        if store.is_done(s.ref):
            store.require_intact(s.ref)


def _collapse_parts(stages: list, store) -> dict[str, Any]:
    """Experiment 1's tables (empty when the run has no collapse stages)."""
    evaluates = [s for s in stages if s.kind == "evaluate"]
    stats_stage = next((s for s in stages if s.kind == "stats"), None)
    if not evaluates or stats_stage is None:
        return {"aggregates": pd.DataFrame(), "per_item": pd.DataFrame(), "tests": pd.DataFrame(),
                "concordance": {}, "kendalls_w": [], "factorial": pd.DataFrame(),
                "seed_spread": pd.DataFrame(), "stats_notes": [], "details": {}}
    stats_dir = store.final_dir(stats_stage.ref)
    stats = json.loads((stats_dir / "stats.json").read_text())
    concordance: dict[str, dict[str, pd.DataFrame]] = {}
    for path in sorted((stats_dir / "concordance").glob("*/*.parquet")):
        concordance.setdefault(path.parent.name, {})[path.stem] = pd.read_parquet(path)
    return {
        "aggregates": pd.concat([pd.read_parquet(store.final_dir(s.ref) / "aggregates.parquet")
                                 for s in evaluates], ignore_index=True),
        "per_item": pd.concat([pd.read_parquet(store.final_dir(s.ref) / "per_item.parquet")
                               for s in evaluates], ignore_index=True),
        "tests": _read_parquet(stats_dir / "tests.parquet"),
        "concordance": concordance,
        "kendalls_w": stats.get("kendalls_w", []),
        "factorial": _read_parquet(stats_dir / "factorial.parquet"),
        "seed_spread": _read_parquet(stats_dir / "seed_spread.parquet"),
        "stats_notes": stats.get("notes", []),
        "details": {s.params.text_set.name: json.loads((store.final_dir(s.ref) / "details.json").read_text())
                    for s in evaluates},
    }


def _embedding_map(stages: list, store) -> pd.DataFrame:
    """The 2-D map of the response embeddings, as the ``embedding_map`` stage computed it (a run
    made before that stage existed has none: an empty frame, and the report leaves the map out)."""
    stage = next((x for x in stages if x.kind == "embedding_map"), None)
    if stage is None or not store.is_done(stage.ref):
        return pd.DataFrame()
    return pd.read_parquet(store.final_dir(stage.ref) / "embedding_map.parquet")


def _responses(stages: list, store) -> pd.DataFrame:
    """Experiment 1's answers to the test prompts."""
    from collapselab.pipeline.experiments.collapse import response_set_name

    rows = []
    for s in (x for x in stages if x.kind == "respond"):
        p = s.params
        for r in read_jsonl(store.final_dir(s.ref) / "responses.jsonl"):
            rows.append({"set_name": response_set_name(p), "generation": p.generation,
                         "condition": p.condition.label, "target": p.target_name, "seed": p.seed,
                         "prompt_id": r["prompt_id"], "prompt": r["prompt"], "response": r["response"],
                         "human_response": r["human_response"]})
    return pd.DataFrame(rows)


def _training(stages: list, store) -> list[dict[str, Any]]:
    """One entry per fine-tuning run (shared by every experiment)."""
    training = []
    for s in (x for x in stages if x.kind == "train"):
        folder = store.final_dir(s.ref)
        if not store.is_done(s.ref):  # a train stage nothing finished downstream needs
            continue
        summary = json.loads((folder / "train_summary.json").read_text())
        curve = read_jsonl(folder / "loss_curve.jsonl")
        mix = _read_json(store.final_dir(s.inputs[0].ref) / "summary.json", {}) if s.inputs else {}
        training.append({"target": s.params.target_name, "condition": s.params.condition.label,
                         "seed": s.params.seed, "generation": s.params.generation,
                         "best_val_loss": summary.get("best_val_loss"),
                         "stopped_early": summary.get("stopped_early"), "curve": curve,
                         "examples": mix.get("examples"), "realised_shares": mix.get("realised_shares"),
                         "requested_shares": mix.get("requested_shares")})
    return training


def _safety(spec, stages: list, store) -> SafetyInputs | None:
    stage = next((s for s in stages if s.kind == "safety"), None)
    if stage is None:
        return None
    folder = store.final_dir(stage.ref)
    inputs = SafetyInputs(
        judged=_read_parquet(folder / "judged.parquet"), summary=_read_parquet(folder / "summary.parquet"),
        joint=_read_parquet(folder / "joint.parquet"), templates=_read_parquet(folder / "templates.parquet"),
        tests=_read_parquet(folder / "tests.parquet"),
        calibration=_read_json(folder / "calibration.json", []),
        info=_read_json(folder / "summary.json", {}), conditions=[c.label for c in spec.conditions],
        thresholds={"harm": spec.safety.harmful_threshold, "quality": spec.safety.quality_threshold},
        cards=_read_json(folder / "summary.json", {}).get("judge_cards", []),
        corrected=_read_parquet(folder / "corrected_asr.parquet"),
        agreement=_read_parquet(folder / "judge_agreement.parquet"),
        overrefusal=_read_parquet(folder / "overrefusal.parquet"), left_out=_read_parquet(folder / "left_out.parquet"),
        summary_per_condition=_read_parquet(folder / "summary_per_condition.parquet"),
    )
    _add_earlier_judges(spec, stages, store, inputs)
    return inputs


def _add_earlier_judges(spec, stages: list, store, inputs: SafetyInputs) -> None:
    """Append to the judge agreement the judges that rated these answers in an earlier run of the
    folder (re-judged with another ``safety.judge``): their verdicts are still there."""
    from collapselab.safety.judge_report import agreement_with_earlier, earlier_judges

    verdicts = _read_parquet(store.final_dir(next(s for s in stages if s.kind == "safety").ref) / "verdicts.parquet")
    earlier = earlier_judges(store, stages, harmful_threshold=spec.safety.harmful_threshold)
    if not earlier or verdicts.empty:
        return
    extra = agreement_with_earlier(verdicts, inputs.cards, earlier, n_resamples=spec.safety.bootstrap,
                                   confidence=spec.safety.confidence, seed=spec.safety.seed)
    inputs.agreement = pd.concat([inputs.agreement, extra], ignore_index=True) if not inputs.agreement.empty else extra


def _preference(spec, stages: list, store) -> PreferenceInputs | None:
    stage = next((s for s in stages if s.kind == "preference"), None)
    if stage is None:
        return None
    folder = store.final_dir(stage.ref)
    frames = {name: _read_parquet(folder / f"{name}.parquet")
              for name in ("source_scores", "bias", "position", "matrix", "rating_scores", "tests",
                           "comparisons", "ratings", "per_item")}
    judges = [_read_json(store.final_dir(s.ref) / "summary.json", {"judge": s.name})
              for s in stages if s.kind == "prefer"]
    cs = next((s for s in stages if s.kind == "preference_controls"), None)
    controls = ({p.stem: pd.read_parquet(p) for p in sorted(store.final_dir(cs.ref).glob("*.parquet"))}
                if cs is not None else {})
    return PreferenceInputs(**frames, judges=judges, info=_read_json(folder / "summary.json", {}),
                            conditions=[c.label for c in spec.conditions], controls=controls)


def _capability(spec, stages: list, store) -> CapabilityInputs | None:
    stage = next((s for s in stages if s.kind == "capability_summary"), None)
    if stage is None:
        return None
    folder = store.final_dir(stage.ref)
    return CapabilityInputs(scores=_read_parquet(folder / "scores.parquet"),
                            differences=_read_parquet(folder / "differences.parquet"),
                            info=_read_json(folder / "summary.json", {}), conditions=[c.label for c in spec.conditions])


def collect(spec, run_dir: str | Path) -> ReportInputs:
    """Read every finished stage the report needs; raises if an enabled experiment's final
    stages are not done."""
    from collapselab.config.load import spec_to_yaml
    from collapselab.pipeline.graph import build_graph
    from collapselab.store.run import RunStore

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    stages = build_graph(spec)
    _check_done(stages, store, run_dir)
    collapse = any(s.kind == "stats" for s in stages)
    counts: dict[str, int] = {}
    for s in stages:
        counts[s.kind] = counts.get(s.kind, 0) + 1
    parts = _collapse_parts(stages, store)
    safety, preference = _safety(spec, stages, store), _preference(spec, stages, store)
    _mark_endpoints(spec, parts, safety, preference)
    inputs = ReportInputs(
        title=spec.name, config_yaml=spec_to_yaml(spec), **parts,
        embedding_map=_embedding_map(stages, store) if collapse else pd.DataFrame(),
        # without Experiment 1 the answers to the test prompts are shown nowhere
        responses=_responses(stages, store) if collapse else pd.DataFrame(),
        training=_training(stages, store), run_dir=str(run_dir), stage_counts=counts, collapse=collapse,
        safety=safety, preference=preference, capability=_capability(spec, stages, store),
        conditions=[c.label for c in spec.conditions],
        primary=spec.stats.primary_endpoints, primary_correction=spec.stats.correction,
    )
    if spec.hypotheses.tests:
        from collapselab.report.findings import findings_frames

        inputs.findings, inputs.hypotheses = findings_frames(spec, parts, safety, preference,
                                                             list(spec.target_names))
        inputs.hypotheses_settings = spec.hypotheses
    from collapselab.report.sections import SectionContext, build_sections

    inputs.sections, inputs.section_failures = build_sections(SectionContext(spec, stages, store, inputs))
    inputs.condition_notes = {label: note for section in inputs.sections
                              for label, note in section.condition_notes.items()}
    return inputs


def _mark_endpoints(spec, parts: dict[str, Any], safety: SafetyInputs | None,
                    preference: PreferenceInputs | None) -> None:
    """Primary endpoints across the three experiments form one corrected family (stats.primary);
    every experiment's test table gets ``endpoint`` and ``p_primary``."""
    from collapselab.stats.endpoints import mark_endpoints

    tables = {"collapse": parts["tests"]}
    if safety is not None:
        tables["safety"] = safety.tests
    if preference is not None:
        tables["preference"] = preference.tests
    marked = mark_endpoints(tables, spec.stats.primary_endpoints, spec.stats.correction)
    parts["tests"] = marked["collapse"]
    if safety is not None:
        safety.tests = marked["safety"]
    if preference is not None:
        preference.tests = marked["preference"]
