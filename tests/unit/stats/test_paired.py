"""Paired tests by item (audit c4) against scipy, statsmodels and plain loops."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from collapselab.stats.paired import (
    bootstrap_mean_difference,
    matched_rank_biserial,
    minimum_detectable_effect,
)
from collapselab.stats.summary import compare_conditions

CONDITIONS = ("vanilla", "human", "single:a", "multi:a,b")


def items(n=40, seeds=(1,), seed=0, shift=0.3, item_sd=2.0, noise=0.5, missing=()):
    """Per-item values with a strong item effect (difficulty) shared by every condition."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, item_sd, n)
    rows = []
    for k, condition in enumerate(CONDITIONS):
        for s in seeds:
            for i in range(n):
                value = np.nan if (condition, i) in missing else difficulty[i] + shift * k + rng.normal(0, noise)
                rows.append({"condition": condition, "seed": s, "metric": "m", "target": "t", "item_id": f"q{i}",
                             "value": value})
    return pd.DataFrame(rows)


def matrix(df, seed=None):
    part = df if seed is None else df[df.seed == seed]
    return part.pivot_table(index="item_id", columns="condition", values="value")[list(CONDITIONS)]


def test_friedman_and_wilcoxon_rows_equal_scipy():
    df = items(missing={("human", 3), ("multi:a,b", 7)})
    out = compare_conditions(df)
    omnibus = out[out.test == "friedman"].iloc[0]
    complete = matrix(df).dropna()
    chi2, p = stats.friedmanchisquare(*complete.to_numpy().T)
    assert omnibus.statistic == pytest.approx(chi2) and omnibus.p == pytest.approx(p)
    assert omnibus.n_a == 38 and omnibus.n_dropped_a == 2  # two incomplete blocks left out, and said so
    assert "2 blocks left out" in omnibus.note and "human 1" in omnibus.note
    assert omnibus.effect == pytest.approx(chi2 / (38 * 3))  # Kendall's W
    pairs = out[out.test == "wilcoxon"]
    assert len(pairs) == 6 and pairs.paired.all()
    ps = []
    for r in pairs.itertuples():
        both = matrix(df)[[r.group_a, r.group_b]].dropna()
        res = stats.wilcoxon(both[r.group_a], both[r.group_b])
        assert r.statistic == pytest.approx(res.statistic) and r.p == pytest.approx(res.pvalue)
        assert r.diff == pytest.approx((both[r.group_a] - both[r.group_b]).mean())
        assert r.diff_low <= r.diff <= r.diff_high
        ps.append(res.pvalue)
    np.testing.assert_allclose(pairs.p_adj, np.minimum(1, np.array(ps) * 6))


def test_pairing_finds_what_the_unpaired_test_misses():
    """Item difficulty dominates: the rank-sum test sees no difference, the signed-rank test does."""
    df = items(n=40, shift=0.4, item_sd=3.0, noise=0.3)
    paired = compare_conditions(df)
    unpaired = compare_conditions(df, paired=False)
    p_paired = paired[(paired.group_a == "vanilla") & (paired.group_b == "human")].p.iloc[0]
    p_unpaired = unpaired[(unpaired.group_a == "vanilla") & (unpaired.group_b == "human")].p.iloc[0]
    assert p_paired < 0.001 < 0.1 < p_unpaired
    assert set(unpaired.test) == {"kruskal_wallis", "mann_whitney"} and not unpaired.paired.any()


def test_sets_without_shared_items_stay_unpaired():
    df = items()
    df["item_id"] = df["condition"] + "/" + df["item_id"]  # training sets answer different prompts
    out = compare_conditions(df)
    assert set(out.test) == {"kruskal_wallis", "mann_whitney"}


def test_pooled_seeds_block_by_seed_and_item():
    df = items(seeds=(1, 2, 3))
    out = compare_conditions(df)
    pooled = out[(out.seed == "pooled") & (out.test == "friedman")].iloc[0]
    blocks = df.pivot_table(index=["seed", "item_id"], columns="condition", values="value")[list(CONDITIONS)]
    chi2, p = stats.friedmanchisquare(*blocks.to_numpy().T)
    assert pooled.statistic == pytest.approx(chi2) and pooled.n_a == 120
    assert set(out[out.seed == "seed-level"].test) == {"kruskal_wallis", "mann_whitney"}


def test_matched_rank_biserial_by_hand():
    d = np.array([3.0, -1.0, 2.0, 0.0, -4.0, 5.0])
    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    expected = (ranks[nz > 0].sum() - ranks[nz < 0].sum()) / ranks.sum()
    assert matched_rank_biserial(d) == pytest.approx(expected)
    assert matched_rank_biserial(np.array([1.0, 2.0])) == 1.0


def test_paired_bootstrap_against_a_plain_loop():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=30), rng.normal(size=30)
    low, high = bootstrap_mean_difference(a, b, n_resamples=500, confidence=0.9, seed=7, paired=True)
    loop = np.random.default_rng(7)
    idx = loop.integers(0, 30, size=(500, 30))
    reps = [np.mean(a[row] - b[row]) for row in idx]
    assert (low, high) == pytest.approx(tuple(np.percentile(reps, [5, 95])))


