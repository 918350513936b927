"""Memorization family (metrics/memorization.py) against plain quadratic computations."""

from __future__ import annotations

import time

import numpy as np
import pytest

import collapselab.metrics  # noqa: F401  (registers every metric)
from collapselab.config.spec import MetricSpec
from collapselab.metrics.base import TextSet, build_metric
from collapselab.metrics.evaluate import evaluate_textset
from collapselab.metrics.memorization import (
    LongestCopy,
    SuffixAutomaton,
    VerbatimNgrams,
    ngram_index,
    suffix_automaton,
    words_of,
)

LABELS = {"set_name": "c", "set_kind": "condition", "condition": "c", "target": "m", "seed": 1, "source": None,
          "generation": 0}
VOCAB = "the a cat dog sat ran on under mat tree red blue".split()


def naive_share(text: str, training: list[str], n: int) -> float:
    """Each n-gram of the text compared with every n-gram of every training text."""
    words = words_of(text)
    if len(words) < n:
        return float("nan")
    hits = 0
    for i in range(len(words) - n + 1):
        gram = list(words[i:i + n])
        found = False
        for other in training:
            ow = list(words_of(other))
            for j in range(len(ow) - n + 1):
                if ow[j:j + n] == gram:
                    found = True
        hits += found
    return hits / (len(words) - n + 1)


def naive_longest(text: str, training: list[str]) -> int:
    """Longest common substring of word lists, text against each training text, by dynamic
    programming: run[i][j] = length of the common run ending at words i and j."""
    a = words_of(text)
    best = 0
    for other in training:
        b = words_of(other)
        run = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                if a[i - 1] == b[j - 1]:
                    run[i][j] = run[i - 1][j - 1] + 1
                    best = max(best, run[i][j])
    return best


def random_corpus(rng: np.random.Generator, n_train: int = 12, n_texts: int = 15) -> tuple[list[str], list[str]]:
    """A small vocabulary (chance matches of short runs) plus passages of training texts planted in
    the texts (long copies), some with a capitalised or markdown-emphasised word."""
    training = [" ".join(rng.choice(VOCAB, rng.integers(0, 40))) for _ in range(n_train)]
    texts = []
    for _ in range(n_texts):
        words = list(rng.choice(VOCAB, rng.integers(0, 30)))
        source = training[rng.integers(n_train)].split()
        if source and rng.random() < 0.7:
            start = int(rng.integers(len(source)))
            passage = source[start:start + int(rng.integers(1, 25))]
            if rng.random() < 0.5:
                passage[0] = f"**{passage[0].capitalize()}**"
            at = int(rng.integers(len(words) + 1))
            words[at:at] = passage
        texts.append(" ".join(words))
    return training, texts


def text_set(texts: list[str], training: list[str] | None) -> TextSet:
    return TextSet("c", "condition", [f"t{i}" for i in range(len(texts))], texts, training_texts=training)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [1, 3, 8])
def test_verbatim_share_matches_the_naive_scan(seed, n):
    training, texts = random_corpus(np.random.default_rng(seed))
    result = VerbatimNgrams(n=n).compute(text_set(texts, training))
    expected = np.array([naive_share(t, training, n) for t in texts])
    np.testing.assert_allclose(result.per_item["share"], expected, rtol=0, atol=1e-12)
    valid = expected[~np.isnan(expected)]
    assert result.aggregates["mean"] == pytest.approx(valid.mean())
    assert result.aggregates["texts_with_copy"] == pytest.approx(np.mean(valid > 0))
    assert result.aggregates["n_undefined"] == np.isnan(expected).sum()


