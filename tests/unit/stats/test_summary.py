"""compare_conditions: the tidy table against direct scipy calls."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from collapselab.stats.hypothesis import stratified_kruskal_wallis
from collapselab.stats.summary import RESULT_COLUMNS, compare_conditions

CONDITIONS = {"vanilla": 0.0, "human": 0.8, "single:a": 0.1, "multi:a,b": 0.3}


def _per_item(seeds=(1,), n=25, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for condition, shift in CONDITIONS.items():
        for s in seeds:
            for metric in ("ppl", "self_bleu"):
                for i in range(n):
                    value = float(np.exp(rng.normal(shift + 0.5 * s, 0.6)))
                    rows.append({"set_name": f"{condition}/{s}", "set_kind": "condition", "condition": condition,
                                 "target": "t", "seed": s, "source": None, "generation": 1, "metric": metric,
                                 "item_id": f"q{i}", "value": value})
    return pd.DataFrame(rows)


def _groups(df, metric, **where):
    part = df[df.metric == metric]
    for k, v in where.items():
        part = part[part[k] == v]
    return {c: part[part.condition == c]["value"].to_numpy() for c in CONDITIONS}


def test_single_seed_rows_equal_direct_scipy_calls():
    df = _per_item()
    out = compare_conditions(df, paired=False)
    assert list(out.columns) == ["metric", "target", "generation", *RESULT_COLUMNS]
    assert set(out["test"]) == {"kruskal_wallis", "mann_whitney"}
    assert len(out) == 2 * (1 + 6)  # two metrics × (omnibus + 6 pairs)
    ppl = out[out.metric == "ppl"]
    groups = _groups(df, "ppl")
    kw = ppl[ppl.test == "kruskal_wallis"].iloc[0]
    ref = stats.kruskal(*groups.values())
    assert kw.statistic == pytest.approx(ref.statistic) and kw.p == pytest.approx(ref.pvalue)
    assert kw.n_a == 100 and kw.effect_name == "epsilon_squared"
    for r in ppl[ppl.test == "mann_whitney"].itertuples():
        ref = stats.mannwhitneyu(groups[r.group_a], groups[r.group_b], alternative="two-sided")
        assert r.statistic == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
        assert r.p_adj == pytest.approx(min(1.0, 6 * ref.pvalue))  # Bonferroni over the 6 pairs
    assert (out["seed"] == 1).all() and out["scope"].str.contains("seed=1").all()


def test_several_seeds_give_per_seed_pooled_seed_level_and_mixed_model_families():
    df = _per_item(seeds=(1, 2, 3), n=15)
    out = compare_conditions(df, paired=False)
    ppl = out[out.metric == "ppl"]
    assert set(ppl["seed"].astype(str)) == {"1", "2", "3", "pooled", "seed-level", "mixed-model"}
    units = ppl.groupby(ppl["seed"].astype(str))["unit"].agg(set)
    assert units["seed-level"] == units["mixed-model"] == {"runs"} and units["pooled"] == units["1"] == {"items"}
    # per-seed rows are the plain tests on that seed's items
    s2 = ppl[(ppl.seed == 2) & (ppl.test == "kruskal_wallis")].iloc[0]
    assert s2.statistic == pytest.approx(stats.kruskal(*_groups(df, "ppl", seed=2).values()).statistic)
    # pooled rows are the seed-stratified tests
    pooled = ppl[ppl.seed == "pooled"]
    assert set(pooled["test"]) == {"stratified_kruskal_wallis", "van_elteren"}
    nested = {c: {s: df[(df.metric == "ppl") & (df.condition == c) & (df.seed == s)]["value"].to_numpy()
                  for s in (1, 2, 3)} for c in CONDITIONS}
    omnibus = pooled[pooled.test == "stratified_kruskal_wallis"].iloc[0]
    assert omnibus.statistic == pytest.approx(stratified_kruskal_wallis(nested)["statistic"])
    # seed-level rows test one median per run: 3 vs 3, exact Mann–Whitney
    level = ppl[(ppl.seed == "seed-level") & (ppl.test == "mann_whitney")].iloc[0]
    med = {c: [np.median(nested[c][s]) for s in (1, 2, 3)] for c in (level.group_a, level.group_b)}
    ref = stats.mannwhitneyu(med[level.group_a], med[level.group_b], alternative="two-sided")
    assert (level.n_a, level.n_b) == (3, 3) and level.p == pytest.approx(ref.pvalue)
    assert "unit = run" in level.note


def test_seed_in_within_gives_per_seed_tests_only():
    out = compare_conditions(_per_item(seeds=(1, 2), n=10), within=["metric", "seed"], paired=False)
    assert set(out["test"]) == {"kruskal_wallis", "mann_whitney"}
    assert list(out.columns)[:2] == ["metric", "seed"]


def test_nans_are_counted_and_empty_groups_explained():
    df = _per_item(n=12)
    df.loc[(df.condition == "human") & (df.metric == "ppl") & (df.item_id == "q0"), "value"] = np.nan
    df.loc[(df.condition == "vanilla") & (df.metric == "self_bleu"), "value"] = np.nan
    out = compare_conditions(df, paired=False)
    ppl = out[(out.metric == "ppl") & (out.test == "mann_whitney")]
    human_a = ppl[ppl.group_a == "human"]
    assert (human_a["n_dropped_a"] == 1).all() and (human_a["n_a"] == 11).all()
    bleu = out[out.metric == "self_bleu"]
    kw = bleu[bleu.test == "kruskal_wallis"].iloc[0]
    assert "vanilla skipped" in kw.note and kw.n_dropped_a == 12
    vanilla_pairs = bleu[(bleu.test == "mann_whitney") & (bleu.group_a == "vanilla")]
    assert vanilla_pairs["p"].isna().all() and vanilla_pairs["note"].str.contains("vanilla skipped").all()
    tested = bleu[(bleu.test == "mann_whitney") & bleu["p"].notna()]
    np.testing.assert_allclose(tested["p_adj"], np.minimum(1, 3 * tested["p"]))  # m = 3 pairs tested


def test_missing_group_labels_are_an_error():
    df = _per_item(n=5)
    df.loc[0, "condition"] = None
    with pytest.raises(ValueError, match="no 'condition'"):
        compare_conditions(df)


def test_unpaired_rows_carry_the_difference_its_interval_and_the_detectable_difference():
    from collapselab.stats.power import mde_two_sample, pooled_sd

    df = _per_item(n=20)
    out = compare_conditions(df, paired=False, n_resamples=400, random_state=3)
    row = out[(out.metric == "ppl") & (out.group_a == "vanilla") & (out.group_b == "human")].iloc[0]
    g = _groups(df, "ppl")
    a, b = g["vanilla"], g["human"]
    assert row["diff"] == pytest.approx(a.mean() - b.mean()) and not row.paired
    assert row.mde == pytest.approx(mde_two_sample(pooled_sd(a, b), 20, 20))
    rng = np.random.default_rng(3)  # a plain loop: each group resampled on its own
    ia, ib = rng.integers(0, 20, size=(400, 20)), rng.integers(0, 20, size=(400, 20))
    reps = [a[x].mean() - b[y].mean() for x, y in zip(ia, ib, strict=True)]
    assert (row.diff_low, row.diff_high) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])))
    assert row.note.startswith("unpaired (stats.paired: false)")


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown correction"):
        compare_conditions(_per_item(n=5), correction="fdr")
    with pytest.raises(ValueError, match="paired must be"):
        compare_conditions(_per_item(n=5), paired="yes")
