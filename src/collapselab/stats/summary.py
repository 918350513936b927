"""One tidy table of condition comparisons for every metric, run per scope (each metric × target ×
generation ... separately), with pairing by item and several training seeds handled explicitly.

Paired or unpaired
------------------
Every condition answers the same test prompts (and scores the same human references, safety
prompts and preference items), so by default (``paired="auto"``) a scope whose conditions share
their items (``item`` column; :func:`collapselab.stats.paired.match_items`) is tested **paired by
item**: Friedman across the conditions on the complete blocks and Wilcoxon signed-rank for each
pair (:mod:`collapselab.stats.paired`). A scope whose sets answer different items (synthetic
training sets) gets the study's unpaired tests, Kruskal–Wallis and pairwise Mann–Whitney U
(PAPER.md), as does every scope with ``paired=False``. Each row's ``paired`` column says which was
used and its ``note`` why.

Seeds
-----
With one seed per scope (the study's design) each scope gets one family, and the **unit is the
item**: a difference is a difference between the trained models at hand, not evidence about the
recipes that made them. With several seeds these families are reported:

* ``seed=<s>`` — the tests within each seed: does the difference replicate run by run?
* ``seed="pooled"`` — all items of all seeds. Paired: blocks are (seed, item) pairs (pairing and
  seed blocking at once; the bootstrap resamples whole items). Unpaired: seed as a block — the
  stratified Kruskal–Wallis (CMH row-mean-scores statistic with van Elteren weights) and pairwise
  **van Elteren** tests (:mod:`collapselab.stats.hypothesis`). Either way the items are the unit:
  the pooled tests condition on the seeds at hand and say "these runs differ".
* ``seed="seed-level"`` — the unpaired tests on one number per run (the per-seed median, or
  mean): the run is the unit. Exact but weak: two groups of 3 runs reach at best p = 0.1.
* ``seed="mixed-model"`` — a linear mixed model with the run as a random intercept (items fixed;
  :mod:`collapselab.stats.mixed`): Wald F across conditions and t contrasts on runs − conditions
  df. The run is the unit: this is the family for claims about **recipes**.

Putting the seed column in ``within`` instead gives per-seed tests only.

Output columns
--------------
``<within columns>``, seed (the seed, "pooled", "seed-level", "mixed-model", or the single seed),
scope (a readable label of the same), test ("friedman", "wilcoxon", "kruskal_wallis",
"mann_whitney", "stratified_kruskal_wallis", "van_elteren", "mixed_f", "mixed_t"), group_a,
group_b (empty for the omnibus tests), statistic (χ²_F, W₊, H, U_a, Q, van Elteren's z, F, t), df,
p, p_adj, effect, effect_name ("kendalls_w" / "epsilon_squared" for the omnibus tests;
"matched_rank_biserial" (Kerby 2014), "rank_biserial" = Cliff's δ, or "d_runs" for pairs: > 0
means group a tends larger), n_a, n_b (for the omnibus tests n_a is the total: blocks, values or
runs), n_dropped_a, n_dropped_b (missing values left out; paired: blocks lost because that
group's value is missing; for seed-level tests, runs whose summary is NaN), note (which test and
why, what was left out), paired (bool), unit ("items" or "runs"), diff (pairs: mean of a − mean
of b), diff_low, diff_high (its interval: paired bootstrap, unpaired bootstrap, or the mixed
model's t interval), mde (the minimum detectable difference at 80 % power, α = 0.05;
:mod:`collapselab.stats.power`).

p_adj: pairs are corrected within their family — the pairs of one scope's omnibus test, m = pairs
tested (the study's practice; ``correction``); the omnibus test is a family of one (p_adj = p).
All pairs are reported whatever the omnibus p, so a reader can apply the gate ("pairs only after
a significant omnibus test") or not. Correction across metrics and experiments (primary
endpoints) is :mod:`collapselab.stats.endpoints`'.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from collapselab.stats.hypothesis import (
    Correction,
    kruskal_wallis,
    pairwise_mannwhitney,
    pairwise_van_elteren,
    stratified_kruskal_wallis,
)
from collapselab.stats.mixed import mixed_model_family
from collapselab.stats.paired import bootstrap_mean_difference, match_items, paired_family
from collapselab.stats.power import mde_two_sample, pooled_sd

RESULT_COLUMNS = [
    "seed", "scope", "test", "group_a", "group_b", "statistic", "df", "p", "p_adj", "effect",
    "effect_name", "n_a", "n_b", "n_dropped_a", "n_dropped_b", "note",
    "paired", "unit", "diff", "diff_low", "diff_high", "mde",
]

_NO_SEED = "<missing>"  # label of rows whose seed is missing (kept as their own stratum)


def _omnibus_row(result: Mapping[str, Any], test: str) -> dict[str, Any]:
    sizes = ", ".join(f"{g} (n={n})" for g, n in result["n"].items())
    notes = [result["note"]] if result["note"] else []
    notes += [f"{g} skipped: {why}" for g, why in result["skipped"].items()]
    notes.append(f"groups: {sizes}")
    return {
        "test": test, "group_a": None, "group_b": None, "statistic": result["statistic"], "df": result["df"],
        "p": result["p"], "p_adj": result["p"], "effect": result["epsilon_squared"],
        "effect_name": "epsilon_squared", "n_a": result["n_total"], "n_b": np.nan,
        "n_dropped_a": int(sum(result["n_dropped"].values())), "n_dropped_b": np.nan,
        "note": "; ".join(notes),
    }


def _pair_rows(table: pd.DataFrame, test: str) -> list[dict[str, Any]]:
    return [
        {
            "test": test, "group_a": r.group_a, "group_b": r.group_b, "statistic": r.statistic, "df": np.nan,
            "p": r.p, "p_adj": r.p_adj, "effect": r.rank_biserial, "effect_name": "rank_biserial",
            "n_a": r.n_a, "n_b": r.n_b, "n_dropped_a": r.n_dropped_a, "n_dropped_b": r.n_dropped_b,
            "note": r.note,
        }
        for r in table.itertuples(index=False)
    ]


def _with_differences(rows: list[dict[str, Any]], groups: Mapping[str, np.ndarray], opts: Mapping[str, Any],
                      ) -> list[dict[str, Any]]:
    """Unpaired pair rows get the difference of means, its bootstrap interval (each group
    resampled on its own) and the minimum detectable difference (two-sample t, pooled SD)."""
    for r in rows:
        if r["group_a"] is None:
            continue
        a, b = (np.asarray(groups[g], dtype=float) for g in (r["group_a"], r["group_b"]))
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if a.size and b.size:
            r["diff"] = float(a.mean() - b.mean())
            r["diff_low"], r["diff_high"] = bootstrap_mean_difference(
                a, b, n_resamples=opts["n_resamples"], confidence=opts["confidence"], seed=opts["random_state"],
                paired=False)
            r["mde"] = mde_two_sample(pooled_sd(a, b), a.size, b.size)
    return rows


def _plain_family(groups: Mapping[str, np.ndarray], opts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Kruskal–Wallis and pairwise Mann–Whitney U (unpaired)."""
    rows = [_omnibus_row(kruskal_wallis(groups, opts["min_n"]), "kruskal_wallis"),
            *_pair_rows(pairwise_mannwhitney(groups, opts["correction"], opts["method"], opts["min_n"]),
                        "mann_whitney")]
    return _with_differences(rows, groups, opts)


