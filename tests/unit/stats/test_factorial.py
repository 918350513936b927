"""Aligned rank transform ANOVA: alignment against a plain loop, ANOVA against statsmodels, ARTool's
validity checks, and planted effects."""

import itertools
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from collapselab.stats.factorial import align, art_anova, art_checks, full_factorial_anova, seed_spread


def _grid(effect, n=(6, 10), seed=0, levels=None):
    """diversity × tier (× target), lognormal noise (skewed like per-item perplexity), unequal cells
    when n is a range; ``effect(row)`` is added on the log scale."""
    levels = levels or {"diversity": ["single", "multi"], "tier": ["small", "medium", "large"]}
    rng = np.random.default_rng(seed)
    rows = []
    for cell in itertools.product(*levels.values()):
        row = dict(zip(levels, cell, strict=True))
        k = int(rng.integers(n[0], n[1] + 1))
        for _ in range(k):
            rows.append({**row, "ppl": float(np.exp(rng.normal(0, 0.7) + effect(row)))})
    return pd.DataFrame(rows)


def _plain_alignment(df, response, factors):
    """ART alignment with dictionaries and loops: y − cell mean + Σ_{S ⊆ E} (−1)^{|E|−|S|} mean_S."""
    y = df[response].tolist()
    keys = [tuple(r) for r in df[factors].itertuples(index=False)]
    subsets = [s for k in range(len(factors) + 1) for s in itertools.combinations(range(len(factors)), k)]
    means = {}
    for s in subsets:
        sums, counts = defaultdict(float), defaultdict(int)
        for key, v in zip(keys, y, strict=True):
            sub = tuple(key[i] for i in s)
            sums[sub] += v
            counts[sub] += 1
        means[s] = [sums[tuple(key[i] for i in s)] / counts[tuple(key[i] for i in s)] for key in keys]
    full = tuple(range(len(factors)))
    out = {}
    for s in subsets[1:]:
        name = ":".join(factors[i] for i in s)
        col = []
        for row in range(len(y)):
            est = 0.0
            for sub in subsets:
                if set(sub) <= set(s):
                    est += (-1) ** (len(s) - len(sub)) * means[sub][row]
            col.append(y[row] - means[full][row] + est)
        out[name] = col
    return pd.DataFrame(out)


def test_alignment_matches_a_plain_loop_for_three_factors():
    levels = {"diversity": ["single", "multi"], "tier": ["small", "medium", "large"], "target": ["8b", "70b"]}
    df = _grid(lambda r: 0.5 * (r["tier"] == "large"), n=(2, 5), levels=levels)
    factors = ["diversity", "tier", "target"]
    ours = align(df, "ppl", factors)
    plain = _plain_alignment(df, "ppl", factors)
    assert list(ours.columns) == list(plain.columns)
    np.testing.assert_allclose(ours.to_numpy(), plain.to_numpy(), rtol=1e-10, atol=1e-12)


def test_art_uses_ranks_of_the_aligned_response():
    df = _grid(lambda r: 0.4 * (r["diversity"] == "multi"))
    plain = _plain_alignment(df, "ppl", ["diversity", "tier"])
    art = art_anova(df, "ppl", ["diversity", "tier"]).set_index("effect")
    for effect in plain.columns:
        ranked = df.assign(r=stats.rankdata(plain[effect]))
        ref = full_factorial_anova(ranked, "r", ["diversity", "tier"]).set_index("effect").loc[effect]
        assert art.loc[effect, "F"] == pytest.approx(ref["F"], rel=1e-10)
        assert art.loc[effect, "p"] == pytest.approx(ref["p"], rel=1e-8)


def test_full_factorial_anova_matches_statsmodels_type3_on_unbalanced_data():
    smf = pytest.importorskip("statsmodels.formula.api")
    anova_lm = pytest.importorskip("statsmodels.stats.anova").anova_lm
    df = _grid(lambda r: 0.3 * (r["tier"] == "small"), seed=3)
    ours = full_factorial_anova(df, "ppl", ["diversity", "tier"]).set_index("effect")
    ref = anova_lm(smf.ols("ppl ~ C(diversity, Sum) * C(tier, Sum)", df).fit(), typ=3)
    names = {"diversity": "C(diversity, Sum)", "tier": "C(tier, Sum)",
             "diversity:tier": "C(diversity, Sum):C(tier, Sum)"}
    for ours_name, ref_name in names.items():
        assert ours.loc[ours_name, "SS"] == pytest.approx(ref.loc[ref_name, "sum_sq"], rel=1e-8)
        assert ours.loc[ours_name, "F"] == pytest.approx(ref.loc[ref_name, "F"], rel=1e-8)
        assert ours.loc[ours_name, "df1"] == ref.loc[ref_name, "df"]
    assert ours["df2"].iloc[0] == ref.loc["Residual", "df"]
    # partial η² = SS_E / (SS_E + SS_residual)
    eta = ours.loc["tier", "SS"] / (ours.loc["tier", "SS"] + ref.loc["Residual", "sum_sq"])
    assert ours.loc["tier", "partial_eta_squared"] == pytest.approx(eta)


