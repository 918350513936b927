"""Experiment 2 (safety) in the report: the judges and their calibration, the metrics per run and
prompt kind, attack success per template, the tests, warnings and example answers.

Like every section module, the builders return :class:`~collapselab.report.format.Table` objects of
formatted, *unescaped* text; both renderers show the same cells. The figures are in
:mod:`collapselab.report.safety_plots`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from collapselab.report.format import (
    MISSING,
    Table,
    excerpt,
    fmt_ci,
    fmt_effect,
    fmt_int,
    fmt_num,
    fmt_rate,
    fmt_text,
    is_missing,
    rate_ci,
)
from collapselab.report.inputs import SafetyInputs
from collapselab.report.labels import constant_labels, run_columns, run_label, sort_runs
from collapselab.report.stat_tests import all_tests_table, omnibus_notes, omnibus_table, pairwise_table

PROMPT_KINDS = ("plain", "jailbreak")
#: how a prompt kind reads in a heading
KIND_NAMES = {"plain": "Plain harmful prompts", "jailbreak": "Jailbreak-wrapped prompts",
              "all": "All prompts"}
ROLE_NAMES = {"harm": "harmfulness judge", "quality": "quality judge", "refusal": "refusal detector"}
#: the metrics of the per-run tables: summary metric → column header (direction: for the reader,
#: a safer model has lower harm, attack success and danger zone, and higher quality)
METRIC_COLUMNS = {"mean_harm": "mean harm ↓", "mean_quality": "mean quality ↑",
                  "refusal_rate": "refusal rate", "attack_success_rate": "attack success ↓",
                  "danger_zone": "danger zone ↓"}
MEANS = ("mean_harm", "mean_quality")
#: the tests' per-item metrics and whether higher is better (for the "better" column)
TEST_DIRECTIONS = {"harm": False, "quality": True}
#: judge reasons shown per example, in characters
REASON_CHARS = 300
#: example answers per run: this many plain and jailbreak prompts (the same ones for every run)
EXAMPLES_PER_KIND = {"plain": 2, "jailbreak": 1}
#: models up to this size judge only as a smoke test
SMALL_JUDGE_PARAMETERS = 3e9

_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([mb])(?![a-z])", re.IGNORECASE)


# ------------------------------------------------------------------------------------------
# The judges
# ------------------------------------------------------------------------------------------


def model_size(model_id: str) -> float | None:
    """Parameters of a model as its name states them ("smollm2-135m-instruct" → 1.35e8,
    "qwen2.5-coder-1.5b" → 1.5e9); None when the name does not say."""
    match = _SIZE.search(str(model_id).rsplit("/", 1)[-1])
    if match is None:
        return None
    return float(match.group(1)) * (1e6 if match.group(2).lower() == "m" else 1e9)


def _size_text(parameters: float) -> str:
    if parameters >= 1e9:
        return f"{parameters / 1e9:g}B"
    return f"{parameters / 1e6:g}M"


def judge_description(model_id: str) -> str:
    """What a reader should make of a judge, in plain words: a mock, a small model (a smoke test,
    not evidence), or a model whose calibration decides."""
    model_id = str(model_id)
    if model_id.startswith("mock/"):
        return "a scripted mock model — its verdicts are fixed text, a test of the pipeline, not evidence"
    size = model_size(model_id)
    if size is not None and size <= SMALL_JUDGE_PARAMETERS:
        return f"a {_size_text(size)}-parameter model — its verdicts are a smoke test, not evidence"
    if size is not None:
        return (f"a {_size_text(size)}-parameter model — trust its scores only as far as its calibration "
                "below allows")
    return "trust its scores only as far as its calibration below allows"


def judge_notes(safety: SafetyInputs) -> list[str]:
    """One sentence per judge model: who judged what, and what that is worth."""
    judges = dict(safety.info.get("judges") or {})
    for entry in safety.calibration:  # a run without summary.json still names its judges here
        if entry.get("role") in ("harm", "quality"):
            judges.setdefault(entry["role"], entry.get("judge"))
    roles: dict[str, list[str]] = {}
    for role in ("harm", "quality"):
        if judges.get(role):
            what = {"harm": "Harmfulness", "quality": "Quality"}[role]
            roles.setdefault(str(judges[role]), []).append(what)
    notes = [f"{' and '.join(what)} judged by {model}: {judge_description(model)}."
             for model, what in roles.items()]
    if any(e.get("role") == "refusal" for e in safety.calibration) or not safety.judged.empty:
        notes.append("Refusals are flagged by a phrase detector (no model): an answer that opens with a "
                     "refusal phrase counts as a refusal.")
    return notes


def calibration_table(calibration: Sequence[Mapping[str, Any]]) -> Table:
    """Each judge's agreement with the labelled calibration set: accuracy and Cohen's κ (chance-
    corrected agreement, Cohen 1960), unparsed judgements, and whether it is trusted."""
    if not calibration:
        return Table(pd.DataFrame(), "The judges were not calibrated (safety.calibrate: false).")
    frame = pd.DataFrame({
        "role": [ROLE_NAMES.get(str(e.get("role")), fmt_text(e.get("role"))) for e in calibration],
        "judge": [excerpt(e.get("judge"), 80) or MISSING for e in calibration],
        "items": [fmt_int(e.get("n")) for e in calibration],
        "accuracy": [fmt_rate(e.get("accuracy")) for e in calibration],
        "Cohen's κ": [fmt_effect(e.get("kappa")) for e in calibration],
        "κ (parsed only)": [fmt_effect(e.get("kappa_parsed")) for e in calibration],
        "unparsed": [fmt_int(e.get("n_unparsed", 0)) for e in calibration],
        "trusted": ["yes" if e.get("trust") else "no" for e in calibration],
        "verdict": [str(e.get("verdict") or "") for e in calibration],
    })
    minimum = next((e.get("min_kappa") for e in calibration if not is_missing(e.get("min_kappa"))), None)
    caption = ("Agreement of each judge with the labelled calibration set, measured before it judged any "
               "answer. κ = Cohen's kappa, chance-corrected agreement (0: chance, 1: perfect); an unparsed "
               "judgement counts as a disagreement, \"parsed only\" leaves those out."
               + (f" A judge is trusted when κ ≥ {float(minimum):g}." if minimum is not None else ""))
    return Table(frame, caption, set(), {"items", "accuracy", "Cohen's κ", "κ (parsed only)", "unparsed"},
                 wide={"verdict"})


# ------------------------------------------------------------------------------------------
# The metrics
# ------------------------------------------------------------------------------------------


RUN_KEYS = ("target", "condition", "seed", "generation")


def present_keys(frame: pd.DataFrame) -> list[str]:
    """The run keys a table has (older runs and hand-made tables have no ``generation``)."""
    return [k for k in RUN_KEYS if k in frame.columns]


def run_mask(frame: pd.DataFrame, run: Mapping[str, Any]) -> pd.Series:
    """The rows of ``frame`` that belong to ``run`` (same target, condition and seed; labels are
    compared as text, so a seed read back as 42.0 still matches 42 and missing matches missing)."""
    mask = pd.Series(True, index=frame.index)
    for key in RUN_KEYS:
        if key in frame.columns and key in run:
            mask &= frame[key].astype(object).map(fmt_text) == fmt_text(run.get(key))
    return mask


def clustered(row: Mapping[str, Any]) -> bool:
    """Whether the row's bootstrap resampled clusters (jailbreak templates and/or prompts): then
    its interval, not the Wilson interval (which assumes independent items), is the one to show."""
    unit = row.get("bootstrap")
    return not is_missing(unit) and str(unit) != "item"


def _interval(row: Mapping[str, Any], metric: str) -> str:
    """A mean with its bootstrap interval; a rate with its Wilson interval (which, unlike a
    bootstrap, is not degenerate when every answer is harmful or none is) where the items are
    independent, with the cluster bootstrap interval where they are not (jailbreak items), widened
    to contain the Wilson interval."""
    if metric in MEANS:
        return fmt_ci(row.get("value"), row.get("ci_low"), row.get("ci_high"))
    if clustered(row) and not is_missing(row.get("ci_low")):
        low, high = row.get("ci_low"), row.get("ci_high")
        # a bootstrap is degenerate when every answer is harmful or none is ([1, 1]): never show
        # less uncertainty than the Wilson interval of independent items
        if not (is_missing(row.get("wilson_low")) or is_missing(row.get("wilson_high"))):
            low, high = min(low, row.get("wilson_low")), max(high, row.get("wilson_high"))
        return rate_ci(row.get("value"), low, high)
    if not (is_missing(row.get("wilson_low")) or is_missing(row.get("wilson_high"))):
        return rate_ci(row.get("value"), row.get("wilson_low"), row.get("wilson_high"))
    return rate_ci(row.get("value"), row.get("ci_low"), row.get("ci_high"))


def _successes(row: Mapping[str, Any] | None) -> Any:
    """The count behind a rate (``successes``, else value × n)."""
    if row is None:
        return None
    if not is_missing(row.get("successes")):
        return row["successes"]
    if is_missing(row.get("value")) or is_missing(row.get("n")):
        return None
    return round(float(row["value"]) * float(row["n"]))


def _cells(rows: pd.DataFrame) -> dict[str, str]:
    """The metric cells of one run (one prompt kind and category)."""
    by_metric = {str(r["metric"]): r for r in rows.to_dict("records")}
    cells = {header: _interval(by_metric[m], m) if m in by_metric else MISSING
             for m, header in METRIC_COLUMNS.items()}
    answers = by_metric.get("refusal_rate") or by_metric.get("empty_rate")  # rates over all answers
    cells["answers"] = fmt_int(answers["n"]) if answers else MISSING
    cells["unparsed harm / quality"] = (f"{fmt_int(_successes(by_metric.get('unparsed_harm_rate')))} / "
                                        f"{fmt_int(_successes(by_metric.get('unparsed_quality_rate')))}")
    return cells


_NUMERIC = {*METRIC_COLUMNS.values(), "answers", "unparsed harm / quality"}


def metrics_table(summary: pd.DataFrame, prompt_kind: str, conditions: Sequence[str] = ()) -> Table:
    """One row per run (target × condition × seed): mean harm and quality with bootstrap intervals,
    refusal rate, attack success rate and danger zone with Wilson intervals, for one prompt kind
    over all categories."""
    rows = summary[(summary["prompt_kind"] == prompt_kind) & (summary["category"] == "all")] \
        if not summary.empty else summary
    if rows.empty:
        return Table(pd.DataFrame(), f"no {prompt_kind} prompts in this run")
    labels = run_columns(rows)
    runs = sort_runs(rows.drop_duplicates(present_keys(rows)), conditions)
    body = []
    for run in runs.to_dict("records"):
        part = rows[run_mask(rows, run)]
        body.append({**{c: fmt_text(run[c]) for c in labels}, **_cells(part)})
    shared = constant_labels(rows)
    units = {str(u) for u in rows.get("bootstrap", pd.Series(dtype=object)).dropna() if str(u) != "item"}
    clusters = (f" Jailbreak items are templates × prompts: their intervals (means and rates) come from a "
                f"bootstrap that resamples {' / '.join(sorted(units))} clusters (safety.jailbreak_bootstrap), "
                "since answers to one template or one prompt are not independent." if units else "")
    caption = ("Mean harmfulness and quality (1–5 judge scores) with bootstrap intervals; refusal rate "
               "(phrase detector), attack success rate (share of harm-judged answers with harm ≥ "
               "threshold) and danger zone (share of answers judged both harmful and of high quality) with "
               "Wilson score intervals [low, high]." + clusters + " Unparsed judgements are left out of the "
               "means and rates that need them." + (f" All rows: {shared}." if shared else ""))
    return Table(pd.DataFrame(body), caption, set(), _NUMERIC)


def category_table(summary: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """The metrics per harm category, for plain and jailbreak prompts separately."""
    rows = summary[(summary["category"] != "all") & summary["prompt_kind"].isin(PROMPT_KINDS)] \
        if not summary.empty else summary
    if rows.empty:
        return Table(pd.DataFrame(), "no per-category results")
    labels = run_columns(rows)
    body = []
    for kind in PROMPT_KINDS:
        for category in pd.unique(rows.loc[rows["prompt_kind"] == kind, "category"]):
            part = rows[(rows["prompt_kind"] == kind) & (rows["category"] == category)]
            for run in sort_runs(part.drop_duplicates(present_keys(part)), conditions).to_dict("records"):
                cell = part[run_mask(part, run)]
                body.append({"category": fmt_text(category), "prompts": kind,
                             **{c: fmt_text(run[c]) for c in labels}, **_cells(cell)})
    return Table(pd.DataFrame(body), "The per-run metrics of the table above, per harm category.", set(),
                 _NUMERIC)


def template_table(templates: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """Attack success per jailbreak template (rows) and run (columns): "rate (harmful of judged)"."""
    if templates.empty:
        return Table(pd.DataFrame(), "no jailbreak templates in this run")
    labels = run_columns(templates)
    runs = sort_runs(templates.drop_duplicates(present_keys(templates)), conditions)
    headers = {run_label(r, labels): r for r in runs.to_dict("records")}
    body = []
    for template in pd.unique(templates["template_id"]):
        line = {"template": fmt_text(template)}
        part = templates[templates["template_id"] == template]
        for header, run in headers.items():
            hit = part[run_mask(part, run)]
            if hit.empty:
                line[header] = MISSING
                continue
            r = hit.iloc[0]
            counts = f"{fmt_int(r['n_harmful'])}\u00a0of\u00a0{fmt_int(r['n_parsed'])}"
            line[header] = f"{fmt_rate(r['asr'])} ({counts})"
        body.append(line)
    shared = constant_labels(templates)
    caption = ("Attack success rate per jailbreak template: the share of harm-judged answers with harm ≥ "
               "threshold (harmful answers of judged answers)."
               + (f" All columns: {shared}." if shared else ""))
    return Table(pd.DataFrame(body), caption, set(), set(headers))


# ------------------------------------------------------------------------------------------
# Warnings and examples
# ------------------------------------------------------------------------------------------


def _unparsed_line(judged: pd.DataFrame, role: str, conditions: Sequence[str]) -> str | None:
    """How many of a judge's verdicts did not parse, per run, and what they are left out of."""
    if judged.empty or role not in judged.columns:
        return None
    missing = judged[role].isna()
    if not missing.any():
        return None
    labels = run_columns(judged)
    per_run = []
    ordered = sort_runs(judged.assign(_missing=missing), conditions)
    for _, part in ordered.groupby(labels, sort=False, dropna=False):
        if part["_missing"].any():
            per_run.append(f"{run_label(part.iloc[0].to_dict(), labels)} {int(part['_missing'].sum())}")
    left_out = ("mean harm, attack success and the danger zone" if role == "harm"
                else "mean quality and the danger zone")
    return (f"Safety: {int(missing.sum())} of {len(judged)} {ROLE_NAMES[role]} verdicts did not parse "
            f"({', '.join(per_run)}); those answers are left out of {left_out}.")


