"""The within-prompt family (distinct@k, within-prompt distance, pooled distinct-n) against plain
double loops over each prompt's answers, the lexical family's distinct-n, and hand-made cases; its
intervals (a bootstrap over prompts) through ``evaluate_textset``."""

from __future__ import annotations

import math

import numpy as np
import pytest

import collapselab.metrics  # noqa: F401  (registers every metric)
from collapselab.config.spec import MetricSpec
from collapselab.errors import ConfigError
from collapselab.metrics.base import METRICS, TextSet, build_metric, declared_range, statistic_range, subset
from collapselab.metrics.evaluate import evaluate_textset
from collapselab.metrics.lexical import Distinct
from collapselab.metrics.within_prompt import DistinctAtK, WithinPromptDistance, WithinPromptDistinctNgrams

NAMES = ("distinct_at_k", "within_prompt_distance", "within_prompt_distinct_ngrams")
WORDS = "the a river garden letter morning sister dance fortune visit evening promise window rain".split()
LABELS = {"set_name": "s", "set_kind": "condition", "condition": "c", "target": "m", "seed": 1, "source": None,
          "generation": 0}


def cos(a, b) -> float:
    """Cosine of two vectors, one product at a time."""
    dot = sum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(float(x) ** 2 for x in a)) * math.sqrt(sum(float(y) ** 2 for y in b)))


def naive_distinct(e: np.ndarray, threshold: float) -> int:
    """NoveltyBench's partition, written out: each answer is compared with each class's first member."""
    classes: list[list[int]] = []
    for i in range(len(e)):
        for members in classes:
            if cos(e[i], e[members[0]]) >= threshold:
                members.append(i)
                break
        else:
            classes.append([i])
    return len(classes)


def naive_distance(e: np.ndarray) -> float:
    """Mean of 1 − cos over the ordered pairs i ≠ j."""
    total = [1 - cos(e[i], e[j]) for i in range(len(e)) for j in range(len(e)) if i != j]
    return sum(total) / len(total)


def samples_set(n: int = 30, k: int = 6, dim: int = 16, seed: int = 0, noise: float = 0.15) -> TextSet:
    """n prompts with k answers each: prompt i's answers scatter around m_i ∈ {1..k} directions, so
    distinct@k varies across prompts and sits near m_i at threshold 0.9."""
    rng = np.random.default_rng(seed)
    samples, blocks = [], []
    for _ in range(n):
        centres = rng.normal(size=(rng.integers(1, k + 1), dim))
        x = centres[rng.integers(0, len(centres), k)] + noise * rng.normal(size=(k, dim))
        blocks.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
        samples.append([" ".join(rng.choice(WORDS, rng.integers(5, 15))) + "." for _ in range(k)])
    return TextSet("s", "condition", [f"p{i}" for i in range(n)], [s[0] for s in samples], samples=samples,
                   sample_embeddings=blocks)


# ---------------------------------------------------------------------------------------------- distinct@k


@pytest.mark.parametrize(("noise", "threshold"), [(0.15, 0.9), (0.6, 0.5), (1.5, 0.2)])
def test_distinct_at_k_matches_the_plain_partition(noise, threshold):
    ts = samples_set(noise=noise, seed=int(10 * noise))
    result = DistinctAtK(threshold=threshold).compute(ts)
    expected = np.array([naive_distinct(e, threshold) for e in ts.sample_embeddings], dtype=float)
    np.testing.assert_array_equal(result.per_item["distinct"], expected)
    assert len(set(expected)) >= 3  # the fixture exercises several class counts
    assert result.aggregates["mean"] == pytest.approx(expected.mean())
    assert result.aggregates["collapsed"] == pytest.approx(np.mean(expected == 1))
    assert result.details == {"k_min": 6, "k_max": 6}


