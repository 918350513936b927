"""The nearest-neighbour distance against a plain double loop over pairs and hand-made sets, its
sensitivity to near-duplicates where Vendi and the mean pairwise distance are blind, and its
interval: a jackknife recomputed on subsets, which a with-replacement resample would break."""

from __future__ import annotations

import math

import numpy as np
import pytest

import collapselab.metrics  # noqa: F401  (registers every metric)
from collapselab.config.spec import MetricSpec
from collapselab.errors import ConfigError
from collapselab.metrics.base import METRICS, TextSet, build_metric, statistic_range, subset
from collapselab.metrics.evaluate import bootstrap_intervals, evaluate_textset
from collapselab.metrics.near_duplicates import NearestNeighborDistance, nearest_neighbor_distances
from collapselab.metrics.semantic import SemanticDiversity, Vendi

NAME = "nearest_neighbor_distance"
LABELS = {"set_name": "s", "set_kind": "condition", "condition": "c", "target": "m", "seed": 1, "source": None,
          "generation": 0}


def naive_nearest(e: np.ndarray) -> list[float]:
    """For each row, min over the other rows of 1 − cos, one cosine at a time."""
    rows = [[float(v) for v in r] for r in e]
    norms = [math.sqrt(sum(v * v for v in r)) for r in rows]
    out = []
    for i in range(len(rows)):
        best = math.inf
        for j in range(len(rows)):
            if j != i:
                cos = sum(a * b for a, b in zip(rows[i], rows[j], strict=True)) / (norms[i] * norms[j])
                best = min(best, 1.0 - cos)
        out.append(best)
    return out


def embedded(x: np.ndarray) -> TextSet:
    n = len(x)
    return TextSet("c", "condition", [f"t{i}" for i in range(n)], [f"text {i}" for i in range(n)], embeddings=x)


def clustered(n: int, rng: np.random.Generator, dim: int = 8, noise: float = 0.5) -> np.ndarray:
    centres = rng.normal(size=(6, dim))
    return centres[rng.integers(0, 6, n)] + noise * rng.normal(size=(n, dim))


def test_matches_the_pair_loop():
    x = clustered(70, np.random.default_rng(0))  # not unit rows: the metric normalises
    result = NearestNeighborDistance(threshold=0.05).compute(embedded(x))
    expected = np.array(naive_nearest(x))
    np.testing.assert_allclose(result.per_item["distance"], expected, atol=1e-9)
    assert 0.01 < expected.mean() < 0.5 and 0 < np.mean(expected <= 0.05) < 1  # a non-degenerate fixture
    assert result.aggregates["mean"] == pytest.approx(expected.mean(), abs=1e-9)
    assert result.aggregates["median"] == pytest.approx(np.median(expected), abs=1e-9)
    assert result.aggregates["near_duplicates"] == pytest.approx(np.mean(expected <= 0.05))


def test_blocks_do_not_change_the_result():
    e = clustered(50, np.random.default_rng(1))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    np.testing.assert_allclose(nearest_neighbor_distances(e, block=7), nearest_neighbor_distances(e), atol=1e-12)


def test_hand_made_sets():
    # an exact copy: both texts at 0, never the text itself (the third text's neighbour is a copy)
    x = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    result = NearestNeighborDistance().compute(embedded(x))
    np.testing.assert_allclose(result.per_item["distance"], [0.0, 0.0, 1.0], atol=1e-15)
    assert result.aggregates["near_duplicates"] == pytest.approx(2 / 3)
    # opposite directions: the largest distance, 2
    assert NearestNeighborDistance().compute(embedded(np.array([[1.0, 0], [-2.0, 0]]))).aggregates["mean"] == 2.0
    # a single text has no neighbour
    alone = NearestNeighborDistance().compute(embedded(np.ones((1, 3))))
    assert np.isnan(alone.aggregates["mean"]) and np.isnan(alone.per_item["distance"]).all()


def test_sees_near_duplicates_where_vendi_and_mean_distance_do_not():
    """Every text twice: Vendi is exactly unchanged, the mean pairwise distance falls by (2n−2)/(2n−1)
    only; the nearest-neighbour distance drops to 0 and every text is a near-duplicate."""
    x = clustered(40, np.random.default_rng(2))
    once, twice = embedded(x), embedded(np.vstack([x, x]))
    assert Vendi().compute(twice).aggregates["value"] == pytest.approx(Vendi().compute(once).aggregates["value"])
    ratio = (SemanticDiversity(level="response").compute(twice).aggregates["mean"]
             / SemanticDiversity(level="response").compute(once).aggregates["mean"])
    assert ratio == pytest.approx(78 / 79)
    metric = NearestNeighborDistance()
    assert metric.compute(once).aggregates["mean"] > 0.05
    assert metric.compute(twice).aggregates["mean"] == pytest.approx(0.0, abs=1e-12)
    assert metric.compute(twice).aggregates["near_duplicates"] == 1.0


