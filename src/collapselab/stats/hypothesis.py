"""Rank-based hypothesis tests across conditions: the study's Kruskal–Wallis + pairwise Mann–Whitney
U with Bonferroni (PAPER.md, "Statistics"), and a seed-stratified version of both.

Why rank tests: per-item metric values (perplexity, self-BLEU, harmfulness scores) are skewed,
bounded or ordinal, so the study compares distributions by ranks rather than means.

Conventions used everywhere in this module
-------------------------------------------
* **Missing values.** NaN values (an undefined per-item metric) are dropped and *counted* per group
  (``n_dropped``). ``±inf`` are kept: they have a well-defined rank. A group left with fewer than
  ``min_n`` values is skipped and the reason is recorded (``skipped``) — nothing is dropped
  silently.
* **Direction of pairwise effects.** For a pair (a, b) with sizes n_a, n_b, U_a counts the pairs
  (x from a, y from b) with x > y, ties counting ½ (this is ``scipy.stats.mannwhitneyu(a, b)``'s
  statistic), and U_b = n_a·n_b − U_a. The **rank-biserial correlation** is reported as

      r = (U_a − U_b) / (n_a n_b) = 1 − 2·U_b / (n_a n_b) = P(a > b) − P(a < b),

  i.e. Wendt's (1972) r = 1 − 2U/(n1 n2) with U taken as U_b, and Kerby's (2014) "simple
  difference" form. **r > 0 means group a tends to have the larger values** (whether larger is
  better depends on the metric). Written this way r is identical to **Cliff's delta**
  δ = P(a > b) − P(a < b) (Cliff 1993); both columns are reported because readers look for either.
* **Multiple comparisons.** p-values of the pairwise tests of one family (all pairs of one
  omnibus test) are adjusted with Bonferroni: p_adj = min(1, p·m), m = number of pairs actually
  tested (pairs involving a skipped group are listed but not counted). ``holm`` is offered too.

References: Kruskal & Wallis (1952); Mann & Whitney (1947); Tomczak & Tomczak (2014), "The need to
report effect size estimates revisited" (ε² for Kruskal–Wallis); van Elteren (1960); Landis,
Heyman & Koch (1978) (Cochran–Mantel–Haenszel row-mean-scores statistic).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

Correction = Literal["bonferroni", "holm", "none"]

# Columns of the tables returned by the pairwise functions (one row per pair).
PAIRWISE_COLUMNS = [
    "group_a", "group_b", "statistic", "statistic_name", "p", "p_adj", "rank_biserial", "cliffs_delta",
    "median_a", "median_b", "n_a", "n_b", "n_dropped_a", "n_dropped_b", "note",
]


@dataclass(frozen=True)
class CleanGroups:
    """Groups after NaN removal.

    ``values`` holds the usable groups (at least ``min_n`` values), in input order;
    ``n_dropped`` the number of NaNs removed from every input group; ``skipped`` maps each unusable
    group to the reason it was skipped."""

    values: dict[str, np.ndarray]
    n_dropped: dict[str, int]
    skipped: dict[str, str] = field(default_factory=dict)


def clean_groups(groups: Mapping[str, ArrayLike], min_n: int = 2) -> CleanGroups:
    """Drop NaNs from every group (counting them) and skip groups with fewer than ``min_n`` values."""
    values: dict[str, np.ndarray] = {}
    n_dropped: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for name, raw in groups.items():
        x = np.asarray(raw, dtype=float).ravel()
        nan = np.isnan(x)
        n_dropped[name] = int(nan.sum())
        x = x[~nan]
        if x.size < min_n:
            skipped[name] = (f"{x.size} value(s) after dropping {n_dropped[name]} NaN(s); "
                             f"at least {min_n} needed")
        else:
            values[name] = x
    return CleanGroups(values, n_dropped, skipped)


def adjust_pvalues(p: ArrayLike, method: Correction = "bonferroni") -> np.ndarray:
    """Family-wise adjusted p-values. NaN entries (tests that could not be run) are left NaN and do
    not count towards the family size m.

    * ``bonferroni``: p_adj = min(1, m·p).
    * ``holm`` (Holm 1979): sort p ascending, p_adj(i) = max_{j ≤ i} min(1, (m − j + 1)·p(j)).
    * ``none``: p unchanged.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    q = p[ok]
    if method == "bonferroni":
        adj = np.minimum(1.0, q * m)
    elif method == "holm":
        order = np.argsort(q, kind="stable")
        stepped = np.minimum(1.0, q[order] * (m - np.arange(m)))
        adj = np.empty(m)
        # the running maximum keeps the adjusted p-values monotone in the raw ones
        adj[order] = np.maximum.accumulate(stepped)
    elif method == "none":
        adj = q
    else:
        raise ValueError(f"unknown correction {method!r}; use 'bonferroni', 'holm' or 'none'")
    out[ok] = adj
    return out