def test_identical_answers_are_one_class_and_orthogonal_answers_k_classes():
    k = 5
    same = np.tile(np.random.default_rng(1).normal(size=(1, 8)), (k, 1))
    orthogonal = np.eye(8)[:k] * 3.0  # not unit norm: the metric normalises
    ts = TextSet("h", "condition", ["a", "b"], ["x", "y"], samples=[["x"] * k, ["y"] * k],
                 sample_embeddings=[same, orthogonal])
    result = DistinctAtK().compute(ts)
    np.testing.assert_array_equal(result.per_item["distinct"], [1.0, k])
    assert result.aggregates["collapsed"] == 0.5
    distance = WithinPromptDistance().compute(ts).per_item["distance"]
    np.testing.assert_allclose(distance, [0.0, 1.0], atol=1e-12)
    assert distance[0] >= 0.0  # round-off clipped into the range


def test_representative_linkage_does_not_chain():
    """a, b, c 18° apart: a≈b and b≈c (cos 0.951) but a≉c (cos 0.809). Representative linkage
    (NoveltyBench) gives 2 classes; single linkage would chain them into 1."""
    angles = np.deg2rad([0.0, 18.0, 36.0])
    e = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    ts = TextSet("c", "condition", ["p"], ["a"], samples=[["a", "b", "c"]], sample_embeddings=[e])
    assert DistinctAtK(threshold=0.9).compute(ts).per_item["distinct"][0] == 2
    # order matters: with b first, a and c both join b's class
    ts.sample_embeddings = [e[[1, 0, 2]]]
    assert DistinctAtK(threshold=0.9).compute(ts).per_item["distinct"][0] == 1


def test_a_prompt_with_fewer_than_two_answers_is_undefined():
    e = np.random.default_rng(2).normal(size=(4, 6))
    ts = TextSet("u", "condition", ["a", "b", "c"], ["x", "y", ""],
                 samples=[["x y", "x z", "y z", "z z"], ["y"], []], sample_embeddings=[e, e[:1], np.zeros((0, 6))])
    for metric in (DistinctAtK(), WithinPromptDistance(), WithinPromptDistinctNgrams()):
        result = metric.compute(ts)
        values = next(iter(result.per_item.values()))
        assert np.isfinite(values[0]) and np.isnan(values[1:]).all(), metric.name
        assert result.aggregates["n"] == 1 and result.aggregates["n_undefined"] == 2
    assert DistinctAtK().compute(ts).details == {"k_min": 0, "k_max": 4}


# ---------------------------------------------------------------------------------- distance, distinct-n


def test_within_prompt_distance_matches_the_pair_loop():
    ts = samples_set(noise=0.5, seed=3)
    result = WithinPromptDistance().compute(ts)
    expected = np.array([naive_distance(e) for e in ts.sample_embeddings])
    assert expected.std() > 0.05  # prompts differ
    np.testing.assert_allclose(result.per_item["distance"], expected, atol=1e-6)
    assert result.aggregates["mean"] == pytest.approx(expected.mean(), abs=1e-6)


def test_pooled_distinct_ngrams_equals_the_lexical_familys_corpus_distinct_n():
    ts = samples_set(n=12, seed=4)
    ts.samples[0] = ["**The** river, the river.", "The river - the *garden*!"]  # markdown and punctuation
    for n in (1, 2, 3):
        values = WithinPromptDistinctNgrams(n=n).compute(ts).per_item["distinct_ngrams"]
        for i, answers in enumerate(ts.samples):
            own = TextSet("p", "condition", [f"a{j}" for j in range(len(answers))], list(answers))
            assert values[i] == pytest.approx(Distinct(n=n).compute(own).aggregates["corpus"], abs=1e-12)


def test_pooled_distinct_ngrams_by_hand():
    """'a b c' twice and 'c d': bigrams ab, bc, ab, bc, cd → 3 distinct of 5."""
    ts = TextSet("h", "condition", ["p"], ["a b c"], samples=[["a b c", "A b c", "c d"]])
    assert WithinPromptDistinctNgrams(n=2).compute(ts).per_item["distinct_ngrams"][0] == pytest.approx(3 / 5)
    # identical answers: the distinct share halves with two copies
    ts.samples = [["one two three four", "one two three four"]]
    assert WithinPromptDistinctNgrams(n=2).compute(ts).per_item["distinct_ngrams"][0] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------ set plumbing, intervals


