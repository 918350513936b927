"""Length family: how long the responses are, in words and in sentences.

Not a diversity measure and without a better direction, but the lexical metrics depend on it
(Self-BLEU needs multi-sentence responses, TTR-like measures fall with length, compression
improves with length), so every report shows it next to them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from collapselab.metrics.base import MetricResult, TextSet
from collapselab.metrics.text import is_word, summarize, text_sentences, tokenize_sentence

HISTOGRAM_BINS = 20


def histogram(values: np.ndarray, bins: int) -> dict[str, list[float]]:
    """Counts of ``values`` in ``bins`` equal-width bins (NaNs ignored), for plotting."""
    valid = values[~np.isnan(values)]
    counts, edges = np.histogram(valid, bins=bins) if valid.size else (np.zeros(0), np.zeros(0))
    return {"counts": counts.astype(float).tolist(), "edges": edges.astype(float).tolist()}


@lru_cache(maxsize=65536)
def _word_count(sentence: str) -> int:
    # Treebank tokenization costs ~0.2 ms a sentence; the human references recur across runs
    return sum(map(is_word, tokenize_sentence(sentence)))


class Length:
    """Response length. Per item: ``words`` — the NLTK Treebank tokens (NLTK ``word_tokenize``,
    see :mod:`collapselab.metrics.text`) of the markdown-stripped text that contain a letter or
    digit, so punctuation is not counted; ``sentences`` — the number of sentences (markdown
    stripped, punkt split per line; all sentences, not only Self-BLEU's ≥ 4-word ones). An empty
    response has 0 of both.

    Aggregates: ``mean``, ``median``, ``sd``, ``min``, ``max`` of the word counts, and the same
    prefixed ``sentences_`` for the sentence counts. ``details`` holds a histogram of each
    (:data:`HISTOGRAM_BINS` equal-width bins).
    """

    family = "length"
    higher_is_better = None
    needs = frozenset({"sentences"})
    name = "length"
    primary = "mean"

    def compute(self, texts: TextSet) -> MetricResult:
        sentences = text_sentences(texts.texts, texts.sentences)
        words = np.array([sum(map(_word_count, sents)) for sents in sentences], dtype=np.float64)
        n_sentences = np.array([len(sents) for sents in sentences], dtype=np.float64)
        sentence_stats = {f"sentences_{k}": v for k, v in summarize(n_sentences).items()
                          if k not in ("n", "n_undefined")}
        return MetricResult(
            per_item={"words": words, "sentences": n_sentences},
            aggregates=self.aggregate_items(words) | sentence_stats,
            details={"words_histogram": histogram(words, HISTOGRAM_BINS),
                     "sentences_histogram": histogram(n_sentences, HISTOGRAM_BINS)},
        )

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        """The word-count aggregates from per-item word counts (what a bootstrap resamples; the
        ``sentences_*`` aggregates get no interval)."""
        return summarize(values)