def _item_values(part: pd.DataFrame, by: str, value: str, block: Sequence[str]) -> dict[str, dict[Hashable, float]]:
    """``{group: {block: value}}``: a block's values averaged if it repeats; a missing value (NaN,
    and ±inf, whose differences are undefined) stays in as NaN so that its block is counted."""
    values = part[value].astype(float).where(np.isfinite(part[value].astype(float)))
    means = values.groupby([part[c] for c in (by, *block)], sort=False).mean()
    return {g: dict(means.xs(g, level=0).items()) for g in pd.unique(part[by])}


def _note(rows: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    for r in rows:
        r["note"] = "; ".join(str(x) for x in (note, r.get("note")) if x)
    return rows


def _family(part: pd.DataFrame, by: str, value: str, item: str | None, block: Sequence[str],
            paired: bool | str, opts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Paired tests (Friedman + Wilcoxon) when the groups answer the same items, else the unpaired
    ones (Kruskal–Wallis + Mann–Whitney); the first part of every row's note says which and why."""
    if not paired:
        why = "unpaired (stats.paired: false)"
    elif item is None:
        why = "unpaired: no item ids to pair by"
    else:
        values = _item_values(part, by, value, [*block, item])
        matched, why = match_items({g: set(v) for g, v in values.items()})
        if matched:
            rows = paired_family(values, opts["correction"], n_resamples=opts["n_resamples"],
                                 confidence=opts["confidence"], seed=opts["random_state"],
                                 cluster_on_last=bool(block))
            for r in rows:
                r["paired"] = True
            return _note(rows, why)
    rows = _plain_family(_groups(part, by, value), opts)
    for r in rows:
        r["paired"] = False
    return _note(rows, why)


def _groups(part: pd.DataFrame, by: str, value: str) -> dict[str, np.ndarray]:
    return {g: sub[value].to_numpy(dtype=float) for g, sub in part.groupby(by, sort=False)}


def _label(labels: Mapping[str, Any], extra: str) -> str:
    shown = [f"{k}={v}" for k, v in labels.items() if k != "metric"]
    return ", ".join([*shown, extra]) if extra else ", ".join(shown) or "all"


def compare_conditions(
    per_item: pd.DataFrame,
    by: str = "condition",
    within: Sequence[str] = ("metric", "target", "generation"),
    seed: str | None = "seed",
    value: str = "value",
    correction: Correction = "bonferroni",
    seed_level: Literal["median", "mean"] | None = "median",
    method: str = "auto",
    min_n: int = 2,
    item: str | None = "item_id",
    paired: bool | Literal["auto"] = "auto",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
    mixed_model: bool = True,
) -> pd.DataFrame:
    """The tests across the ``by`` groups in every scope = combination of the ``within`` columns
    present in ``per_item`` (missing values in them form their own scope); with several seeds in a
    scope, also the pooled, seed-level and mixed-model families (see the module docstring).

    ``per_item`` is the long per-item table (:mod:`collapselab.metrics.tables`); pass the rows to
    compare, e.g. ``per_item[per_item.set_kind == "condition"]``. A missing ``by`` value is an
    error (it would silently vanish from every test). Returns the tidy table described in the module
    docstring, one row per test.

    ``paired`` ("auto", the default): where the groups of a scope answer the same items (``item``
    column, e.g. the test prompts every condition answered), Friedman and Wilcoxon signed-rank
    (blocks = items, or seed × item when seeds are pooled) replace Kruskal–Wallis and Mann–Whitney;
    sets that answer different items keep the unpaired tests. ``paired=False``: the study's
    unpaired tests everywhere. ``method``: ``scipy.stats.mannwhitneyu``'s. ``n_resamples``,
    ``confidence``, ``random_state``: the bootstrap intervals of the differences. ``mixed_model``:
    add the mixed-model family when a scope has several seeds.
    """
    if correction not in ("bonferroni", "holm", "none"):
        raise ValueError(f"unknown correction {correction!r}; use 'bonferroni', 'holm' or 'none'")
    if paired not in (True, False, "auto"):
        raise ValueError(f"paired must be True, False or 'auto', got {paired!r}")
    if item is not None and item not in per_item.columns:
        item = None
    if seed in within:  # the caller asked for per-seed scopes only: no pooling across seeds
        seed = None
    within = [c for c in within if c in per_item.columns]
    needed = [by, value, *([seed] if seed else [])]
    missing = [c for c in needed if c not in per_item.columns]
    if missing:
        raise ValueError(f"columns not in the table: {missing}")
    if per_item[by].isna().any():
        raise ValueError(f"{int(per_item[by].isna().sum())} rows have no {by!r}: drop or label them first")
    data = per_item.copy()
    if seed:
        data[seed] = data[seed].astype(object).where(data[seed].notna(), _NO_SEED)
    opts = {"correction": correction, "method": method, "min_n": min_n, "n_resamples": n_resamples,
            "confidence": confidence, "random_state": random_state}

    rows: list[dict[str, Any]] = []
    scopes = data.groupby(within, dropna=False, sort=True) if within else [((), data)]
    for key, part in scopes:
        labels = dict(zip(within, key if isinstance(key, tuple) else (key,), strict=True))
        seeds = list(pd.unique(part[seed])) if seed else []

        def emit(family: list[dict], seed_label: Hashable, extra: str, unit: str, note: str = "",
                 labels: dict[str, Any] = labels) -> None:
            for r in family:
                if note:
                    r["note"] = "; ".join(x for x in (r["note"], note) if x)
                r.setdefault("unit", unit)
                rows.append({**labels, "seed": seed_label, "scope": _label(labels, extra), **r})

        if len(seeds) <= 1:
            label = seeds[0] if seeds else np.nan
            emit(_family(part, by, value, item, [], paired, opts), label, f"{seed}={label}" if seeds else "",
                 "items")
            continue

        missing_note = f"rows without a seed form the stratum {_NO_SEED!r}" if _NO_SEED in seeds else ""
        for s in seeds:
            emit(_family(part[part[seed] == s], by, value, item, [], paired, opts), s, f"{seed}={s}", "items",
                 missing_note)

        pooled = _family(part, by, value, item, [seed], paired, opts) if paired and item else []
        if pooled and pooled[0]["paired"]:  # blocks = (seed, item): pairing and seed blocking at once
            emit(pooled, "pooled", f"pooled over {len(seeds)} seeds (blocks: {seed} × item)", "items", missing_note)
        else:
            stratified = {g: {s: sub[value].to_numpy(dtype=float) for s, sub in gpart.groupby(seed, sort=False)}
                          for g, gpart in part.groupby(by, sort=False)}
            family = [_omnibus_row(stratified_kruskal_wallis(stratified, min_n), "stratified_kruskal_wallis"),
                      *_pair_rows(pairwise_van_elteren(stratified, correction, min_n), "van_elteren")]
            family = _with_differences(family, _groups(part, by, value), opts)
            for r in family:
                r["paired"] = False
            emit(family, "pooled", f"pooled over {len(seeds)} seeds ({seed} as block)", "items", missing_note)

        if seed_level:
            # one summary per run; a run whose items are all NaN gives NaN and is counted as dropped
            runs = part.groupby([by, seed], sort=False)[value].agg(seed_level)
            per_run = {g: runs.xs(g, level=0).to_numpy(dtype=float) for g in pd.unique(part[by])}
            family = _plain_family(per_run, opts)
            for r in family:
                r["paired"] = False
            emit(family, "seed-level", f"seed-level (per-{seed} {seed_level}s)", "runs",
                 f"unit = run: values are per-{seed} {seed_level}s; n counts runs")

        if mixed_model:
            emit(mixed_model_family(part, by, seed, value, item if paired else None, correction,
                                    confidence=confidence),
                 "mixed-model", f"mixed model over {len(seeds)} seeds (run as random intercept)", "runs",
                 missing_note)

    out = pd.DataFrame(rows).reindex(columns=[*within, *RESULT_COLUMNS])
    # counts stay integers next to the omnibus rows' blanks
    return out.astype({c: "Int64" for c in ("n_a", "n_b", "n_dropped_a", "n_dropped_b")})