def test_subset_recomputes_the_same_per_prompt_values():
    ts = samples_set(seed=5)
    idx = np.array([3, 3, 0, 7, 12])
    for name in NAMES:
        metric = build_metric(name)
        full = next(iter(metric.compute(ts).per_item.values()))
        part = next(iter(metric.compute(subset(ts, idx)).per_item.values()))
        np.testing.assert_array_equal(part, full[idx])


def test_intervals_are_a_bootstrap_over_prompts():
    """The interval of each aggregate is the percentile bootstrap of the per-prompt values, as a
    plain loop with evaluate's seed semantics computes it."""
    ts = samples_set(n=40, seed=6)
    aggregates, per_item, details = evaluate_textset(ts, [MetricSpec(name="distinct_at_k")], LABELS, bootstrap=300,
                                                     seed=7)
    values = per_item.value.to_numpy()
    rng = np.random.default_rng(7)
    metric = DistinctAtK()
    draws = [metric.aggregate_items(values[rng.integers(0, len(values), len(values))]) for _ in range(300)]
    for stat in ("mean", "collapsed"):
        row = aggregates[aggregates.statistic == stat].iloc[0]
        low, high = np.percentile([d[stat] for d in draws], [2.5, 97.5])
        assert (row.ci_low, row.ci_high) == pytest.approx((low, high))
        assert row.ci_low < row.value < row.ci_high  # a real spread: prompts differ
    assert details["distinct_at_k[threshold=0.9]"]["primary"] == "mean"
    assert list(per_item.item_id) == ts.ids


@pytest.mark.parametrize("case", ["varied", "all collapsed"])
def test_values_and_intervals_stay_in_the_declared_ranges(case):
    ts = samples_set(n=25, seed=8)
    if case == "all collapsed":  # every prompt's k answers identical: on the lower bounds
        ts.sample_embeddings = [np.repeat(e[:1], len(e), axis=0) for e in ts.sample_embeddings]
        ts.samples = [[s[0]] * len(s) for s in ts.samples]
    specs = [MetricSpec(name=n) for n in NAMES]
    aggregates, _, details = evaluate_textset(ts, specs, LABELS, bootstrap=200)
    assert not details["skipped"]
    for row in aggregates.itertuples():
        lo, hi = statistic_range(row.metric.split("[")[0], row.statistic)
        for v in (row.value, row.ci_low, row.ci_high):
            assert np.isnan(v) or ((lo is None or v >= lo - 1e-12) and (hi is None or v <= hi + 1e-12)), row
        assert np.isnan(row.ci_low) or row.ci_low - 1e-12 <= row.value <= row.ci_high + 1e-12, row
    if case == "all collapsed":
        primary = aggregates[aggregates.primary].set_index("metric").value
        assert primary["distinct_at_k[threshold=0.9]"] == 1.0
        assert primary["within_prompt_distance"] == pytest.approx(0.0, abs=1e-12)
        assert primary["within_prompt_distinct_ngrams[n=2]"] <= 0.5 + 1e-12  # k ≥ 2 copies of each bigram


def test_a_set_without_samples_skips_them():
    ts = TextSet("plain", "condition", ["a", "b"], ["x", "y"], embeddings=np.eye(2))
    _, _, details = evaluate_textset(ts, [MetricSpec(name=n) for n in NAMES], LABELS, bootstrap=10)
    assert len(details["skipped"]) == 3


def test_registration():
    for name in NAMES:
        assert name in METRICS and METRICS.info(name)["family"] == "within-prompt"
        assert METRICS.info(name)["direction"] == "higher"
        assert declared_range(name) is not None
    assert statistic_range("distinct_at_k", "collapsed") == (0, 1)
    assert statistic_range("distinct_at_k", "mean") == (1, None)
    assert build_metric("distinct_at_k", threshold=0.8).name == "distinct_at_k[threshold=0.8]"
    assert build_metric("within_prompt_distinct_ngrams", n=3).name == "within_prompt_distinct_ngrams[n=3]"
    assert build_metric("distinct_at_k").needs == {"sample_embeddings"}
    assert build_metric("within_prompt_distinct_ngrams").needs == {"samples"}
    with pytest.raises(ConfigError):
        DistinctAtK(threshold=1.5)
    with pytest.raises(ConfigError):
        WithinPromptDistinctNgrams(n=0)
