"""Metric concordance: do the metrics tell the same story about the conditions?

The study's metrics disagree (PAPER.md: "the metrics disagree with each other — which is why the
study stresses metric choice"). Given one aggregate value per (condition, metric) and each metric's
direction, this module shows where they agree:

* **ranks** of the conditions per metric, 1 = best (average ranks for ties). Metrics with no better
  direction (``higher_is_better=None``, e.g. length) are left out of every "better" statistic but
  still shown, ranked by value (1 = highest) in ``value_ranks``.
* **Kendall's τ_b and Spearman's ρ** between every pair of metrics across conditions
  (``scipy.stats.kendalltau`` / ``spearmanr``). Directed metrics are first turned into "goodness"
  (values negated when lower is better), so τ > 0 always means "the two metrics agree on which
  conditions are better". Pairs with an undirected metric compare raw values (noted). With fewer
  than 3 conditions τ and ρ are undefined (two points always correlate ±1) and reported as NaN.
* **robust conclusions**: for every pair of conditions, how many directed metrics call a better,
  b better, or tie, and the share agreeing with the majority — a conclusion backed by 9 of 9 metrics
  is robust to metric choice, one backed by 5 of 9 is not.
* **Kendall's W** (coefficient of concordance; Kendall & Babington Smith 1939) over the directed
  metrics, with the tie correction: with n conditions, m metrics, R_i the sum of condition i's
  ranks and T_j = Σ (t³ − t) over the tie groups of metric j,

      W = 12 Σ_i (R_i − m(n + 1)/2)² / (m²(n³ − n) − m Σ_j T_j),

  W = 1 when all metrics rank the conditions identically and 0 when they cancel out; the large-
  sample test uses χ² = m(n − 1)W with n − 1 degrees of freedom (approximate for small n, m).

**One vote per metric family.** Families with many variants (distinct-1…4, JS-1/2, two Self-BLEU
modes) would otherwise outvote a family with one metric, and the variants of one family are not
independent evidence. Given each metric's family (``families``), the votes — Kendall's W and the
robust conclusions — are cast by families: a family's score for a condition is the mean over its
directed metrics of the condition's scaled rank (r − ½)/n_m (r its rank, 1 = best, among the n_m
conditions that metric ranks; with no missing values this is the mean rank, rescaled), and the
family ranks the conditions by that score (``family_ranks``, 1 = best, ties averaged). W is then
computed over the family ranks (m = families), and each family casts one vote per pair of
conditions (a tie when its scores are equal). Per-metric ranks and correlations are still
reported. Without ``families`` every metric votes alone (each metric its own family).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class Concordance:
    """Result of :func:`metric_concordance` (see the module docstring for each part)."""

    ranks: pd.DataFrame  # conditions × directed metrics, 1 = best
    value_ranks: pd.DataFrame  # conditions × undirected metrics, 1 = highest value (no "better")
    correlations: pd.DataFrame  # one row per pair of metrics
    pairwise: pd.DataFrame  # one row per pair of conditions; the voters are families (or metrics)
    kendalls_w: dict[str, Any]  # over the voters
    family_ranks: pd.DataFrame | None = None  # conditions × families, 1 = best (None: metrics vote alone)


def _directions(table: pd.DataFrame, higher_is_better: Mapping[str, bool | None]) -> dict[str, bool | None]:
    missing = [m for m in table.columns if m not in higher_is_better]
    if missing:
        raise ValueError(f"no direction given for metric(s) {missing} (use None for 'no better direction')")
    return {m: higher_is_better[m] for m in table.columns}


def goodness(table: pd.DataFrame, higher_is_better: Mapping[str, bool | None]) -> pd.DataFrame:
    """Directed metrics oriented so that larger = better (negated when lower is better); undirected
    metrics are returned unchanged."""
    directions = _directions(table, higher_is_better)
    signs = pd.Series({m: -1.0 if d is False else 1.0 for m, d in directions.items()})
    return table.astype(float) * signs


def rank_conditions(table: pd.DataFrame, higher_is_better: Mapping[str, bool | None]) -> pd.DataFrame:
    """Rank the conditions (rows) on every directed metric (columns): 1 = best, ties get the average
    rank, NaN stays NaN. Undirected metrics are dropped (see :func:`metric_concordance`)."""
    directions = _directions(table, higher_is_better)
    directed = [m for m, d in directions.items() if d is not None]
    return goodness(table[directed], higher_is_better).rank(ascending=False, method="average")


def kendalls_w(ranks: pd.DataFrame) -> dict[str, Any]:
    """Kendall's W of a rank table (rows: objects ranked, e.g. conditions; columns: raters, e.g.
    metrics), tie-corrected; rows with a missing rank are left out (listed in ``dropped``).

    Returns W, chi2 = m(n − 1)W, df = n − 1, p, n, m, dropped and a note when undefined
    (n < 2, m < 2, or every rater ties every object)."""
    complete = ranks.dropna(axis=0, how="any")
    dropped = [str(i) for i in ranks.index.difference(complete.index, sort=False)]
    n, m = complete.shape
    out: dict[str, Any] = {"W": np.nan, "chi2": np.nan, "df": max(n - 1, 0), "p": np.nan, "n": n, "m": m,
                           "dropped": dropped, "note": ""}
    if n < 2 or m < 2:
        out["note"] = f"needs at least 2 objects and 2 raters (have {n} complete rows, {m} columns)"
        return out
    # re-rank within the complete rows so each column is a ranking of exactly these n objects
    r = complete.rank(method="average").to_numpy()
    row_sums = r.sum(axis=1)
    s = ((row_sums - m * (n + 1) / 2) ** 2).sum()
    ties = sum(
        float(((counts**3) - counts).sum())
        for counts in (np.unique(col, return_counts=True)[1] for col in r.T)
    )
    denom = m**2 * (n**3 - n) - m * ties
    if denom <= 0:
        out["note"] = "every column ties every row: W undefined"
        return out
    w = 12 * s / denom
    out.update(W=float(w), chi2=float(m * (n - 1) * w), p=float(stats.chi2.sf(m * (n - 1) * w, n - 1)))
    if n < 3:
        out["note"] = "fewer than 3 objects: W is crude"
    return out


def _correlations(good: pd.DataFrame, directions: Mapping[str, bool | None]) -> pd.DataFrame:
    rows = []
    for a, b in itertools.combinations(good.columns, 2):
        pair = good[[a, b]].dropna()
        n = len(pair)
        row: dict[str, Any] = {"metric_a": a, "metric_b": b, "direction_a": directions[a],
                               "direction_b": directions[b], "n": n, "tau": np.nan, "tau_p": np.nan,
                               "rho": np.nan, "rho_p": np.nan, "note": ""}
        notes = []
        if directions[a] is None or directions[b] is None:
            notes.append("undirected metric: τ compares raw values, not 'better'")
        if n < 3:
            notes.append(f"{n} conditions with both values: τ and ρ undefined (need ≥ 3)")
        elif pair[a].nunique() < 2 or pair[b].nunique() < 2:
            notes.append("a metric is constant across these conditions: τ and ρ undefined")
        else:
            tau = stats.kendalltau(pair[a], pair[b])  # τ_b: corrects for ties in either metric
            rho = stats.spearmanr(pair[a], pair[b])
            row.update(tau=float(tau.statistic), tau_p=float(tau.pvalue), rho=float(rho.statistic),
                       rho_p=float(rho.pvalue))
        row["note"] = "; ".join(notes)
        rows.append(row)
    columns = ["metric_a", "metric_b", "direction_a", "direction_b", "n", "tau", "tau_p", "rho", "rho_p", "note"]
    return pd.DataFrame(rows, columns=columns)


def family_scores(ranks: pd.DataFrame, families: Mapping[str, str]) -> pd.DataFrame:
    """Conditions × families: the mean over a family's metrics (columns of ``ranks``, 1 = best) of
    the scaled rank (r − ½)/n_m, n_m = the conditions metric m ranks; lower = better. NaN where
    none of the family's metrics ranks the condition."""
    missing = [m for m in ranks.columns if m not in families]
    if missing:
        raise ValueError(f"no family given for metric(s) {missing}")
    scaled = (ranks - 0.5) / ranks.notna().sum()
    by_family = pd.Series({m: str(families[m]) for m in ranks.columns})
    return scaled.T.groupby(by_family, sort=False).mean().T


