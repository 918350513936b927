"""A metric that draws a random sample inside ``compute`` (aggregated Self-BLEU, ``sample=100``)
keeps the full set's draw in every jackknife replicate. A fresh draw per replicate adds the
sampling noise to each replicate and made the interval about 3x too wide (issue 11, bug 1).

Check against the truth: the spread of the statistic over independent sets from the same process
(each with its own draw) is its real sampling spread; the interval's half-width should be about
1.96 times that spread."""

import numpy as np

from collapselab.metrics.base import TextSet
from collapselab.metrics.evaluate import bootstrap_intervals
from collapselab.metrics.lexical import LexicalDiversity

WORDS = [f"w{i}" for i in range(400)]
ZIPF = 1 / np.arange(1, len(WORDS) + 1) ** 1.1
ZIPF /= ZIPF.sum()


def synthetic_set(rng: np.random.Generator, n: int) -> TextSet:
    """``n`` responses of 2-4 sentences of 5-10 Zipf-distributed words."""
    sentences = [[" ".join(rng.choice(WORDS, size=rng.integers(5, 11), p=ZIPF)) + "."
                  for _ in range(rng.integers(2, 5))] for _ in range(n)]
    return TextSet("set", "condition", [f"t{i}" for i in range(n)], [" ".join(s) for s in sentences],
                   sentences=sentences)


def test_aggregated_self_bleu_interval_matches_the_sampling_spread():
    rng = np.random.default_rng(0)
    metric = LexicalDiversity(mode="aggregated", sample=100, seed=0)
    spread = np.std([metric.compute(synthetic_set(rng, 600)).aggregates["corpus"] for _ in range(40)], ddof=1)
    halves = []
    for _ in range(5):
        texts = synthetic_set(rng, 600)
        result = metric.compute(texts)
        intervals, failed, _ = bootstrap_intervals(metric, texts, result, bootstrap=0, jackknife_groups=20,
                                                confidence=0.95, seed=1)
        low, high = intervals["corpus"]
        assert failed == 0 and low <= result.aggregates["corpus"] <= high
        halves.append((high - low) / 2)
    ratio = np.mean(halves) / (1.96 * spread)
    assert 1 / 1.5 <= ratio <= 1.5, f"half-width {np.mean(halves):.2f} vs 1.96 x spread {1.96 * spread:.2f}"


def test_replicates_score_the_full_sets_sample_only():
    texts = synthetic_set(np.random.default_rng(3), 300)
    metric = LexicalDiversity(mode="aggregated", sample=50, seed=0)
    result = metric.compute(texts)
    pinned = metric.pinned(result, texts)
    assert pinned.pinned_ids == frozenset(result.details["sampled_ids"]) and len(pinned.pinned_ids) == 50
    # on the full set the pinned metric gives the same value; on a subset it scores the kept sampled texts
    assert pinned.compute(texts).aggregates["corpus"] == result.aggregates["corpus"]
    keep = np.arange(0, 300, 2)
    from collapselab.metrics.base import subset

    part = pinned.compute(subset(texts, keep))
    kept_sampled = set(result.details["sampled_ids"]) & {texts.ids[i] for i in keep}
    assert set(part.details["sampled_ids"]) == kept_sampled
    # individual mode draws nothing: it is its own replicate metric
    individual = LexicalDiversity(mode="individual")
    assert individual.pinned(individual.compute(texts), texts) is individual
