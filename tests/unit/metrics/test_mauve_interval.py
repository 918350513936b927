"""MAUVE's interval: a bootstrap of both sides over a quantization fitted once (audit a1, c4).

Checked against a plain loop (the documented resampling, one text at a time), against the true
sampling spread of MAUVE over independent samples, and on the references against themselves."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import collapselab.metrics.catalog_embedding  # noqa: F401  (registers the metrics)
from collapselab.metrics.base import TextSet, human_pairing
from collapselab.metrics.distance import Mauve, mauve_from_counts, mauve_quantize
from collapselab.metrics.evaluate import _paired_human_groups, bootstrap_intervals

CENTRES = np.random.default_rng(0).normal(0, 3, size=(12, 8))
MIX_P = np.full(12, 1 / 12)
MIX_Q = np.r_[np.full(6, 1.5), np.full(6, 0.5)] / 12


def draw(rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
    """``n`` rows from a mixture of 12 unit Gaussians around fixed centres."""
    return CENTRES[rng.choice(12, size=n, p=weights)] + rng.normal(size=(n, 8))


def pair(p: np.ndarray, q: np.ndarray, *, paired: bool) -> TextSet:
    """The set ``p`` against references ``q``; ``paired``: the set's ids are the references' first ids."""
    human = TextSet("human", "human", [f"i{i}" for i in range(len(q))], ["x"] * len(q), embeddings=q)
    ids = [f"i{i}" for i in range(len(p))] if paired else [f"c{i}" for i in range(len(p))]
    return TextSet("c", "condition", ids, ["x"] * len(p), embeddings=p, human=human)


QUICK = {"num_buckets": 10, "kmeans_num_redo": 1, "kmeans_max_iter": 100}


def plain_replicates(texts: TextSet, result, n: int, seed: int) -> list[float]:
    """The documented resampling, spelt out text by text: draw the set's texts with replacement;
    a paired text brings its reference along; the unanswered references are drawn on their own."""
    rng = np.random.default_rng(seed)
    p_labels, q_labels = result.details["_p_labels"], result.details["_q_labels"]
    position = {id_: k for k, id_ in enumerate(texts.human.ids)}
    paired = all(i in position for i in texts.ids)
    answered = {position[i] for i in texts.ids} if paired else set()
    alone = [k for k in range(len(texts.human)) if k not in answered]
    buckets = len(result.details["p_hist"])
    values = []
    for _ in range(n):
        drawn = [int(i) for i in rng.integers(0, len(texts), len(texts))]
        extra = [alone[int(j)] for j in rng.integers(0, len(alone), len(alone))] if alone else []
        refs = ([position[texts.ids[i]] for i in drawn] if paired else []) + extra
        p_count, q_count = Counter(int(p_labels[i]) for i in drawn), Counter(int(q_labels[k]) for k in refs)
        values.append(mauve_from_counts(np.array([p_count[b] for b in range(buckets)]),
                                        np.array([q_count[b] for b in range(buckets)]))["value"])
    return values


@pytest.mark.parametrize(("paired", "n_p", "n_q"), [(False, 90, 60), (True, 70, 100), (True, 80, 80)])
def test_bootstrap_replicates_by_a_plain_loop(paired, n_p, n_q):
    rng = np.random.default_rng(1)
    texts = pair(draw(rng, n_p, MIX_P), draw(rng, n_q, MIX_Q), paired=paired)
    metric = Mauve(**QUICK)
    result = metric.compute(texts)
    fast = [r["value"] for r in metric.bootstrap_replicates(texts, result, 25, np.random.default_rng(5))]
    np.testing.assert_allclose(fast, plain_replicates(texts, result, 25, 5), rtol=1e-12)


def test_the_labels_give_the_full_set_histograms():
    rng = np.random.default_rng(2)
    p, q = draw(rng, 100, MIX_P), draw(rng, 120, MIX_Q)
    p_labels, q_labels = mauve_quantize(p, q, 10, seed=25, kmeans_num_redo=1, kmeans_max_iter=100)
    assert len(p_labels) == 100 and len(q_labels) == 120
    result = Mauve(**QUICK).compute(pair(p, q, paired=False))
    np.testing.assert_array_equal(result.details["p_hist"], np.bincount(p_labels, minlength=10) / 100)
    np.testing.assert_array_equal(result.details["q_hist"], np.bincount(q_labels, minlength=10) / 120)


def test_interval_width_matches_the_sampling_spread_of_mauve():
    """The truth: MAUVE's spread over independent samples of both sides (each with its own k-means).
    The bootstrap's SD (on a fixed codebook) should be of that size — not the k-means noise the
    jackknife amplified."""
    rng = np.random.default_rng(3)
    metric = Mauve(**QUICK)
    truth = np.std([metric.compute(pair(draw(rng, 300, MIX_P), draw(rng, 300, MIX_Q), paired=False))
                    .aggregates["value"] for _ in range(40)], ddof=1)
    boot = []
    for _ in range(5):
        texts = pair(draw(rng, 300, MIX_P), draw(rng, 300, MIX_Q), paired=False)
        result = metric.compute(texts)
        boot.append(np.std([r["value"] for r in metric.bootstrap_replicates(texts, result, 300, rng)], ddof=1))
    ratio = np.mean(boot) / truth
    assert 1 / 1.6 < ratio < 1.6, f"bootstrap SD {np.mean(boot):.4f} vs sampling SD {truth:.4f}"


def test_both_sides_are_resampled():
    """A large set against few, noisy references: resampling only the set would give a narrow
    interval; the references' sampling error makes it wider."""
    rng = np.random.default_rng(4)
    texts = pair(draw(rng, 600, MIX_P), draw(rng, 40, MIX_Q), paired=False)
    metric = Mauve(num_buckets=8, kmeans_num_redo=1, kmeans_max_iter=100)
    result = metric.compute(texts)
    both = np.std([r["value"] for r in metric.bootstrap_replicates(texts, result, 300, np.random.default_rng(0))])
    p_labels, q_labels = result.details["_p_labels"], result.details["_q_labels"]
    draws = np.random.default_rng(0)
    set_only = np.std([mauve_from_counts(np.bincount(p_labels[draws.integers(0, 600, 600)], minlength=8),
                                         np.bincount(q_labels, minlength=8))["value"] for _ in range(300)])
    assert both > 1.5 * set_only