def _pairwise_agreement(good: pd.DataFrame) -> pd.DataFrame:
    """For each pair of conditions, the voters' (directed metrics' or families') votes on which is
    better; ``good``: larger = better."""
    rows = []
    for ca, cb in itertools.combinations(good.index, 2):
        va, vb = good.loc[ca], good.loc[cb]
        both = va.notna() & vb.notna()
        a_better = int((va[both] > vb[both]).sum())
        b_better = int((va[both] < vb[both]).sum())
        tied = int(both.sum()) - a_better - b_better
        total = int(both.sum())
        majority = ca if a_better > b_better else cb if b_better > a_better else "tie"
        rows.append({
            "condition_a": ca, "condition_b": cb, "n_metrics": total, "n_a_better": a_better,
            "n_b_better": b_better, "n_tied": tied,
            "share_a_better": a_better / total if total else np.nan,
            "share_b_better": b_better / total if total else np.nan,
            "majority": majority,
            # share of metrics that back the majority verdict (ties count against it)
            "agreement": max(a_better, b_better) / total if total else np.nan,
            "metrics_a_better": ",".join(map(str, va[both].index[va[both] > vb[both]])),
            "metrics_b_better": ",".join(map(str, va[both].index[va[both] < vb[both]])),
        })
    return pd.DataFrame(rows)


