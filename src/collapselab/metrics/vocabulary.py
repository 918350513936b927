"""Vocabulary family: how many word types a set uses, how fast new ones appear, and how much of
the human references' rare vocabulary it reaches.

Every metric here reads the same tokens: each text lower-cased, then split by
:func:`collapselab.metrics.text.word_tokenize` (the study's "lower-cased, word-tokenized"
outputs; NLTK Treebank tokens, punctuation marks included), the texts concatenated in set
order. :func:`lowercase_tokens` caches tokens per text, so the three metrics of one set, its
bootstrap resamples and the human set every condition is compared with tokenize once.

* ``heaps`` — Heaps' law V = K·N^β fitted to the vocabulary-growth curve (Experiment 1).
* ``vocabulary_size`` — distinct types, raw and per token at a fixed token budget.
* ``rare_tail_coverage`` — the share of the human references' rare types the set uses.
"""

from __future__ import annotations

import functools
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from collapselab.errors import ConfigError
from collapselab.metrics.base import MetricResult, TextSet, param_name
from collapselab.metrics.text import simple_tokens, word_tokenize

Tokens = tuple[tuple[str, ...], ...]
Tokenizer = Literal["word", "simple"]

# Per-text caches, not per-set: a bootstrap resample (texts drawn with replacement) and the
# human set every condition is compared with then hit the cache. 8,192 texts hold a few sets
# and the human references; interning shares each type's string across texts (memory, and
# faster set/dict ops).


@functools.lru_cache(maxsize=8192)
def _word_tokens(text: str) -> tuple[str, ...]:
    return tuple(map(sys.intern, word_tokenize(text.lower())))


@functools.lru_cache(maxsize=8192)
def _simple_tokens(text: str) -> tuple[str, ...]:
    return tuple(map(sys.intern, simple_tokens(text)))  # simple_tokens lower-cases itself


def lowercase_tokens(texts: Sequence[str], tokenizer: Tokenizer = "word") -> Tokens:
    """The lower-cased tokens of each text: NLTK Treebank (``word``, the study's word counts) or
    the fast regex tokens of the n-gram statistics (``simple``); see
    :mod:`collapselab.metrics.text`."""
    return tuple(map(_word_tokens if tokenizer == "word" else _simple_tokens, texts))


def token_codes(tokens: Sequence[str]) -> np.ndarray:
    """Integer ids numbered in order of first appearance (``pandas.factorize``: one C hash
    pass), so the vocabulary size after the first N tokens is ``max(codes[:N]) + 1``."""
    codes, _ = pd.factorize(np.asarray(tokens, dtype=object), sort=False)
    return codes.astype(np.int64, copy=False)


def _flat(tokens: Tokens) -> list[str]:
    return [tok for text in tokens for tok in text]


