"""Paired tests for conditions that answer the same items (audit c4).

Every condition answers the same test prompts (and human-text perplexity scores the same
references; safety prompts and preference items are shared too), so the per-item values of two
conditions are matched by item. Treating them as independent samples (Kruskal–Wallis,
Mann–Whitney) ignores the pairing: item difficulty then counts as noise.

* **Friedman** (1937) across conditions on complete blocks (items with a value in every condition):
  ``scipy.stats.friedmanchisquare``; effect size Kendall's W = χ²_F / (n (k − 1)).
* **Wilcoxon signed-rank** for each pair on the items both have (:func:`signed_rank_test`: scipy's
  ``scipy.stats.wilcoxon``, two-sided, ``zero_method="wilcox"``: zero differences are dropped, and
  counted; its slow exact case, few differences with ties, counted faster to the same p-value). Effect size: the
  **matched-pairs rank-biserial correlation** r = (W₊ − W₋) / (W₊ + W₋) (Kerby 2014), the signed
  rank sums over the non-zero differences d = a − b; r > 0 means a tends larger.
* **Paired bootstrap interval of the difference of means**, mean(a) − mean(b) over the items both
  conditions answered (= mean(a − b)): items are resampled with replacement and both conditions'
  values of a drawn item go together (percentile interval, ``n_resamples`` resamples, seeded).
  With several seeds pooled, a block is a (seed, item) pair and whole items are resampled (all
  their seeds together: an item's seeds are not independent). The difference is of *means* of the
  per-item values, whatever a metric's headline statistic is (e.g. an IQR-filtered perplexity).
* **Minimum detectable effect** of that mean difference at 80 % power and two-sided α = 0.05,
  from the n pairs and the SD of their differences (:func:`collapselab.stats.power.mde_paired`).

Why the ``wilcox`` zero handling: a zero difference (the same score in both conditions, common for
1–5 judge scores) carries no information about the direction; Pratt's alternative ranks zeros and
then drops them, which changes the ranks of the others. The count of zeros is in the row's note.

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
from collapselab.stats.power import ALPHA, POWER, mde_paired, mde_two_sample


def minimum_detectable_effect(sd: float, n: int, *, n_b: int | None = None, alpha: float = ALPHA,
                              power: float = POWER) -> float:
    """The smallest mean difference a two-sided t-test detects with ``power``: paired (n
    differences with SD ``sd``) when ``n_b`` is None, else two samples of n and ``n_b`` with pooled
    SD ``sd`` (:mod:`collapselab.stats.power`). NaN when it cannot be computed."""
    if n_b is None:
        return mde_paired(sd, n, alpha, power)
    return mde_two_sample(sd, n, n_b, alpha, power)


def matched_rank_biserial(d: np.ndarray) -> float:
    """(W₊ − W₋) / (W₊ + W₋) over the non-zero differences ``d`` (Kerby 2014); NaN if none."""
    d = d[d != 0]
    if d.size == 0:
        return float("nan")
    ranks = stats.rankdata(np.abs(d))
    plus, minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def bootstrap_mean_difference(a: np.ndarray, b: np.ndarray | None, *, n_resamples: int, confidence: float,
                              seed: int, paired: bool, clusters: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile interval of mean(a) − mean(b). ``paired``: a and b are aligned by item and an
    item's two values are resampled together; ``clusters`` (paired only): one label per pair,
    whole clusters are resampled (the estimate is then Σ d / Σ n over the drawn clusters).
    Unpaired: each sample is resampled on its own. NaN with fewer than 2 values or resamples."""
    if n_resamples < 2 or a.size < 2 or b is None or b.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if paired and clusters is not None:
        labels, inverse = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
        sums = np.bincount(inverse, weights=a - b, minlength=labels.size)
        counts = np.bincount(inverse, minlength=labels.size).astype(float)
        idx = rng.integers(0, labels.size, size=(n_resamples, labels.size))
        reps = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    elif paired:
        d = a - b
        idx = rng.integers(0, d.size, size=(n_resamples, d.size))
        reps = d[idx].mean(axis=1)
    else:
        reps = (a[rng.integers(0, a.size, size=(n_resamples, a.size))].mean(axis=1)
                - b[rng.integers(0, b.size, size=(n_resamples, b.size))].mean(axis=1))
    tail = (1 - confidence) / 2
    low, high = np.percentile(reps, [100 * tail, 100 * (1 - tail)])
    return float(low), float(high)