@pytest.mark.parametrize("seed", range(8))
def test_longest_copy_matches_dynamic_programming(seed):
    training, texts = random_corpus(np.random.default_rng(100 + seed))
    metric = LongestCopy(min_words=6)
    result = metric.compute(text_set(texts, training))
    expected = np.array([naive_longest(t, training) for t in texts], dtype=float)
    np.testing.assert_array_equal(result.per_item["words"], expected)
    assert expected.max() >= 6  # the planted passages make long copies
    assert result.aggregates["mean"] == pytest.approx(expected.mean())
    assert result.aggregates["median"] == pytest.approx(np.median(expected))
    assert result.aggregates["max"] == expected.max()
    assert result.aggregates["share_long_copy"] == pytest.approx(np.mean(expected >= 6))


def test_a_copy_never_spans_two_training_texts():
    training = ["one two three four", "five six seven eight"]
    text = ["three four five six"]
    assert LongestCopy().compute(text_set(text, training)).per_item["words"][0] == 2
    assert VerbatimNgrams(n=3).compute(text_set(text, training)).per_item["share"][0] == 0
    # joined into one text, the run is whole
    joined = [" ".join(training)]
    assert LongestCopy().compute(text_set(text, joined)).per_item["words"][0] == 4
    assert VerbatimNgrams(n=3).compute(text_set(text, joined)).per_item["share"][0] == 1


def test_case_and_markdown_do_not_hide_a_copy():
    training = ["The cat sat on the mat, under a red tree."]
    text = ["## The **cat** sat on the MAT under a red tree!"]
    assert LongestCopy().compute(text_set(text, training)).per_item["words"][0] == 10
    assert VerbatimNgrams(n=10).compute(text_set(text, training)).per_item["share"][0] == 1


def test_short_texts_are_undefined_and_counted():
    result = VerbatimNgrams(n=4).compute(text_set(["a b c", "", "a b c d", "x y z w v"], ["a b c d e"]))
    share = result.per_item["share"]
    assert np.isnan(share[0]) and np.isnan(share[1]) and share[2] == 1 and share[3] == 0
    assert result.aggregates["n_undefined"] == 2 and result.aggregates["n"] == 2
    assert result.aggregates["mean"] == 0.5 and result.aggregates["texts_with_copy"] == 0.5
    # every text too short: NaN aggregates, not an error
    short = VerbatimNgrams(n=13).compute(text_set(["a b"], ["a b"]))
    assert np.isnan(short.aggregates["mean"]) and short.aggregates["n_undefined"] == 1


@pytest.mark.parametrize("training", [[], [""], ["", "  **  "]])
def test_empty_training_texts_copy_nothing(training):
    texts = text_set(["a b c d e f g h i", "", "x"], training)
    assert list(LongestCopy().compute(texts).per_item["words"]) == [0, 0, 0]
    share = VerbatimNgrams(n=2).compute(texts).per_item["share"]
    assert share[0] == 0 and np.isnan(share[1:]).all()


def test_no_training_texts_is_skipped_by_evaluate_and_an_error_when_called():
    texts = text_set(["a b c"], None)
    specs = [MetricSpec(name="verbatim_ngrams", settings={"n": 8}), MetricSpec(name="longest_copy")]
    aggregates, _, details = evaluate_textset(texts, specs, LABELS, bootstrap=10)
    assert aggregates.empty
    assert set(details["skipped"]) == {"verbatim_ngrams[n=8]", "longest_copy[min_words=40]"}
    with pytest.raises(ValueError, match="no training texts"):
        LongestCopy().compute(texts)


