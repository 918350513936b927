"""Experiment 1 (distribution collapse) in the report: the metric tables (summary, training-data
diversity per source), the tests, the metric concordance, the factorial ANOVA, the seed spread,
the warnings and the example responses.

Every builder takes the raw frames of :class:`~collapselab.report.inputs.ReportInputs` and returns a
:class:`~collapselab.report.format.Table` of formatted, *unescaped* text; both renderers show the
same cells. The figures are in :mod:`collapselab.report.collapse_plots`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from collapselab.report.format import (
    MISSING,
    Table,
    empty_table,
    excerpt,
    fmt_ci,
    fmt_effect,
    fmt_int,
    fmt_num,
    fmt_p,
    fmt_rank,
    fmt_text,
    is_missing,
    metric_header,
)
from collapselab.report.labels import (
    condition_order,
    directions,
    primary_rows,
    qualified_labels,
    set_frame,
    set_labels,
    varying_columns,
)
from collapselab.report.stat_tests import ALPHA, omnibus_notes

#: example prompts shown per condition (the same prompts for every condition, so they compare)
EXAMPLES_PER_CONDITION = 3


# ------------------------------------------------------------------------------------------
# Metric tables (summary, training-data diversity)
# ------------------------------------------------------------------------------------------


def _column_labels(rows: pd.DataFrame, kinds: Sequence[str],
                   reference_kinds: Sequence[str]) -> dict[str, str]:
    """set_name → column header, contestants first (in order of appearance), then references."""
    labels = set_labels(rows)
    sets = set_frame(rows)
    ordered = [*sets.loc[sets["set_kind"].isin(kinds), "set_name"],
               *sets.loc[sets["set_kind"].isin(reference_kinds), "set_name"]]
    return {str(s): labels[str(s)] for s in ordered}


def metric_table(aggregates: pd.DataFrame, kinds: Sequence[str], reference_kinds: Sequence[str] = ("human",),
                 caption: str = "") -> Table:
    """Metrics × sets: each metric's primary statistic with its CI, the best set highlighted.

    One row per metric (runs have many metrics and few conditions, so this stays narrow). ``kinds``
    are the sets that compete for "best" (among the sets sharing target and generation);
    ``reference_kinds`` are the yardstick columns (the human references), shown but never
    highlighted. Metrics without a better direction get no highlight."""
    rows = primary_rows(aggregates, [*kinds, *reference_kinds])
    if rows.empty:
        return empty_table("no aggregates for these sets")
    known = directions(aggregates)
    # a metric none of the contestants has (e.g. output perplexity of training data, which has no
    # model of its own) would be a row of dashes; the skip is listed in the warnings instead
    metrics = [str(m) for m in pd.unique(rows.loc[rows["set_kind"].isin(kinds), "metric"])]
    rows = rows[rows["metric"].isin(metrics)]
    columns = _column_labels(rows, kinds, reference_kinds)
    values = rows.drop_duplicates(["metric", "set_name"]).set_index(["metric", "set_name"])

    body = []
    for m in metrics:
        line = {"metric": metric_header(m, known.get(m))}
        for set_name, header in columns.items():
            if (m, set_name) in values.index:
                r = values.loc[(m, set_name)]
                line[header] = fmt_ci(r["value"], r["ci_low"], r["ci_high"])
            else:
                line[header] = MISSING
        body.append(line)
    frame = pd.DataFrame(body, columns=["metric", *columns.values()])

    # best per metric within each (target, generation) scope; ties are all highlighted
    highlight: set[tuple[int, str]] = set()
    scope_cols = [c for c in ("target", "generation") if c in rows.columns]
    competing = rows[rows["set_kind"].isin(kinds) & rows["value"].notna()]
    for i, m in enumerate(metrics):
        direction = known.get(m)
        part = competing[competing["metric"] == m]
        if direction is None or part.empty:
            continue
        for _, group in part.groupby(scope_cols, dropna=False) if scope_cols else [((), part)]:
            if group["value"].nunique() < 2:  # everyone ties: no winner to point at
                continue
            best = group["value"].max() if direction else group["value"].min()
            highlight.update((i, columns[str(s)]) for s in group.loc[group["value"] == best, "set_name"])
    references = {columns[str(s)] for s in rows.loc[rows["set_kind"].isin(reference_kinds), "set_name"]}
    note = ("Primary statistic of each metric with its 95% bootstrap interval [low, high]. "
            "↑ higher is better, ↓ lower is better, no arrow: no better direction. Bold: best per metric"
            + (" and target" if varying_columns(rows[rows["set_kind"].isin(kinds)], ["target"]) else "")
            + " (none when all tie).")
    if references:
        note += " Grey, italic: references (not ranked)."
    return Table(frame, caption or note, highlight, set(columns.values()), reference=references)


def summary_table(aggregates: pd.DataFrame) -> Table:
    """Metrics × conditions, with the human references as a yardstick column."""
    return metric_table(aggregates, ("condition",), ("human",))


def source_table(aggregates: pd.DataFrame) -> Table:
    """Diversity of each source's synthetic training data, next to the human data."""
    if primary_rows(aggregates, ("source",)).empty:
        return empty_table("no per-source training-data metrics in this run")
    return metric_table(aggregates, ("source",), ("human",))