def test_the_references_against_themselves_get_one():
    rng = np.random.default_rng(5)
    human = pair(draw(rng, 50, MIX_Q), draw(rng, 50, MIX_Q), paired=True).human
    human.human = human  # the human set is measured against itself, as the pipeline does
    metric = Mauve(**QUICK)
    result = metric.compute(human)
    value = result.aggregates["value"]
    assert value == pytest.approx(1.0, abs=1e-15)  # 1 − 1e-16: the area's round-off
    intervals, _, clipped = bootstrap_intervals(metric, human, result, bootstrap=100, jackknife_groups=20,
                                                confidence=0.95, seed=0, metric_name="mauve")
    # every replicate draws the same prompts on both sides: no spread but round-off (not a logit of 36.7)
    low, high = intervals["value"]
    assert low <= value <= high <= 1.0 and high - low < 1e-12
    low, high = intervals["mauve_star"]
    assert low <= result.aggregates["mauve_star"] <= high <= 1.0 and high - low < 1e-12
    assert intervals["frontier_integral"] == (0.0, 0.0) and clipped >= 1  # FI = 0 sits on its bound


def test_paired_mauve_interval_is_narrower_than_ignoring_the_pairing_when_pairs_agree():
    """Most responses lie near their own prompt's reference (30% drift to one cluster): drawing them
    together keeps the two histograms together, so the paired interval is narrower than the
    independent one."""
    rng = np.random.default_rng(6)
    q = draw(rng, 200, MIX_Q)
    p = q + rng.normal(0, 0.3, size=q.shape)
    drift = rng.random(200) < 0.3
    p[drift] = CENTRES[0] + rng.normal(size=(drift.sum(), 8))
    metric = Mauve(**QUICK)
    widths = {}
    for paired in (True, False):
        texts = pair(p, q, paired=paired)
        result = metric.compute(texts)
        low, high = bootstrap_intervals(metric, texts, result, bootstrap=300, jackknife_groups=20,
                                        confidence=0.95, seed=0, metric_name="mauve")[0]["value"]
        assert 0 < low <= result.aggregates["value"] <= high <= 1
        widths[paired] = high - low
    assert widths[True] < widths[False]


# ------------------------------------------------------------------ pairing of the two samples


def test_human_pairing():
    rng = np.random.default_rng(7)
    texts = pair(draw(rng, 5, MIX_P), draw(rng, 8, MIX_Q), paired=True)
    texts.ids = ["i3", "i0", "i7", "i1", "i4"]
    np.testing.assert_array_equal(human_pairing(texts), [3, 0, 7, 1, 4])
    assert human_pairing(pair(draw(rng, 5, MIX_P), draw(rng, 8, MIX_Q), paired=False)) is None
    texts.ids = ["i3", "i3", "i7", "i1", "i4"]  # a repeated id: not a pairing
    assert human_pairing(texts) is None
    texts.human = None
    assert human_pairing(texts) is None


@pytest.mark.parametrize("paired", [True, False])
def test_jackknife_human_groups_partition_the_references(paired):
    rng = np.random.default_rng(8)
    texts = pair(draw(rng, 30, MIX_P), draw(rng, 47, MIX_Q), paired=paired)
    groups = np.array_split(rng.permutation(30), 6)
    human_groups = _paired_human_groups(texts, groups, np.random.default_rng(0))
    assert len(human_groups) == 6
    assert sorted(np.concatenate(human_groups).tolist()) == list(range(47))  # every reference left out once
    assert max(map(len, human_groups)) - min(map(len, human_groups)) <= 1
    if paired:  # a group's texts take their own references with them
        for group, refs in zip(groups, human_groups, strict=True):
            assert set(group.tolist()) <= set(refs.tolist())
