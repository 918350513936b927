"""Paired tests for conditions that answer the same items (audit c4).

Every condition answers the same test prompts (and human-text perplexity scores the same
references; safety prompts and preference items are shared too), so the per-item values of two
conditions are matched by item. Treating them as independent samples (Kruskal–Wallis,
Mann–Whitney) ignores the pairing: item difficulty then counts as noise.

* **Friedman** (1937) across conditions on complete blocks (items with a value in every condition):
  ``scipy.stats.friedmanchisquare``; effect size Kendall's W = χ²_F / (n (k − 1)).
* **Wilcoxon signed-rank** for each pair on the items both have (``scipy.stats.wilcoxon``,
  two-sided, ``zero_method="wilcox"``: zero differences are dropped, and counted). Effect size: the
  **matched-pairs rank-biserial correlation** r = (W₊ − W₋) / (W₊ + W₋) (Kerby 2014), the signed
  rank sums over the non-zero differences d = a − b; r > 0 means a tends larger.
* **Paired bootstrap interval of the difference** of means, mean(a − b): items are resampled and
  both conditions' values of a drawn item go together (percentile interval, ``n_resamples``).
* **Minimum detectable effect** of the mean difference at 80 % power and two-sided α = 0.05 for
  the n pairs and the observed SD of the differences: the one-sample t-test's detectable
  standardized effect (``statsmodels.stats.power.TTestPower``) × SD(d). For unpaired samples the
  two-sample version (``TTestIndPower``) × the pooled SD. Rank tests have about the t-test's power
  (asymptotic relative efficiency ≥ 0.864), so this is an honest scale for "what could these data
  have detected".

Blocks: a block is an item, or an (item, seed) pair when several seeds are pooled — a seed's run
of every condition answered the same items, so a block holds one value per condition.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from collapselab.stats.hypothesis import Correction, adjust_pvalues


def minimum_detectable_effect(sd: float, n: int, *, n_b: int | None = None, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """The smallest mean difference a two-sided t-test detects with ``power``: paired (one sample
    of n differences with SD ``sd``) when ``n_b`` is None, else two samples of n and ``n_b`` with
    pooled SD ``sd``. NaN when it cannot be computed (n < 2, SD not finite)."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    if not np.isfinite(sd) or n < 2 or (n_b is not None and n_b < 2):
        return float("nan")
    if sd == 0:
        return 0.0
    if n_b is None:
        d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided")
    else:
        d = TTestIndPower().solve_power(effect_size=None, nobs1=n, ratio=n_b / n, alpha=alpha, power=power,
                                        alternative="two-sided")
    return float(np.asarray(d).ravel()[0]) * float(sd)  # statsmodels may return a 1-element array


