"""Length family: word and sentence counts per response."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.metrics.base import TextSet
from collapselab.metrics.length import Length
from collapselab.metrics.text import is_word, sentences_of, word_tokenize


def text_set(texts: list[str]) -> TextSet:
    return TextSet(name="t", kind="condition", ids=[f"r{i}" for i in range(len(texts))], texts=texts)


TEXTS = [
    "",
    "Hello there. It costs $3.50, doesn't it?",
    "## Steps\n1. **Mix** the flour.\n2. Bake it for 30 minutes!",
    "One sentence only",
]


def test_length_equals_nltk_word_tokenize() -> None:
    result = Length().compute(text_set(TEXTS))
    words = [sum(is_word(tok) for tok in word_tokenize("\n".join(sentences_of(t)))) for t in TEXTS]
    np.testing.assert_array_equal(result.per_item["words"], words)
    np.testing.assert_array_equal(result.per_item["sentences"], [len(sentences_of(t)) for t in TEXTS])


def test_length_golden() -> None:
    result = Length().compute(text_set(TEXTS))
    # "Hello there. It costs $3.50, doesn't it?" -> Hello there It costs 3.50 does n't it (8 words,
    # "$" "," "." "?" are not words); the markdown list -> Steps | Mix the flour | Bake it for 30 minutes
    assert result.per_item["words"].tolist() == [0, 8, 9, 3]
    assert result.per_item["sentences"].tolist() == [0, 2, 3, 1]
    agg = result.aggregates
    assert (agg["mean"], agg["median"], agg["min"], agg["max"]) == (5.0, 5.5, 0.0, 9.0)
    assert agg["sd"] == pytest.approx(np.std([0, 8, 9, 3], ddof=1))
    assert agg["sentences_mean"] == 1.5 and agg["n_undefined"] == 0
    assert sum(result.details["words_histogram"]["counts"]) == 4
    histogram = result.details["sentences_histogram"]
    assert len(histogram["edges"]) == len(histogram["counts"]) + 1


def test_length_uses_precomputed_sentences() -> None:
    ts = text_set(["whatever is here"])
    ts.sentences = [["Two words.", "And three more."]]
    result = Length().compute(ts)
    assert result.per_item["words"].tolist() == [5] and result.per_item["sentences"].tolist() == [2]


def test_length_metric_attributes() -> None:
    metric = Length()
    assert (metric.name, metric.family, metric.higher_is_better) == ("length", "length", None)
    assert metric.needs == frozenset({"sentences"})
    result = metric.compute(text_set(TEXTS))
    words_stats = {k: v for k, v in result.aggregates.items() if not k.startswith("sentences_")}
    assert metric.primary == "mean" and metric.aggregate_items(result.per_item["words"]) == words_stats
