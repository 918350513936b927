"""The report section on curation (issue 13, the mitigation arm): what each curate stage kept, and
what curating changed.

* "What was kept" — one row per finished curate stage, read from its ``summary.json``
  (:func:`collapselab.synth.curation.run_curate`): the score and rule, how many examples were
  scored, kept and dropped (empty answers among them), the keep rate, the cut and the median score
  of the kept and the dropped examples;
* "Curated vs uncurated" — for each curated condition whose uncurated twin (the same condition
  without ``|curate=…``, its decoding kept) is also in the run: the primary statistic of every
  Experiment 1 metric on both, with its interval, and the difference curated − uncurated, paired
  on (target, seed, generation). The curated value is emphasised where it is better by the
  metric's direction. Differences of single runs are not tests: with several seeds, read them
  across the seeds' rows.

Read-only: nothing is recomputed.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from collapselab.report.format import Table, fmt_ci, fmt_num, fmt_rate, fmt_text, is_missing, metric_header
from collapselab.report.labels import directions, primary_rows, varying_columns
from collapselab.report.sections import ReportSection, SectionContext, register_section

KEY = "curation"
TITLE = "Curation: what was kept, and what it changed"
#: how each score is named in the tables
SCORE_NAMES = {"perplexity": "perplexity", "judge": "quality rating", "length": "length", "detector": "P(human)"}
#: the columns curated and uncurated rows are paired on
PAIR_COLUMNS = ["target", "seed", "generation", "metric", "statistic"]


def _median(quantiles: Any) -> Any:
    return quantiles.get("median") if isinstance(quantiles, dict) else None


def kept_table(summaries: list[dict[str, Any]]) -> Table:
    """One row per curate stage summary (see the module docstring)."""
    rows = []
    for s in summaries:
        score = SCORE_NAMES.get(str(s.get("score")), str(s.get("score")))
        rows.append({
            "condition": fmt_text(s.get("condition")), "generation": fmt_text(s.get("generation", 0)),
            "data seed": fmt_text(s.get("data_seed")),
            "score": f"{score} ({s.get('kept_end')} kept)", "rule": fmt_text(s.get("rule")),
            "scored by": fmt_text(s.get("scoring_model")),
            "examples": fmt_num(s.get("n")), "kept": fmt_num(s.get("kept")),
            "dropped": fmt_num(s.get("dropped")), "of which empty": fmt_num(s.get("dropped_empty")),
            "copies": fmt_num(s.get("copies")), "keep rate": fmt_rate(s.get("keep_rate")),
            "cut": fmt_num(s.get("cut")),
            "median kept": fmt_num(_median(s.get("scores_kept"))),
            "median dropped": fmt_num(_median(s.get("scores_dropped"))),
        })
    frame = pd.DataFrame(rows)
    # columns that say nothing in this run: one generation, no per-seed data, no resampling
    constant = [c for c in ("generation", "data seed") if c in frame and len(set(frame[c])) == 1]
    if "copies" in frame and (frame["copies"] == frame["kept"]).all():
        constant.append("copies")
    frame = frame.drop(columns=constant)
    numeric = {"examples", "kept", "dropped", "of which empty", "copies", "keep rate", "cut", "median kept",
               "median dropped"} & set(frame.columns)
    return Table(frame, caption="Each curate stage: the examples it scored, how many the mix keeps, and the "
                 "score at the cut (keep_rate: the last kept score; threshold: the threshold; resampling "
                 "has none). Empty answers are dropped as the mix drops them.", numeric=numeric)


def _pairs(primary: pd.DataFrame, curated: str, uncurated: str) -> pd.DataFrame:
    """The primary rows of the two conditions, side by side, paired on :data:`PAIR_COLUMNS`."""
    keys = [c for c in PAIR_COLUMNS if c in primary.columns]
    frame = primary.copy()
    if "generation" in frame.columns:  # tables from before recursion have no generation: 0
        frame["generation"] = pd.to_numeric(frame["generation"], errors="coerce").fillna(0).astype(int)
    cols = [*keys, "value", "ci_low", "ci_high"]
    a = frame[frame["condition"] == curated][cols]
    b = frame[frame["condition"] == uncurated][cols]
    return a.merge(b, on=keys, suffixes=("_c", "_u"), how="inner")


def comparison_table(aggregates: pd.DataFrame, curated: str, uncurated: str) -> Table | None:
    """Every metric's primary statistic on ``curated`` and ``uncurated`` with the difference
    (None when the two share no (target, seed, generation, metric))."""
    primary = primary_rows(aggregates, ["condition"])
    if primary.empty:
        return None
    pairs = _pairs(primary, curated, uncurated)
    if pairs.empty:
        return None
    known = directions(aggregates)
    labels = varying_columns(pairs, ("target", "seed", "generation"))
    rows, highlight = [], set()
    for i, r in enumerate(pairs.itertuples(index=False)):
        row = r._asdict()
        direction = known.get(str(row["metric"]))
        diff = row["value_c"] - row["value_u"] if not (is_missing(row["value_c"]) or is_missing(row["value_u"])) \
            else float("nan")
        out = {c: fmt_text(row[c]) for c in labels}
        out["metric"] = metric_header(str(row["metric"]), direction)
        if "statistic" in row:
            out["statistic"] = fmt_text(row["statistic"])
        out["curated"] = fmt_ci(row["value_c"], row["ci_low_c"], row["ci_high_c"])
        out["uncurated"] = fmt_ci(row["value_u"], row["ci_low_u"], row["ci_high_u"])
        out["difference"] = fmt_num(diff)
        rows.append(out)
        if direction is not None and not is_missing(diff) and diff != 0 and (diff > 0) == direction:
            highlight.add((i, "curated"))
    return Table(pd.DataFrame(rows), highlight=highlight, numeric={"curated", "uncurated", "difference"},
                 caption=f"{curated} against {uncurated}: the primary statistic of each metric [interval], "
                         "difference = curated − uncurated; the curated value is emphasised where it is better "
                         "by the metric's direction (↑ higher, ↓ lower; no arrow: no better direction).")


def _summaries(ctx: SectionContext) -> list[dict[str, Any]]:
    out = []
    for _, folder in ctx.done("curate"):
        path = folder / "summary.json"
        if path.is_file():
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def build(ctx: SectionContext) -> ReportSection | None:
    curated = [c for c in ctx.spec.conditions if getattr(c, "curation", None)]
    summaries = _summaries(ctx)
    if not curated and not summaries:
        return None
    section = ReportSection(KEY, TITLE, intro=(
        "Curated conditions (single:a|curate=NAME) train on the synthetic data that survives a curation step "
        "between generation and mixing: a score per example (perplexity, a judge's quality rating, length or a "
        "detector's P(human)) and a rule (keep a share, keep beyond a threshold, or resample by P(human)/P(machine), "
        "Drayson et al. 2025). First what each step kept, then each curated condition against the same condition "
        "uncurated."))
    if summaries:
        section.tables.append(kept_table(summaries))
    else:
        section.warnings.append("Curation: no curate stage has finished yet.")
    labels = {c.label for c in ctx.spec.conditions}
    aggregates = getattr(ctx.inputs, "aggregates", None)
    for cond in curated:
        twin = cond.undecorated(keep_decoding=True).label
        if twin not in labels:
            section.intro += (f" {cond.label} has no uncurated twin in this run (add {twin!r} to conditions to "
                              "see what curating changed).")
            continue
        table = None if aggregates is None or aggregates.empty else comparison_table(aggregates, cond.label, twin)
        if table is None:
            section.warnings.append(f"Curation: no Experiment 1 metrics for both {cond.label} and {twin} yet.")
        else:
            section.tables.append(table)
    return section


register_section(KEY, TITLE, build)
