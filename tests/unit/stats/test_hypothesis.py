"""Rank tests against scipy and against plain formulas written out here."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from collapselab.stats.hypothesis import (
    adjust_pvalues,
    clean_groups,
    kruskal_wallis,
    mann_whitney,
    pairwise_mannwhitney,
    pairwise_van_elteren,
    stratified_kruskal_wallis,
)


def _tied_groups(seed=0):
    rng = np.random.default_rng(seed)
    # rounded lognormal values: skewed and with many ties, like per-item judge scores
    return {
        "vanilla": np.round(rng.lognormal(0.0, 0.6, 30), 1),
        "single": np.round(rng.lognormal(0.3, 0.6, 25), 1),
        "multi": np.round(rng.lognormal(0.1, 0.6, 28), 1),
    }


def _plain_h(groups):
    """H = [12/(N(N+1)) Σ R_g²/n_g − 3(N+1)] / [1 − Σ(t³ − t)/(N³ − N)], written out."""
    pooled = np.concatenate(list(groups.values()))
    big_n = len(pooled)
    ranks = stats.rankdata(pooled)
    h, start = 0.0, 0
    for g in groups.values():
        r = ranks[start:start + len(g)]
        h += r.sum() ** 2 / len(g)
        start += len(g)
    h = 12 / (big_n * (big_n + 1)) * h - 3 * (big_n + 1)
    _, counts = np.unique(pooled, return_counts=True)
    return h / (1 - sum(t**3 - t for t in counts) / (big_n**3 - big_n))


def test_kruskal_wallis_matches_scipy_and_the_formula():
    groups = _tied_groups()
    res = kruskal_wallis(groups)
    ref = stats.kruskal(*groups.values())
    assert res["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert res["statistic"] == pytest.approx(_plain_h(groups), rel=1e-10)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert res["df"] == 2
    n = 30 + 25 + 28
    assert res["n_total"] == n and res["n"] == {"vanilla": 30, "single": 25, "multi": 28}
    # Tomczak & Tomczak: ε² = H / ((n² − 1)/(n + 1))
    assert res["epsilon_squared"] == pytest.approx(res["statistic"] / ((n**2 - 1) / (n + 1)))


def test_kruskal_wallis_epsilon_squared_is_the_between_share_of_rank_variance():
    # ranks 1..9, group means 2, 5, 8: SS_between = 3·(9 + 0 + 9) = 54, SS_total = Σ(r − 5)² = 60
    res = kruskal_wallis({"a": [1, 2, 3], "b": [4, 5, 6], "c": [7, 8, 9]})
    assert res["epsilon_squared"] == pytest.approx(54 / 60)


def test_nans_are_dropped_and_counted_and_small_groups_skipped_with_a_reason():
    groups = {"a": [1.0, np.nan, 2.0, 3.0], "b": [np.nan, np.nan, 5.0], "c": [4.0, 6.0, 7.0, np.nan]}
    clean = clean_groups(groups)
    assert clean.n_dropped == {"a": 1, "b": 2, "c": 1}
    assert list(clean.values) == ["a", "c"] and "b" in clean.skipped and "1 value" in clean.skipped["b"]
    res = kruskal_wallis(groups)
    assert res["n"] == {"a": 3, "c": 3} and res["n_dropped"]["b"] == 2 and "b" in res["skipped"]
    assert res["statistic"] == pytest.approx(stats.kruskal([1, 2, 3], [4, 6, 7]).statistic)


def test_kruskal_wallis_undefined_cases_say_why():
    one = kruskal_wallis({"a": [1, 2, 3], "b": [np.nan]})
    assert math.isnan(one["p"]) and "1 usable group" in one["note"]
    same = kruskal_wallis({"a": [2, 2, 2], "b": [2, 2]})
    assert math.isnan(same["statistic"]) and "identical" in same["note"]


def _plain_u(a, b):
    """U_a by counting pairs: 1 when a > b, ½ when tied."""
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)


def _plain_cliffs_delta(a, b):
    return sum(np.sign(x - y) for x in a for y in b) / (len(a) * len(b))


@pytest.mark.parametrize("method", ["auto", "asymptotic", "exact"])
def test_mann_whitney_matches_scipy_and_pair_counting(method):
    g = _tied_groups(1)
    a, b = g["vanilla"][:12], g["single"][:9]
    if method == "exact":
        a, b = np.arange(12) + 0.5, np.arange(9) * 1.3  # the exact distribution assumes no ties
    res = mann_whitney(a, b, method=method)
    ref = stats.mannwhitneyu(a, b, alternative="two-sided", method=method)
    assert res["statistic"] == pytest.approx(ref.statistic) == pytest.approx(_plain_u(a, b))
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert res["rank_biserial"] == pytest.approx(_plain_cliffs_delta(a, b))
    assert res["cliffs_delta"] == res["rank_biserial"]
    assert res["median_a"] == np.median(a) and res["median_b"] == np.median(b)


def test_mann_whitney_exact_p_equals_full_enumeration():
    a, b = np.array([1.1, 3.4, 5.0]), np.array([2.0, 6.1, 7.3, 8.8])
    u_obs = _plain_u(a, b)
    pooled = np.concatenate([a, b])
    us = []
    for idx in itertools.combinations(range(7), 3):
        rest = [i for i in range(7) if i not in idx]
        us.append(_plain_u(pooled[list(idx)], pooled[rest]))
    us = np.array(us)
    p = min(1.0, 2 * min((us <= u_obs).mean(), (us >= u_obs).mean()))
    assert mann_whitney(a, b)["p"] == pytest.approx(p)


def test_mann_whitney_asymptotic_p_equals_the_normal_formula_with_ties():
    g = _tied_groups(2)
    a, b = g["vanilla"], g["multi"]
    n1, n2 = len(a), len(b)
    big_n = n1 + n2
    _, t = np.unique(np.concatenate([a, b]), return_counts=True)
    var = n1 * n2 / 12 * ((big_n + 1) - (t**3 - t).sum() / (big_n * (big_n - 1)))
    z = (abs(_plain_u(a, b) - n1 * n2 / 2) - 0.5) / math.sqrt(var)  # continuity correction
    assert mann_whitney(a, b, method="asymptotic")["p"] == pytest.approx(2 * stats.norm.sf(z), rel=1e-10)


def test_rank_biserial_sign_positive_when_a_is_larger():
    res = mann_whitney([5, 6, 7], [1, 2, 3])
    assert res["rank_biserial"] == 1.0
    assert mann_whitney([1, 2, 3], [5, 6, 7])["rank_biserial"] == -1.0
    # r = 1 − 2·U_b/(n_a n_b)
    u_b = 3 * 3 - res["statistic"]
    assert res["rank_biserial"] == 1 - 2 * u_b / 9


def test_adjust_pvalues_by_hand():
    p = [0.01, 0.04, 0.03, np.nan]
    np.testing.assert_allclose(adjust_pvalues(p, "bonferroni"), [0.03, 0.12, 0.09, np.nan])
    # Holm: sorted 0.01, 0.03, 0.04 × 3, 2, 1 = 0.03, 0.06, 0.04 → running max 0.03, 0.06, 0.06
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, np.nan])
    np.testing.assert_allclose(adjust_pvalues([0.5, 0.6], "bonferroni"), [1.0, 1.0])
    np.testing.assert_allclose(adjust_pvalues(p, "none"), p)
    with pytest.raises(ValueError):
        adjust_pvalues(p, "sidak")


def test_pairwise_mannwhitney_adjusts_over_tested_pairs_and_lists_skipped_ones():
    groups = {**_tied_groups(3), "broken": [np.nan, 1.0]}
    table = pairwise_mannwhitney(groups)
    assert len(table) == 6  # every pair of the 4 input groups is listed
    tested = table[table["p"].notna()]
    assert len(tested) == 3 and table.attrs["m"] == 3
    np.testing.assert_allclose(tested["p_adj"], np.minimum(1, tested["p"] * 3))
    broken = table[(table.group_a == "broken") | (table.group_b == "broken")]
    assert broken["p"].isna().all() and broken["note"].str.contains("broken skipped").all()
    assert (broken["n_dropped_b"] == 1).all()
    row = tested.iloc[0]
    ref = stats.mannwhitneyu(groups[row.group_a], groups[row.group_b], alternative="two-sided")
    assert row.statistic == pytest.approx(ref.statistic) and row.p == pytest.approx(ref.pvalue)


# --- stratified tests ---------------------------------------------------------------------------


def test_stratified_kruskal_with_one_stratum_is_kruskal_wallis():
    groups = _tied_groups(4)
    res = stratified_kruskal_wallis({g: {0: v} for g, v in groups.items()})
    ref = stats.kruskal(*groups.values())
    assert res["statistic"] == pytest.approx(ref.statistic, rel=1e-10)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-8) and res["df"] == 2


def test_stratified_kruskal_doubles_for_a_duplicated_stratum():
    # two identical strata: the deviations double and the variance doubles, so Q = 2H
    groups = _tied_groups(5)
    res = stratified_kruskal_wallis({g: {0: v, 1: v} for g, v in groups.items()})
    assert res["statistic"] == pytest.approx(2 * stats.kruskal(*groups.values()).statistic, rel=1e-10)


def _plain_van_elteren(strata_a, strata_b):
    """z = Σ_h (R_ah − E_ah)/(N_h + 1) / sqrt(Σ_h Var_h/(N_h + 1)²), tie-corrected variance."""
    num, var = 0.0, 0.0
    for a, b in zip(strata_a, strata_b, strict=True):
        n1, n2 = len(a), len(b)
        big_n = n1 + n2
        pooled = np.concatenate([a, b])
        r_a = stats.rankdata(pooled)[:n1].sum()
        _, t = np.unique(pooled, return_counts=True)
        v = n1 * n2 / 12 * ((big_n + 1) - (t**3 - t).sum() / (big_n * (big_n - 1)))
        num += (r_a - n1 * (big_n + 1) / 2) / (big_n + 1)
        var += v / (big_n + 1) ** 2
    return num / math.sqrt(var)


def test_van_elteren_matches_the_textbook_formula_and_is_blind_to_stratum_shifts():
    rng = np.random.default_rng(6)
    a = [np.round(rng.lognormal(0.4, 0.5, 20), 1), np.round(rng.lognormal(0.4, 0.5, 15), 1) + 10]
    b = [np.round(rng.lognormal(0.0, 0.5, 18), 1), np.round(rng.lognormal(0.0, 0.5, 22), 1) + 10]
    table = pairwise_van_elteren({"a": {1: a[0], 2: a[1]}, "b": {1: b[0], 2: b[1]}})
    z = _plain_van_elteren(a, b)
    assert table.loc[0, "statistic"] == pytest.approx(z, rel=1e-10)
    assert table.loc[0, "p"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-8)
    # within-stratum dominance: Σ_h (U_a − U_b) / Σ_h n_a n_b
    num = sum(_plain_cliffs_delta(x, y) * len(x) * len(y) for x, y in zip(a, b, strict=True))
    den = sum(len(x) * len(y) for x, y in zip(a, b, strict=True))
    assert table.loc[0, "rank_biserial"] == pytest.approx(num / den)
    # a shift of a whole stratum changes nothing
    shifted = pairwise_van_elteren({"a": {1: a[0], 2: a[1] + 100}, "b": {1: b[0], 2: b[1] + 100}})
    assert shifted.loc[0, "p"] == pytest.approx(table.loc[0, "p"])


def test_van_elteren_with_one_stratum_is_mann_whitney_without_continuity():
    g = _tied_groups(7)
    table = pairwise_van_elteren({"x": {0: g["vanilla"]}, "y": {0: g["single"]}})
    ref = stats.mannwhitneyu(g["vanilla"], g["single"], method="asymptotic", use_continuity=False)
    assert table.loc[0, "p"] == pytest.approx(ref.pvalue, rel=1e-10)


def test_stratified_nan_counting_and_groups_that_never_meet():
    res = stratified_kruskal_wallis({"a": {1: [1.0, 2.0, np.nan]}, "b": {2: [3.0, 4.0]}})
    assert res["n_dropped"] == {"a": 1, "b": 0}
    assert math.isnan(res["p"]) and "never share" in res["note"]