def block_matrix(values: Mapping[str, Mapping[Hashable, float]]) -> tuple[pd.DataFrame, dict[str, int]]:
    """``{group: {block: value}}`` (NaN = missing) → (blocks × groups matrix of the complete
    blocks, per group the number of blocks where its value is missing — NaN or absent — among all
    blocks any of the groups has)."""
    frame = pd.DataFrame({g: pd.Series(v, dtype=float) for g, v in values.items()})
    complete = frame.dropna()
    missing = {g: int(frame[g].isna().sum()) for g in frame.columns}
    return complete, missing


def match_items(items: Mapping[str, set], min_share: float = 0.5) -> tuple[bool, str]:
    """Whether the groups answer (mostly) the same items, and why, from each group's item ids
    (missing values included: an unparsed judgement still answers its prompt). Matched when the
    items every group has are at least ``min_share`` of the largest group's; synthetic training
    sets, which answer different prompts, are not."""
    keys = [set(v) for v in items.values()]
    if len(keys) < 2:
        return False, "fewer than two conditions"
    if not all(keys):
        return False, "a condition has no items"
    shared, largest = len(set.intersection(*keys)), max(map(len, keys))
    if shared >= min_share * largest:
        return True, f"paired by item: {shared} items shared by all {len(keys)} conditions"
    return False, (f"unpaired: the conditions share {shared} of up to {largest} items "
                   f"(under {min_share:.0%}), so they are not matched")


def friedman(matrix: pd.DataFrame, missing: Mapping[str, int], n_blocks: int) -> dict[str, Any]:
    """Friedman's test across the columns of a complete blocks × groups matrix (omnibus row).
    ``missing``: per group, the blocks where its value is missing; ``n_blocks``: all blocks. The
    row's ``n_a`` counts complete blocks, ``n_dropped_a`` the incomplete blocks left out."""
    k, n = matrix.shape[1], matrix.shape[0]
    lost = n_blocks - n
    why = ", ".join(f"{g} {m}" for g, m in missing.items() if m)
    row: dict[str, Any] = {"test": "friedman", "group_a": None, "group_b": None, "statistic": np.nan, "df": k - 1,
                           "p": np.nan, "p_adj": np.nan, "effect": np.nan, "effect_name": "kendalls_w",
                           "n_a": n, "n_b": np.nan, "n_dropped_a": int(lost), "n_dropped_b": np.nan,
                           "note": f"{n} complete blocks of {k} conditions"
                           + (f"; {lost} blocks left out for a missing value (missing: {why})" if lost else "")}
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


