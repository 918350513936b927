"""The report's tables, built once and shown by both renderers.

Every builder takes the raw frames of :class:`~collapselab.report.inputs.ReportInputs` and returns a
:class:`Table` whose cells are already formatted text: the HTML and Markdown renderers only lay the
cells out and escape them, so both show the same numbers, the same "best" highlights and the same
warnings. :func:`build_tables` assembles everything the report shows, in order.

Cells hold plain, *unescaped* text (model text, condition names included): escaping is the
renderer's job, because HTML and Markdown need different escaping.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: significance level of the "significant pairs" table and of the p-value highlights
ALPHA = 0.05
#: placeholder of a missing / undefined number (NaN is never shown as "nan")
MISSING = "—"

_PAIR_TESTS = ("mann_whitney", "van_elteren")
#: how test and effect-size identifiers read in a table (the CSV keeps the identifiers)
TEST_NAMES = {"kruskal_wallis": "Kruskal–Wallis", "stratified_kruskal_wallis": "stratified Kruskal–Wallis",
              "mann_whitney": "Mann–Whitney U", "van_elteren": "van Elteren",
              "epsilon_squared": "ε²", "rank_biserial": "rank-biserial r"}


def _readable(value: Any) -> str:
    return TEST_NAMES.get(str(value), fmt_text(value))


# ------------------------------------------------------------------------------------------
# Formatting
# ------------------------------------------------------------------------------------------


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA (the three spellings of "no value" in these frames)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def fmt_num(value: Any) -> str:
    """A number at a precision that suits its size: 1234 → "1,234", 75.123 → "75.12",
    0.95471 → "0.9547", 1.2e-5 → "1.2e-05". Integers stay integers; missing → "—"."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if not isinstance(value, numbers.Real):
        return str(value)
    x = float(value)
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    size = abs(x)
    if size >= 1000:
        text = f"{x:,.0f}"
    elif size >= 100:
        text = f"{x:.1f}"
    elif size >= 1:
        text = f"{x:.2f}"
    elif size >= 1e-3 or size == 0:
        text = f"{x:.4f}"
    else:
        text = f"{x:.1e}"
    return text.replace("-", "−") if x < 0 else text  # a real minus sign: "−" reads better than "-"


def fmt_int(value: Any) -> str:
    """A count or degrees of freedom (stored as float next to NaN): 3.0 → "3"; fractional df stay
    fractional."""
    if is_missing(value):
        return MISSING
    x = float(value)
    return f"{int(x):,}" if x.is_integer() else fmt_num(x)


def fmt_rank(value: Any) -> str:
    """A rank: 1 → "1", a tie's average 2.5 → "2.5"."""
    return MISSING if is_missing(value) else f"{float(value):g}"


def fmt_effect(value: Any) -> str:
    """An effect size or correlation in [−1, 1] (r, ε², τ, W, η²): always three decimals, so a
    column of them lines up."""
    if is_missing(value):
        return MISSING
    x = float(value)
    return f"{x:.3f}".replace("-", "−")


def fmt_p(value: Any) -> str:
    """A p-value: three decimals, or scientific below 0.001 (so a tiny p is not shown as 0)."""
    if is_missing(value):
        return MISSING
    p = float(value)
    if p == 0:  # underflow (or scipy's exact 0 for a perfect correlation), not "0.0e+00"
        return "0"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def fmt_ci(value: Any, low: Any, high: Any) -> str:
    """``value [low, high]``; the interval is left out when it is undefined."""
    if is_missing(low) or is_missing(high):
        return fmt_num(value)
    # no-break space inside the brackets: a wrapped cell never splits the interval itself
    return f"{fmt_num(value)} [{fmt_num(low)},\u00a0{fmt_num(high)}]"


def fmt_rate(value: Any) -> str:
    """A share in [0, 1] at a fixed three decimals, so a column of rates (and their interval
    bounds) lines up: 0.5 → "0.500", 1 → "1.000"."""
    return MISSING if is_missing(value) else f"{float(value):.3f}"


def rate_ci(value: Any, low: Any, high: Any) -> str:
    """``rate [low, high]`` (the interval left out when undefined), as :func:`fmt_ci` for rates."""
    if is_missing(low) or is_missing(high):
        return fmt_rate(value)
    return f"{fmt_rate(value)} [{fmt_rate(low)},\u00a0{fmt_rate(high)}]"