def _check_positive(metric: str, **values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{metric}: {key} must be a positive integer, not {value!r}")


# ------------------------------------------------------------------------------------------
# Heaps' law
# ------------------------------------------------------------------------------------------


def heaps_curve(tokens: Sequence[str], step: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary growth: V(N) = number of distinct types among the first N tokens, at
    N = step, 2·step, … ≤ len(tokens) (a trailing partial step is not recorded)."""
    n_points = len(tokens) // step
    if n_points == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    seen = np.maximum.accumulate(token_codes(tokens)) + 1  # types after each token
    n = np.arange(1, n_points + 1, dtype=np.int64) * step
    return n, seen[n - 1]


def _power_law(n: np.ndarray, k: float, beta: float) -> np.ndarray:
    return k * np.power(n, beta)


#: Tight tolerances: the least-squares optimum is flat along a K–β ridge, and curve_fit's
#: defaults stop ~1e-6 (relative) short of it depending on the start. The fit costs < 1 ms.
FIT_TOLERANCES = {"ftol": 1e-14, "xtol": 1e-14, "gtol": 1e-14}


def fit_heaps(n: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(K, β) minimising Σ (V_i − K·N_i^β)² — nonlinear least squares in linear space, as
    ``scipy.optimize.curve_fit``. Started from the log–log linear fit (exact for a pure power
    law), so Levenberg–Marquardt converges in a few iterations from any data."""
    n = np.asarray(n, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    beta0, log_k0 = np.polyfit(np.log(n), np.log(v), 1)
    (k, beta), _ = curve_fit(_power_law, n, v, p0=(np.exp(log_k0), beta0), maxfev=10_000, **FIT_TOLERANCES)
    return float(k), float(beta)


class Heaps:
    """Heaps' law fit (Heaps 1978; Schaffelder & Gatt, Experiment 1 "vocabulary growth"):

        V(N) = K · N^β

    V(N) = distinct types among the first N tokens of the concatenated, lower-cased,
    word-tokenized texts, recorded every ``step`` tokens (N = step, 2·step, …); K and β by
    nonlinear least squares on those points. β (higher: new words keep coming) is the headline;
    K scales the curve. Needs ≥ 3 points (3·step tokens), else NaN with the reason in details.
    ``details`` holds the curve (``N``, ``V``) for plotting. Set-level only: no per-item values.
    """

    family = "vocabulary"
    higher_is_better = True
    primary = "beta"
    needs: frozenset[str] = frozenset()

    def __init__(self, *, step: int = 1000) -> None:
        _check_positive("heaps", step=step)
        self.step = step
        self.name = param_name("heaps", step=step)

    def compute(self, texts: TextSet) -> MetricResult:
        tokens = _flat(lowercase_tokens(texts.texts))
        n, v = heaps_curve(tokens, self.step)
        details = {"N": n.tolist(), "V": v.tolist()}
        base = {"n_tokens": float(len(tokens)), "n_points": float(len(n))}
        if len(n) < 3:
            details["reason"] = (f"Heaps' law needs at least 3 curve points (3 × step = {3 * self.step} "
                                 f"tokens); the set has {len(tokens)} tokens")
            return MetricResult(aggregates={"beta": float("nan"), "K": float("nan"), **base}, details=details)
        k, beta = fit_heaps(n, v)
        return MetricResult(aggregates={"beta": beta, "K": k, **base}, details=details)


# ------------------------------------------------------------------------------------------
# Vocabulary size
# ------------------------------------------------------------------------------------------


class VocabularySize:
    """Distinct lower-cased word types of the whole set, |{w}|, and the type–token ratio at a
    fixed token budget B:

        ttr_budget = |types among the first min(N, B) tokens| / min(N, B)

    The raw type count grows with the set's length (Heaps' law), so it only compares sets of
    similar size; ``ttr_budget`` takes the same number of tokens from every set (texts in set
    order) and compares sets of different lengths — as long as each has ≥ B tokens (check
    ``budget_tokens``: a shorter set is measured on fewer tokens, which inflates its ratio).
    Per item: each text's own distinct-type count. Higher is better.
    """

    family = "vocabulary"
    higher_is_better = True
    primary = "types"
    needs: frozenset[str] = frozenset()

    def __init__(self, *, budget: int = 10_000) -> None:
        _check_positive("vocabulary_size", budget=budget)
        self.budget = budget
        self.name = param_name("vocabulary_size", budget=budget)

    def compute(self, texts: TextSet) -> MetricResult:
        per_text = lowercase_tokens(texts.texts)
        tokens = _flat(per_text)
        used = min(len(tokens), self.budget)
        ttr = len(set(tokens[:used])) / used if used else float("nan")
        return MetricResult(
            per_item={"types": np.array([len(set(t)) for t in per_text], dtype=np.float64)},
            aggregates={"types": float(len(set(tokens))), "n_tokens": float(len(tokens)),
                        "ttr_budget": ttr, "budget_tokens": float(used)},
        )


# ------------------------------------------------------------------------------------------
# Rare-tail coverage
# ------------------------------------------------------------------------------------------


def human_tail(tokens: Sequence[str], max_count: int) -> set[str]:
    """The types occurring at most ``max_count`` times in ``tokens`` (hapax and dis legomena
    for max_count = 2)."""
    return {w for w, c in Counter(tokens).items() if c <= max_count}


class RareTailCoverage:
    """Share of the human references' rare vocabulary the set uses at least once:

        coverage = |T ∩ types(set)| / |T|,   T = {w : 1 ≤ count_human(w) ≤ max_count}

    T — the tail — is defined by frequency (default: words seen once or twice in the human
    references), not by rank, so ties at a rank cut-off cannot make it arbitrary. A collapsed
    model drifts to its own frequent words and stops reaching the long tail human writers use
    (Shumailov et al. 2024 report tails vanishing first under recursive training). Higher is
    better; the human set scores 1 against itself. Like any type count it grows with the set's
    length: compare sets answering the same prompts.

    Per item: the share of a text's tokens that belong to T (NaN for a text with no tokens).
    """

    family = "vocabulary"
    higher_is_better = True
    primary = "value"
    needs = frozenset({"human"})

    def __init__(self, *, max_count: int = 2) -> None:
        _check_positive("rare_tail_coverage", max_count=max_count)
        self.max_count = max_count
        self.name = param_name("rare_tail_coverage", max_count=max_count)

    def compute(self, texts: TextSet) -> MetricResult:
        if texts.human is None:
            raise ValueError(f"{self.name}: text set {texts.name!r} has no human reference set")
        tail = human_tail(_flat(lowercase_tokens(texts.human.texts)), self.max_count)
        per_text = lowercase_tokens(texts.texts)
        used = set().union(*per_text) if per_text else set()
        covered = len(tail & used)
        in_tail = tail.__contains__
        share = np.array([sum(map(in_tail, t)) / len(t) if t else np.nan for t in per_text], dtype=np.float64)
        return MetricResult(
            per_item={"tail_share": share},
            aggregates={"value": covered / len(tail) if tail else float("nan"),
                        "tail_types": float(len(tail)), "covered_types": float(covered)},
            details={} if tail else {"reason": "the human references have no tail types"},
        )