def metric_concordance(table: pd.DataFrame, higher_is_better: Mapping[str, bool | None],
                       families: Mapping[str, str] | None = None) -> Concordance:
    """Concordance of metrics over conditions. ``table``: rows = conditions, columns = metrics,
    values = one aggregate each (NaN where missing); ``higher_is_better``: metric → True / False /
    None (no better direction); ``families``: metric → family, so that each family casts one vote
    in Kendall's W and the pairwise agreement (see the module docstring; None: one vote per metric).
    Values compare exactly (no tolerance) when counting ties."""
    directions = _directions(table, higher_is_better)
    good = goodness(table, directions)
    directed = [m for m, d in directions.items() if d is not None]
    undirected = [m for m, d in directions.items() if d is None]
    ranks = rank_conditions(table, directions)
    # a metric with no value at all cannot rank anything; left out of W and said so
    empty = [m for m in directed if ranks[m].isna().all()]
    voting = ranks.drop(columns=empty)
    family_ranks = None
    if families is not None:
        scores = family_scores(voting, families)
        family_ranks = scores.rank(ascending=True, method="average")
        w = kendalls_w(family_ranks)
        w["unit"] = "family"
        w["families"] = {f: [m for m in voting.columns if str(families[m]) == f] for f in scores.columns}
        votes = -scores  # larger = better, as the metrics' goodness
    else:
        w = kendalls_w(voting)
        w["unit"] = "metric"
        votes = good[directed]
    w["metrics_dropped"] = empty
    pairwise = _pairwise_agreement(votes)
    if not pairwise.empty:
        pairwise["unit"] = w["unit"]  # what n_metrics / metrics_*_better count: families or metrics
    return Concordance(
        ranks=ranks,
        value_ranks=table[undirected].astype(float).rank(ascending=False, method="average"),
        correlations=_correlations(good, directions),
        pairwise=pairwise,
        kendalls_w=w,
        family_ranks=family_ranks,
    )