# ------------------------------------------------------------------------------------------
# Concordance
# ------------------------------------------------------------------------------------------


def _by_condition(frame: pd.DataFrame) -> pd.DataFrame:
    """Rank frames are stored with a ``condition`` column (Parquet) or indexed by it (in memory)."""
    if "condition" in frame.columns:
        return frame.set_index("condition")
    return frame


def kendalls_w_table(entries: Sequence[Mapping[str, Any]]) -> Table:
    """Kendall's W per target: how far all directed metrics agree on the ranking of conditions."""
    if not entries:
        return empty_table("no concordance was computed")

    def left_out(e: Mapping[str, Any]) -> str:
        parts = []
        if e.get("dropped"):
            parts.append("conditions: " + ", ".join(map(str, e["dropped"])))
        if e.get("metrics_dropped"):
            parts.append("metrics: " + ", ".join(map(str, e["metrics_dropped"])))
        return "; ".join(parts)

    frame = pd.DataFrame({
        "target": [fmt_text(e.get("target")) for e in entries],
        "W": [fmt_effect(e.get("W")) for e in entries],
        "χ²": [fmt_num(e.get("chi2")) for e in entries],
        "df": [fmt_int(e.get("df")) for e in entries],
        "p": [fmt_p(e.get("p")) for e in entries],
        "conditions": [fmt_int(e.get("n")) for e in entries],
        "metrics": [fmt_int(e.get("m")) for e in entries],
        "left out": [left_out(e) for e in entries],
        "note": [str(e.get("note") or "") for e in entries],
    })
    caption = ("Kendall's W over the directed metrics: 1 = every metric ranks the conditions the same way, "
               "0 = no agreement; χ² test with n − 1 df (approximate for few conditions).")
    return Table(frame, caption, set(), {"W", "χ²", "df", "p", "conditions", "metrics"}, wide={"note"})


def agreement_table(pairwise: pd.DataFrame) -> Table:
    """For each pair of conditions, how many directed metrics call each better: a verdict backed
    by every metric is robust to the choice of metric, a 5-of-9 verdict is not."""
    if pairwise.empty:
        return empty_table("fewer than two conditions: nothing to compare")
    rows = pairwise.reset_index(drop=True)

    def share(r) -> str:
        if is_missing(r.agreement):
            return MISSING
        backing = max(int(r.n_a_better), int(r.n_b_better))
        return f"{100 * float(r.agreement):.0f}%\u00a0({backing}\u00a0of\u00a0{int(r.n_metrics)})"

    frame = pd.DataFrame({
        "a": rows["condition_a"].map(fmt_text),
        "b": rows["condition_b"].map(fmt_text),
        "a better": rows["n_a_better"].map(fmt_int),
        "b better": rows["n_b_better"].map(fmt_int),
        "tied": rows["n_tied"].map(fmt_int),
        "verdict": rows["majority"].map(fmt_text),
        "agreement": [share(r) for r in rows.itertuples(index=False)],
        "metrics for a": rows["metrics_a_better"].map(_name_list),
        "metrics for b": rows["metrics_b_better"].map(_name_list),
    })
    highlight = {(i, "agreement") for i, a in enumerate(rows["agreement"]) if not is_missing(a) and a >= 1}
    caption = ("Which conclusions are robust: for each pair of conditions, the directed metrics' votes on "
               "which is better and the share backing the majority verdict (ties count against it). "
               "Bold: every metric agrees.")
    return Table(frame, caption, highlight, {"a better", "b better", "tied", "agreement"},
                 wide={"metrics for a", "metrics for b"})


def _in_order(index: pd.Index, order: Sequence[str]) -> list:
    """``index``'s labels in ``order`` (the config's condition order), unknown ones last — the
    stored rank frames come alphabetically sorted from a pivot."""
    known = [c for c in order if c in set(map(str, index))]
    lookup = {str(c): c for c in index}
    return [lookup[c] for c in known] + [c for c in index if str(c) not in known]


