"""The mixed model with the run as a random effect: against statsmodels directly and, in a
balanced design, against the one-way ANOVA of the run means (Fisher's LSD)."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from collapselab.stats.mixed import mixed_model_family
from collapselab.stats.power import mde_from_se

CONDITIONS = ("vanilla", "human", "single", "multi")


def runs(n_items=60, seeds=(1, 2, 3, 4), run_sd=0.3, seed=0, drop=()):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 2, n_items)
    rows = []
    for k, c in enumerate(CONDITIONS):
        for s in seeds:
            shift = 0.25 * k + rng.normal(0, run_sd)
            for i in range(n_items):
                v = np.nan if (c, s, i) in drop else difficulty[i] + shift + rng.normal(0, 1)
                rows.append({"condition": c, "seed": s, "item_id": f"q{i}", "value": v})
    return pd.DataFrame(rows)


def test_balanced_design_equals_the_anova_of_run_means():
    df = runs()
    rows = mixed_model_family(df, "condition", "seed", "value", "item_id", "holm")
    means = df.groupby(["condition", "seed"])["value"].mean().unstack()
    ref = stats.f_oneway(*(means.loc[c] for c in CONDITIONS))
    omnibus = rows[0]
    assert omnibus["test"] == "mixed_f" and omnibus["df"] == 3 and omnibus["n_a"] == 16
    assert omnibus["statistic"] == pytest.approx(ref.statistic, rel=1e-5)
    assert omnibus["p"] == pytest.approx(ref.pvalue, rel=1e-4)
    s2 = means.var(axis=1, ddof=1).mean()  # pooled within-condition variance of the run means
    ps = []
    for r in rows[1:]:
        d = means.loc[r["group_a"]].mean() - means.loc[r["group_b"]].mean()
        se = np.sqrt(2 * s2 / 4)
        assert r["diff"] == pytest.approx(d)
        assert r["statistic"] == pytest.approx(d / se, rel=1e-5) and r["df"] == 12
        assert r["p"] == pytest.approx(2 * stats.t.sf(abs(d / se), 12), rel=1e-4)
        t = stats.t.ppf(0.975, 12)
        assert (r["diff_low"], r["diff_high"]) == pytest.approx((d - t * se, d + t * se), rel=1e-4)
        assert r["mde"] == pytest.approx(mde_from_se(se, 12), rel=1e-4)
        assert r["unit"] == "runs" and r["n_a"] == r["n_b"] == 4
        ps.append(r["p"])
    from statsmodels.stats.multitest import multipletests

    np.testing.assert_allclose([r["p_adj"] for r in rows[1:]], multipletests(ps, method="holm")[1])


def test_unbalanced_fit_equals_statsmodels_formula_api():
    drop = {("human", 2, i) for i in range(20)} | {("multi", 1, 3)}
    df = runs(drop=drop, seed=1)
    rows = mixed_model_family(df, "condition", "seed", "value", "item_id", "bonferroni")
    data = df.dropna().copy()
    data["y"] = data["value"] - data.groupby("item_id")["value"].transform("mean")
    data["run"] = data["condition"] + "/" + data["seed"].astype(str)
    fit = smf.mixedlm("y ~ C(condition, Treatment('vanilla'))", data, groups=data["run"]).fit(
        reml=True, method=["bfgs"], gtol=1e-10)
    name = "C(condition, Treatment('vanilla'))[T.single]"
    row = next(r for r in rows if r["group_a"] == "vanilla" and r["group_b"] == "single")
    assert row["diff"] == pytest.approx(-fit.fe_params[name], rel=1e-6)
    se = fit.bse_fe[name]
    assert row["statistic"] == pytest.approx(-fit.fe_params[name] / se, rel=1e-5)
    assert row["p"] == pytest.approx(2 * stats.t.sf(abs(fit.fe_params[name] / se), 16 - 4), rel=1e-4)
    assert (row["n_dropped_a"], row["n_dropped_b"]) == (0, 0)
    human = next(r for r in rows if r["group_a"] == "vanilla" and r["group_b"] == "human")
    assert human["n_dropped_b"] == 20


def test_a_run_shift_is_noise_for_the_mixed_model_but_signal_for_item_level_tests():
    """Pseudo-replication: one unlucky run per condition makes the item-level test certain, the
    run-level model is not fooled."""
    from collapselab.stats.summary import compare_conditions

    df = runs(n_items=200, run_sd=1.0, seed=3)
    df["condition"] = df["condition"].replace({"human": "vanilla", "multi": "single"})  # no true effect…
    df["seed"] = df["seed"] + df["condition"].map({"vanilla": 0, "single": 10})  # …but 8 + 8 runs
    df = df[df.condition.isin(["vanilla", "single"])]
    df = df.groupby(["condition", "seed", "item_id"], as_index=False)["value"].mean()
    df["seed"] = df.groupby("condition")["seed"].rank(method="dense").astype(int)
    out = compare_conditions(df)
    pooled = out[(out.seed == "pooled") & (out.test == "wilcoxon")].iloc[0]
    mixed = out[(out.seed == "mixed-model") & (out.test == "mixed_t")].iloc[0]
    assert mixed.p > 0.05 and mixed.unit == "runs" and pooled.unit == "items"
    assert pooled.p < 1e-6  # 8 runs × 200 items as 1,600 independent pairs
    assert mixed.mde > pooled.mde  # the run-level question is the harder one


def test_too_few_runs_say_why():
    df = runs(seeds=(1,))
    rows = mixed_model_family(df, "condition", "seed", "value", "item_id", "holm")
    assert np.isnan(rows[0]["p"]) and "no degrees of freedom" in rows[0]["note"]
    assert len(rows) == 1 + 6
