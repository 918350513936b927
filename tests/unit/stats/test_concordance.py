"""Metric concordance against plain formulas."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from collapselab.stats.concordance import kendalls_w, metric_concordance, rank_conditions

# The study's 8B reference figures (PAPER.md): vanilla / single / multi / human.
TABLE = pd.DataFrame(
    {
        "output_ppl": [1.30, 1.26, 1.38, 2.68],  # lower = more "typical"; treated as lower-is-better here
        "human_ppl": [8.33, 11.04, 6.88, 4.34],
        "lexical_div": [75.12, 73.08, 75.49, 76.55],
        "semantic_div": [0.9547, 0.9565, 0.9535, 0.9680],
        "heaps_beta": [0.611, 0.603, 0.598, 0.671],
        "length": [210.0, 190.0, 230.0, 120.0],
    },
    index=["vanilla", "single", "multi", "human"],
)
DIRECTIONS = {"output_ppl": False, "human_ppl": False, "lexical_div": True, "semantic_div": True,
              "heaps_beta": True, "length": None}


def _plain_tau_b(x, y):
    """τ_b = (C − D) / sqrt((n0 − n1)(n0 − n2)) by counting pairs."""
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if sx == 0 and sy == 0:
            continue
        if sx == 0:
            tx += 1
        elif sy == 0:
            ty += 1
        elif sx == sy:
            c += 1
        else:
            d += 1
    return (c - d) / math.sqrt((c + d + tx) * (c + d + ty))


def _plain_w(rank_columns):
    """Kendall's W with the tie correction, one loop per term."""
    m, n = len(rank_columns), len(rank_columns[0])
    sums = [sum(col[i] for col in rank_columns) for i in range(n)]
    mean = m * (n + 1) / 2
    s = sum((r - mean) ** 2 for r in sums)
    t = 0
    for col in rank_columns:
        for value in set(col):
            k = list(col).count(value)
            t += k**3 - k
    return 12 * s / (m**2 * (n**3 - n) - m * t)


def test_ranks_are_direction_aware_and_undirected_metrics_are_only_shown():
    ranks = rank_conditions(TABLE, DIRECTIONS)
    assert "length" not in ranks.columns
    assert ranks.loc["human", "human_ppl"] == 1  # lowest human-text perplexity is best
    assert ranks.loc["human", "output_ppl"] == 4
    assert ranks.loc["human", "lexical_div"] == 1
    res = metric_concordance(TABLE, DIRECTIONS)
    assert list(res.value_ranks.columns) == ["length"] and res.value_ranks.loc["multi", "length"] == 1


def test_tau_is_oriented_so_positive_means_agreement_on_better():
    res = metric_concordance(TABLE, DIRECTIONS).correlations.set_index(["metric_a", "metric_b"])
    good = TABLE.copy()
    good["output_ppl"] *= -1
    good["human_ppl"] *= -1
    for (a, b), row in res.iterrows():
        assert row["tau"] == pytest.approx(_plain_tau_b(good[a].to_numpy(), good[b].to_numpy()))
        assert row["rho"] == pytest.approx(stats.spearmanr(good[a], good[b]).statistic)
    assert "undirected" in res.loc[("heaps_beta", "length"), "note"]
    # a lower-is-better metric that mirrors a higher-is-better one agrees perfectly
    mirror = pd.DataFrame({"up": [1.0, 2.0, 3.0], "down": [30.0, 20.0, 10.0]}, index=list("abc"))
    corr = metric_concordance(mirror, {"up": True, "down": False}).correlations
    assert corr.loc[0, "tau"] == pytest.approx(1.0)


