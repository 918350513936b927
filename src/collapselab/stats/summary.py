"""One tidy table of condition comparisons for every metric: the study's Kruskal–Wallis across
conditions followed by pairwise Mann–Whitney U with Bonferroni (PAPER.md), run per scope (each
metric × target × generation ... separately), with several training seeds handled explicitly.

Seeds
-----
With one seed per scope (the study's design) each scope gets the plain tests. With several seeds
three families are reported, because "is the difference real?" has more than one meaning:

* ``seed=<s>`` — the plain tests within each seed: does the difference replicate run by run?
* ``seed="pooled"`` — all items of all seeds with **seed as a block**: the stratified
  Kruskal–Wallis (CMH row-mean-scores statistic with van Elteren weights) and pairwise **van
  Elteren** tests (:mod:`collapselab.stats.hypothesis`). Items are ranked *within* their seed, so a
  seed-wide shift (one run's perplexity all higher) adds no noise and cannot fake a condition
  effect; with one seed they reduce to the plain tests. Chosen over the aligned-rank alternative
  (ART with a seed block, :mod:`collapselab.stats.factorial`) because it keeps the pairwise tests
  and effect sizes in the same rank-biserial currency as the unstratified ones and needs no ART-C
  contrasts for the pairs.
* ``seed="seed-level"`` — the plain tests on one number per run (the per-seed median, or mean) with
  the run as the unit. This is the only family that treats run-to-run variation as noise: the
  pooled tests condition on the seeds at hand (their items are many, their runs are few), so they
  say "these runs differ", not "this training recipe differs". With few seeds it has little power
  (two groups of 3 runs can reach at best p = 0.1).

Putting the seed column in ``within`` instead gives per-seed tests only.

Output columns
--------------
``<within columns>``, seed (the seed, "pooled", "seed-level", or the single seed), scope (a
readable label of the same), test ("kruskal_wallis", "mann_whitney", "stratified_kruskal_wallis",
"van_elteren"), group_a, group_b (empty for the omnibus tests), statistic (H, U_a, Q, or van
Elteren's signed z), df, p, p_adj, effect, effect_name ("epsilon_squared" for the omnibus tests,
"rank_biserial" = Cliff's δ = P(a > b) − P(a < b) for pairs: > 0 means group a tends larger),
n_a, n_b (for the omnibus tests n_a is the total), n_dropped_a, n_dropped_b (NaN values removed; for
seed-level tests, runs whose summary is NaN), note (why a test is missing or undefined, skipped
groups, per-group sizes).

p_adj: pairs are corrected within their family — the pairs of one scope's omnibus test, m = pairs
tested (the study's practice); the omnibus test is a family of one (p_adj = p). All pairs are
reported whatever the omnibus p, so a reader can apply the gate ("pairs only after a significant
Kruskal–Wallis") or not.
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
from collapselab.stats.paired import bootstrap_mean_difference, is_matched, minimum_detectable_effect, paired_family

RESULT_COLUMNS = [
    "seed", "scope", "test", "group_a", "group_b", "statistic", "df", "p", "p_adj", "effect",
    "effect_name", "n_a", "n_b", "n_dropped_a", "n_dropped_b", "note",
    "paired", "diff", "diff_low", "diff_high", "mde",
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


def _plain_family(
    groups: Mapping[str, np.ndarray], correction: Correction, method: str, min_n: int,
    n_resamples: int = 1000, confidence: float = 0.95,
) -> list[dict[str, Any]]:
    rows = [_omnibus_row(kruskal_wallis(groups, min_n), "kruskal_wallis"),
            *_pair_rows(pairwise_mannwhitney(groups, correction, method, min_n), "mann_whitney")]
    for r in rows[1:]:  # the difference of means, its (unpaired) bootstrap interval, the detectable size
        a, b = (np.asarray(groups[g], dtype=float) for g in (r["group_a"], r["group_b"]))
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        r["paired"] = False
        if a.size and b.size:
            r["diff"] = float(a.mean() - b.mean())
            r["diff_low"], r["diff_high"] = bootstrap_mean_difference(
                a, b, n_resamples=n_resamples, confidence=confidence, seed=0, paired=False)
            pooled = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)) \
                if a.size + b.size > 2 else np.nan
            r["mde"] = minimum_detectable_effect(float(pooled), a.size, n_b=b.size)
    rows[0]["paired"] = False
    return rows


def _item_values(part: pd.DataFrame, by: str, value: str, block: Sequence[str]) -> dict[str, dict[Hashable, float]]:
    """``{group: {block: value}}`` (a block's values averaged if it repeats; NaN kept as missing)."""
    means = part.groupby([by, *block], sort=False)[value].mean()
    return {g: {k: v for k, v in means.xs(g, level=0).items() if np.isfinite(v)}
            for g in pd.unique(part[by])}


def _family(part: pd.DataFrame, by: str, value: str, item: str | None, block: Sequence[str], paired: bool | str,
            correction: Correction, method: str, min_n: int, n_resamples: int, confidence: float,
            ) -> list[dict[str, Any]]:
    """Paired tests (Friedman + Wilcoxon) when the groups answer the same items, else the unpaired
    ones (Kruskal–Wallis + Mann–Whitney); see :mod:`collapselab.stats.paired`."""
    if paired and item:
        values = _item_values(part, by, value, [*block, item])
        if is_matched(values):
            rows = paired_family(values, correction, n_resamples=n_resamples, confidence=confidence)
            for r in rows:
                r["paired"] = True
            return rows
        note = "not matched by item: unpaired tests" if paired is True else ""
    else:
        note = ""
    rows = _plain_family(_groups(part, by, value), correction, method, min_n, n_resamples, confidence)
    for r in rows:
        if note:
            r["note"] = "; ".join(x for x in (r["note"], note) if x)
    return rows


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
) -> pd.DataFrame:
    """Kruskal–Wallis across the ``by`` groups and pairwise Mann–Whitney U (``method`` as
    ``scipy.stats.mannwhitneyu``) in every scope = combination of the ``within`` columns present in
    ``per_item`` (missing values in them form their own scope); with several seeds in a scope, also
    the pooled seed-stratified tests and the seed-level tests (see the module docstring).

    ``per_item`` is the long per-item table (:mod:`collapselab.metrics.tables`); pass the rows to
    compare, e.g. ``per_item[per_item.set_kind == "condition"]``. A missing ``by`` value is an
    error (it would silently vanish from every test). Returns the tidy table described in the module
    docstring, one row per test.

    ``paired`` ("auto", the default): where the groups of a scope answer the same items (``item``
    column, e.g. the test prompts every condition answered), the paired tests — Friedman and
    Wilcoxon signed-rank, blocks = items (items × seeds when seeds are pooled) — replace
    Kruskal–Wallis and Mann–Whitney; sets that answer different items (synthetic training sets)
    keep the unpaired tests. ``paired=False`` gives the study's unpaired tests everywhere. Pair rows
    carry the mean difference a − b with a bootstrap interval (paired: items resampled together)
    and the minimum detectable difference (:mod:`collapselab.stats.paired`).
    """
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

    rows: list[dict[str, Any]] = []
    scopes = data.groupby(within, dropna=False, sort=True) if within else [((), data)]
    for key, part in scopes:
        labels = dict(zip(within, key if isinstance(key, tuple) else (key,), strict=True))
        seeds = list(pd.unique(part[seed])) if seed else []

        def emit(family: list[dict], seed_label: Hashable, extra: str, note: str = "",
                 labels: dict[str, Any] = labels) -> None:
            for r in family:
                if note:
                    r["note"] = "; ".join(x for x in (r["note"], note) if x)
                rows.append({**labels, "seed": seed_label, "scope": _label(labels, extra), **r})

        opts = {"correction": correction, "method": method, "min_n": min_n, "n_resamples": n_resamples,
                "confidence": confidence}
        if len(seeds) <= 1:
            label = seeds[0] if seeds else np.nan
            emit(_family(part, by, value, item, [], paired, **opts), label, f"{seed}={label}" if seeds else "")
            continue

        missing_note = f"rows without a seed form the stratum {_NO_SEED!r}" if _NO_SEED in seeds else ""
        for s in seeds:
            emit(_family(part[part[seed] == s], by, value, item, [], paired, **opts), s, f"{seed}={s}", missing_note)

        pooled = _family(part, by, value, item, [seed], paired, **opts) if paired and item else []
        if pooled and pooled[0]["paired"]:  # blocks = (seed, item): pairing and seed blocking at once
            emit(pooled, "pooled", f"pooled over {len(seeds)} seeds (blocks: {seed} × item)", missing_note)
        else:
            stratified = {g: {s: sub[value].to_numpy(dtype=float) for s, sub in gpart.groupby(seed, sort=False)}
                          for g, gpart in part.groupby(by, sort=False)}
            emit([_omnibus_row(stratified_kruskal_wallis(stratified, min_n), "stratified_kruskal_wallis"),
                  *_pair_rows(pairwise_van_elteren(stratified, correction, min_n), "van_elteren")],
                 "pooled", f"pooled over {len(seeds)} seeds ({seed} as block)", missing_note)

        if seed_level:
            # one summary per run; a run whose items are all NaN gives NaN and is counted as dropped
            runs = part.groupby([by, seed], sort=False)[value].agg(seed_level)
            per_run = {g: runs.xs(g, level=0).to_numpy(dtype=float) for g in pd.unique(part[by])}
            emit(_plain_family(per_run, correction, method, min_n, n_resamples, confidence), "seed-level",
                 f"seed-level (per-{seed} {seed_level}s)",
                 f"unit = run: values are per-{seed} {seed_level}s; n counts runs")

    out = pd.DataFrame(rows).reindex(columns=[*within, *RESULT_COLUMNS])
    # counts stay integers next to the omnibus rows' blanks
    return out.astype({c: "Int64" for c in ("n_a", "n_b", "n_dropped_a", "n_dropped_b")})