def matched_rank_biserial(d: np.ndarray) -> float:
    """(W₊ − W₋) / (W₊ + W₋) over the non-zero differences ``d`` (Kerby 2014); NaN if none."""
    d = d[d != 0]
    if d.size == 0:
        return float("nan")
    ranks = stats.rankdata(np.abs(d))
    plus, minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def bootstrap_mean_difference(a: np.ndarray, b: np.ndarray | None, *, n_resamples: int, confidence: float,
                              seed: int, paired: bool) -> tuple[float, float]:
    """Percentile interval of mean(a) − mean(b): items resampled together when ``paired`` (a and b
    aligned), each sample on its own otherwise."""
    if n_resamples < 2 or a.size < 2 or b is None or b.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if paired:
        d = a - b
        idx = rng.integers(0, d.size, size=(n_resamples, d.size))
        reps = d[idx].mean(axis=1)
    else:
        reps = (a[rng.integers(0, a.size, size=(n_resamples, a.size))].mean(axis=1)
                - b[rng.integers(0, b.size, size=(n_resamples, b.size))].mean(axis=1))
    alpha = (1 - confidence) / 2
    low, high = np.percentile(reps, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def block_matrix(values: Mapping[str, Mapping[Hashable, float]]) -> tuple[pd.DataFrame, dict[str, int]]:
    """``{group: {block: value}}`` → (blocks × groups matrix of the complete blocks, per group the
    number of its blocks dropped because a value is missing there or in another group)."""
    frame = pd.DataFrame({g: pd.Series(v, dtype=float) for g, v in values.items()})
    complete = frame.dropna()
    dropped = {g: int(frame[g].notna().sum() - len(complete)) for g in frame.columns}
    return complete, dropped


def is_matched(values: Mapping[str, Mapping[Hashable, float]], min_share: float = 0.5) -> bool:
    """Whether the groups answer (mostly) the same items: the blocks every group has are at least
    ``min_share`` of the largest group's. Synthetic training sets, which answer different prompts,
    are not matched."""
    keys = [set(v) for v in values.values()]
    if len(keys) < 2 or not all(keys):
        return False
    return len(set.intersection(*keys)) >= min_share * max(map(len, keys))


def friedman(matrix: pd.DataFrame, dropped: Mapping[str, int]) -> dict[str, Any]:
    """Friedman's test across the columns of a complete blocks × groups matrix (omnibus row)."""
    k, n = matrix.shape[1], matrix.shape[0]
    row: dict[str, Any] = {"test": "friedman", "group_a": None, "group_b": None, "statistic": np.nan, "df": k - 1,
                           "p": np.nan, "p_adj": np.nan, "effect": np.nan, "effect_name": "kendalls_w",
                           "n_a": n, "n_b": np.nan, "n_dropped_a": int(sum(dropped.values())), "n_dropped_b": np.nan,
                           "note": f"{n} complete blocks of {k} conditions"}
    if k < 3 or n < 2:
        row["note"] = f"needs at least 3 conditions and 2 complete blocks ({k}, {n})"
        return row
    x = matrix.to_numpy()
    if np.all(x == x[:, :1]):
        row["note"] += "; every block has equal values in all conditions: no test"
        return row
    chi2, p = stats.friedmanchisquare(*x.T)
    row.update(statistic=float(chi2), p=float(p), p_adj=float(p), effect=float(chi2) / (n * (k - 1)))
    return row


def wilcoxon_pairs(matrices: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray, int, int]],
                   correction: Correction, *, n_resamples: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Wilcoxon signed-rank for each pair: ``{(a, b): (values_a, values_b, dropped_a, dropped_b)}``
    with the values aligned by block. Rows carry the mean difference a − b, its paired bootstrap
    interval and the minimum detectable difference; p adjusted across the pairs."""
    rows = []
    for (ga, gb), (a, b, drop_a, drop_b) in matrices.items():
        d = a - b
        row: dict[str, Any] = {
            "test": "wilcoxon", "group_a": ga, "group_b": gb, "statistic": np.nan, "df": np.nan, "p": np.nan,
            "effect": np.nan, "effect_name": "matched_rank_biserial", "n_a": d.size, "n_b": d.size,
            "n_dropped_a": drop_a, "n_dropped_b": drop_b, "note": "",
            "diff": float(d.mean()) if d.size else np.nan, "diff_low": np.nan, "diff_high": np.nan,
            "mde": minimum_detectable_effect(float(d.std(ddof=1)) if d.size > 1 else np.nan, d.size),
        }
        zeros = int((d == 0).sum())
        if d.size - zeros < 1:
            row["note"] = f"{d.size} pairs, all differences zero: no test"
        else:
            res = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
            row.update(statistic=float(res.statistic), p=float(res.pvalue), effect=matched_rank_biserial(d))
            row["diff_low"], row["diff_high"] = bootstrap_mean_difference(
                a, b, n_resamples=n_resamples, confidence=confidence, seed=seed, paired=True)
            row["note"] = f"{d.size} pairs" + (f", {zeros} zero differences dropped" if zeros else "")
        rows.append(row)
    p_adj = adjust_pvalues(np.array([r["p"] for r in rows], dtype=float), correction) if rows else []
    for r, q in zip(rows, p_adj, strict=True):
        r["p_adj"] = float(q)
    return rows


def paired_family(values: Mapping[str, Mapping[Hashable, float]], correction: Correction, *,
                  n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """Friedman across all groups (complete blocks) and Wilcoxon for every pair (the blocks both
    have): the paired counterpart of Kruskal–Wallis + Mann–Whitney."""
    matrix, dropped = block_matrix(values)
    rows = [friedman(matrix, dropped)]
    pairs = {}
    for ga, gb in itertools.combinations(list(values), 2):
        both, _ = block_matrix({ga: values[ga], gb: values[gb]})
        n_a = sum(1 for v in values[ga].values() if np.isfinite(v))
        n_b = sum(1 for v in values[gb].values() if np.isfinite(v))
        pairs[(ga, gb)] = (both[ga].to_numpy(), both[gb].to_numpy(), n_a - len(both), n_b - len(both))
    return rows + wilcoxon_pairs(pairs, correction, n_resamples=n_resamples, confidence=confidence, seed=seed)