def test_minimum_detectable_effect_against_statsmodels_and_the_normal_formula():
    from statsmodels.stats.power import TTestIndPower, TTestPower

    d = TTestPower().solve_power(nobs=50, alpha=0.05, power=0.8)
    assert minimum_detectable_effect(2.0, 50) == pytest.approx(2.0 * d, rel=1e-5)  # statsmodels' solver tolerance
    d2 = TTestIndPower().solve_power(nobs1=40, ratio=1.5, alpha=0.05, power=0.8)
    assert minimum_detectable_effect(1.0, 40, n_b=60) == pytest.approx(d2, rel=1e-5)
    # large n: (z_0.975 + z_0.8) * sd / sqrt(n)
    assert minimum_detectable_effect(1.0, 10_000) == pytest.approx((1.959964 + 0.841621) / 100, rel=1e-3)
    assert np.isnan(minimum_detectable_effect(1.0, 1))


def test_every_row_says_which_test_and_why():
    paired = compare_conditions(items())
    assert paired.note.str.startswith("paired by item: 40 items shared by all 4 conditions").all()
    off = compare_conditions(items(), paired=False)
    assert off.note.str.startswith("unpaired (stats.paired: false)").all()
    df = items()
    df["item_id"] = df["condition"] + "/" + df["item_id"]
    apart = compare_conditions(df)
    assert apart.note.str.startswith("unpaired: the conditions share 0 of up to 40 items").all()
    assert not apart.paired.any()


def test_unparsed_values_keep_their_items_matched_and_are_counted():
    """A condition with most values missing (an unparsed judge) still answers the same prompts: the
    scope stays paired, and the Wilcoxon rows count the blocks each side lost."""
    missing = {("human", i) for i in range(30)}
    out = compare_conditions(items(missing=missing))
    assert out.paired.all()
    pair = out[(out.group_a == "vanilla") & (out.group_b == "human")].iloc[0]
    assert (pair.n_a, pair.n_dropped_a, pair.n_dropped_b) == (10, 0, 30)
    assert out[out.test == "friedman"].iloc[0].n_dropped_a == 30


def test_wilcoxon_zero_differences_are_dropped_and_counted():
    df = items(n=30)
    same = (df.condition == "human") & df.item_id.isin([f"q{i}" for i in range(5)])
    df.loc[same, "value"] = df.loc[(df.condition == "vanilla") & df.item_id.isin([f"q{i}" for i in range(5)]),
                                   "value"].to_numpy()
    row = compare_conditions(df).query("group_a == 'vanilla' and group_b == 'human'").iloc[0]
    ref = stats.wilcoxon(matrix(df)["vanilla"], matrix(df)["human"], zero_method="wilcox")
    assert row.p == pytest.approx(ref.pvalue) and "5 zero differences dropped" in row.note
    d = (matrix(df)["vanilla"] - matrix(df)["human"]).to_numpy()
    assert row.effect == pytest.approx(matched_rank_biserial(d))


def test_pooled_interval_resamples_whole_items_against_a_plain_loop():
    df = items(n=12, seeds=(1, 2))
    out = compare_conditions(df, n_resamples=300, random_state=4)
    row = out[(out.seed == "pooled") & (out.group_a == "vanilla") & (out.group_b == "human")].iloc[0]
    wide = df.pivot_table(index=["seed", "item_id"], columns="condition", values="value")
    d = (wide["vanilla"] - wide["human"]).reset_index(name="d")
    labels = np.unique(d["item_id"].astype(str))  # the bootstrap's cluster order
    rng = np.random.default_rng(4)
    reps = []
    for draw in rng.integers(0, labels.size, size=(300, labels.size)):
        chosen = pd.concat([d[d.item_id == labels[j]] for j in draw])
        reps.append(chosen["d"].mean())
    assert (row.diff_low, row.diff_high) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])))
    assert "resamples whole items" in row.note


def _sign_flip_p(d):
    """The exact two-sided sign-flip p-value of T+ by enumerating every sign pattern (slow)."""
    import itertools

    d = np.asarray(d, float)
    d = d[d != 0]
    ranks = stats.rankdata(np.abs(d))
    t, centre = ranks[d > 0].sum(), ranks.sum() / 2
    hits = sum(abs(sum(r for r, s in zip(ranks, signs, strict=True) if s) - centre) >= abs(t - centre) - 1e-9
               for signs in itertools.product((0, 1), repeat=d.size))
    return hits / 2 ** d.size


def test_signed_rank_test_gives_scipys_numbers():
    """Few differences with ties or zeros: counted by dynamic programming, equal to scipy's
    enumeration of every sign pattern and to a plain one; every other case is scipy's own call."""
    from collapselab.stats.paired import signed_rank_test

    rng = np.random.default_rng(3)
    for size in [*rng.integers(3, 14, size=40), 14, 20, 40, 60]:
        d = rng.integers(-3, 4, size=size).astype(float)
        if not (d != 0).any():
            continue
        statistic, p = signed_rank_test(d)
        ref = stats.wilcoxon(d, zero_method="wilcox")
        assert statistic == ref.statistic and p == pytest.approx(ref.pvalue, abs=1e-12)
        if size <= 13:
            assert p == pytest.approx(_sign_flip_p(d), abs=1e-12)
    no_ties = rng.permutation(np.arange(1, 21)) * rng.choice([-1.0, 1.0], 20)
    assert signed_rank_test(no_ties)[1] == pytest.approx(stats.wilcoxon(no_ties).pvalue)