def _name_list(value: Any) -> str:
    """The concordance's comma-joined metric names, spaced so they wrap."""
    return "" if is_missing(value) else str(value).replace(",", ", ")


def rank_table(ranks: pd.DataFrame, value_ranks: pd.DataFrame, metric_directions: Mapping[str, bool | None],
               order: Sequence[str] = ()) -> Table:
    """Metrics × conditions: each directed metric's rank of the conditions (1 = best), their mean
    rank, then the undirected metrics ranked by value (1 = highest) for reference."""
    ranks = _by_condition(ranks)
    value_ranks = _by_condition(value_ranks) if not value_ranks.empty else pd.DataFrame(index=ranks.index)
    if ranks.empty and value_ranks.empty:
        return empty_table("no ranks")
    conditions = _in_order(ranks.index, order)
    headers = [fmt_text(c) for c in conditions]
    body: list[dict[str, str]] = []
    highlight: set[tuple[int, str]] = set()

    def add(label: str, values: pd.Series, formatter, best: bool) -> None:
        values = values.reindex(conditions)
        if best and values.notna().any():
            best_value = values.min()
            highlight.update((len(body), h) for h, r in zip(headers, values, strict=True) if r == best_value)
        body.append({"metric": label, **{h: formatter(v) for h, v in zip(headers, values, strict=True)}})

    for m in ranks.columns:
        add(metric_header(str(m), metric_directions.get(str(m))), ranks[m], fmt_rank, True)
    if len(ranks.columns) > 1:
        add("mean rank", ranks.mean(axis=1, skipna=True), fmt_num, True)
    for m in value_ranks.columns:
        add(f"{m} (by value)", value_ranks[m], fmt_rank, False)
    caption = ("Rank of each condition per metric (1 = best; ties share the average rank). Bold: best. "
               "Rows marked \"by value\" have no better direction: 1 = highest value.")
    return Table(pd.DataFrame(body, columns=["metric", *headers]), caption, highlight, set(headers))


def correlation_table(correlations: pd.DataFrame) -> Table:
    """Kendall's τ_b and Spearman's ρ between every pair of metrics (on "goodness")."""
    if correlations.empty:
        return empty_table("fewer than two metrics")
    rows = correlations.reset_index(drop=True)
    frame = pd.DataFrame({
        "metric a": rows["metric_a"].map(fmt_text),
        "metric b": rows["metric_b"].map(fmt_text),
        "τ": rows["tau"].map(fmt_effect),
        "p (τ)": rows["tau_p"].map(fmt_p),
        "ρ": rows["rho"].map(fmt_effect),
        "p (ρ)": rows["rho_p"].map(fmt_p),
        "conditions": rows["n"].map(fmt_int),
        "note": rows["note"].map(lambda v: "" if is_missing(v) else str(v)),
    })
    caption = ("τ > 0: the two metrics agree on which conditions are better "
               "(values oriented so larger = better).")
    return Table(frame, caption, set(), {"τ", "p (τ)", "ρ", "p (ρ)", "conditions"}, wide={"note"})



@dataclass
class ConcordanceTables:
    """The concordance of one target's metrics: ranks, pairwise agreement, correlations."""

    target: str
    ranks: Table
    agreement: Table
    correlations: Table


def concordance_tables(concordance: Mapping[str, Mapping[str, pd.DataFrame]],
                       aggregates: pd.DataFrame) -> list[ConcordanceTables]:
    """Per target (``ReportInputs.concordance``), its rank, agreement and correlation tables."""
    known = directions(aggregates)
    out = []
    for target, frames in concordance.items():
        out.append(ConcordanceTables(
            target=str(target),
            ranks=rank_table(frames.get("ranks", pd.DataFrame()), frames.get("value_ranks", pd.DataFrame()),
                             known, condition_order(aggregates)),
            agreement=agreement_table(frames.get("pairwise", pd.DataFrame())),
            correlations=correlation_table(frames.get("correlations", pd.DataFrame())),
        ))
    return out


# ------------------------------------------------------------------------------------------
# Factorial, seed spread
# ------------------------------------------------------------------------------------------