def signed_rank_test(d: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired differences ``d`` (zeros dropped, as
    ``zero_method="wilcox"``): the statistic min(T+, T−) and the p-value of
    ``scipy.stats.wilcoxon(d, zero_method="wilcox")`` — the same numbers, faster.

    scipy's ``method="auto"`` answers at most 13 differences with ties or zeros by enumerating
    all 2^n sign patterns through its generic permutation test, one pattern at a time (its
    statistic is not vectorized): about 0.7 s per test, which made the stats stage of a grid with
    a few test prompts and many metrics take minutes. Here that case is counted by dynamic
    programming instead: the number of sign patterns giving each T+ over the doubled (integer)
    mid-ranks, p = P(|T+ − E| ≥ |t − E|) — the same exact p-value. Every other case (no ties and
    no zeros: scipy's exact distribution; more than 13 differences with ties: its normal
    approximation) is scipy's own call."""
    d = np.asarray(d, dtype=float)
    nonzero = d[d != 0]
    ranks = stats.rankdata(np.abs(nonzero))
    tied = len(np.unique(ranks)) < nonzero.size or nonzero.size < d.size
    if d.size > 13 or not tied:
        res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        return float(res.statistic), float(res.pvalue)
    doubled = np.rint(2 * ranks).astype(np.int64)  # mid-ranks are multiples of 1/2
    total = int(doubled.sum())
    counts = np.zeros(total + 1)
    counts[0] = 1.0
    for r in doubled:  # counts[s]: sign patterns whose positive ranks sum to s (doubled)
        shifted = np.zeros_like(counts)
        shifted[r:] = counts[:total + 1 - r]
        counts = counts + shifted
    t_plus = int(doubled[nonzero > 0].sum())
    centre = total / 2
    far = np.abs(np.arange(total + 1) - centre) >= abs(t_plus - centre) - 1e-9
    p = float(counts[far].sum() / counts.sum())
    return min(t_plus, total - t_plus) / 2, min(1.0, p)


#: one pair's input to :func:`wilcoxon_pairs`: values of a and b aligned by block, the blocks each
#: lost to a missing value in the other, and the cluster of each block (None: blocks independent)
PairValues = tuple[np.ndarray, np.ndarray, int, int, np.ndarray | None]


def wilcoxon_pairs(matrices: Mapping[tuple[str, str], PairValues], correction: Correction, *,
                   n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """Wilcoxon signed-rank for each pair ``{(a, b): PairValues}``. Rows carry the mean
    difference a − b, its paired bootstrap interval and the minimum detectable difference; p
    adjusted across the pairs (``correction``)."""
    rows = []
    for (ga, gb), (a, b, drop_a, drop_b, clusters) in matrices.items():
        d = a - b
        row: dict[str, Any] = {
            "test": "wilcoxon", "group_a": ga, "group_b": gb, "statistic": np.nan, "df": np.nan, "p": np.nan,
            "effect": np.nan, "effect_name": "matched_rank_biserial", "n_a": d.size, "n_b": d.size,
            "n_dropped_a": drop_a, "n_dropped_b": drop_b, "note": "",
            "diff": float(d.mean()) if d.size else np.nan, "diff_low": np.nan, "diff_high": np.nan,
            "mde": mde_paired(float(d.std(ddof=1)) if d.size > 1 else np.nan, d.size),
        }
        zeros = int((d == 0).sum())
        if d.size - zeros < 1:
            row["note"] = f"{d.size} pairs, all differences zero: no test"
        else:
            statistic, p = signed_rank_test(d)
            row.update(statistic=statistic, p=p, effect=matched_rank_biserial(d))
            row["diff_low"], row["diff_high"] = bootstrap_mean_difference(
                a, b, n_resamples=n_resamples, confidence=confidence, seed=seed, paired=True, clusters=clusters)
            row["note"] = (f"{d.size} pairs" + (f", {zeros} zero differences dropped (wilcox)" if zeros else "")
                           + ("; interval resamples whole items" if clusters is not None else ""))
        rows.append(row)
    p_adj = adjust_pvalues(np.array([r["p"] for r in rows], dtype=float), correction) if rows else []
    for r, q in zip(rows, p_adj, strict=True):
        r["p_adj"] = float(q)
    return rows


def paired_family(values: Mapping[str, Mapping[Hashable, float]], correction: Correction, *,
                  n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                  cluster_on_last: bool = False) -> list[dict[str, Any]]:
    """Friedman across all groups (complete blocks) and Wilcoxon for every pair (the blocks both
    have): the paired counterpart of Kruskal–Wallis + Mann–Whitney. ``cluster_on_last``: blocks
    are tuples (…, item) and the bootstrap resamples whole items."""
    matrix, missing = block_matrix(values)
    n_blocks = len(set().union(*(set(v) for v in values.values()))) if values else 0
    rows = [friedman(matrix, missing, n_blocks)]
    pairs: dict[tuple[str, str], PairValues] = {}
    for ga, gb in itertools.combinations(list(values), 2):
        both, lost = block_matrix({ga: values[ga], gb: values[gb]})
        clusters = (np.array([str(k[-1]) for k in both.index], dtype=object) if cluster_on_last else None)
        pairs[(ga, gb)] = (both[ga].to_numpy(), both[gb].to_numpy(), lost[ga], lost[gb], clusters)
    return rows + wilcoxon_pairs(pairs, correction, n_resamples=n_resamples, confidence=confidence, seed=seed)