def safety_warnings(safety: SafetyInputs) -> list[str]:
    """Untrusted judges, unparsed judgements (answers and calibration items), tests not computed."""
    out = []
    if not safety.calibration:
        out.append("Safety: the judges were not calibrated (safety.calibrate: false): nothing says how far "
                   "their scores can be trusted.")
    for e in safety.calibration:
        role = ROLE_NAMES.get(str(e.get("role")), str(e.get("role")))
        if not e.get("trust"):
            verdict = e.get("verdict") or f"κ = {fmt_effect(e.get('kappa'))} on the calibration set"
            out.append(f"Safety: untrusted {role} ({excerpt(e.get('judge'), 80)}): {verdict}")
        if not is_missing(e.get("n_unparsed")) and int(e.get("n_unparsed") or 0) > 0:
            out.append(f"Safety: the {role} left {int(e['n_unparsed'])} of {fmt_int(e.get('n'))} calibration "
                       "items unparsed (counted as disagreements in κ).")
    for role in ("harm", "quality"):
        line = _unparsed_line(safety.judged, role, safety.conditions)
        out += [line] if line else []
    out += omnibus_notes(safety.tests, prefix="Safety: ")
    return out


def _score(value: Any, error: Any) -> str:
    if is_missing(value):
        return "unparsed" + (f" ({excerpt(error, 120)})" if not is_missing(error) and error else "")
    return fmt_num(value) if not float(value).is_integer() else str(int(value))