def _all_identical(arrays: list[np.ndarray]) -> bool:
    pooled = np.concatenate(arrays)
    return bool(np.all(pooled == pooled[0]))


def kruskal_wallis(groups: Mapping[str, ArrayLike], min_n: int = 2) -> dict[str, Any]:
    """Kruskal–Wallis H test across groups (``scipy.stats.kruskal``: tie-corrected, χ² reference
    distribution with k − 1 degrees of freedom).

    Effect size (Tomczak & Tomczak 2014):

        ε² = H / ((n² − 1) / (n + 1)) = H / (n − 1),    n = total number of values,

    which lies in [0, 1]: since tie-corrected H = (n − 1)·SS_between/SS_total of the ranks, ε² is
    the share of the rank variance lying between groups (η² of the ranks).

    Returns a dict with ``statistic`` (H), ``df``, ``p``, ``epsilon_squared``, ``n`` (per usable
    group), ``n_total``, ``n_dropped`` (NaNs per input group), ``skipped`` (group → reason) and
    ``note`` (why the test is undefined, else ""). Fewer than two usable groups, or all values
    identical (H = 0/0), give NaN statistic and p with the reason in ``note``.
    """
    clean = clean_groups(groups, min_n)
    arrays = list(clean.values.values())
    n = {k: int(v.size) for k, v in clean.values.items()}
    n_total = int(sum(n.values()))
    out: dict[str, Any] = {
        "statistic": np.nan, "df": len(arrays) - 1 if arrays else 0, "p": np.nan,
        "epsilon_squared": np.nan, "n": n, "n_total": n_total, "n_dropped": clean.n_dropped,
        "skipped": clean.skipped, "note": "",
    }
    if len(arrays) < 2:
        out["note"] = f"{len(arrays)} usable group(s); at least 2 needed"
    elif _all_identical(arrays):
        out["note"] = "all values identical: H undefined"
    else:
        res = stats.kruskal(*arrays)
        out["statistic"], out["p"] = float(res.statistic), float(res.pvalue)
        out["epsilon_squared"] = epsilon_squared(out["statistic"], n_total)
    return out


def epsilon_squared(h: float, n_total: int) -> float:
    """ε² = H / ((n² − 1)/(n + 1)) (Tomczak & Tomczak 2014); the denominator simplifies to n − 1."""
    return float(h / ((n_total**2 - 1) / (n_total + 1)))