def fmt_text(value: Any) -> str:
    """Any label as text: missing → "—", whole floats (a seed read back as 42.0) → "42"."""
    if is_missing(value):
        return MISSING
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


#: characters of a prompt / response shown before it is cut with an ellipsis
EXCERPT_CHARS = 600


def excerpt(text: Any, limit: int = EXCERPT_CHARS) -> str:
    """``text`` cut to ``limit`` characters (at a word boundary when one is near) with "…"."""
    text = "" if text is None or (isinstance(text, float) and text != text) else str(text)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.8:
        cut = cut[:space]
    return cut.rstrip() + " …"


def direction_of(value: Any) -> bool | None:
    """``higher_is_better`` as True / False / None, whatever the frame's dtype made of it."""
    return None if is_missing(value) else bool(value)


def arrow(direction: bool | None) -> str:
    """↑ higher is better, ↓ lower is better, nothing when the metric has no better direction."""
    return {True: "↑", False: "↓"}.get(direction, "")  # type: ignore[arg-type]


def metric_header(metric: str, direction: bool | None) -> str:
    """Column header of a metric: its name and its direction arrow."""
    mark = arrow(direction)
    return f"{metric} {mark}" if mark else metric


# ------------------------------------------------------------------------------------------
# The display table
# ------------------------------------------------------------------------------------------


@dataclass
class Cell:
    text: str
    highlight: bool = False
    numeric: bool = False
    wide: bool = False
    reference: bool = False  # a yardstick (the human references), never a contestant


@dataclass
class Table:
    """A table ready to show: ``frame`` holds text cells under display headers.

    ``highlight`` lists (row position, column) cells to emphasise (best value, significant p);
    ``numeric`` the columns to right-align; ``wide`` the columns of running text (notes, metric
    lists) that deserve room to wrap; ``reference`` the columns that are a yardstick, not a
    contestant (the human references).
    """

    frame: pd.DataFrame
    caption: str = ""
    highlight: set[tuple[int, str]] = field(default_factory=set)
    numeric: set[str] = field(default_factory=set)
    wide: set[str] = field(default_factory=set)
    reference: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return self.frame.empty

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def rows(self) -> list[list[Cell]]:
        """The body, row by row, each cell with its display flags."""
        return [[Cell(str(v), (i, c) in self.highlight, c in self.numeric, c in self.wide,
                      c in self.reference)
                 for c, v in zip(self.columns, values, strict=True)]
                for i, values in enumerate(self.frame.itertuples(index=False, name=None))]


def _empty(caption: str) -> Table:
    return Table(pd.DataFrame(), caption)


# ------------------------------------------------------------------------------------------
# Set labels and directions
# ------------------------------------------------------------------------------------------


def directions(aggregates: pd.DataFrame) -> dict[str, bool | None]:
    """metric → higher_is_better (True / False / None), from the aggregates table."""
    if aggregates.empty:
        return {}
    first = aggregates.drop_duplicates("metric")
    return {str(m): direction_of(d) for m, d in zip(first["metric"], first["higher_is_better"], strict=True)}


def metric_direction(metric: str, known: Mapping[str, bool | None]) -> bool | None:
    """Direction of a per-item metric name: per-item names are the metric's name or
    ``<metric>.<per-item key>`` (e.g. ``length.words``)."""
    if metric in known:
        return known[metric]
    base, dot, _ = metric.rpartition(".")
    return known.get(base) if dot else None