def test_artool_validity_checks():
    unbalanced = _grid(lambda r: 0.5 * (r["diversity"] == "multi"), seed=4)
    checks = art_checks(unbalanced, "ppl", ["diversity", "tier"])
    assert checks["sum_ok"].all()
    assert (checks["aligned_sum"].abs() < 1e-9).all()
    balanced = _grid(lambda r: 0.5 * (r["diversity"] == "multi"), n=(8, 8), seed=4)
    # in a balanced design the other effects are aligned away exactly
    assert (art_checks(balanced, "ppl", ["diversity", "tier"])["max_other_F"] < 1e-8).all()


def test_planted_main_effect_is_found_and_no_interaction_is_invented():
    df = _grid(lambda r: 0.8 * (r["diversity"] == "multi"), n=(12, 16), seed=5)
    res = art_anova(df, "ppl", ["diversity", "tier"]).set_index("effect")
    assert res.loc["diversity", "p"] < 1e-4
    assert res.loc["tier", "p"] > 0.05 and res.loc["diversity:tier", "p"] > 0.05
    assert list(res.columns) == ["F", "df1", "df2", "p", "partial_eta_squared", "n", "n_dropped"]
    assert res.loc["diversity:tier", "df1"] == 2


def test_planted_interaction_is_found():
    # a crossover: multi helps small sources and hurts large ones, no average effect of either factor
    shift = {"small": 0.8, "medium": 0.0, "large": -0.8}
    df = _grid(lambda r: shift[r["tier"]] * (1 if r["diversity"] == "multi" else -1), n=(12, 12), seed=6)
    res = art_anova(df, "ppl", ["diversity", "tier"]).set_index("effect")
    assert res.loc["diversity:tier", "p"] < 1e-4
    assert res.loc["diversity", "p"] > 0.05 and res.loc["tier", "p"] > 0.05


def test_single_factor_art_is_kruskal_wallis_in_f_form():
    # With one factor the aligned response is y − grand mean, so ART is the ANOVA of the ranks and
    # F = (H/(k − 1)) / ((N − 1 − H)/(N − k)) exactly (H tie-corrected).
    df = _grid(lambda r: 0.3 * (r["tier"] == "large"), seed=7, levels={"tier": ["small", "medium", "large"]})
    df["ppl"] = df["ppl"].round(1)  # ties
    res = art_anova(df, "ppl", ["tier"]).iloc[0]
    h = stats.kruskal(*[g["ppl"] for _, g in df.groupby("tier")]).statistic
    n, k = len(df), 3
    assert res["F"] == pytest.approx((h / (k - 1)) / ((n - 1 - h) / (n - k)), rel=1e-10)


def test_blocks_absorb_a_seed_shift():
    rng = np.random.default_rng(8)
    df = _grid(lambda r: 0.4 * (r["diversity"] == "multi"), n=(12, 12), seed=8)
    df["seed"] = rng.integers(0, 3, len(df))
    df["ppl"] *= np.exp(1.5 * df["seed"])  # one run scores everything higher
    plain = art_anova(df, "ppl", ["diversity", "tier"]).set_index("effect")
    blocked = art_anova(df, "ppl", ["diversity", "tier"], blocks=["seed"]).set_index("effect")
    assert blocked.loc["diversity", "df2"] == plain.loc["diversity", "df2"] - 2
    assert blocked.loc["diversity", "F"] > 2 * plain.loc["diversity", "F"]


def test_design_problems_are_errors_and_nan_rows_are_counted():
    df = _grid(lambda r: 0.0)
    with pytest.raises(ValueError, match="empty cell"):
        art_anova(df[~((df.diversity == "multi") & (df.tier == "large"))], "ppl", ["diversity", "tier"])
    with pytest.raises(ValueError, match="single level"):
        art_anova(df[df.diversity == "multi"], "ppl", ["diversity", "tier"])
    with_nan = df.copy()
    with_nan.loc[[0, 5], "ppl"] = np.nan
    res = art_anova(with_nan, "ppl", ["diversity", "tier"])
    assert (res["n_dropped"] == 2).all() and (res["n"] == len(df) - 2).all()


def test_seed_spread_by_hand():
    agg = pd.DataFrame({
        "condition": ["single"] * 3 + ["multi"] * 3,
        "metric": ["ppl"] * 6, "statistic": ["mean"] * 6, "seed": [1, 2, 3] * 2,
        "source": [np.nan] * 6,  # a missing key still forms a group
        "value": [1.0, 2.0, 4.0, 3.0, np.nan, 3.0],
    })
    out = seed_spread(agg).set_index("condition")
    assert out.loc["single", "n_seeds"] == 3 and out.loc["single", "range"] == 3.0
    assert out.loc["single", "sd"] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert out.loc["single", "cv"] == pytest.approx(np.std([1, 2, 4], ddof=1) / (7 / 3))
    assert out.loc["multi", "n_seeds"] == 2 and out.loc["multi", "n_nan"] == 1 and out.loc["multi", "sd"] == 0
    with pytest.raises(ValueError, match="share a seed"):
        seed_spread(pd.concat([agg, agg.assign(statistic="mean")]))
