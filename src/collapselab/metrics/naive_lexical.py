"""Plain, slow reference versions of the lexical metrics — the baselines the tests check
:mod:`collapselab.metrics.lexical` against and ``bench/metrics.py`` times.

They share only the text preprocessing (markdown stripping, sentence splitting, tokenizers) and
Self-BLEU's response selection/sampling with the fast versions; the counting is written the
obvious way (one sacreBLEU call per sentence, ``collections.Counter`` per text), so an error in
the vectorised code cannot hide in them.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from collapselab.metrics.lexical import SelfBleu, self_bleu
from collapselab.metrics.text import simple_tokens, simple_words, strip_markdown


def naive_sentence_self_bleu(groups: Sequence[Sequence[str]], max_order: int = 3) -> list[np.ndarray]:
    """Each sentence scored with sacreBLEU's own ``sentence_score`` against the other sentences
    of its group — the per-sentence loop the study ran."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(max_ngram_order=max_order, effective_order=True)
    return [np.array([bleu.sentence_score(s, [*g[:i], *g[i + 1:]]).score for i, s in enumerate(g)])
            for g in groups]


def naive_self_bleu(sentence_lists: Sequence[Sequence[str]], *, mode: str = "individual", max_order: int = 3,
                    sample: int = 100, seed: int = 0) -> SelfBleu:
    """:func:`~collapselab.metrics.lexical.self_bleu` with the plain sacreBLEU loop as scorer."""
    return self_bleu(sentence_lists, mode=mode, max_order=max_order, sample=sample, seed=seed,
                     scorer=naive_sentence_self_bleu)


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _token_lists(texts: Sequence[str]) -> list[list[str]]:
    return [simple_tokens(strip_markdown(t)) for t in texts]


def naive_distinct(texts: Sequence[str], n: int = 2) -> tuple[float, np.ndarray]:
    """(corpus distinct-n, per-text distinct-n)."""
    grams = [_ngrams(toks, n) for toks in _token_lists(texts)]
    per_item = np.array([len(set(g)) / len(g) if g else math.nan for g in grams])
    pooled = [x for g in grams for x in g]
    return (len(set(pooled)) / len(pooled) if pooled else math.nan), per_item


def _entropy(counter: Counter) -> float:
    total = sum(counter.values())
    if not total:
        return math.nan
    return -sum(c / total * math.log2(c / total) for c in counter.values())


def naive_ngram_entropy(texts: Sequence[str], n: int = 2) -> tuple[float, np.ndarray]:
    """(corpus n-gram entropy in bits, per-text entropy)."""
    grams = [_ngrams(toks, n) for toks in _token_lists(texts)]
    per_item = np.array([_entropy(Counter(g)) for g in grams])
    return _entropy(Counter(x for g in grams for x in g)), per_item


def naive_compression_ratio(texts: Sequence[str]) -> tuple[float, np.ndarray]:
    """(corpus ratio of the space-joined non-empty texts, per-text ratio): raw / zlib-9 compressed bytes."""
    def ratio(text: str) -> float:
        raw = text.encode("utf-8")
        return len(raw) / len(zlib.compress(raw, 9)) if raw else math.nan

    stripped = [strip_markdown(t) for t in texts]
    return ratio(" ".join(t for t in stripped if t)), np.array([ratio(t) for t in stripped])


def naive_mattr(texts: Sequence[str], window: int = 50) -> np.ndarray:
    """Per-text MATTR: the type-token ratio of every window of ``window`` words, averaged (plain
    TTR for texts shorter than the window, NaN for empty ones)."""
    out = []
    for text in texts:
        words = simple_words(strip_markdown(text))
        if not words:
            out.append(math.nan)
        elif len(words) < window:
            out.append(len(set(words)) / len(words))
        else:
            ttrs = [len(set(words[i:i + window])) / window for i in range(len(words) - window + 1)]
            out.append(sum(ttrs) / len(ttrs))
    return np.array(out)