def factorial_table(factorial: pd.DataFrame) -> Table:
    """Aligned-rank-transform ANOVA rows (one per metric and effect)."""
    if factorial.empty:
        return empty_table("no factorial analysis")
    rows = factorial.reset_index(drop=True)
    frame = pd.DataFrame({
        "metric": rows["metric"].map(fmt_text) if "metric" in rows else MISSING,
        "effect": rows["effect"].map(fmt_text),
        "F": rows["F"].map(fmt_num),
        "df1": rows["df1"].map(fmt_int),
        "df2": rows["df2"].map(fmt_int),
        "p": rows["p"].map(fmt_p),
        "partial η²": rows["partial_eta_squared"].map(fmt_effect),
        "n": rows["n"].map(fmt_int),
        "NaN dropped": rows["n_dropped"].map(fmt_int),
    })
    highlight = {(i, "p") for i, p in enumerate(rows["p"]) if not is_missing(p) and p < ALPHA}
    caption = (f"Aligned rank transform ANOVA (Wobbrock et al. 2011): main effects and interactions of the "
               f"grid's factors, partial η² on the ranks. Bold: p < {ALPHA}.")
    return Table(frame, caption, highlight, {"F", "df1", "df2", "p", "partial η²", "n", "NaN dropped"})


def seed_spread_table(spread: pd.DataFrame, aggregates: pd.DataFrame | None = None) -> Table:
    """Between-seed spread as metrics × conditions cells "mean ± sd" — the layout of the summary
    table, so the two read side by side. Cells note an unusual seed count and NaN seeds; min, max,
    range and cv are in the written ``seed_spread`` files."""
    if spread.empty:
        return empty_table("one seed per condition")
    rows = spread.reset_index(drop=True)
    known = directions(aggregates) if aggregates is not None else {}
    order = condition_order(aggregates) if aggregates is not None else []
    label_cols = [c for c in ("condition", "target", "generation") if c in rows.columns
                  and (c == "condition" or varying_columns(rows, [c]))]
    rows["column_label"] = rows[label_cols].astype(object).apply(
        lambda r: " · ".join(fmt_text(v) for v in r), axis=1)
    positions = {c: i for i, c in enumerate(order)}
    columns = sorted(pd.unique(rows["column_label"]),
                     key=lambda c: positions.get(c.split(" · ")[0], len(order)))
    usual = int(rows["n_seeds"].max()) if "n_seeds" in rows.columns else 0

    def cell(r: Any) -> str:
        text = f"{fmt_num(r.mean)} ± {fmt_num(r.sd)}"
        if int(r.n_seeds) != usual:
            text += f" (n\u00a0=\u00a0{int(r.n_seeds)})"
        if getattr(r, "n_nan", 0):
            text += f" ({int(r.n_nan)}\u00a0NaN)"
        return text

    metrics = [str(m) for m in pd.unique(rows["metric"])]
    if aggregates is not None and not aggregates.empty:  # the summary table's row order
        first = {m: i for i, m in enumerate(map(str, pd.unique(aggregates["metric"])))}
        metrics.sort(key=lambda m: first.get(m, len(first)))
    cells = {(str(r.metric), r.column_label): cell(r) for r in rows.itertuples(index=False)}
    body = [{"metric": metric_header(m, known.get(m)), **{c: cells.get((m, c), MISSING) for c in columns}}
            for m in metrics]
    caption = (f"Mean ± sd (ddof = 1) of each metric's primary statistic over {usual} training seeds. "
               "Min, max, range and cv are in seed_spread.csv.")
    return Table(pd.DataFrame(body, columns=["metric", *columns]), caption, set(), set(columns))



# ------------------------------------------------------------------------------------------
# Warnings
# ------------------------------------------------------------------------------------------


_NUMBER = re.compile(r"(\d+(?:\.\d+)?)")


