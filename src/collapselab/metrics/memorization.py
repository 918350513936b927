"""Memorization family: how much of a set's texts its model copied verbatim from its fine-tuning data.

A model fine-tuned on a mix of answers (``TextSet.training_texts``) can regurgitate them instead of
answering; recursive training makes that worse, since each generation's copies become the next
generation's training data. Two measures, both on the same tokens — the lower-cased words of the
markdown-stripped text (:func:`~collapselab.metrics.text.simple_words` of
:func:`~collapselab.metrics.text.plain_text`, the tokens of MATTR and the lexical family's word
statistics; punctuation left out, so "word n-gram" means n words):

* ``verbatim_ngrams[n=…]`` — per text, the share of its word n-grams that occur verbatim in some
  training text (the "regurgitation" share; Carlini et al. 2023, "Quantifying Memorization Across
  Neural Language Models", ICLR — extraction as verbatim overlap with the training data; n = 13
  is the contamination n-gram of Brown et al. 2020, n = 8 a looser one that common phrases
  already reach).
* ``longest_copy[min_words=…]`` — per text, the length in words of the longest contiguous word
  sequence it shares with any one training text (the longest common substring; Lee et al. 2022,
  "Deduplicating Training Data Makes Language Models Better", count a copy from 50 tokens on).

Both are lower-is-better: a model that answers by copying its training answers has stopped
generalising, whatever the quality of what it copies. Both need ``training_texts`` and are skipped
for sets without them (vanilla models, the sources' training data, the human references).

Both are functions of their per-item values (``aggregate_items``): intervals resample the texts'
values, the training data stays fixed (it is the model's, not a sample the set was drawn from).
The training side's index — an n-gram hash set, a suffix automaton — is built once per training
corpus and cached by content (:func:`_cached`), so other sets trained on the same mix and repeated
calls reuse it.

Speed (one busy core, 2,000 training texts × 200 words, 500 texts × 200 words, tokenisation
included): ``verbatim_ngrams`` 0.5 s (0.03 s once the index is cached), ``longest_copy`` 1.2 s, of
which 0.8 s build the automaton (473k states, about 150 MB) and 0.1 s walk it once it is cached
(``tests/unit/metrics/test_memorization.py::test_speed``, marked slow; run it with ``-s``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from collapselab.metrics.base import MetricResult, TextSet, param_name
from collapselab.metrics.text import plain_text, simple_words

#: Lee et al. (2022) count a copy from 50 BPE tokens on; English prose runs about 1.3 tokens a word,
#: so 40 words is that threshold — a quarter of a typical 150–200-word answer, far longer than any
#: stock phrase two independent answers share by chance.
DEFAULT_MIN_WORDS = 40


@lru_cache(maxsize=65536)
def words_of(text: str) -> tuple[str, ...]:
    """The lower-cased words of the markdown-stripped text: the tokens both metrics count. Cached:
    the training texts recur across every set trained on the same mix."""
    return tuple(simple_words(plain_text(text)))


# ------------------------------------------------------------------------------------------
# Indexes of the training texts, built once per corpus
# ------------------------------------------------------------------------------------------

#: per kind of index, the most recently used ones: the sets trained on one mix and repeated calls
#: reuse them; few automata are kept, since one of 400k training words takes about 150 MB
_CACHE_SIZES = {"ngrams": 4, "automaton": 2}
_CACHE: dict[str, OrderedDict[tuple[Any, ...], Any]] = {kind: OrderedDict() for kind in _CACHE_SIZES}


def _cached(kind: str, training: Sequence[str], param: Any, build: Callable[[], Any]) -> Any:
    """``build()`` once per (kind, param, training corpus): keyed by the texts' content, not the
    list's identity — the evaluate stage builds a new list per set, and an ``id`` can be reused.
    The key holds the texts themselves (references, no copy), so a hash collision cannot return
    another corpus's index."""
    cache = _CACHE[kind]
    key = (param, tuple(training))
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = build()
    cache[key] = value
    if len(cache) > _CACHE_SIZES[kind]:
        cache.popitem(last=False)
    return value