def test_subset_recomputes_on_the_kept_texts():
    x = clustered(30, np.random.default_rng(3))
    idx = np.array([0, 5, 9, 20, 29])
    part = NearestNeighborDistance().compute(subset(embedded(x), idx)).per_item["distance"]
    np.testing.assert_allclose(part, naive_nearest(x[idx]), atol=1e-9)


def test_interval_is_a_jackknife_and_does_not_collapse_to_zero():
    """No near-duplicates in the set. Recomputed on a with-replacement resample, the metric sees the
    repeated draws as exact copies (δ = 0): the mean falls and the near-duplicate share jumps to
    ≈ 0.6 — the failure the jackknife avoids. Its interval keeps away from 0 and the share's
    interval stays [0, 0]."""
    rng = np.random.default_rng(4)
    ts = embedded(rng.normal(size=(80, 16)))
    metric = NearestNeighborDistance()
    assert not hasattr(metric, "aggregate_items")  # a corpus-level metric: evaluate recomputes it
    full = metric.compute(ts).aggregates
    assert full["near_duplicates"] == 0.0
    resampled = metric.compute(subset(ts, rng.integers(0, 80, 80))).aggregates
    assert resampled["near_duplicates"] > 0.4 and resampled["mean"] < 0.7 * full["mean"]

    aggregates, _, details = evaluate_textset(ts, [MetricSpec(name=NAME)], LABELS, bootstrap=200,
                                              jackknife_groups=20)
    rows = aggregates.set_index("statistic")
    mean = rows.loc["mean"]
    assert mean.primary and 0.8 * mean.value < mean.ci_low < mean.value < mean.ci_high < 1.2 * mean.value
    assert (rows.loc["near_duplicates"].ci_low, rows.loc["near_duplicates"].ci_high) == (0.0, 0.0)
    assert details[f"{NAME}[threshold=0.1]"]["failed_resamples"] == 0


def test_jackknife_interval_covers_the_sampling_spread():
    """The half-width against the statistic's spread over independent sets from one distribution:
    about 1.96 SD, on the conservative side (the jackknife variance; measured ratio 1.48 here)."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(10, 6))

    def draw() -> TextSet:
        return embedded(centres[rng.integers(0, 10, 150)] + 0.9 * rng.normal(size=(150, 6)))

    metric = NearestNeighborDistance()
    spread = np.std([metric.compute(draw()).aggregates["mean"] for _ in range(150)], ddof=1)
    halves = []
    for _ in range(15):
        ts = draw()
        low, high = bootstrap_intervals(metric, ts, metric.compute(ts), bootstrap=0, jackknife_groups=20,
                                        confidence=0.95, seed=1, metric_name=NAME)[0]["mean"]
        halves.append((high - low) / 2)
    assert 0.9 < np.mean(halves) / (1.96 * spread) < 2.2


@pytest.mark.parametrize("case", ["spread", "all copies"])
def test_values_and_intervals_stay_in_the_declared_range(case):
    rng = np.random.default_rng(6)
    x = clustered(60, rng)
    if case == "all copies":  # on the lower bound: every text has a copy
        x = np.vstack([x[:30], x[:30]])
    aggregates, _, _ = evaluate_textset(embedded(x), [MetricSpec(name=NAME)], LABELS, jackknife_groups=10)
    for row in aggregates.itertuples():
        lo, hi = statistic_range(NAME, row.statistic)
        for v in (row.value, row.ci_low, row.ci_high):
            assert (lo is None or v >= lo - 1e-12) and (hi is None or v <= hi + 1e-12), row
        assert row.ci_low - 1e-12 <= row.value <= row.ci_high + 1e-12, row
    if case == "all copies":
        assert aggregates.set_index("statistic").loc["near_duplicates"].value == 1.0


def test_registration():
    info = METRICS.info(NAME)
    assert info["family"] == "near-duplicates" and info["direction"] == "higher"
    assert statistic_range(NAME, "mean") == (0, 2) and statistic_range(NAME, "near_duplicates") == (0, 1)
    metric = build_metric(NAME, threshold=0.05)
    assert metric.name == "nearest_neighbor_distance[threshold=0.05]" and metric.needs == {"embeddings"}
    with pytest.raises(ConfigError):
        NearestNeighborDistance(threshold=-0.1)