def mann_whitney(a: ArrayLike, b: ArrayLike, method: str = "auto") -> dict[str, float]:
    """Two-sided Mann–Whitney U test of one pair (``scipy.stats.mannwhitneyu``; ``method`` "auto"
    uses the exact null distribution for small samples without ties, else the tie-corrected
    normal approximation with continuity correction). NaNs must already be removed.

    Returns U (= U_a, see the module docstring), p, the rank-biserial correlation
    r = 1 − 2·U_b/(n_a n_b) = P(a > b) − P(a < b) (> 0: a tends larger), Cliff's delta (= r) and
    the medians. All values identical → p = 1 and r = 0 (no evidence of any shift).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    res = stats.mannwhitneyu(a, b, alternative="two-sided", method=method)
    u_a = float(res.statistic)
    r = rank_biserial(u_a, a.size, b.size)
    return {
        "statistic": u_a, "p": float(res.pvalue), "rank_biserial": r, "cliffs_delta": r,
        "median_a": float(np.median(a)), "median_b": float(np.median(b)),
    }


def rank_biserial(u_a: float, n_a: int, n_b: int) -> float:
    """r = 1 − 2·U_b/(n_a n_b) with U_b = n_a n_b − U_a, i.e. r = 2·U_a/(n_a n_b) − 1."""
    return float(2.0 * u_a / (n_a * n_b) - 1.0)


def _pairwise(
    clean: CleanGroups, names: list[str], pair_test: Callable[[str, str], dict[str, Any]],
    statistic_name: str, correction: Correction,
) -> pd.DataFrame:
    """One row per pair of input groups (in input order); pairs with a skipped group carry NaNs
    and the reason. ``pair_test(name_a, name_b)`` returns the per-pair fields."""
    rows = []
    for ga, gb in itertools.combinations(names, 2):
        row: dict[str, Any] = {
            "group_a": ga, "group_b": gb, "statistic": np.nan, "statistic_name": statistic_name,
            "p": np.nan, "rank_biserial": np.nan, "cliffs_delta": np.nan, "median_a": np.nan,
            "median_b": np.nan, "n_a": 0, "n_b": 0,
            "n_dropped_a": clean.n_dropped.get(ga, 0), "n_dropped_b": clean.n_dropped.get(gb, 0), "note": "",
        }
        reasons = [f"{g} skipped: {clean.skipped[g]}" for g in (ga, gb) if g in clean.skipped]
        if reasons:
            row["note"] = "; ".join(reasons)
        else:
            row.update(pair_test(ga, gb))
        rows.append(row)
    table = pd.DataFrame(rows, columns=[c for c in PAIRWISE_COLUMNS if c != "p_adj"])
    table.insert(table.columns.get_loc("p") + 1, "p_adj", adjust_pvalues(table["p"].to_numpy(), correction))
    table.attrs["correction"] = correction
    table.attrs["m"] = int(table["p"].notna().sum())
    table.attrs["skipped"] = dict(clean.skipped)
    return table


def pairwise_mannwhitney(
    groups: Mapping[str, ArrayLike], correction: Correction = "bonferroni", method: str = "auto",
    min_n: int = 2,
) -> pd.DataFrame:
    """Two-sided Mann–Whitney U for every pair of groups, p adjusted for the m pairs tested.

    Columns: group_a, group_b, statistic (U_a), statistic_name ("U"), p, p_adj, rank_biserial,
    cliffs_delta (identical to rank_biserial; sign: > 0 means group_a tends larger), median_a,
    median_b, n_a, n_b, n_dropped_a, n_dropped_b (NaNs removed), note (why a pair was not tested).
    ``attrs`` carries ``correction``, ``m`` and ``skipped``.
    """
    clean = clean_groups(groups, min_n)

    def test(ga: str, gb: str) -> dict[str, Any]:
        a, b = clean.values[ga], clean.values[gb]
        return {**mann_whitney(a, b, method), "n_a": a.size, "n_b": b.size}

    return _pairwise(clean, list(groups), test, "U", correction)


# --------------------------------------------------------------------------------------------
# Stratified (blocked) versions: several seeds, each a stratum.
# --------------------------------------------------------------------------------------------

StratifiedGroups = Mapping[str, Mapping[Hashable, ArrayLike]]  # group -> stratum -> values


def _clean_stratified(groups: StratifiedGroups, min_n: int) -> tuple[dict[str, dict], CleanGroups]:
    """NaN removal per group over all its strata; a group is usable with ≥ min_n values in total."""
    per_group: dict[str, dict] = {}
    n_dropped: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for name, strata in groups.items():
        kept, dropped = {}, 0
        for s, raw in strata.items():
            x = np.asarray(raw, dtype=float).ravel()
            nan = np.isnan(x)
            dropped += int(nan.sum())
            if (~nan).any():
                kept[s] = x[~nan]
        n_dropped[name] = dropped
        total = sum(v.size for v in kept.values())
        if total < min_n:
            skipped[name] = f"{total} value(s) after dropping {dropped} NaN(s); at least {min_n} needed"
        else:
            per_group[name] = kept
    pooled = {g: np.concatenate(list(s.values())) for g, s in per_group.items()}
    return per_group, CleanGroups(pooled, n_dropped, skipped)


def _stratified_core(per_group: dict[str, dict]) -> dict[str, Any]:
    """Weighted rank-sum statistic pooled over strata (see :func:`stratified_kruskal_wallis`)."""
    names = list(per_group)
    k = len(names)
    strata = sorted({s for g in per_group.values() for s in g}, key=str)
    dev = np.zeros(k)  # Σ_h w_h (R_hg − E_hg)
    cov = np.zeros((k, k))  # Σ_h w_h² V_h
    dominance = np.zeros(2)  # for k = 2: Σ_h (U_a,h − U_b,h) and Σ_h n_a,h n_b,h
    n_total = 0
    for s in strata:
        parts = [per_group[g].get(s, np.empty(0)) for g in names]
        sizes = np.array([p.size for p in parts], dtype=float)
        big_n = sizes.sum()
        n_total += int(big_n)
        if big_n < 2 or (sizes > 0).sum() < 2:
            continue  # a stratum with one group carries no within-stratum comparison
        ranks = stats.rankdata(np.concatenate(parts))
        # van Elteren weight: ranks / (N_h + 1) are the "modified ridit" scores, which makes each
        # stratum's contribution comparable whatever its size
        w = 1.0 / (big_n + 1.0)
        bounds = np.cumsum(sizes).astype(int)
        rank_sums = np.array([r.sum() for r in np.split(ranks, bounds[:-1])])
        expected = sizes * (big_n + 1.0) / 2.0
        s2 = ranks.var()  # population variance of the ranks (ties shrink it)
        # permutation covariance of the rank sums when sampling without replacement
        v = s2 / (big_n - 1.0) * (big_n * np.diag(sizes) - np.outer(sizes, sizes))
        dev += w * (rank_sums - expected)
        cov += w**2 * v
        if k == 2 and sizes.all():
            u_a = rank_sums[0] - sizes[0] * (sizes[0] + 1) / 2
            dominance += (2 * u_a - sizes[0] * sizes[1], sizes[0] * sizes[1])
    # The k rank-sum deviations sum to zero, so V has rank ≤ k − 1: a pseudo-inverse gives the
    # quadratic form on the identifiable contrasts and its rank gives the degrees of freedom.
    df = int(np.linalg.matrix_rank(cov)) if cov.any() else 0
    q = float(dev @ np.linalg.pinv(cov) @ dev) if df > 0 else np.nan
    p = float(stats.chi2.sf(q, df)) if df > 0 else np.nan
    out = {"statistic": q, "df": df, "p": p, "n_total": n_total, "n_strata": len(strata)}
    if k == 2:
        out["rank_biserial"] = float(dominance[0] / dominance[1]) if dominance[1] else np.nan
        out["z"] = float(np.sign(dev[0]) * np.sqrt(q)) if df > 0 else np.nan
    return out


def stratified_kruskal_wallis(groups: StratifiedGroups, min_n: int = 2) -> dict[str, Any]:
    """Kruskal–Wallis across groups with strata as blocks (e.g. seeds): ranks are taken *within*
    each stratum, so a stratum-wide shift (one seed scoring everything higher) cannot create or
    hide a difference between groups.

    Statistic: the Cochran–Mantel–Haenszel row-mean-scores statistic with modified-ridit scores
    (Landis, Heyman & Koch 1978). With R_hg the rank sum of group g in stratum h (N_h values,
    n_hg in group g), w_h = 1/(N_h + 1) (van Elteren 1960), E_hg = n_hg (N_h + 1)/2 and V_h the
    permutation covariance of the rank sums, s_h²/(N_h − 1) · (N_h diag(n_h) − n_h n_hᵀ) with s_h²
    the population variance of stratum h's ranks,

        Q = dᵀ V⁻ d,   d = Σ_h w_h (R_h − E_h),   V = Σ_h w_h² V_h,   Q ~ χ²(rank V) = χ²(k − 1).

    With a single stratum Q equals the tie-corrected Kruskal–Wallis H exactly; with two groups it
    is the square of van Elteren's z. ``epsilon_squared`` = Q/(n − 1), the same formula as
    unstratified ε². Returns the same keys as :func:`kruskal_wallis` plus ``n_strata``.
    """
    per_group, clean = _clean_stratified(groups, min_n)
    n = {g: int(v.size) for g, v in clean.values.items()}
    out: dict[str, Any] = {
        "statistic": np.nan, "df": max(len(per_group) - 1, 0), "p": np.nan, "epsilon_squared": np.nan,
        "n": n, "n_total": int(sum(n.values())), "n_dropped": clean.n_dropped, "skipped": clean.skipped,
        "n_strata": 0, "note": "",
    }
    if len(per_group) < 2:
        out["note"] = f"{len(per_group)} usable group(s); at least 2 needed"
        return out
    core = _stratified_core(per_group)
    out.update({k: core[k] for k in ("statistic", "df", "p", "n_strata")})
    if core["df"] == 0:
        out["note"] = "no within-stratum variation between groups (all tied or groups never share a stratum)"
    else:
        out["epsilon_squared"] = epsilon_squared(core["statistic"], out["n_total"])
    return out


def pairwise_van_elteren(
    groups: StratifiedGroups, correction: Correction = "bonferroni", min_n: int = 2,
) -> pd.DataFrame:
    """Van Elteren's stratified Wilcoxon–Mann–Whitney test (two-sided, normal approximation,
    no continuity correction) for every pair of groups, strata as blocks.

    It is :func:`stratified_kruskal_wallis` restricted to the pair; ``statistic`` is van Elteren's
    signed z (> 0: group a tends larger). ``rank_biserial`` (= ``cliffs_delta``) is the dominance
    over *within-stratum* pairs only, Σ_h (U_a,h − U_b,h) / Σ_h n_a,h n_b,h. Medians are over all
    strata. Same columns as :func:`pairwise_mannwhitney`.
    """
    per_group, clean = _clean_stratified(groups, min_n)

    def test(ga: str, gb: str) -> dict[str, Any]:
        core = _stratified_core({ga: per_group[ga], gb: per_group[gb]})
        a, b = clean.values[ga], clean.values[gb]
        return {
            "statistic": core["z"], "p": core["p"], "rank_biserial": core["rank_biserial"],
            "cliffs_delta": core["rank_biserial"], "median_a": float(np.median(a)),
            "median_b": float(np.median(b)), "n_a": a.size, "n_b": b.size,
            "note": "" if core["df"] else "no within-stratum variation between the groups",
        }

    return _pairwise(clean, list(groups), test, "z", correction)