def test_tau_handles_ties_and_too_few_conditions():
    tied = pd.DataFrame({"x": [1.0, 1.0, 2.0, 3.0], "y": [1.0, 2.0, 2.0, 4.0]}, index=list("abcd"))
    corr = metric_concordance(tied, {"x": True, "y": True}).correlations
    assert corr.loc[0, "tau"] == pytest.approx(_plain_tau_b([1, 1, 2, 3], [1, 2, 2, 4]))
    two = metric_concordance(TABLE.iloc[:2], DIRECTIONS).correlations
    assert two["tau"].isna().all() and two["note"].str.contains("undefined").all()
    constant = pd.DataFrame({"x": [1.0, 1.0, 1.0], "y": [1.0, 2.0, 3.0]}, index=list("abc"))
    assert "constant" in metric_concordance(constant, {"x": True, "y": True}).correlations.loc[0, "note"]


def test_kendalls_w_matches_the_plain_formula_with_ties():
    ranks = rank_conditions(TABLE, DIRECTIONS)
    ranks.loc["single", "heaps_beta"] = ranks.loc["multi", "heaps_beta"] = 3.5  # plant a tie (ranks 3, 4)
    w = kendalls_w(ranks)
    cols = [ranks[c].tolist() for c in ranks.columns]
    assert w["W"] == pytest.approx(_plain_w(cols))
    m, n = len(cols), len(cols[0])
    assert w["chi2"] == pytest.approx(m * (n - 1) * w["W"]) and w["df"] == n - 1
    assert w["p"] == pytest.approx(stats.chi2.sf(w["chi2"], n - 1))


def test_kendalls_w_relates_to_mean_spearman_without_ties():
    rng = np.random.default_rng(0)
    ranks = pd.DataFrame({f"m{j}": rng.permutation(6) + 1 for j in range(5)})
    w = kendalls_w(ranks)["W"]
    mean_rho = np.mean([stats.spearmanr(ranks[a], ranks[b]).statistic
                        for a, b in itertools.combinations(ranks.columns, 2)])
    assert mean_rho == pytest.approx((5 * w - 1) / 4)
    assert kendalls_w(pd.DataFrame({"a": [1, 2, 3], "b": [1, 2, 3]}))["W"] == pytest.approx(1.0)


def test_kendalls_w_drops_incomplete_rows_and_says_when_undefined():
    ranks = pd.DataFrame({"a": [1, 2, 3, np.nan], "b": [2, 1, 3, 4]}, index=list("wxyz"))
    w = kendalls_w(ranks)
    assert w["n"] == 3 and w["dropped"] == ["z"]
    assert w["W"] == pytest.approx(_plain_w([[1, 2, 3], [2, 1, 3]]))
    assert math.isnan(kendalls_w(ranks[["a"]])["W"])


def test_robust_conclusions_count_the_metrics_votes():
    pairs = metric_concordance(TABLE, DIRECTIONS).pairwise.set_index(["condition_a", "condition_b"])
    row = pairs.loc[("vanilla", "single")]
    # vanilla better on human_ppl (8.33 < 11.04), lexical (75.12 > 73.08), heaps (0.611 > 0.603);
    # single better on output_ppl (1.26 < 1.30) and semantic (0.9565 > 0.9547)
    assert (row.n_metrics, row.n_a_better, row.n_b_better, row.n_tied) == (5, 3, 2, 0)
    assert row.majority == "vanilla" and row.agreement == pytest.approx(0.6)
    assert set(row.metrics_b_better.split(",")) == {"output_ppl", "semantic_div"}
    human = pairs.loc[("vanilla", "human")]
    assert (human.n_a_better, human.n_b_better) == (1, 4)  # only output_ppl prefers vanilla
    assert len(pairs) == 6


def test_missing_direction_is_an_error():
    with pytest.raises(ValueError, match="no direction"):
        metric_concordance(TABLE, {"output_ppl": False})


# --------------------------------------------------------------------------- one vote per family