def _set_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per set: set_name, set_kind and the labels that identify it."""
    cols = [c for c in ("set_name", "set_kind", "condition", "source", "target", "seed", "generation")
            if c in table.columns]
    return table[cols].drop_duplicates("set_name").reset_index(drop=True)


def _varying(frame: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """The columns that take more than one value in ``frame`` (missing counts as a value)."""
    return [c for c in columns if c in frame.columns and frame[c].astype(object).map(fmt_text).nunique() > 1]


def set_labels(table: pd.DataFrame) -> dict[str, str]:
    """set_name → a short readable label: the condition (condition sets), the source (training
    data) or "human references" (not "human": that is also the name of the condition fine-tuned on
    human data); target / seed / generation are added only where they vary, so a one-target
    one-seed run reads "vanilla", not "llama-8b/vanilla/seed42"."""
    if table.empty or "set_name" not in table.columns:
        return {}
    sets = _set_frame(table)
    labels: dict[str, str] = {}
    for kind, part in sets.groupby("set_kind", sort=False):
        extra = _varying(part, ("target", "seed", "generation"))
        for row in part.itertuples(index=False):
            r = row._asdict()
            if kind == "human":
                base = "human references"
            elif kind == "source":
                base = next((fmt_text(r[k]) for k in ("source", "condition") if not is_missing(r.get(k))),
                            str(r["set_name"]))
            else:
                condition = r.get("condition")
                base = str(r["set_name"]) if is_missing(condition) else fmt_text(condition)
            parts = [base, *(f"{'gen' if c == 'generation' else c} {fmt_text(r[c])}" for c in extra)]
            labels[str(r["set_name"])] = " · ".join(parts)
    # two sets of one kind with one label (e.g. two human reference sets) fall back to their unique
    # names; across kinds a shared label is fine ("human" the condition, "human" the source data):
    # tables and plots keep kinds apart, and mixed lists use qualified_labels
    kinds = dict(zip(sets["set_name"].astype(str), sets["set_kind"].astype(str), strict=True))
    counts = pd.Series([(kinds[s], lab) for s, lab in labels.items()]).value_counts()
    return {s: (s if counts[(kinds[s], lab)] > 1 else lab) for s, lab in labels.items()}


def qualified_labels(table: pd.DataFrame) -> dict[str, str]:
    """set_name → a label that names the kind where it could be ambiguous: "vanilla" (a condition),
    "source human" (the training data), "human references"."""
    kinds = set_kinds(table)
    return {s: f"source {lab}" if kinds.get(s) == "source" else lab for s, lab in set_labels(table).items()}


def set_kinds(table: pd.DataFrame) -> dict[str, str]:
    """set_name → set_kind."""
    if table.empty or "set_name" not in table.columns:
        return {}
    sets = _set_frame(table)
    return dict(zip(sets["set_name"].astype(str), sets["set_kind"].astype(str), strict=True))


def condition_order(table: pd.DataFrame) -> list[str]:
    """Conditions in the order they first appear (the config's order), not alphabetically."""
    if table.empty or "condition" not in table.columns:
        return []
    rows = table[table["set_kind"] == "condition"] if "set_kind" in table.columns else table
    return [str(c) for c in pd.unique(rows["condition"].dropna())]


def sort_runs(frame: pd.DataFrame, conditions: Sequence[str] = ()) -> pd.DataFrame:
    """Rows ordered by target (first appearance), condition (the config's order, unknown ones
    last, in order of appearance) and seed — the order every per-run table and plot uses."""
    if frame.empty or "condition" not in frame.columns:
        return frame
    seen = [str(c) for c in pd.unique(frame["condition"].astype(object))]
    order = {c: i for i, c in enumerate([*[c for c in conditions if c in seen],
                                          *[c for c in seen if c not in conditions]])}
    keys = pd.DataFrame(index=frame.index)
    if "target" in frame.columns:
        targets = {t: i for i, t in enumerate(pd.unique(frame["target"].astype(object)))}
        keys["t"] = frame["target"].astype(object).map(targets)
    keys["c"] = frame["condition"].astype(object).map(lambda c: order[str(c)])
    if "seed" in frame.columns:
        keys["s"] = pd.to_numeric(frame["seed"], errors="coerce")
    position = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
    return frame.loc[position].reset_index(drop=True)


def run_columns(frame: pd.DataFrame, extra: Sequence[str] = ("target", "seed", "generation")) -> list[str]:
    """The label columns of a per-run table: the condition, plus target / seed / generation where
    they vary (a one-target one-seed run reads "vanilla", not "tiny/vanilla/42")."""
    return ["condition", *_varying(frame, extra)]


def run_label(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """One run's label from its label columns: "vanilla", "vanilla · seed 2"."""
    parts = [fmt_text(row.get(columns[0]))]
    parts += [f"{c} {fmt_text(row.get(c))}" for c in columns[1:]]
    return " · ".join(parts)


def constant_labels(frame: pd.DataFrame, columns: Sequence[str] = ("target", "seed")) -> str:
    """The label columns that do not vary, as "target tiny, seed 42" (said once in a caption)."""
    parts = [f"{c} {fmt_text(frame[c].iloc[0])}" for c in columns
             if c in frame.columns and len(frame) and c not in _varying(frame, [c])]
    return ", ".join(parts)


def primary_rows(aggregates: pd.DataFrame, kinds: Sequence[str]) -> pd.DataFrame:
    """The primary statistic of every metric on the sets of the given kinds."""
    if aggregates.empty:
        return aggregates
    mask = aggregates["set_kind"].isin(kinds) & aggregates["primary"].astype(bool)
    return aggregates[mask]


# ------------------------------------------------------------------------------------------
# Metric tables (summary, training-data diversity)
# ------------------------------------------------------------------------------------------


def _column_labels(rows: pd.DataFrame, kinds: Sequence[str],
                   reference_kinds: Sequence[str]) -> dict[str, str]:
    """set_name → column header, contestants first (in order of appearance), then references."""
    labels = set_labels(rows)
    sets = _set_frame(rows)
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
        return _empty("no aggregates for these sets")
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
            + (" and target" if _varying(rows[rows["set_kind"].isin(kinds)], ["target"]) else "")
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
        return _empty("no per-source training-data metrics in this run")
    return metric_table(aggregates, ("source",), ("human",))


# ------------------------------------------------------------------------------------------
# Statistical tests
# ------------------------------------------------------------------------------------------


def _scopes(scope: pd.Series) -> tuple[pd.Series, str]:
    """Shorter scope labels: parts equal to nan (an unset generation) and parts shared by every
    row are dropped; the shared parts are returned once, for the caption."""
    split = scope.fillna("").astype(str).map(
        lambda s: [p for p in s.split(", ") if p and not p.endswith(("=nan", "=None", "=<NA>"))])
    common = set.intersection(*(set(p) for p in split)) if len(split) else set()
    short = split.map(lambda parts: ", ".join(p for p in parts if p not in common))
    shared = ", ".join(p for p in (split.iloc[0] if len(split) else []) if p in common)
    return short, shared


def _with_scope(frame: pd.DataFrame, tests: pd.DataFrame, caption: str) -> tuple[pd.DataFrame, str]:
    """Insert the scope column after the metric (dropped when every row has the same scope)."""
    if "scope" not in tests.columns:
        return frame, caption
    short, shared = _scopes(tests["scope"])
    if short.str.len().gt(0).any():
        frame.insert(1, "scope", short.to_numpy())
    if shared:
        caption += f" All tests: {shared}."
    return frame, caption


def omnibus_table(tests: pd.DataFrame) -> Table:
    """One Kruskal–Wallis (or seed-stratified) test per metric and scope, with ε²."""
    if tests.empty:
        return _empty("no tests were run")
    rows = tests[~tests["test"].isin(_PAIR_TESTS)].reset_index(drop=True)
    if rows.empty:
        return _empty("no omnibus tests")
    frame = pd.DataFrame({
        "metric": rows["metric"].map(fmt_text),
        "test": rows["test"].map(_readable),
        "statistic": rows["statistic"].map(fmt_num),
        "df": rows["df"].map(fmt_int),
        "p": rows["p"].map(fmt_p),
        "ε²": rows["effect"].map(fmt_effect),
        "n": rows["n_a"].map(fmt_int),
        "NaN dropped": rows["n_dropped_a"].map(fmt_int),
    })
    caption = (f"Kruskal–Wallis H across conditions (stratified Q when pooled over seeds); ε² = effect "
               f"size (share of rank variance explained). Bold: p < {ALPHA}.")
    frame, caption = _with_scope(frame, rows, caption)
    highlight = {(i, "p") for i, p in enumerate(rows["p"]) if not is_missing(p) and p < ALPHA}
    return Table(frame, caption, highlight, {"statistic", "df", "p", "ε²", "n", "NaN dropped"})


def pairwise_table(tests: pd.DataFrame, metric_directions: Mapping[str, bool | None],
                   significant_only: bool = True) -> Table:
    """Pairwise Mann–Whitney (or van Elteren) rows: adjusted p, rank-biserial r, and which group
    tends larger — and, for directed metrics, which is therefore better."""
    if tests.empty:
        return _empty("no tests were run")
    rows = tests[tests["test"].isin(_PAIR_TESTS)]
    if significant_only:
        rows = rows[rows["p_adj"].astype(float) < ALPHA]
    rows = rows.reset_index(drop=True)
    if rows.empty:
        return _empty(f"no pair of conditions differs at adjusted p < {ALPHA}" if significant_only
                      else "no pairwise tests")

    def larger(r) -> str:
        if is_missing(r.effect) or r.effect == 0:
            return MISSING
        return fmt_text(r.group_a if r.effect > 0 else r.group_b)

    def better(r) -> str:
        direction = metric_direction(str(r.metric), metric_directions)
        if direction is None or is_missing(r.effect) or r.effect == 0:
            return MISSING
        a_larger = r.effect > 0
        return fmt_text(r.group_a if a_larger == direction else r.group_b)

    frame = pd.DataFrame({
        "metric": rows["metric"].map(fmt_text),
        "a": rows["group_a"].map(fmt_text),
        "b": rows["group_b"].map(fmt_text),
        "test": rows["test"].map(_readable),
        "statistic": rows["statistic"].map(fmt_num),
        "p (adj.)": rows["p_adj"].map(fmt_p),
        "r": rows["effect"].map(fmt_effect),
        "tends larger": [larger(r) for r in rows.itertuples(index=False)],
        "better": [better(r) for r in rows.itertuples(index=False)],
    })
    if frame["test"].nunique() == 1:  # say it once in the caption instead
        frame = frame.drop(columns="test")
    caption = ("Pairwise Mann–Whitney U (van Elteren when pooled over seeds), Bonferroni-adjusted within "
               "each metric; r = rank-biserial correlation = P(a > b) − P(a < b). "
               + (f"Only pairs with adjusted p < {ALPHA}." if significant_only else ""))
    frame, caption = _with_scope(frame, rows, caption)
    return Table(frame, caption.strip(), set(), {"statistic", "p (adj.)", "r"})


def all_tests_table(tests: pd.DataFrame) -> Table:
    """Every test row as computed, notes included (for the collapsible block and the CSV)."""
    if tests.empty:
        return _empty("no tests were run")
    rows = tests.reset_index(drop=True)
    frame = pd.DataFrame({
        "metric": rows["metric"].map(fmt_text),
        "test": rows["test"].map(_readable),
        "a": rows["group_a"].map(fmt_text),
        "b": rows["group_b"].map(fmt_text),
        "statistic": rows["statistic"].map(fmt_num),
        "df": rows["df"].map(fmt_int),
        "p": rows["p"].map(fmt_p),
        "p (adj.)": rows["p_adj"].map(fmt_p),
        "effect": rows["effect"].map(fmt_effect),
        "effect size": rows["effect_name"].map(_readable),
        "n (a / b)": list(map(_pair, rows["n_a"], rows["n_b"])),
        "NaN dropped (a / b)": list(map(_pair, rows["n_dropped_a"], rows["n_dropped_b"])),
        "note": rows["note"].map(lambda v: "" if is_missing(v) else str(v)),
    })
    frame, caption = _with_scope(frame, rows, "All test rows, including non-significant ones. For the "
                                 "omnibus tests n and dropped count all conditions together.")
    return Table(frame, caption, set(),
                 {"statistic", "df", "p", "p (adj.)", "effect", "n (a / b)", "NaN dropped (a / b)"},
                 wide={"note"})


def _pair(a: Any, b: Any) -> str:
    """Two counts as "a / b", or one when the second is missing (the omnibus tests' total)."""
    return fmt_int(a) if is_missing(b) else f"{fmt_int(a)} / {fmt_int(b)}"


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
        return _empty("no concordance was computed")

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
        return _empty("fewer than two conditions: nothing to compare")
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
        return _empty("no ranks")
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
        return _empty("fewer than two metrics")
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


# ------------------------------------------------------------------------------------------
# Factorial, seed spread, training
# ------------------------------------------------------------------------------------------


def factorial_table(factorial: pd.DataFrame) -> Table:
    """Aligned-rank-transform ANOVA rows (one per metric and effect)."""
    if factorial.empty:
        return _empty("no factorial analysis")
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
        return _empty("one seed per condition")
    rows = spread.reset_index(drop=True)
    known = directions(aggregates) if aggregates is not None else {}
    order = condition_order(aggregates) if aggregates is not None else []
    label_cols = [c for c in ("condition", "target", "generation") if c in rows.columns
                  and (c == "condition" or _varying(rows, [c]))]
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


def training_table(training: Sequence[Mapping[str, Any]]) -> Table:
    """One row per fine-tuning run: steps, final train loss, best validation loss, early stop."""
    if not training:
        return _empty("no fine-tuning in this run")
    body = []
    for run in training:
        curve = list(run.get("curve") or [])
        train = [c["train_loss"] for c in curve if not is_missing(c.get("train_loss"))]
        body.append({
            "target": fmt_text(run.get("target")),
            "condition": fmt_text(run.get("condition")),
            "seed": fmt_text(run.get("seed")),
            "steps": fmt_int(max((int(c.get("step", 0)) for c in curve), default=None) if curve else None),
            "final train loss": fmt_num(train[-1] if train else None),
            "best val loss": fmt_num(run.get("best_val_loss")),
            "stopped early": fmt_num(run.get("stopped_early")),
        })
    return Table(pd.DataFrame(body), "Loss is mean token cross-entropy on the assistant tokens.", set(),
                 {"steps", "final train loss", "best val loss"})


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


def omnibus_notes(tests: pd.DataFrame, prefix: str = "") -> list[str]:
    """Omnibus tests that could not be computed (and why), and the undefined per-item values the
    tests left out — one line each, ``prefix`` naming the experiment."""
    if tests.empty:
        return []
    out = []
    omnibus = tests[~tests["test"].isin(_PAIR_TESTS)]
    scope = omnibus["scope"] if "scope" in omnibus.columns else pd.Series("", index=omnibus.index)
    short, _ = _scopes(scope)
    dropped = []
    for r, where in zip(omnibus.itertuples(index=False), short, strict=True):
        name = f"{r.metric} ({where})" if where else str(r.metric)
        if is_missing(r.p):
            out.append(f"{prefix}{_readable(r.test)} for {name} not computed: {r.note}")
        if not is_missing(r.n_dropped_a) and int(r.n_dropped_a):
            dropped.append(f"{name} ({int(r.n_dropped_a)})")
    if dropped:
        out.append(f"{prefix}Undefined (NaN) per-item values left out of the tests: " + ", ".join(dropped))
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


def experiments(inputs) -> list[str]:
    """The experiments the run has, as the header names them."""
    names = []
    if inputs.collapse:
        names.append("Experiment 1 (distribution collapse)")
    if inputs.safety is not None:
        names.append("Experiment 2 (safety)")
    if inputs.preference is not None:
        names.append("Experiment 3 (self-preference)")
    return names


# ------------------------------------------------------------------------------------------
# Everything, in order
# ------------------------------------------------------------------------------------------


@dataclass
class ConcordanceTables:
    target: str
    ranks: Table
    agreement: Table
    correlations: Table


@dataclass
class ReportTables:
    """All tables and warnings of a report, in the order both renderers show them."""

    warnings: list[str]
    summary: Table
    omnibus: Table
    significant_pairs: Table
    all_tests: Table
    kendalls_w: Table
    concordance: list[ConcordanceTables]
    factorial: Table
    seed_spread: Table
    sources: Table
    training: Table
    safety: Any = None  # SafetyTables (Experiment 2), when the run has it
    preference: Any = None  # PreferenceTables (Experiment 3), when the run has it


def build_tables(inputs) -> ReportTables:
    """Build every table of the report from a :class:`~collapselab.report.inputs.ReportInputs`;
    the warnings of every experiment go into one list (the report's warning box)."""
    # imported here: those modules build on this one's Table and formatters
    from collapselab.report.preference import build_preference_tables
    from collapselab.report.safety import build_safety_tables

    known = directions(inputs.aggregates)
    concordance = []
    for target, frames in inputs.concordance.items():
        concordance.append(ConcordanceTables(
            target=str(target),
            ranks=rank_table(frames.get("ranks", pd.DataFrame()), frames.get("value_ranks", pd.DataFrame()),
                             known, condition_order(inputs.aggregates)),
            agreement=agreement_table(frames.get("pairwise", pd.DataFrame())),
            correlations=correlation_table(frames.get("correlations", pd.DataFrame())),
        ))
    safety = build_safety_tables(inputs.safety) if getattr(inputs, "safety", None) is not None else None
    preference = (build_preference_tables(inputs.preference)
                  if getattr(inputs, "preference", None) is not None else None)
    warnings = [*warnings_list(inputs), *(safety.warnings if safety else []),
                *(preference.warnings if preference else [])]
    return ReportTables(
        warnings=warnings,
        summary=summary_table(inputs.aggregates),
        omnibus=omnibus_table(inputs.tests),
        significant_pairs=pairwise_table(inputs.tests, known, significant_only=True),
        all_tests=all_tests_table(inputs.tests),
        kendalls_w=kendalls_w_table(inputs.kendalls_w),
        concordance=concordance,
        factorial=factorial_table(inputs.factorial),
        seed_spread=seed_spread_table(inputs.seed_spread, inputs.aggregates),
        sources=source_table(inputs.aggregates),
        training=training_table(inputs.training),
        safety=safety,
        preference=preference,
    )
