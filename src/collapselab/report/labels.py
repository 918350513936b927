"""How rows are named and ordered across the report's tables and figures — no experiment's section.

Sets (:func:`set_labels`, :func:`qualified_labels`, :func:`set_kinds`), runs (:func:`run_columns`,
:func:`run_label`, :func:`sort_runs`, :func:`constant_labels`), the config's condition order
(:func:`condition_order`), and what the aggregates say about each metric: its better direction
(:func:`directions`, :func:`metric_direction`) and its primary rows (:func:`primary_rows`).

A multi-source condition's label names its requested weights (``multi:a=0.7,b=0.3``); inside
:func:`showing_realised_shares` every label of it also gives the shares its training sets
realised (``multi:a=0.7,b=0.3 (realised 70.0% / 30.0%)``, audit a3), read from the mix stages.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pandas as pd

from collapselab.report.format import direction_of, fmt_text, is_missing

# ------------------------------------------------------------------------------------------
# Realised shares of multi-source conditions
# ------------------------------------------------------------------------------------------

#: condition label → the label shown for it (with its realised shares), while a report renders
_SHOWN: ContextVar[Mapping[str, str] | None] = ContextVar("collapselab_condition_labels", default=None)


def _percent_range(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1%}" if f"{low:.1%}" == f"{high:.1%}" else f"{low:.1%}–{high:.1%}"


def realised_share_labels(training: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Condition label → that label with the shares of the examples its sources realised:
    ``"multi:a=0.7,b=0.3 (realised 69.8% / 30.2%)"``, one share per source in the condition's
    order; where its training sets differ (targets, seeds, data draws, generations), each source's
    range (``69.8–70.1%``). ``training`` holds one entry per fine-tuning run with ``condition``
    and ``realised_shares`` (``{source: share}``, from the mix stage's ``summary.json``; missing
    for single-source and human conditions, and for mixes written before shares were recorded,
    which keep their plain label)."""
    shares: dict[str, dict[str, list[float]]] = {}
    for run in training:
        realised = run.get("realised_shares")
        if not realised or is_missing(run.get("condition")):
            continue
        per_source = shares.setdefault(str(run["condition"]), {})
        for source, share in realised.items():
            per_source.setdefault(str(source), []).append(float(share))
    return {label: f"{label} (realised {' / '.join(_percent_range(v) for v in per_source.values())})"
            for label, per_source in shares.items()}


@contextmanager
def showing_realised_shares(training: Iterable[Mapping[str, Any]],
                            notes: Mapping[str, str] | None = None) -> Iterator[None]:
    """Within the block, :func:`condition_text` (and so :func:`set_labels` and :func:`run_label`)
    names each multi-source condition with its realised shares (:func:`realised_share_labels`)
    and its ``notes`` (condition label → a note, e.g. how alike its sources answer). The report's
    renderers run inside it; the CSV/Parquet tables keep the plain labels (they are identifiers)."""
    shown = realised_share_labels(training)
    for label, note in (notes or {}).items():
        text = shown.get(label, label)
        shown[label] = f"{text[:-1]}; {note})" if text.endswith(")") and text != label else f"{text} ({note})"
    token = _SHOWN.set(shown)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def condition_text(condition: Any) -> str:
    """A condition label as the report shows it: with its realised shares inside
    :func:`showing_realised_shares`, else as it is."""
    text = fmt_text(condition)
    return (_SHOWN.get() or {}).get(text, text)


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


def set_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per set: set_name, set_kind and the labels that identify it."""
    cols = [c for c in ("set_name", "set_kind", "condition", "source", "target", "seed", "generation")
            if c in table.columns]
    return table[cols].drop_duplicates("set_name").reset_index(drop=True)


def varying_columns(frame: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """The columns that take more than one value in ``frame`` (missing counts as a value)."""
    return [c for c in columns if c in frame.columns and frame[c].astype(object).map(fmt_text).nunique() > 1]


def set_labels(table: pd.DataFrame) -> dict[str, str]:
    """set_name → a short readable label: the condition (condition sets), the source (training
    data) or "human references" (not "human": that is also the name of the condition fine-tuned on
    human data); target / seed / generation are added only where they vary, so a one-target
    one-seed run reads "vanilla", not "llama-8b/vanilla/seed42"."""
    if table.empty or "set_name" not in table.columns:
        return {}
    sets = set_frame(table)
    labels: dict[str, str] = {}
    for kind, part in sets.groupby("set_kind", sort=False):
        extra = varying_columns(part, ("target", "seed", "generation"))
        for row in part.itertuples(index=False):
            r = row._asdict()
            if kind == "human":
                base = "human references"
            elif kind == "source":
                base = next((fmt_text(r[k]) for k in ("source", "condition") if not is_missing(r.get(k))),
                            str(r["set_name"]))
            else:
                condition = r.get("condition")
                base = str(r["set_name"]) if is_missing(condition) else condition_text(condition)
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
    sets = set_frame(table)
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
    return ["condition", *varying_columns(frame, extra)]


def run_label(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """One run's label from its label columns: "vanilla", "vanilla · seed 2"."""
    first = row.get(columns[0])
    parts = [condition_text(first) if columns[0] == "condition" else fmt_text(first)]
    parts += [f"{c} {fmt_text(row.get(c))}" for c in columns[1:]]
    return " · ".join(parts)


def constant_labels(frame: pd.DataFrame, columns: Sequence[str] = ("target", "seed")) -> str:
    """The label columns that do not vary, as "target tiny, seed 42" (said once in a caption)."""
    parts = [f"{c} {fmt_text(frame[c].iloc[0])}" for c in columns
             if c in frame.columns and len(frame) and c not in varying_columns(frame, [c])]
    return ", ".join(parts)


def primary_rows(aggregates: pd.DataFrame, kinds: Sequence[str]) -> pd.DataFrame:
    """The primary statistic of every metric on the sets of the given kinds."""
    if aggregates.empty:
        return aggregates
    mask = aggregates["set_kind"].isin(kinds) & aggregates["primary"].astype(bool)
    return aggregates[mask]