def ngram_index(training: Sequence[str], n: int) -> frozenset[int]:
    """The hashes of every word n-gram of the training texts (n-grams never span two texts).

    Hashes, not the tuples: a third of the memory. Python's 64-bit tuple hash makes a false match
    vanishingly unlikely (about |queries|·|index|/2⁶⁴ ≈ 1e-8 at 10⁵ × 10⁶)."""
    def build() -> frozenset[int]:
        out: set[int] = set()
        for text in training:
            w = words_of(text)
            out.update(hash(w[i:i + n]) for i in range(len(w) - n + 1))
        return frozenset(out)

    return _cached("ngrams", training, n, build)


class SuffixAutomaton:
    """The suffix automaton of the training texts' word ids joined with a separator (Blumer et al.
    1985; the construction of e.g. cp-algorithms "Suffix Automaton"): the minimal automaton
    accepting every substring, at most 2N states, built in O(N) (amortised, dict transitions).

    The separator never occurs in a query, so no match can run across two training texts. A
    query word absent from the training vocabulary gets an id with no transition (it ends every
    match)."""

    def __init__(self, training: Sequence[str]) -> None:
        self.vocab: dict[str, int] = {}
        # states: length of the longest string in the state, suffix link, transitions
        self.length = [0]
        self.link = [-1]
        self.next: list[dict[int, int]] = [{}]
        last = 0
        separator = -1
        for text in training:
            for word in words_of(text):
                last = self._extend(last, self.vocab.setdefault(word, len(self.vocab)))
            last = self._extend(last, separator)

    def _extend(self, last: int, c: int) -> int:
        length, link, nxt = self.length, self.link, self.next
        cur = len(length)
        length.append(length[last] + 1)
        link.append(0)
        nxt.append({})
        p = last
        while p != -1 and c not in nxt[p]:
            nxt[p][c] = cur
            p = link[p]
        if p != -1:
            q = nxt[p][c]
            if length[p] + 1 == length[q]:
                link[cur] = q
            else:  # split q: a clone keeps the shorter strings
                clone = len(length)
                length.append(length[p] + 1)
                link.append(link[q])
                nxt.append(dict(nxt[q]))
                while p != -1 and nxt[p].get(c) == q:
                    nxt[p][c] = clone
                    p = link[p]
                link[q] = clone
                link[cur] = clone
        return cur

    def longest_match(self, words: Sequence[str]) -> int:
        """The length of the longest contiguous run of ``words`` that occurs in one training text:
        walk the automaton, following suffix links on a mismatch (O(len(words)) amortised)."""
        length, link, nxt, vocab = self.length, self.link, self.next, self.vocab
        state = matched = best = 0
        for word in words:
            c = vocab.get(word, -2)
            while state and c not in nxt[state]:
                state = link[state]
                matched = length[state]
            if c in nxt[state]:
                state = nxt[state][c]
                matched += 1
                best = max(best, matched)
            else:
                state = matched = 0
        return best


def suffix_automaton(training: Sequence[str]) -> SuffixAutomaton:
    """The cached :class:`SuffixAutomaton` of a training corpus."""
    return _cached("automaton", training, None, lambda: SuffixAutomaton(training))


def _training(texts: TextSet, name: str) -> list[str]:
    if texts.training_texts is None:
        raise ValueError(f"{name}: the text set {texts.name!r} has no training texts (a model that was not "
                         "fine-tuned, or a set without a model)")
    return texts.training_texts


