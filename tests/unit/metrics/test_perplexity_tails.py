"""The human-perplexity tail (metrics/perplexity_tails.py) against plain computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

import collapselab.metrics  # noqa: F401  (registers every metric)
from collapselab.config.spec import MetricSpec
from collapselab.metrics.base import METRICS, TextSet, build_metric, statistic_range
from collapselab.metrics.evaluate import evaluate_textset
from collapselab.metrics.perplexity_tails import HumanPerplexityTail

LABELS = {"set_name": "c", "set_kind": "condition", "condition": "c", "target": "m", "seed": 1, "source": None,
          "generation": 2}


def plain_ppl(logprobs) -> float:
    total = 0.0
    for lp in logprobs:
        total -= float(lp)
    return math.exp(total / len(logprobs)) if len(logprobs) else float("nan")


def plain_quantile(values: list[float], p: float) -> float:
    """Hyndman & Fan type 7: linear between the order statistics at position p·(n − 1)."""
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    low = int(math.floor(position))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def scored(rng: np.random.Generator, n: int, scale: float) -> list[np.ndarray]:
    return [-rng.exponential(scale, size=rng.integers(3, 30)) for _ in range(n)]


def text_set(human_logprobs, base_logprobs=None, n_texts: int = 5) -> TextSet:
    human = None
    if base_logprobs is not None:
        human = TextSet("human", "human", [f"h{i}" for i in range(len(base_logprobs))], ["r"] * len(base_logprobs),
                        logprobs=base_logprobs)
    return TextSet("c", "condition", [f"t{i}" for i in range(n_texts)], ["x"] * n_texts,
                   human_logprobs=human_logprobs, human=human)


@pytest.mark.parametrize("seed", range(4))
def test_quantiles_and_shares_match_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    base = scored(rng, 57, 1.0)
    mine = scored(rng, 57, 1.4)  # a model that finds human text less likely: its tail grows
    mine[3] = np.array([])  # a reference without tokens: undefined
    metric = HumanPerplexityTail(threshold=4.0)
    result = metric.compute(text_set(mine, base))
    ppl = [plain_ppl(lp) for lp in mine]
    defined = [v for v in ppl if not math.isnan(v)]
    base_ppl = [plain_ppl(lp) for lp in base]
    cutoff = plain_quantile(base_ppl, 0.9)
    agg = result.aggregates
    np.testing.assert_allclose(result.per_item["ppl"], ppl, rtol=1e-12)
    for name, p in (("q50", 0.5), ("q90", 0.9), ("q99", 0.99)):
        assert agg[name] == pytest.approx(plain_quantile(defined, p), rel=1e-12)
    assert result.details["base_cutoff"] == pytest.approx(cutoff, rel=1e-12)
    assert agg["share_above_base"] == pytest.approx(sum(v > cutoff for v in defined) / len(defined))
    assert agg["share_above_base"] > 0.1  # the heavier model's tail
    assert agg["share_above"] == pytest.approx(sum(v > 4.0 for v in defined) / len(defined))
    assert agg["n"] == 56 and agg["n_undefined"] == 1
    assert result.details["per_item_ids"] == "human"


def test_the_base_model_itself_has_a_tenth_above_its_own_q90():
    rng = np.random.default_rng(1)
    base = scored(rng, 200, 1.0)
    result = HumanPerplexityTail().compute(text_set(base, base))
    assert result.aggregates["share_above_base"] == pytest.approx(0.1, abs=0.006)


def test_per_item_values_are_human_perplexity_s():
    rng = np.random.default_rng(2)
    mine = scored(rng, 30, 1.0)
    tail = build_metric("human_perplexity_tail").compute(text_set(mine))
    plain = build_metric("human_perplexity").compute(text_set(mine))
    np.testing.assert_array_equal(tail.per_item["ppl"], plain.per_item["ppl"])
    assert tail.aggregates["q50"] == pytest.approx(plain.aggregates["median"])


def test_optional_statistics_are_left_out_and_named():
    rng = np.random.default_rng(3)
    mine = scored(rng, 20, 1.0)
    without_base = HumanPerplexityTail().compute(text_set(mine)).aggregates
    assert set(without_base) == {"q50", "q90", "q99", "n", "n_undefined"}
    off = HumanPerplexityTail(base_quantile=None)
    assert set(off.compute(text_set(mine, mine)).aggregates) == set(without_base)
    assert off.name == "human_perplexity_tail[base_quantile=none]"
    assert HumanPerplexityTail().name == "human_perplexity_tail"
    assert HumanPerplexityTail(threshold=8).name == "human_perplexity_tail[threshold=8]"
    with pytest.raises(ValueError):
        HumanPerplexityTail(threshold=0.5)
    with pytest.raises(ValueError):
        HumanPerplexityTail(base_quantile=1.0)


def test_a_custom_base_quantile():
    rng = np.random.default_rng(4)
    base, mine = scored(rng, 40, 1.0), scored(rng, 40, 1.0)
    result = HumanPerplexityTail(base_quantile=0.75).compute(text_set(mine, base))
    cutoff = plain_quantile([plain_ppl(lp) for lp in base], 0.75)
    assert result.aggregates["share_above_base"] == pytest.approx(np.mean([plain_ppl(lp) > cutoff for lp in mine]))


def test_mismatched_reference_scores_are_an_error():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="vanilla-scored references"):
        HumanPerplexityTail().compute(text_set(scored(rng, 10, 1.0), scored(rng, 9, 1.0)))


def test_registered_ranges():
    assert "human_perplexity_tail" in METRICS
    assert statistic_range("human_perplexity_tail", "q90") == (1, None)
    assert statistic_range("human_perplexity_tail", "share_above_base") == (0, 1)
    assert statistic_range("human_perplexity_tail", "share_above") == (0, 1)


def test_evaluate_resamples_the_references_and_labels_them():
    """The per-item rows carry the references' ids (not the set's texts'), the interval is a
    percentile bootstrap of the references' values (inside the range, around the estimate)."""
    rng = np.random.default_rng(6)
    base, mine = scored(rng, 80, 1.0), scored(rng, 80, 1.3)
    texts = text_set(mine, base, n_texts=7)
    specs = [MetricSpec(name="human_perplexity_tail", settings={"threshold": 3})]
    aggregates, per_item, details = evaluate_textset(texts, specs, LABELS, bootstrap=300)
    assert list(per_item.item_id) == [f"h{i}" for i in range(80)]
    assert set(per_item.metric) == {"human_perplexity_tail[threshold=3]"}
    rows = aggregates.set_index("statistic")
    assert rows.loc["q90", "primary"] and rows.loc["q90", "n"] == 80
    for stat in ("q50", "q90", "q99"):
        assert 1 <= rows.loc[stat, "ci_low"] <= rows.loc[stat, "value"] <= rows.loc[stat, "ci_high"]
    for stat in ("share_above_base", "share_above"):
        assert 0 <= rows.loc[stat, "ci_low"] < rows.loc[stat, "value"] < rows.loc[stat, "ci_high"] <= 1
    assert details["human_perplexity_tail[threshold=3]"]["base_cutoff"] > 1