# Four variants of one lexical family prefer A; two single-metric families prefer B.
FAMILY_TABLE = pd.DataFrame(
    {"distinct1": [0.9, 0.5, 0.7], "distinct2": [0.8, 0.4, 0.6], "distinct3": [0.7, 0.3, 0.5],
     "entropy": [9.0, 7.0, 8.0], "semantic": [0.90, 0.95, 0.92], "frechet": [0.5, 0.1, 0.3]},
    index=["A", "B", "C"],
)
FAMILY_DIRECTIONS = {"distinct1": True, "distinct2": True, "distinct3": True, "entropy": True, "semantic": True,
                     "frechet": False}
FAMILIES = {"distinct1": "lexical", "distinct2": "lexical", "distinct3": "lexical", "entropy": "lexical",
            "semantic": "semantic", "frechet": "distance_to_human"}


def test_a_family_with_many_metrics_casts_one_vote():
    """Regression (audit c2): per metric, the four lexical variants outvote the two other families
    (A better 4 to 2); per family, the two families that prefer B win 2 to 1."""
    per_metric = metric_concordance(FAMILY_TABLE, FAMILY_DIRECTIONS).pairwise.set_index(["condition_a", "condition_b"])
    row = per_metric.loc[("A", "B")]
    assert (row.n_metrics, row.n_a_better, row.n_b_better, row.majority) == (6, 4, 2, "A")
    result = metric_concordance(FAMILY_TABLE, FAMILY_DIRECTIONS, FAMILIES)
    row = result.pairwise.set_index(["condition_a", "condition_b"]).loc[("A", "B")]
    assert (row.n_metrics, row.n_a_better, row.n_b_better, row.majority, row.unit) == (3, 1, 2, "B", "family")
    assert set(row.metrics_b_better.split(",")) == {"semantic", "distance_to_human"}
    assert result.kendalls_w["unit"] == "family" and result.kendalls_w["m"] == 3
    assert result.kendalls_w["families"]["lexical"] == ["distinct1", "distinct2", "distinct3", "entropy"]
    # W over the family ranks: lexical ranks A, C, B; the other two B, C, A
    assert result.kendalls_w["W"] == pytest.approx(_plain_w([[1, 3, 2], [3, 1, 2], [3, 1, 2]]))
    assert result.family_ranks.loc["A"].tolist() == [1.0, 3.0, 3.0]
    assert result.ranks.shape == (3, 6)  # per-metric ranks are still reported


def test_family_scores_match_a_plain_loop_with_missing_values():
    table = FAMILY_TABLE.copy()
    table.loc["C", "distinct2"] = np.nan  # distinct2 ranks only A and B
    table.loc["B", "semantic"] = np.nan
    result = metric_concordance(table, FAMILY_DIRECTIONS, FAMILIES)
    ranks = result.ranks
    for family in ("lexical", "semantic", "distance_to_human"):
        members = [m for m, f in FAMILIES.items() if f == family]
        expected = {}
        for c in table.index:
            scaled = [(ranks.loc[c, m] - 0.5) / ranks[m].notna().sum() for m in members
                      if not np.isnan(ranks.loc[c, m])]
            expected[c] = sum(scaled) / len(scaled) if scaled else np.nan
        lower_is_better = pd.Series(expected).rank(method="average")
        pd.testing.assert_series_equal(result.family_ranks[family], lower_is_better, check_names=False)
    assert np.isnan(result.family_ranks.loc["B", "semantic"])
    assert result.kendalls_w["dropped"] == ["B"]  # W uses the conditions every family ranks


def test_undirected_metrics_do_not_vote_in_families():
    table = FAMILY_TABLE.assign(output_perplexity=[1.3, 1.2, 2.7])
    directions = {**FAMILY_DIRECTIONS, "output_perplexity": None}
    result = metric_concordance(table, directions, {**FAMILIES, "output_perplexity": "perplexity"})
    assert "perplexity" not in result.family_ranks.columns
    assert "output_perplexity" in result.value_ranks.columns
    with pytest.raises(ValueError, match="no family"):
        metric_concordance(FAMILY_TABLE, FAMILY_DIRECTIONS, {"distinct1": "lexical"})
