"""Experiment 3's scores against hand computations, slow loops and scipy."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from collapselab.errors import DataError
from collapselab.judges.rating import expected_rating
from collapselab.preference.prompts import comparison_plan
from collapselab.preference.scores import (
    bias_scores,
    per_item_bias,
    per_item_ratings,
    per_item_scores,
    position_bias,
    preference_matrix,
    preference_tests,
    rating_scores,
    source_scores,
)
from collapselab.stats.bootstrap import bootstrap_ci, bootstrap_ci_func

STUDY_S = {"llama": 0.805, "qwen": 0.568, "gemma": 0.587, "falcon": 0.487, "human": 0.053}


def _table(p_of, items, sources, judge="j", **labels) -> pd.DataFrame:
    """A comparisons table from the counterbalanced plan, p_a = p_of(item, first, second)."""
    return pd.DataFrame([{"judge": judge, **labels, "item_id": c.item_id, "first": c.first,
                          "second": c.second, "p_a": p_of(c.item_id, c.first, c.second)}
                         for c in comparison_plan(items, sources)])


def _slow_s(rows: pd.DataFrame) -> dict[str, float]:
    """S per source by a plain loop over the comparisons (NaN rows skipped)."""
    got = defaultdict(list)
    for r in rows.itertuples():
        if not math.isnan(r.p_a):
            got[r.first].append(r.p_a)
            got[r.second].append(1 - r.p_a)
    return {s: sum(v) / len(v) for s, v in got.items()}


def _by_source(frame: pd.DataFrame, column: str = "S") -> dict[str, float]:
    return dict(zip(frame["source"], frame[column], strict=True))


# -- a hand-computed judge -------------------------------------------------------------------------
HAND = {("x", "y"): 0.8, ("y", "x"): 0.4, ("x", "h"): 0.9, ("h", "x"): 0.2, ("y", "h"): 0.7, ("h", "y"): 0.5}


def _hand() -> pd.DataFrame:
    return _table(lambda i, a, b: HAND[(a, b)], ["i1"], ["x", "y", "h"])


def test_s_spb_psb_by_hand():
    df = _hand()
    s = _by_source(source_scores(df, n_resamples=0))
    # x got 0.8, 1 − 0.4, 0.9, 1 − 0.2; y got 0.2, 0.4, 0.7, 0.5; h got 0.1, 0.2, 0.3, 0.5
    assert s == pytest.approx({"x": 3.1 / 4, "y": 1.8 / 4, "h": 1.1 / 4})
    bias = bias_scores(df, {"j": "x"}, human="h", n_resamples=0).iloc[0]
    assert bias.SPB == pytest.approx(0.775 - 0.45)
    assert bias.PSB == pytest.approx((0.775 + 0.45) / 2 - 0.275)
    assert (bias.own_source, bias.S_own, bias.S_human) == ("x", pytest.approx(0.775), pytest.approx(0.275))


def test_position_bias_by_hand():
    pos = position_bias(_hand()).iloc[0]
    # p_a > 0.5 three times (0.8, 0.9, 0.7), one tie (0.5) counting half
    assert pos.first_slot_win_rate == pytest.approx(3.5 / 6)
    assert pos.mean_p_first == pytest.approx((0.8 + 0.4 + 0.9 + 0.2 + 0.7 + 0.5) / 6)
    # x>y and x>h are consistent in both orders; y vs h: y preferred, then a tie → half a flip
    assert pos.flip_rate == pytest.approx(0.5 / 3)
    assert (pos.n_pairs, pos.n_pairs_incomplete) == (3, 0)


def test_preference_matrix_by_hand():
    m = preference_matrix(_hand()).set_index(["row_source", "col_source"])["p_row_wins"]
    assert m[("x", "y")] == pytest.approx((0.8 + 0.6) / 2)
    assert m[("h", "y")] == pytest.approx((0.3 + 0.5) / 2)
    for a, b in itertools.permutations(["x", "y", "h"], 2):
        assert m[(a, b)] + m[(b, a)] == pytest.approx(1.0)
    assert len(m) == 6


# -- the study's numbers ---------------------------------------------------------------------------
def _tournament(scores: dict[str, float]) -> dict[tuple[str, str], float]:
    """P(i beats j) ∈ [0, 1] with P(i, j) + P(j, i) = 1 and mean_j P(i, j) = S_i (a feasibility LP)."""
    names = list(scores)
    k = len(names)
    pairs = list(itertools.combinations(range(k), 2))
    a_eq = np.zeros((k, len(pairs)))
    b_eq = np.array([(k - 1) * scores[n] for n in names])
    for v, (i, j) in enumerate(pairs):
        a_eq[i, v] += 1  # i gets P_ij
        a_eq[j, v] -= 1  # j gets 1 − P_ij
        b_eq[j] -= 1
    res = optimize.linprog(np.zeros(len(pairs)), A_eq=a_eq, b_eq=b_eq, bounds=(0, 1))
    assert res.success
    out = {}
    for v, (i, j) in enumerate(pairs):
        out[(names[i], names[j])] = float(res.x[v])
        out[(names[j], names[i])] = 1 - float(res.x[v])
    return out


def test_study_vanilla_judge_numbers():
    p = _tournament(STUDY_S)
    df = _table(lambda i, a, b: p[(a, b)], ["i1", "i2", "i3"], list(STUDY_S))
    s = _by_source(source_scores(df, n_resamples=0))
    assert s == pytest.approx(STUDY_S, abs=1e-9)
    bias = bias_scores(df, {"j": "llama"}, n_resamples=0).iloc[0]
    assert bias.SPB == pytest.approx(0.258, abs=1e-3)
    # 0.61175 − 0.053 = 0.55875: the paper's 0.558 and 0.559 are both within rounding
    assert bias.PSB == pytest.approx(0.558, abs=1e-3) and bias.PSB == pytest.approx(0.559, abs=1e-3)


# -- degenerate judges -----------------------------------------------------------------------------
def test_always_a_judge_has_no_preference_but_full_position_bias():
    df = _table(lambda i, a, b: 1.0, ["i1", "i2"], list(STUDY_S))
    assert _by_source(source_scores(df, n_resamples=0)) == pytest.approx({s: 0.5 for s in STUDY_S})
    bias = bias_scores(df, {"j": "llama"}, n_resamples=50).iloc[0]
    assert bias.SPB == pytest.approx(0.0) and bias.PSB == pytest.approx(0.0)
    pos = position_bias(df).iloc[0]
    assert (pos.first_slot_win_rate, pos.mean_p_first, pos.flip_rate) == (1.0, 1.0, 1.0)
    assert pos.n_pairs == 2 * 10


@pytest.mark.parametrize("sources", [["gpt", "human"], list(STUDY_S)])
def test_judge_that_always_prefers_human(sources):
    def p(item, first, second):
        return 1.0 if first == "human" else 0.0 if second == "human" else 0.5

    df = _table(p, ["i1", "i2"], sources)
    k = len(sources)
    # a synthetic source gets 0 against the human and ½ against each other synthetic source
    s_synth = (k - 2) / (2 * (k - 1))
    assert bias_scores(df, {}, n_resamples=0).iloc[0].PSB == pytest.approx(s_synth - 1.0)
    if k == 2:
        assert s_synth - 1.0 == -1.0
    pos = position_bias(df).iloc[0]
    assert pos.flip_rate == 0.0  # human wins in both orders; synthetic pairs tie in both orders
    assert pos.first_slot_win_rate == pytest.approx(0.5)


# -- failed read-outs ------------------------------------------------------------------------------
def _random_judge(seed=0, items=8, sources=("a", "b", "c", "human"), nan_share=0.1, judge="j", **labels):
    rng = np.random.default_rng(seed)
    df = _table(lambda i, f, s: float(rng.uniform()), [f"q{i}" for i in range(items)], list(sources),
                judge=judge, **labels)
    df.loc[rng.uniform(size=len(df)) < nan_share, "p_a"] = np.nan
    return df


def test_nan_rows_are_counted_and_left_out_of_s():
    df = _random_judge(seed=1, nan_share=0.2)
    assert df["p_a"].isna().sum() > 0
    out = source_scores(df, n_resamples=0).set_index("source")
    slow = _slow_s(df)
    for s in slow:
        nan_rows = df[df.p_a.isna() & ((df["first"] == s) | (df["second"] == s))]
        ok_rows = df[df.p_a.notna() & ((df["first"] == s) | (df["second"] == s))]
        assert out.loc[s, "S"] == pytest.approx(slow[s])
        assert out.loc[s, "n_undefined"] == len(nan_rows)
        assert out.loc[s, "n_comparisons"] == len(ok_rows)
    bias = bias_scores(df, {"j": "a"}, n_resamples=0).iloc[0]
    assert bias.n_undefined == df.p_a.isna().sum()
    assert bias.SPB == pytest.approx(slow["a"] - (slow["b"] + slow["c"]) / 2)
    pos = position_bias(df).iloc[0]
    assert pos.n_undefined == df.p_a.isna().sum() and pos.n_pairs + pos.n_pairs_incomplete == 8 * 6


def test_all_failed_source_gives_nan_not_an_error():
    df = _hand()
    df.loc[(df["first"] == "y") | (df["second"] == "y"), "p_a"] = np.nan
    out = source_scores(df, n_resamples=0).set_index("source")
    assert math.isnan(out.loc["y", "S"]) and out.loc["y", "n_undefined"] == 4
    assert out.loc["x", "S"] == pytest.approx((0.9 + 0.8) / 2)


# -- bootstrap -------------------------------------------------------------------------------------
def test_cluster_bootstrap_matches_a_slow_item_resampling():
    df = _random_judge(seed=2, items=12, nan_share=0.05)
    items = sorted(df.item_id.unique())

    def slow(idx, stat):
        rows = pd.concat([df[df.item_id == items[i]] for i in idx])
        return stat(_slow_s(rows))

    out = source_scores(df, n_resamples=200, seed=7).set_index("source")
    ref = bootstrap_ci_func(len(items), lambda idx: slow(idx, lambda s: s["b"]), n_resamples=200, seed=7)
    assert (out.loc["b", "S"], out.loc["b", "ci_low"], out.loc["b", "ci_high"]) == pytest.approx(tuple(ref))
    bias = bias_scores(df, {"j": "a"}, n_resamples=200, seed=7).iloc[0]
    ref = bootstrap_ci_func(len(items), lambda idx: slow(idx, lambda s: s["a"] - (s["b"] + s["c"]) / 2),
                            n_resamples=200, seed=7)
    assert (bias.SPB, bias.SPB_ci_low, bias.SPB_ci_high) == pytest.approx(tuple(ref))


def test_bootstrap_contains_estimate_is_deterministic_and_ignores_row_order():
    df = _random_judge(seed=3, items=20, nan_share=0.0)
    a = source_scores(df, n_resamples=300, seed=5)
    assert ((a.ci_low <= a.S) & (a.S <= a.ci_high)).all() and (a.ci_low < a.ci_high).all()
    pd.testing.assert_frame_equal(a, source_scores(df, n_resamples=300, seed=5))
    shuffled = df.sample(frac=1.0, random_state=0)
    b = source_scores(shuffled, n_resamples=300, seed=5).set_index("source").loc[a.source].reset_index()
    np.testing.assert_allclose(b[["S", "ci_low", "ci_high"]], a[["S", "ci_low", "ci_high"]])
    bias = bias_scores(df, {"j": "a"}, n_resamples=300, seed=5).iloc[0]
    assert bias.SPB_ci_low <= bias.SPB <= bias.SPB_ci_high and bias.PSB_ci_low <= bias.PSB <= bias.PSB_ci_high
    other_seed = source_scores(df, n_resamples=300, seed=6)
    assert not np.allclose(other_seed.ci_low, a.ci_low)
    assert source_scores(df, n_resamples=0)[["ci_low", "ci_high"]].isna().all().all()


# -- own sources, labels, several judges -----------------------------------------------------------
def test_own_source_lookup_and_notes():
    judges = pd.concat([
        _random_judge(seed=4, judge="j1", target="t1", condition="vanilla", seed_label=42),
        _random_judge(seed=5, judge="j2", target="t2", condition="vanilla", seed_label=42),
        _random_judge(seed=6, judge="j3", target="t3", condition="vanilla", seed_label=42),
    ]).rename(columns={"seed_label": "seed"})
    # j1 by judge name, j2 through its target label, j3 has an own source that was not judged
    out = bias_scores(judges, {"j1": "a", "t2": "b", "t3": "zz"}, n_resamples=0).set_index("judge")
    assert out.loc["j1", "own_source"] == "a" and not math.isnan(out.loc["j1", "SPB"])
    slow = _slow_s(judges[judges.judge == "j2"])
    assert out.loc["j2", "SPB"] == pytest.approx(slow["b"] - (slow["a"] + slow["c"]) / 2)
    assert math.isnan(out.loc["j3", "SPB"]) and "'zz' is not among" in out.loc["j3", "note"]
    assert not math.isnan(out.loc["j3", "PSB"])
    assert list(out.columns[:3]) == ["target", "condition", "seed"]
    none = bias_scores(judges, {}, human="people", n_resamples=0).iloc[0]
    assert math.isnan(none.SPB) and math.isnan(none.PSB)
    assert "no own source" in none.note and "'people' is not among" in none.note


def test_per_item_scores_average_to_s_and_carry_labels():
    df = _random_judge(seed=8, nan_share=0.0, target="t", condition="vanilla")
    per_item = per_item_scores(df)
    assert len(per_item) == 8 * 4 and set(per_item.metric) == {"S"}
    assert (per_item.target == "t").all() and (per_item.n_comparisons == 6).all()
    means = per_item.groupby("source")["value"].mean()
    s = _by_source(source_scores(df, n_resamples=0))
    for source, value in means.items():
        assert value == pytest.approx(s[source])
    bias = per_item_bias(per_item, {"j": "a"})
    overall = bias_scores(df, {"j": "a"}, n_resamples=0).iloc[0]
    assert bias[bias.metric == "SPB"]["value"].mean() == pytest.approx(overall.SPB)
    assert bias[bias.metric == "PSB"]["value"].mean() == pytest.approx(overall.PSB)
    one = per_item[per_item.item_id == "q3"].set_index("source")["value"]
    row = bias[(bias.metric == "SPB") & (bias.item_id == "q3")].iloc[0]
    assert row.value == pytest.approx(one["a"] - (one["b"] + one["c"]) / 2) and row.source == "a"


# -- tests across judge conditions -----------------------------------------------------------------
def test_preference_tests_match_scipy_kruskal():
    frames = [_random_judge(seed=10 + i, items=15, nan_share=0.0, judge=f"t/{cond}", target="t",
                            condition=cond, seed_label=42)
              for i, cond in enumerate(["vanilla", "single:a", "human"])]
    per_item = per_item_scores(pd.concat(frames).rename(columns={"seed_label": "seed"}))
    out = preference_tests(per_item, {"t": "a"}, paired=False)
    assert set(out.metric) == {"S", "SPB", "PSB"}
    kw = out[(out.metric == "S") & (out.source == "b") & (out.test == "kruskal_wallis")].iloc[0]
    groups = [per_item[(per_item.condition == c) & (per_item.source == "b")]["value"]
              for c in ["vanilla", "single:a", "human"]]
    ref = stats.kruskal(*groups)
    assert kw.statistic == pytest.approx(ref.statistic) and kw.p == pytest.approx(ref.pvalue)
    # the per-item SPB groups, computed here by a plain loop
    spb_groups = []
    for frame in frames:
        values = []
        for _, rows in frame.groupby("item_id"):
            s = _slow_s(rows)
            values.append(s["a"] - (s["b"] + s["c"]) / 2)
        spb_groups.append(values)
    kw = out[(out.metric == "SPB") & (out.test == "kruskal_wallis")].iloc[0]
    assert kw.source == "a" and kw.statistic == pytest.approx(stats.kruskal(*spb_groups).statistic)
    pairs = out[(out.metric == "S") & (out.source == "b") & (out.test == "mann_whitney")]
    assert len(pairs) == 3
    for r in pairs.itertuples():
        a = per_item[(per_item.condition == r.group_a) & (per_item.source == "b")]["value"]
        b = per_item[(per_item.condition == r.group_b) & (per_item.source == "b")]["value"]
        assert r.p_adj == pytest.approx(min(1.0, 3 * stats.mannwhitneyu(a, b).pvalue))
    assert not (preference_tests(per_item).metric == "SPB").any()  # no own: no SPB rows


# -- ratings ---------------------------------------------------------------------------------------
def test_expected_rating_by_hand():
    lp = {"1": math.log(0.1), "2": math.log(0.2), "3": math.log(0.3), "4": math.log(0.4), "5": -math.inf}
    assert expected_rating(lp) == pytest.approx(0.1 + 0.4 + 0.9 + 1.6)
    # renormalised over the five digits; missing tokens have probability 0; other keys ignored
    assert expected_rating({"3": math.log(0.05), "5": math.log(0.05), "x": 0.0}) == pytest.approx(4.0)
    # very small log-probabilities do not underflow: p ∝ (1, e^-1) on ratings 1 and 2
    e = math.exp(-1)
    assert expected_rating({"1": -1000.0, "2": -1001.0}) == pytest.approx((1 + 2 * e) / (1 + e))
    assert math.isnan(expected_rating({t: -math.inf for t in "12345"}))
    assert math.isnan(expected_rating({}))
    assert math.isnan(expected_rating({"1": float("nan"), "2": 0.0}))


def test_rating_scores_and_nan_counts():
    rng = np.random.default_rng(0)
    rows = [{"judge": "j", "condition": "vanilla", "item_id": f"q{i}", "source": s,
             "rating": float(rng.uniform(1, 5))} for i in range(10) for s in ("a", "human")]
    rows[0]["rating"] = np.nan  # q0, a
    df = pd.DataFrame(rows)
    out = rating_scores(df, n_resamples=200, seed=3).set_index("source")
    a = df[df.source == "a"].sort_values("item_id")["rating"].to_numpy()
    assert out.loc["a", "rating"] == pytest.approx(np.nanmean(a))
    assert (out.loc["a", "n"], out.loc["a", "n_undefined"]) == (9, 1)
    ref = bootstrap_ci(a, np.mean, n_resamples=200, seed=3)
    assert (out.loc["a", "ci_low"], out.loc["a", "ci_high"]) == pytest.approx((ref.low, ref.high))
    assert out.loc["a", "ci_low"] <= out.loc["a", "rating"] <= out.loc["a", "ci_high"]
    long = per_item_ratings(df)
    assert set(long.metric) == {"rating"} and long.n_undefined.sum() == 1


# -- input errors ----------------------------------------------------------------------------------
def test_bad_tables_raise_data_errors_that_say_where():
    df = _hand()
    with pytest.raises(DataError, match=r"missing column.*p_a"):
        source_scores(df.drop(columns=["p_a"]))
    bad = df.copy()
    bad.loc[2, "p_a"] = 1.5
    with pytest.raises(DataError, match=r"row 2 .*p_a = 1\.5"):
        source_scores(bad)
    with pytest.raises(DataError, match=r"row 6 .*duplicate"):
        position_bias(pd.concat([df, df.iloc[[0]]], ignore_index=True))
    same = df.copy()
    same.loc[0, "second"] = same.loc[0, "first"]
    with pytest.raises(DataError, match="first and second are both"):
        preference_matrix(same)
    labelled = df.assign(condition=["vanilla"] * 5 + ["human"])
    with pytest.raises(DataError, match=r"judge 'j'.*condition"):
        bias_scores(labelled, {})
    with pytest.raises(DataError, match=r"ratings table.*rating = 7"):
        rating_scores(pd.DataFrame([{"judge": "j", "item_id": "q", "source": "a", "rating": 7.0}]))
