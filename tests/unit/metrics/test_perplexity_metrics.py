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
    assert (metric.name, metric.family, metric.higher_is_better) == ("output_perplexity", "perplexity", True)
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
    for name, cls, direction in (("output_perplexity", OutputPerplexity, "higher"),
                                 ("human_perplexity", HumanPerplexity, "lower")):
        assert name in METRICS
        info = METRICS.info(name)
        assert info["family"] == "perplexity" and info["direction"] == direction
        metric = build_metric(name, iqr_factor=2.5)
        assert type(metric) is cls and metric.iqr_factor == 2.5
    with pytest.raises(TypeError):
        build_metric("output_perplexity", no_such_setting=1)
