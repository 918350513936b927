"""Familiarity: per-text log-perplexity by hand, the own-source regression against a direct
statsmodels fit and known true coefficients (self-preference that is only familiarity must vanish
once Δ log-perplexity is in the model), and the stratified own effect by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from collapselab.preference.familiarity import (
    familiarity_by_source,
    familiarity_record,
    familiarity_regression,
    familiarity_strata,
    order_averaged_pairs,
)
from collapselab.preference.prompts import comparison_plan
from collapselab.preference.scores import bias_scores

SOURCES = ["own", "x", "y", "z", "human"]
OWN = {"j": "own"}


def test_familiarity_record_by_hand():
    r = familiarity_record([-1.0, -2.0, -3.0])
    assert r == {"n_tokens": 3, "sum_logprob": -6.0, "mean_logprob": -2.0, "log_ppl": 2.0}
    empty = familiarity_record([])
    assert empty["n_tokens"] == 0 and empty["sum_logprob"] == 0
    assert math.isnan(empty["mean_logprob"]) and math.isnan(empty["log_ppl"])


def synthetic(beta_own: float, beta_fam: float = -0.15, *, n_items: int = 300, seed: int = 0,
              beta_human: float = -0.05, position: float = 0.02, noise: float = 0.03):
    """Comparisons and familiarity of one judge "j" from the linear model
    p_A = 0.5 + position + β_own Δown + β_fam Δℓ + β_hum Δhum + ε, where the own texts are much
    more familiar (lower log-perplexity) to the judge than the others."""
    rng = np.random.default_rng(seed)
    mean_ppl = {"own": 1.5, "x": 2.0, "y": 2.1, "z": 1.9, "human": 2.3}
    items = [f"i{k:03d}" for k in range(n_items)]
    fam = pd.DataFrame([{"judge": "j", "item_id": i, "source": s, "log_ppl": mean_ppl[s] + rng.normal(0, 0.2)}
                        for i in items for s in SOURCES])
    ell = {(r.item_id, r.source): r.log_ppl for r in fam.itertuples()}
    rows = []
    for c in comparison_plan(items, SOURCES):
        d_own = (c.first == "own") - (c.second == "own")
        d_hum = (c.first == "human") - (c.second == "human")
        d_fam = ell[c.item_id, c.first] - ell[c.item_id, c.second]
        p = 0.5 + position + beta_own * d_own + beta_fam * d_fam + beta_human * d_hum + rng.normal(0, noise)
        assert 0 < p < 1  # no clipping: the linear model holds exactly
        rows.append({"judge": "j", "target": "t", "condition": "vanilla", "item_id": c.item_id,
                     "first": c.first, "second": c.second, "p_a": p})
    return pd.DataFrame(rows), fam


def direct_fit(comparisons: pd.DataFrame, fam: pd.DataFrame, *, with_familiarity: bool = True):
    """The same regression written out with pandas merges and a statsmodels formula."""
    f = fam.set_index(["item_id", "source"])["log_ppl"]
    d = comparisons.copy()
    d["own"] = (d["first"] == "own").astype(float) - (d["second"] == "own").astype(float)
    d["hum"] = (d["first"] == "human").astype(float) - (d["second"] == "human").astype(float)
    d["delta"] = (f.loc[list(zip(d["item_id"], d["first"], strict=True))].to_numpy()
                  - f.loc[list(zip(d["item_id"], d["second"], strict=True))].to_numpy())
    formula = "p_a ~ own + delta + hum" if with_familiarity else "p_a ~ own + hum"
    groups = pd.factorize(d["item_id"])[0]
    return smf.ols(formula, data=d).fit(cov_type="cluster", cov_kwds={"groups": groups})


def terms(table: pd.DataFrame, model: str) -> pd.DataFrame:
    return table[table["model"] == model].set_index("term")


def test_regression_matches_a_direct_statsmodels_fit():
    comparisons, fam = synthetic(beta_own=0.05)
    table = familiarity_regression(comparisons, fam, OWN)
    for model, with_fam in (("adjusted", True), ("unadjusted", False)):
        ours = terms(table, model)
        fit = direct_fit(comparisons, fam, with_familiarity=with_fam)
        ci = fit.conf_int(0.05)
        names = {"position": "Intercept", "own": "own", "human": "hum", "delta_log_ppl": "delta"}
        assert set(ours.index) == {t for t in names if with_fam or t != "delta_log_ppl"}
        for term, theirs in names.items():
            if term not in ours.index:
                continue
            row = ours.loc[term]
            assert row["estimate"] == pytest.approx(fit.params[theirs], rel=1e-9, abs=1e-12)
            assert row["se"] == pytest.approx(fit.bse[theirs], rel=1e-9)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.loc[theirs, 0], ci.loc[theirs, 1]), rel=1e-9)
            assert row["p_value"] == pytest.approx(fit.pvalues[theirs], rel=1e-6, abs=1e-300)
        assert (ours["n_obs"] == len(comparisons)).all() and (ours["n_items"] == 300).all()
        assert (ours["n_dropped"] == 0).all() and (ours["own_source"] == "own").all()
    # the coefficients are plain least squares (numpy, no statsmodels)
    f = fam.set_index(["item_id", "source"])["log_ppl"]
    x = np.column_stack([
        np.ones(len(comparisons)),
        (comparisons["first"] == "own").to_numpy(float) - (comparisons["second"] == "own").to_numpy(float),
        [f[i, a] - f[i, b] for i, a, b in zip(comparisons["item_id"], comparisons["first"], comparisons["second"],
                                             strict=True)],
        (comparisons["first"] == "human").to_numpy(float) - (comparisons["second"] == "human").to_numpy(float)])
    beta = np.linalg.lstsq(x, comparisons["p_a"].to_numpy(), rcond=None)[0]
    assert terms(table, "adjusted").loc[["position", "own", "delta_log_ppl", "human"], "estimate"].to_numpy() \
        == pytest.approx(beta, rel=1e-9)


def test_self_preference_that_is_only_familiarity_vanishes_once_adjusted():
    comparisons, fam = synthetic(beta_own=0.0, beta_fam=-0.15)
    # the naive measures say the judge favours its own texts ...
    bias = bias_scores(comparisons, OWN, n_resamples=200).iloc[0]
    assert bias["SPB"] > 0.05 and bias["SPB_ci_low"] > 0
    table = familiarity_regression(comparisons, fam, OWN)
    unadjusted = terms(table, "unadjusted").loc["own"]
    assert unadjusted["estimate"] > 0.05 and unadjusted["ci_low"] > 0
    # ... but given familiarity there is no own effect, and the familiarity effect is recovered
    adjusted = terms(table, "adjusted")
    assert abs(adjusted.loc["own", "estimate"]) < 0.01
    assert adjusted.loc["own", "ci_low"] < 0 < adjusted.loc["own", "ci_high"]
    assert adjusted.loc["delta_log_ppl", "estimate"] == pytest.approx(-0.15, abs=0.01)
    assert adjusted.loc["position", "estimate"] == pytest.approx(0.52, abs=0.005)
    # the stratified version agrees: own pairs win more, but hardly more than equally familiar
    # others (five strata remove most, not all, of a confounder's bias: Cochran 1968, ~90%)
    summary, strata = familiarity_strata(comparisons, fam, OWN, bins=5, n_resamples=200)
    s = summary.iloc[0]
    assert s["own_pair_pref"] > 0.05 and s["own_pair_pref_ci_low"] > 0
    assert abs(s["stratified"]) < 0.2 * s["own_pair_pref"]
    assert s["bins"] == 5 and len(strata) == 5 and strata["n_own"].sum() == s["n_own_pairs"] == 300 * 3


def test_a_real_own_effect_survives_the_adjustment():
    comparisons, fam = synthetic(beta_own=0.08, beta_fam=-0.15, seed=1)
    adjusted = terms(familiarity_regression(comparisons, fam, OWN), "adjusted")
    assert adjusted.loc["own", "estimate"] == pytest.approx(0.08, abs=0.01)
    assert adjusted.loc["own", "ci_low"] > 0.05
    summary, _ = familiarity_strata(comparisons, fam, OWN, bins=4, n_resamples=100)
    assert summary.iloc[0]["stratified"] == pytest.approx(0.08, abs=0.03)


def test_stratified_effect_by_hand():
    # two items; sources own, x, y, human; every pair in both orders with p_A given below
    p = {("own", "x"): (0.9, 0.2), ("own", "y"): (0.7, 0.4), ("x", "y"): (0.6, 0.5),
         ("own", "human"): (0.8, 0.3), ("x", "human"): (0.7, 0.3), ("y", "human"): (0.6, 0.4)}
    rows = []
    for item, shift in (("i1", 0.0), ("i2", 0.05)):
        for (a, b), (forward, backward) in p.items():
            rows.append({"judge": "j", "item_id": item, "first": a, "second": b, "p_a": forward - shift})
            rows.append({"judge": "j", "item_id": item, "first": b, "second": a, "p_a": backward + shift})
    comparisons = pd.DataFrame(rows)
    ell = {"own": 1.0, "x": 1.5, "y": 1.2, "human": 2.0}
    fam = pd.DataFrame([{"judge": "j", "item_id": i, "source": s, "log_ppl": v}
                        for i in ("i1", "i2") for s, v in ell.items()])
    # q(own beats x) on i1 = mean(0.9, 1 − 0.2) = 0.85; on i2 = mean(0.85, 1 − 0.25) = 0.8
    pairs = order_averaged_pairs(comparisons).set_index(["item_id", "x", "y"])["q"]
    assert pairs["i1", "own", "x"] == pytest.approx(0.85) and pairs["i2", "own", "x"] == pytest.approx(0.8)
    assert pairs["i1", "x", "own"] == pytest.approx(0.15)
    summary, strata = familiarity_strata(comparisons, fam, OWN, bins=1, n_resamples=0)
    q_own = [0.85, 0.8, (0.7 + 0.6) / 2, (0.65 + 0.55) / 2]  # own vs x and own vs y on both items
    q_xy = [(0.6 + 0.5) / 2, (0.55 + 0.45) / 2]  # x vs y on both items; y vs x is 1 − that
    base = [*q_xy, *(1 - q for q in q_xy)]
    s = summary.iloc[0]
    assert s["own_pair_pref"] == pytest.approx(np.mean(q_own) - 0.5)
    assert s["stratified"] == pytest.approx(np.mean(q_own) - np.mean(base)) and np.mean(base) == pytest.approx(0.5)
    assert s["n_own_pairs"] == 4 and s["n_base_pairs"] == 4 and s["n_own_unmatched"] == 0
    assert strata.iloc[0][["delta_low", "delta_high"]].tolist() == [-np.inf, np.inf]
    # two strata at the median of the own pairs' Δ (−0.5 for x, −0.2 for y): own vs x in the first
    # stratum (Δ < −0.35), own vs y in the second; the baseline x vs y (Δ = 0.3) and y vs x (−0.3)
    summary, strata = familiarity_strata(comparisons, fam, OWN, bins=2, n_resamples=0)
    assert strata["n_own"].tolist() == [2, 2] and strata["n_base"].tolist() == [0, 4]
    assert summary.iloc[0]["n_own_unmatched"] == 2
    # only the second stratum has both: own vs y against the baseline there
    assert summary.iloc[0]["stratified"] == pytest.approx(np.mean(q_own[2:]) - 0.5)


def test_undefined_parts_are_counted_and_explained():
    comparisons, fam = synthetic(beta_own=0.0, n_items=20)
    fam.loc[(fam["item_id"] == "i000") & (fam["source"] == "x"), "log_ppl"] = np.nan  # an empty text
    comparisons.loc[0, "p_a"] = np.nan  # a failed read-out
    table = familiarity_regression(comparisons, fam, OWN)
    x_rows = ((comparisons["item_id"] == "i000") & ((comparisons["first"] == "x") | (comparisons["second"] == "x")))
    dropped = int((x_rows | comparisons["p_a"].isna()).sum())
    assert (table["n_dropped"] == dropped).all() and (table["n_obs"] == len(comparisons) - dropped).all()
    # no own source: no own term, a note; the familiarity effect is still estimated
    no_own = familiarity_regression(comparisons, fam, {})
    assert "own" not in set(no_own["term"]) and no_own["note"].str.contains("no own source").all()
    assert no_own["estimate"].notna().all()
    # one other synthetic source: no baseline pairs for the stratified effect
    kept = ["own", "x", "human"]
    few = comparisons[comparisons["first"].isin(kept) & comparisons["second"].isin(kept)]
    summary, _ = familiarity_strata(few, fam, OWN, n_resamples=0)
    assert np.isnan(summary.iloc[0]["stratified"]) and "two other synthetic" in summary.iloc[0]["note"]
    assert summary.iloc[0]["own_pair_pref"] == summary.iloc[0]["own_pair_pref"]  # defined


def test_familiarity_by_source_averages_defined_texts():
    fam = pd.DataFrame({"judge": ["j"] * 4, "item_id": ["a", "b", "a", "b"], "source": ["s", "s", "t", "t"],
                        "log_ppl": [1.0, 2.0, 3.0, np.nan]})
    out = familiarity_by_source(fam).set_index("source")
    assert out.loc["s", "log_ppl"] == 1.5 and out.loc["t", "log_ppl"] == 3.0
    assert out.loc["t", "n"] == 1 and out.loc["t", "n_undefined"] == 1
