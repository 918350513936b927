"""Perplexity family (metrics/perplexity.py, catalog_perplexity.py) against hand computations.

No model is loaded: the token log-probabilities are given, as the scoring stage would write them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from collapselab.metrics.base import METRICS, TextSet, build_metric
from collapselab.metrics.perplexity import (
    HumanPerplexity,
    OutputPerplexity,
    OutputPerplexityGap,
    describe,
    iqr_filter,
    per_text_perplexity,
)


def hand_perplexity(logprobs: list[float]) -> float:
    """exp of the mean negative log-likelihood per token, one token at a time."""
    nll = 0.0
    for lp in logprobs:
        nll -= lp
    return math.exp(nll / len(logprobs))


def text_set(logprobs=None, human_logprobs=None, n: int | None = None) -> TextSet:
    n = n if n is not None else len(logprobs if logprobs is not None else human_logprobs)
    return TextSet(name="t", kind="condition", ids=[f"r{i}" for i in range(n)], texts=["x"] * n,
                   logprobs=logprobs, human_logprobs=human_logprobs)


def test_per_text_perplexity_is_exp_of_the_mean_token_nll() -> None:
    rng = np.random.default_rng(0)
    logprobs = [np.log(rng.uniform(0.01, 1.0, size=k)) for k in (1, 3, 17, 250)]
    expected = [hand_perplexity(lp.tolist()) for lp in logprobs]
    np.testing.assert_allclose(per_text_perplexity(logprobs), expected, rtol=1e-12)


def test_per_text_perplexity_closed_forms() -> None:
    # p = 1/2 then 1/4: mean NLL = (ln 2 + ln 4)/2 = 1.5 ln 2, so PPL = 2**1.5;
    # a uniform distribution over V tokens has PPL V whatever the length; certainty has PPL 1
    logprobs = [np.log([0.5, 0.25]), np.full(7, -np.log(50.0)), np.zeros(4)]
    np.testing.assert_allclose(per_text_perplexity(logprobs), [2 ** 1.5, 50.0, 1.0], rtol=1e-12)


def test_per_text_perplexity_empty_text_is_nan_and_float32_is_computed_in_float64() -> None:
    lp32 = np.log(np.array([0.3, 0.6, 0.9], dtype=np.float32))
    out = per_text_perplexity([np.array([]), lp32, [-1.0, -3.0]])
    assert out.dtype == np.float64 and out.shape == (3,)
    assert np.isnan(out[0])
    assert out[1] == pytest.approx(hand_perplexity(lp32.astype(np.float64).tolist()), rel=1e-12)
    assert out[2] == pytest.approx(math.exp(2.0), rel=1e-12)
    assert per_text_perplexity([]).shape == (0,)


def test_iqr_filter_by_hand() -> None:
    # Q1 = 2, Q3 = 4, IQR = 2: the fences are [-1, 7]; 100 lies outside, NaN is dropped first
    values = np.array([1.0, 2.0, np.nan, 3.0, 4.0, 100.0])
    np.testing.assert_array_equal(iqr_filter(values), [1.0, 2.0, 3.0, 4.0])
    # with factor 0.1 the fences are [1.8, 4.2]: 1 goes as well
    np.testing.assert_array_equal(iqr_filter(values, factor=0.1), [2.0, 3.0, 4.0])
    # a value exactly on a fence is kept
    np.testing.assert_array_equal(iqr_filter(np.array([1.0, 2.0, 3.0, 4.0, 7.0])), [1.0, 2.0, 3.0, 4.0, 7.0])
    assert iqr_filter(np.array([np.nan, np.nan])).size == 0


def test_describe_raw_and_iqr_statistics_and_counts() -> None:
    values = np.array([1.0, 2.0, np.nan, 3.0, 4.0, 100.0])
    valid, kept = [1.0, 2.0, 3.0, 4.0, 100.0], [1.0, 2.0, 3.0, 4.0]
    out = describe(values)
    assert out["mean"] == pytest.approx(sum(valid) / 5)
    assert out["median"] == 3.0
    assert out["sd"] == pytest.approx(math.sqrt(sum((v - 22.0) ** 2 for v in valid) / 4))
    assert out["mean_iqr"] == pytest.approx(2.5) and out["median_iqr"] == pytest.approx(2.5)
    assert out["sd_iqr"] == pytest.approx(math.sqrt(sum((v - 2.5) ** 2 for v in kept) / 3))
    assert out["n_outliers"] == 1.0 and out["n_undefined"] == 1.0


def test_describe_degenerate_inputs() -> None:
    one = describe(np.array([5.0, np.nan]))
    assert one["mean"] == 5.0 and one["median"] == 5.0 and math.isnan(one["sd"])
    assert one["n_undefined"] == 1.0 and one["n_outliers"] == 0.0
    none = describe(np.array([np.nan, np.nan, np.nan]))
    assert all(math.isnan(none[k]) for k in ("mean", "median", "sd", "mean_iqr", "median_iqr", "sd_iqr"))
    assert none["n_undefined"] == 3.0
    assert describe(np.array([]))["n_undefined"] == 0.0


def test_output_perplexity_aggregates_per_text_values_not_the_pooled_corpus() -> None:
    # One short very likely text and one long unlikely one: the study's aggregate is the mean of
    # the per-text perplexities, not exp(total NLL / total tokens) over the pooled corpus.
    logprobs = [np.log([0.5, 0.5]), np.log(np.full(98, 0.1))]
    result = OutputPerplexity().compute(text_set(logprobs))
    np.testing.assert_allclose(result.per_item["ppl"], [2.0, 10.0], rtol=1e-12)
    assert list(result.per_item) == ["ppl"]
    assert result.aggregates["mean"] == pytest.approx(6.0)
    pooled = math.exp(-(2 * math.log(0.5) + 98 * math.log(0.1)) / 100)
    assert pooled == pytest.approx(9.68, abs=0.01)  # what the code does *not* report
    assert result.aggregates["mean"] != pytest.approx(pooled, rel=1e-3)


def test_output_perplexity_counts_texts_without_tokens_as_undefined() -> None:
    logprobs = [np.log([0.5, 0.25]), np.array([]), np.full(3, -np.log(4.0)), np.array([])]
    result = OutputPerplexity().compute(text_set(logprobs))
    ppl = result.per_item["ppl"]
    assert np.isnan(ppl[[1, 3]]).all() and np.isfinite(ppl[[0, 2]]).all()
    assert result.aggregates["n_undefined"] == 2.0
    assert result.aggregates["mean"] == pytest.approx((2 ** 1.5 + 4.0) / 2)
    assert result.aggregates == describe(ppl)


def test_aggregate_items_is_the_aggregate_of_the_per_item_values() -> None:
    rng = np.random.default_rng(3)
    logprobs = [np.log(rng.uniform(0.05, 1.0, size=rng.integers(1, 30))) for _ in range(40)]
    metric = OutputPerplexity(iqr_factor=1.0)
    result = metric.compute(text_set(logprobs))
    assert metric.aggregate_items(result.per_item["ppl"]) == result.aggregates
    assert result.aggregates == describe(result.per_item["ppl"], 1.0)
    assert metric.primary == "mean_iqr" and metric.primary in result.aggregates


def test_iqr_factor_setting_reaches_the_outlier_filter() -> None:
    logprobs = [np.full(5, -np.log(v)) for v in (2.0, 3.0, 4.0, 5.0, 9.0)]  # PPLs 2..5 and 9
    wide, narrow = (OutputPerplexity(iqr_factor=f).compute(text_set(logprobs)).aggregates for f in (3.0, 1.0))
    # Q1 = 3, Q3 = 5, IQR = 2: 9 is inside 5 + 3·2 but outside 5 + 1·2
    assert wide["n_outliers"] == 0.0 and narrow["n_outliers"] == 1.0
    assert wide["mean_iqr"] == pytest.approx(23 / 5) and narrow["mean_iqr"] == pytest.approx(14 / 4)


def test_output_perplexity_needs_logprobs() -> None:
    metric = OutputPerplexity()
    # undirected (audit c3): degenerate text has a high perplexity too, so "higher is better" is wrong
    assert (metric.name, metric.family, metric.higher_is_better) == ("output_perplexity", "perplexity", None)
    assert metric.needs == frozenset({"logprobs"})
    with pytest.raises(ValueError, match="output_perplexity.*no logprobs"):
        metric.compute(text_set(None, human_logprobs=[np.zeros(2)], n=1))


def test_human_perplexity_scores_the_human_references() -> None:
    metric = HumanPerplexity()
    assert (metric.name, metric.family, metric.higher_is_better) == ("human_perplexity", "perplexity", False)
    assert metric.needs == frozenset({"human_logprobs"})
    # the set's own texts (2) and the human references (3) differ in number: per-item values follow
    # the references, and the set's own log-probabilities are ignored
    ts = text_set(logprobs=[np.zeros(3), np.zeros(3)],
                  human_logprobs=[np.log([0.5]), np.log([0.25, 0.25]), np.log([0.1, 0.1, 0.1])], n=2)
    result = metric.compute(ts)
    np.testing.assert_allclose(result.per_item["ppl"], [2.0, 4.0, 10.0], rtol=1e-12)
    assert result.details["per_item_ids"] == "human"
    assert result.aggregates["mean"] == pytest.approx(16 / 3)
    with pytest.raises(ValueError, match="human_perplexity.*no human_logprobs"):
        metric.compute(text_set(logprobs=[np.zeros(2)]))


def test_catalog_registers_both_metrics_lazily_with_their_settings() -> None:
    for name, cls, direction in (("output_perplexity", OutputPerplexity, "-"),
                                 ("output_perplexity_gap", OutputPerplexityGap, "lower"),
                                 ("human_perplexity", HumanPerplexity, "lower")):
        assert name in METRICS
        info = METRICS.info(name)
        assert info["family"] == "perplexity" and info["direction"] == direction
        metric = build_metric(name, iqr_factor=2.5)
        assert type(metric) is cls and metric.iqr_factor == 2.5
    with pytest.raises(TypeError):
        build_metric("output_perplexity", no_such_setting=1)


def gap_set(set_ppl: list[float], human_ppl: list[float]) -> TextSet:
    """Texts of two tokens each with the given per-text perplexities (log p = −log PPL per token)."""
    human = TextSet(name="human:test", kind="human", ids=[f"h{i}" for i in range(len(human_ppl))],
                    texts=["x"] * len(human_ppl), logprobs=[np.full(2, -math.log(p)) for p in human_ppl])
    ts = TextSet(name="c", kind="condition", ids=[f"r{i}" for i in range(len(set_ppl))], texts=["x"] * len(set_ppl),
                 logprobs=[np.full(2, -math.log(p)) for p in set_ppl], human=human)
    return ts


def test_output_perplexity_gap_is_the_log_distance_to_the_human_references() -> None:
    metric = OutputPerplexityGap()
    assert (metric.name, metric.higher_is_better, metric.primary) == ("output_perplexity_gap", False, "value")
    set_ppl, human_ppl = [1.2, 1.3, 1.25, 1.4], [2.5, 3.0, 2.4, 2.8, 2.6]
    result = metric.compute(gap_set(set_ppl, human_ppl)).aggregates
    mean_set, mean_human = sum(set_ppl) / 4, sum(human_ppl) / 5  # no IQR outliers here
    assert result["ppl"] == pytest.approx(mean_set) and result["human_ppl"] == pytest.approx(mean_human)
    assert result["log_ratio"] == pytest.approx(math.log(mean_set) - math.log(mean_human))
    assert result["value"] == pytest.approx(abs(math.log(mean_set / mean_human)))
    assert result["value_median"] == pytest.approx(abs(math.log(1.275 / 2.6)))
    # regression (audit c3): degenerate text (far above the human perplexity) no longer "wins" —
    # it is further from human than a fluent set, while a set like the references scores ~0
    degenerate = metric.compute(gap_set([40.0, 55.0, 60.0, 45.0], human_ppl)).aggregates
    humanlike = metric.compute(gap_set([2.4, 2.9, 2.2, 2.7], human_ppl)).aggregates
    assert humanlike["value"] < result["value"] < degenerate["value"]
    assert degenerate["log_ratio"] > 0 > result["log_ratio"]


def test_output_perplexity_gap_of_the_references_is_zero_and_needs_their_scores() -> None:
    human = gap_set([2.0, 3.0], [2.0, 3.0]).human
    human.human = human  # the human reference set is measured against itself
    assert OutputPerplexityGap().compute(human).aggregates["value"] == 0.0
    no_scores = gap_set([1.2], [2.0])
    no_scores.human.logprobs = None
    with pytest.raises(ValueError, match="no log-probabilities under the set's scoring model"):
        OutputPerplexityGap().compute(no_scores)
    with pytest.raises(ValueError, match="no logprobs"):
        OutputPerplexityGap().compute(TextSet(name="c", kind="condition", ids=["a"], texts=["x"], human=human))


def test_output_perplexity_gap_interval_resamples_both_sides() -> None:
    """The jackknife leaves references out too ("human" in needs): the interval reflects both samples."""
    from collapselab.metrics.evaluate import bootstrap_intervals

    rng = np.random.default_rng(0)
    ts = gap_set(list(rng.uniform(1.1, 1.6, 60)), list(rng.uniform(2.0, 3.5, 80)))
    metric = OutputPerplexityGap()
    result = metric.compute(ts)
    intervals, failed, _ = bootstrap_intervals(metric, ts, result, bootstrap=0, jackknife_groups=10,
                                               confidence=0.95, seed=0, metric_name="output_perplexity_gap")
    low, high = intervals["value"]
    assert failed == 0 and 0 < low < result.aggregates["value"] < high