def _merge_reasons(metric: str, items: Sequence[tuple[str, str]]) -> list[str]:
    """One line per metric and kind of reason, listing the sets. Reasons that differ only in one
    number ("the set has 90 tokens" / "... 11 tokens") are merged, the numbers listed in set order;
    anything else keeps its own line."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for label, reason in items:
        groups.setdefault(_NUMBER.sub("#", reason), []).append((label, reason))
    out = []
    for group in groups.values():
        labels = ", ".join(label for label, _ in group)
        parts = [_NUMBER.split(reason) for _, reason in group]
        varying = [i for i in range(1, len(parts[0]), 2) if len({p[i] for p in parts}) > 1]
        if not varying:
            out.append(f"{metric} on {labels}: {group[0][1]}")
        elif len(varying) == 1:
            i = varying[0]
            text = "".join("n" if k == i else piece for k, piece in enumerate(parts[0]))
            out.append(f"{metric} on {labels}: {text} (n = {', '.join(p[i] for p in parts)} respectively)")
        else:
            out += [f"{metric} on {label}: {reason}" for label, reason in group]
    return out



def warnings_list(inputs) -> list[str]:
    """Everything a reader must know before trusting a number: the statistics' notes, metrics
    skipped on a set, metrics undefined on a set and why, failed bootstrap resamples, undefined
    items, values dropped from tests, and conditions or metrics left out of the concordance.

    Nothing is summarised away, but lines are merged per metric (a skip on 12 sources is one line
    naming the 12), so the list stays readable."""
    out = [f"Statistics: {note}" for note in inputs.stats_notes]
    labels = qualified_labels(inputs.aggregates)
    skipped: dict[str, list[tuple[str, str]]] = {}
    reasons: dict[str, list[tuple[str, str]]] = {}
    failed: dict[str, list[str]] = {}
    for set_name, info in inputs.details.items():
        label = labels.get(set_name, set_name)
        for metric, reason in (info.get("skipped") or {}).items():
            skipped.setdefault(str(metric), []).append((label, str(reason)))
        for metric, entry in info.items():
            if metric == "skipped" or not isinstance(entry, Mapping):
                continue
            if entry.get("reason"):
                reasons.setdefault(str(metric), []).append((label, str(entry["reason"])))
            if entry.get("failed_resamples"):
                failed.setdefault(str(metric), []).append(f"{label} ({int(entry['failed_resamples'])})")
    for metric, items in skipped.items():
        out += [line.replace(f"{metric} on ", f"{metric} skipped on ", 1)
                for line in _merge_reasons(metric, items)]
    for metric, items in reasons.items():
        out += _merge_reasons(metric, items)
    out += [f"{metric}: bootstrap resamples failed on {', '.join(sets)}; each interval comes from the others"
            for metric, sets in failed.items()]

    agg = inputs.aggregates
    if not agg.empty and "n_undefined" in agg.columns:
        undefined = agg[agg["n_undefined"].fillna(0) > 0].drop_duplicates(["set_name", "metric"])
        for metric, part in undefined.groupby("metric", sort=False):
            sets = ", ".join(f"{labels.get(r.set_name, r.set_name)} ({int(r.n_undefined)} of {fmt_int(r.n)})"
                             for r in part.itertuples(index=False))
            out.append(f"{metric}: undefined items left out of its statistics on {sets}")

    out += omnibus_notes(inputs.tests)

    for entry in inputs.kendalls_w:
        target = fmt_text(entry.get("target"))
        if entry.get("note"):
            out.append(f"Concordance ({target}): {entry['note']}")
        if entry.get("dropped"):
            out.append(f"Concordance ({target}): conditions with a missing metric left out of Kendall's W: "
                       + ", ".join(map(str, entry["dropped"])))
        if entry.get("metrics_dropped"):
            out.append(f"Concordance ({target}): metrics without any value left out: "
                       + ", ".join(map(str, entry["metrics_dropped"])))
    return out


# ------------------------------------------------------------------------------------------
# Example responses
# ------------------------------------------------------------------------------------------


def examples(responses: pd.DataFrame, per_condition: int = EXAMPLES_PER_CONDITION) -> list[dict[str, Any]]:
    """A few responses per condition set for the same prompts (those all sets answered, in
    prompt order), each with its prompt and the human reference, cut to :data:`EXCERPT_CHARS`."""
    if responses.empty:
        return []
    sets = list(dict.fromkeys(responses["set_name"]))
    answered = [set(responses.loc[responses["set_name"] == s, "prompt_id"]) for s in sets]
    shared = set.intersection(*answered) if answered else set()
    order = [p for p in dict.fromkeys(responses["prompt_id"]) if p in shared] or list(
        dict.fromkeys(responses["prompt_id"]))
    chosen = {p: i for i, p in enumerate(order[:per_condition])}
    out = []
    for s in sets:
        part = responses[(responses["set_name"] == s) & responses["prompt_id"].isin(chosen)]
        part = part.iloc[part["prompt_id"].map(chosen).argsort(kind="stable")]  # same order everywhere
        first = part.iloc[0] if len(part) else responses[responses["set_name"] == s].iloc[0]
        total = int((responses["set_name"] == s).sum())
        out.append({
            "set_name": str(s),
            "condition": fmt_text(first.get("condition")),
            "target": fmt_text(first.get("target")),
            "seed": fmt_text(first.get("seed")),
            "total": total,
            "items": [{"prompt_id": fmt_text(r.get("prompt_id")), "prompt": excerpt(r.get("prompt")),
                       "response": excerpt(r.get("response")), "human": excerpt(r.get("human_response"))}
                      for _, r in part.iterrows()],
        })
    return out