def safety_examples(judged: pd.DataFrame, conditions: Sequence[str] = (),
                    per_kind: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """A few answers per run — the same prompts for every run (the first plain and jailbreak items
    every run answered) — each with its scores, the refusal flag and the judges' reasons, cut."""
    if judged.empty:
        return []
    per_kind = dict(EXAMPLES_PER_KIND if per_kind is None else per_kind)
    labels = run_columns(judged)
    ordered = sort_runs(judged, conditions)
    groups = list(ordered.groupby(labels, sort=False, dropna=False))
    shared = set.intersection(*(set(part["item_id"]) for _, part in groups))
    chosen: list[str] = []
    for kind, count in per_kind.items():
        items = ordered.loc[(ordered["prompt_kind"] == kind) & ordered["item_id"].isin(shared), "item_id"]
        chosen += list(dict.fromkeys(items))[:count]
    out = []
    for _, part in groups:
        first = part.iloc[0].to_dict()
        picked = part.drop_duplicates("item_id").set_index("item_id")
        items = []
        for item_id in chosen:
            r = picked.loc[item_id]
            items.append({
                "item_id": fmt_text(item_id), "prompt_kind": fmt_text(r["prompt_kind"]),
                "category": fmt_text(r["category"]),
                "template": "" if is_missing(r["template_id"]) else str(r["template_id"]),
                "prompt": excerpt(r["prompt"]), "response": excerpt(r["response"]),
                "harm": _score(r["harm"], r.get("harm_error")),
                "quality": _score(r["quality"], r.get("quality_error")),
                "refused": "yes" if bool(r["refused"]) else "no",
                "harm_reason": excerpt(r.get("harm_reason"), REASON_CHARS),
                "quality_reason": excerpt(r.get("quality_reason"), REASON_CHARS),
            })
        out.append({"label": run_label(first, labels), "total": len(part), "items": items})
    return out


# ------------------------------------------------------------------------------------------
# Everything, in order
# ------------------------------------------------------------------------------------------


@dataclass
class SafetyTables:
    """Experiment 2's section, in the order both renderers show it."""

    judges: list[str]
    calibration: Table
    metrics: list[tuple[str, Table]]  # (heading, table) per prompt kind
    categories: Table
    templates: Table
    omnibus: Table
    significant_pairs: Table
    all_tests: Table
    warnings: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    judge_report: Table = field(default_factory=lambda: Table(pd.DataFrame()))
    judge_agreement: Table = field(default_factory=lambda: Table(pd.DataFrame()))
    corrected: Table = field(default_factory=lambda: Table(pd.DataFrame()))
    overrefusal: Table = field(default_factory=lambda: Table(pd.DataFrame()))
    #: (heading, table) per prompt kind, each condition over its own verdicts — only when the
    #: same-items rule left something out (else it equals ``metrics``)
    per_condition: list[tuple[str, Table]] = field(default_factory=list)


def build_safety_tables(safety: SafetyInputs) -> SafetyTables:
    """Every table, note and warning of the safety section."""
    from collapselab.report.judges import (
        corrected_asr_table,
        judge_agreement_table,
        judge_report_table,
        left_out_notes,
        overrefusal_view,
        smoke_headers,
    )

    conditions = safety.conditions
    left = not safety.left_out.empty and bool(safety.left_out["n_left_out"].sum())
    return SafetyTables(
        judges=judge_notes(safety),
        calibration=calibration_table(safety.calibration),
        metrics=[(KIND_NAMES[k], smoke_headers(metrics_table(safety.summary, k, conditions), safety.cards))
                 for k in PROMPT_KINDS],
        per_condition=[(KIND_NAMES[k], smoke_headers(metrics_table(safety.summary_per_condition, k, conditions),
                                                     safety.cards)) for k in PROMPT_KINDS] if left else [],
        judge_report=judge_report_table(safety.cards),
        judge_agreement=judge_agreement_table(safety.agreement),
        corrected=corrected_asr_table(safety.corrected, conditions),
        overrefusal=overrefusal_view(safety.overrefusal, safety.summary, conditions),
        categories=category_table(safety.summary, conditions),
        templates=template_table(safety.templates, conditions),
        omnibus=omnibus_table(safety.tests),
        significant_pairs=pairwise_table(safety.tests, TEST_DIRECTIONS, significant_only=True),
        all_tests=all_tests_table(safety.tests),
        warnings=[*safety_warnings(safety), *left_out_notes(safety.left_out)],
        examples=safety_examples(safety.judged, conditions),
    )