def _summary(values: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    values = np.asarray(values, dtype=np.float64)
    valid = values[~np.isnan(values)]
    return valid, {"n": float(valid.size), "n_undefined": float(values.size - valid.size)}


# ------------------------------------------------------------------------------------------
# The metrics
# ------------------------------------------------------------------------------------------


class VerbatimNgrams:
    """Regurgitation share (Carlini et al. 2023, verbatim extraction; see the module docstring).

    Per text with W ≥ n words (w₁ … w_W)::

        share = |{i : (w_i, …, w_{i+n−1}) occurs in some training text}| / (W − n + 1)

    counting repeated n-grams of the text each time (a copied passage said twice counts twice).
    A text with fewer than n words has no n-gram: NaN, counted in ``n_undefined``.

    Aggregates: ``mean`` (primary) — the mean share over the defined texts; ``texts_with_copy`` —
    the share of defined texts with at least one verbatim n-gram; ``n``, ``n_undefined``. Both in
    [0, 1]. With no training words at all (an empty mix) every share is 0.

    Training n-grams are hashed into a set built once per corpus: O(total words) to build, O(1) a
    lookup, no quadratic scan.
    """

    family = "memorization"
    higher_is_better = False
    needs = frozenset({"training_texts"})
    primary = "mean"

    def __init__(self, *, n: int = 8) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"verbatim_ngrams: n must be a positive integer, got {n!r}")
        self.n = n
        self.name = param_name("verbatim_ngrams", n=n)

    def compute(self, texts: TextSet) -> MetricResult:
        index = ngram_index(_training(texts, self.name), self.n)
        n = self.n
        share = np.full(len(texts), np.nan)
        for i, text in enumerate(texts.texts):
            w = words_of(text)
            total = len(w) - n + 1
            if total > 0:
                share[i] = sum(hash(w[j:j + n]) in index for j in range(total)) / total
        return MetricResult(per_item={"share": share}, aggregates=self.aggregate_items(share))

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        """The aggregates from the per-text shares (what the bootstrap resamples)."""
        valid, counts = _summary(values)
        nan = float("nan")
        return {"mean": float(valid.mean()) if valid.size else nan,
                "texts_with_copy": float(np.mean(valid > 0)) if valid.size else nan, **counts}


class LongestCopy:
    """Longest verbatim copy from the training data, in words (see the module docstring).

    Per text: max over training texts T and positions of the length L of a contiguous word
    sequence equal in the text and in T — the longest common substring of the text with the
    training corpus, matches never spanning two training texts. 0 for a text with no word in
    common (or no words); never undefined.

    Found with a :class:`SuffixAutomaton` of the training texts (built once per corpus, O(N) in
    the training words) walked by each text (O(its length)): linear overall, where comparing each
    text with each training text is quadratic.

    Aggregates: ``mean`` (primary), ``median``, ``max`` of the per-text lengths and
    ``share_long_copy`` — the share of texts with a copy of at least ``min_words`` words (default
    :data:`DEFAULT_MIN_WORDS` = 40, about the 50 tokens from which Lee et al. 2022 count a
    duplicate). Longer texts can hold longer copies: read the length family alongside.
    """

    family = "memorization"
    higher_is_better = False
    needs = frozenset({"training_texts"})
    primary = "mean"

    def __init__(self, *, min_words: int = DEFAULT_MIN_WORDS) -> None:
        if not isinstance(min_words, int) or isinstance(min_words, bool) or min_words < 1:
            raise ValueError(f"longest_copy: min_words must be a positive integer, got {min_words!r}")
        self.min_words = min_words
        self.name = param_name("longest_copy", min_words=min_words)

    def compute(self, texts: TextSet) -> MetricResult:
        automaton = suffix_automaton(_training(texts, self.name))
        longest = np.array([automaton.longest_match(words_of(t)) for t in texts.texts], dtype=np.float64)
        return MetricResult(per_item={"words": longest}, aggregates=self.aggregate_items(longest))

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        """The aggregates from the per-text lengths (what the bootstrap resamples)."""
        valid, counts = _summary(values)
        nan = float("nan")
        if not valid.size:
            return {"mean": nan, "median": nan, "max": nan, "share_long_copy": nan, **counts}
        return {"mean": float(valid.mean()), "median": float(np.median(valid)), "max": float(valid.max()),
                "share_long_copy": float(np.mean(valid >= self.min_words)), **counts}
