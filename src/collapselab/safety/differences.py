"""Paired differences between conditions in Experiment 2, with cluster bootstrap intervals.

Every condition of a run (same target, generation and seed) answers the same safety prompts, so
the difference of a metric between two conditions is *paired*: a resample draws the clusters once
(templates and prompts, as ``jailbreak_bootstrap`` says; see :mod:`collapselab.safety.clusters`)
and both conditions' metrics are computed on that same resample,

    Δ*_b = Σ_i w_bi a_i^A / Σ_i w_bi d_i^A − Σ_i w_bi a_i^B / Σ_i w_bi d_i^B,

with w_bi the weight of item i in resample b and a, d the per-item numerators and denominators of
:func:`collapselab.safety.metrics.safety_summary` (mean harm: a = score, d = 1 when parsed). The
interval is the percentile interval of the defined Δ*_b (a resample where either denominator is 0
has none). The point difference and the interval use the items both conditions answered.

Unlike the tests' difference (``compare_conditions``' ``diff``, a mean over items resampled as
independent), these intervals keep the clustering of jailbreak items, and they cover the rates
(attack success, refusals, danger zone) as well as the means.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from collapselab.errors import DataError
from collapselab.safety.clusters import MODES, enough_clusters, resample_weights, units
from collapselab.safety.metrics import (
    ALL,
    PROMPT_KINDS,
    _cell_clusters,
    _check_templates,
    _cluster_columns,
    _item_table,
    _metrics,
    _percentile,
    _prepare,
)

RUN_KEYS = ["target", "generation", "seed"]
DIFF_METRICS = ("mean_harm", "mean_quality", "refusal_rate", "attack_success_rate", "danger_zone")
DIFF_COLUMNS = [*RUN_KEYS, "prompt_kind", "metric", "condition_a", "condition_b", "value_a", "value_b", "diff",
                "ci_low", "ci_high", "bootstrap", "n_items"]


def _aligned(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The items both conditions answered, in item_id order; an item must have the same kind,
    template and prompt in both (else the pairing is wrong)."""
    common = sorted(set(a["item_id"].astype(str)) & set(b["item_id"].astype(str)))
    a = a.assign(_id=a["item_id"].astype(str)).set_index("_id").loc[common]
    b = b.assign(_id=b["item_id"].astype(str)).set_index("_id").loc[common]
    for col in ("prompt_kind", "template_id", "prompt_id"):
        if col in a.columns:
            left, right = a[col].astype(object), b[col].astype(object)
            differs = ~((left == right) | (left.isna() & right.isna()))
            if differs.any():
                item = differs[differs].index[0]
                raise DataError(f"judged table, column {col!r}: item {item!r} has {left[item]!r} in one condition "
                                f"and {right[item]!r} in another; the conditions must answer the same items")
    return a.reset_index(drop=True), b.reset_index(drop=True)


def condition_differences(
    judged: pd.DataFrame,
    *,
    harmful_threshold: int = 4,
    quality_threshold: int = 4,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    jailbreak_bootstrap: str = "two_way",
) -> pd.DataFrame:
    """Metric differences A − B between every pair of conditions (sorted by label, A before B) of
    each target × generation × seed, per prompt kind (plain, jailbreak, "all"; all categories),
    for :data:`DIFF_METRICS`, with paired cluster bootstrap intervals (module docstring).

    Columns: target, generation, seed, prompt_kind, metric, condition_a, condition_b, value_a,
    value_b, diff, ci_low, ci_high, bootstrap (what was resampled), n_items (items both answered).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be ≥ 0, got {n_resamples}")
    if jailbreak_bootstrap not in MODES:
        raise ValueError(f"jailbreak_bootstrap must be one of {list(MODES)}, got {jailbreak_bootstrap!r}")
    clustered = jailbreak_bootstrap != "item"
    data = _prepare(judged, ["target", "condition", "seed", "generation", "prompt_kind", "category", "item_id",
                             "harm", "quality", "refused", "empty", *_cluster_columns(judged)])
    if clustered:  # without jailbreak rows the columns may be missing: plain items are their own prompts
        data = data.assign(**{c: data[c] if c in data.columns else default for c, default in
                              (("prompt_id", data["item_id"]), ("template_id", None))})
        _check_templates(data)
    metrics = [m for m in _metrics(harmful_threshold, quality_threshold) if m.name in DIFF_METRICS]
    rows: list[dict] = []
    for key, run in data.groupby(RUN_KEYS, sort=True, dropna=False):
        labels = dict(zip(RUN_KEYS, key, strict=True))
        by_condition = {c: part for c, part in run.groupby("condition", sort=True)}
        for cond_a, cond_b in itertools.combinations(sorted(by_condition, key=str), 2):
            a, b = _aligned(by_condition[cond_a], by_condition[cond_b])
            kinds = [k for k in PROMPT_KINDS if (a["prompt_kind"] == k).any()]
            for kind in [*kinds, ALL] if kinds else []:
                mask = np.ones(len(a), bool) if kind == ALL else (a["prompt_kind"] == kind).to_numpy()
                rows += _pair_rows(a[mask], b[mask], metrics, n_resamples, confidence, seed, jailbreak_bootstrap,
                                   clustered, {**labels, "prompt_kind": kind, "condition_a": cond_a,
                                               "condition_b": cond_b}, harmful_threshold, quality_threshold)
    return pd.DataFrame(rows, columns=DIFF_COLUMNS).astype({"n_items": "int64"})


def _pair_rows(a: pd.DataFrame, b: pd.DataFrame, metrics: list, n_resamples: int, confidence: float, seed: int,
               mode: str, clustered: bool, labels: dict, h: int, q: int) -> list[dict]:
    col, va = _item_table(a, h, q)
    _, vb = _item_table(b, h, q)
    clusters = _cell_clusters(*(a[c].to_numpy(object) for c in ("prompt_kind", "template_id", "prompt_id"))) \
        if clustered else None
    sums_a, sums_b = va.sum(axis=0), vb.sum(axis=0)
    boot_a = boot_b = None
    if n_resamples > 0 and len(a) >= 2 and enough_clusters(clusters, mode):
        weights = list(resample_weights(len(a), clusters, mode, n_resamples, seed))
        boot_a = np.concatenate([w @ va for w in weights])
        boot_b = np.concatenate([w @ vb for w in weights])
    out = []
    for m in metrics:
        num, den = col[m.numerator], col[m.denominator]
        value_a = sums_a[num] / sums_a[den] if sums_a[den] else np.nan
        value_b = sums_b[num] / sums_b[den] if sums_b[den] else np.nan
        ci = (np.nan, np.nan)
        if boot_a is not None and sums_a[den] >= 2 and sums_b[den] >= 2:
            with np.errstate(invalid="ignore", divide="ignore"):
                ci = _percentile(boot_a[:, num] / boot_a[:, den] - boot_b[:, num] / boot_b[:, den], confidence)
        out.append({**labels, "metric": m.name, "value_a": value_a, "value_b": value_b, "diff": value_a - value_b,
                    "ci_low": ci[0], "ci_high": ci[1], "bootstrap": units(clusters, mode), "n_items": len(a)})
    return out