def test_evaluate_writes_per_item_rows_and_intervals_inside_the_range():
    training, texts = random_corpus(np.random.default_rng(7), n_train=20, n_texts=60)
    specs = [MetricSpec(name="verbatim_ngrams", settings={"n": 3}), MetricSpec(name="longest_copy",
                                                                              settings={"min_words": 5})]
    aggregates, per_item, _ = evaluate_textset(text_set(texts, training), specs, LABELS, bootstrap=200)
    assert set(per_item.metric) == {"verbatim_ngrams[n=3]", "longest_copy[min_words=5]"}
    assert (per_item.groupby("metric").size() == 60).all()
    primary = aggregates[aggregates.primary]
    assert set(primary.statistic) == {"mean"}
    shares = aggregates[aggregates.metric.str.startswith("verbatim")
                        | (aggregates.statistic == "share_long_copy")]
    assert len(shares) == 5  # mean, texts_with_copy, n, n_undefined; share_long_copy
    shares = shares[~shares.statistic.str.startswith("n")]
    assert (shares.ci_low >= 0).all() and (shares.ci_high <= 1).all()
    assert (aggregates.ci_low <= aggregates.value + 1e-12).all()
    assert (aggregates.value <= aggregates.ci_high + 1e-12).all()
    # the intervals are not degenerate: the texts differ
    mean = aggregates[(aggregates.metric == "longest_copy[min_words=5]") & (aggregates.statistic == "mean")].iloc[0]
    assert mean.ci_low < mean.value < mean.ci_high


def test_a_set_that_copies_its_training_data_sits_on_the_bound_with_a_point_interval():
    training, _ = random_corpus(np.random.default_rng(8), n_train=30)
    training = [t for t in training if len(t.split()) >= 8]
    specs = [MetricSpec(name="verbatim_ngrams", settings={"n": 8}), MetricSpec(name="longest_copy")]
    aggregates, per_item, _ = evaluate_textset(text_set(training, training), specs, LABELS, bootstrap=100)
    rows = aggregates.set_index(["metric", "statistic"])
    assert tuple(rows.loc[("verbatim_ngrams[n=8]", "mean"), ["value", "ci_low", "ci_high"]]) == (1, 1, 1)
    copies = per_item[per_item.metric == "longest_copy[min_words=40]"].value.to_numpy()
    np.testing.assert_array_equal(copies, [len(t.split()) for t in training])


def test_indexes_are_built_once_per_corpus_content():
    training = ["a b c d", "c d e f"]
    assert ngram_index(list(training), 2) is ngram_index(list(training), 2)  # a new list, same texts
    assert ngram_index(training, 2) is not ngram_index(training, 3)
    assert suffix_automaton(list(training)) is suffix_automaton(list(training))
    assert suffix_automaton(training) is not suffix_automaton([*training, "g h"])
    assert ngram_index(training, 2) == {hash(g) for g in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"),
                                                          ("e", "f")]}


def test_suffix_automaton_accepts_exactly_the_substrings():
    """Every substring of "abcbc" is matched whole; a non-substring is not (the classic example
    with a clone state)."""
    automaton = SuffixAutomaton(["a b c b c"])
    words = "a b c b c".split()
    for i in range(len(words)):
        for j in range(i + 1, len(words) + 1):
            assert automaton.longest_match(words[i:j]) == j - i
    assert automaton.longest_match(["c", "a"]) == 1
    assert automaton.longest_match(["b", "b"]) == 1
    assert len(automaton.length) <= 2 * (len(words) + 1)  # at most 2N − 1 states (N = words + separator)


@pytest.mark.parametrize(("name", "settings"), [("verbatim_ngrams", {"n": 0}), ("verbatim_ngrams", {"n": 2.5}),
                                                ("longest_copy", {"min_words": 0})])
def test_bad_settings_are_refused(name, settings):
    with pytest.raises(ValueError):
        build_metric(name, **settings)


@pytest.mark.slow
def test_speed():
    """2,000 training texts × 200 words, 500 texts × 200 words (the module docstring's figures)."""
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(5000)])
    p = 1 / np.arange(1, 5001) ** 1.1
    training = [" ".join(rng.choice(vocab, 200, p=p / p.sum())) for _ in range(2000)]
    texts = [" ".join(rng.choice(vocab, 200, p=p / p.sum())) for _ in range(500)]
    texts[0] = training[5]  # one full copy
    for metric in (VerbatimNgrams(n=13), LongestCopy()):
        started = time.perf_counter()
        result = metric.compute(text_set(texts, training))
        print(metric.name, f"{time.perf_counter() - started:.2f} s")
        assert result.aggregates["max" if "max" in result.aggregates else "texts_with_copy"] > 0
