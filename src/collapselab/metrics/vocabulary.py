"""Vocabulary family: how many word types a set uses, how fast new ones appear, and how much of
the human references' rare vocabulary it reaches.

Every metric here reads the same tokens: each text markdown-stripped
(:func:`collapselab.metrics.text.plain_text`, the lexical family's stripping — the study removed
``#`` and ``*`` before its Heaps tokenization), lower-cased, then split by
:func:`collapselab.metrics.text.word_tokenize` (the study's "lower-cased, word-tokenized"
outputs; NLTK Treebank tokens, punctuation marks included). :func:`lowercase_tokens` caches tokens
per text, so the three metrics of one set, its interval replicates and the human set every
condition is compared with tokenize once.

Every count here grows with the number of tokens it is taken over, so each metric's **primary**
statistic is measured on a common token budget (:mod:`collapselab.metrics.budget`: the first
``token_budget`` tokens of the texts in a seeded, id-keyed order; NaN with the reason when a set is
shorter); the whole-set statistic (the study's) is kept as a secondary one, and
``token_budget: null`` makes it primary again.

* ``heaps`` — Heaps' law V = K·N^β fitted to the vocabulary-growth curve (Experiment 1).
* ``vocabulary_size`` — distinct types after N tokens (at the budget and at a few fixed N), and
  over the whole set.
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
from collapselab.metrics.budget import (
    DEFAULT_TOKEN_BUDGET,
    budget_prefix,
    check_budget,
    check_seed,
    short_reason,
)
from collapselab.metrics.text import plain_text, simple_tokens, word_tokenize

Tokens = tuple[tuple[str, ...], ...]
Tokenizer = Literal["word", "simple"]

# Per-text caches, not per-set: a bootstrap resample (texts drawn with replacement) and the
# human set every condition is compared with then hit the cache. 8,192 texts hold a few sets
# and the human references; interning shares each type's string across texts (memory, and
# faster set/dict ops).


@functools.lru_cache(maxsize=8192)
def _word_tokens(text: str) -> tuple[str, ...]:
    return tuple(map(sys.intern, word_tokenize(plain_text(text).lower())))


@functools.lru_cache(maxsize=8192)
def _simple_tokens(text: str) -> tuple[str, ...]:
    return tuple(map(sys.intern, simple_tokens(plain_text(text))))  # simple_tokens lower-cases itself


def lowercase_tokens(texts: Sequence[str], tokenizer: Tokenizer = "word") -> Tokens:
    """The lower-cased tokens of each markdown-stripped text (:func:`~collapselab.metrics.text.plain_text`):
    NLTK Treebank (``word``, the study's word counts) or the fast regex tokens of the n-gram
    statistics (``simple``); see :mod:`collapselab.metrics.text`."""
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


def _budget_tokens(texts: TextSet, budget: int | None, seed: int) -> list[str] | None:
    """The first ``budget`` word tokens of the set in its seeded order (None: fewer tokens, or no
    budget)."""
    if budget is None:
        return None
    prefix = budget_prefix(lowercase_tokens(texts.texts), texts.ids, budget, seed)
    return None if prefix is None else _flat(prefix)


class Heaps:
    """Heaps' law fit (Heaps 1978; Schaffelder & Gatt, Experiment 1 "vocabulary growth"):

        V(N) = K · N^β

    V(N) = distinct types among the first N tokens of the concatenated, markdown-stripped,
    lower-cased, word-tokenized texts, recorded every ``step`` tokens (N = step, 2·step, …); K and
    β by nonlinear least squares on those points. β (higher: new words keep coming) is the headline.

    The local exponent falls with N, so β fitted on a set's whole curve mostly measures how long
    the set is (one Zipf stream: β 0.675 on 120k tokens, 0.580 on 360k). Two fits:

    * ``beta_budget``, ``K_budget`` (primary) — fitted on the first ``token_budget`` tokens of the
      texts in a seeded, id-keyed order (:mod:`collapselab.metrics.budget`), the same N range for
      every set; NaN (reason in ``details["budget_reason"]``) when the set has fewer tokens;
    * ``beta``, ``K`` — the study's fit on the whole set's curve, texts in set order (comparable
      only between sets of equal length). ``token_budget: null`` keeps only this one (primary).

    Each fit needs ≥ 3 points (3·step tokens), else NaN with the reason in details. ``details``
    holds the whole-set curve (``N``, ``V``) for plotting. Set-level only: no per-item values.
    """

    family = "vocabulary"
    higher_is_better = True
    needs: frozenset[str] = frozenset()

    def __init__(self, *, step: int = 1000, token_budget: int | None = DEFAULT_TOKEN_BUDGET, seed: int = 0) -> None:
        _check_positive("heaps", step=step)
        self.step = step
        self.token_budget = check_budget("heaps", token_budget)
        self.seed = check_seed("heaps", seed)
        if self.token_budget is not None and self.token_budget < 3 * step:
            raise ConfigError(f"heaps: token_budget ({self.token_budget}) must hold at least 3 curve points "
                              f"(3 × step = {3 * step} tokens)")
        self.primary = "beta" if self.token_budget is None else "beta_budget"
        extra = {} if self.token_budget is None else {"token_budget": self.token_budget}
        self.name = param_name("heaps", step=step, **extra, **({"seed": seed} if seed else {}))

    def _fit(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray, float, float, str | None]:
        n, v = heaps_curve(tokens, self.step)
        if len(n) < 3:
            return n, v, float("nan"), float("nan"), (
                f"Heaps' law needs at least 3 curve points (3 × step = {3 * self.step} tokens); "
                f"the set has {len(tokens)} tokens")
        k, beta = fit_heaps(n, v)
        return n, v, k, beta, None

    def compute(self, texts: TextSet) -> MetricResult:
        tokens = _flat(lowercase_tokens(texts.texts))
        n, v, k, beta, reason = self._fit(tokens)
        details: dict = {"N": n.tolist(), "V": v.tolist()}
        if reason:
            details["reason"] = reason
        aggregates = {"beta": beta, "K": k, "n_tokens": float(len(tokens)), "n_points": float(len(n))}
        if self.token_budget is not None:
            budget = _budget_tokens(texts, self.token_budget, self.seed)
            if budget is None:
                details["budget_reason"] = short_reason(self.token_budget, len(tokens))
                k_b = beta_b = float("nan")
            else:
                _, _, k_b, beta_b, _ = self._fit(budget)  # budget ≥ 3·step: always 3 points
            aggregates = {"beta_budget": beta_b, "K_budget": k_b, "budget_tokens": float(self.token_budget),
                          **aggregates}
        return MetricResult(aggregates=aggregates, details=details)


# ------------------------------------------------------------------------------------------
# Vocabulary size
# ------------------------------------------------------------------------------------------

#: V(N) is also reported after these many tokens (``types_at_<N>``), so small runs get some values.
DEFAULT_CHECKPOINTS = (1_000, 10_000)


class VocabularySize:
    """Distinct markdown-stripped, lower-cased word types after a fixed number of tokens:

        types_budget = V(B) = |types among the first B tokens|,   ttr_budget = V(B) / B,

    the texts taken in a seeded, id-keyed order (:mod:`collapselab.metrics.budget`) and B =
    ``token_budget`` — the same B for every set, so sets of different lengths compare (Heaps' law:
    the raw type count grows with length). ``types_at_<N>`` is V(N) for each N of ``checkpoints``.
    Every one of them is NaN when the set has fewer tokens (reason in details), never measured on
    fewer. ``types``: the whole set's type count (secondary; compares only sets of equal length).
    Primary: ``types_budget`` (``types`` with ``token_budget: null``). Per item: each text's own
    distinct-type count. Higher is better.
    """

    family = "vocabulary"
    higher_is_better = True
    needs: frozenset[str] = frozenset()

    def __init__(self, *, token_budget: int | None = DEFAULT_TOKEN_BUDGET,
                 checkpoints: Sequence[int] = DEFAULT_CHECKPOINTS, seed: int = 0) -> None:
        self.token_budget = check_budget("vocabulary_size", token_budget)
        self.seed = check_seed("vocabulary_size", seed)
        if isinstance(checkpoints, (str, bytes)) or not isinstance(checkpoints, Sequence):
            raise ConfigError(f"vocabulary_size: checkpoints must be a list of positive integers, not {checkpoints!r}")
        for c in checkpoints:
            check_budget("vocabulary_size checkpoints", c, optional=False)
        self.checkpoints = tuple(sorted(set(checkpoints)))
        self.primary = "types" if self.token_budget is None else "types_budget"
        extra = {} if self.token_budget is None else {"token_budget": self.token_budget}
        self.name = param_name("vocabulary_size", **extra, **({"seed": seed} if seed else {}))

    def compute(self, texts: TextSet) -> MetricResult:
        per_text = lowercase_tokens(texts.texts)
        tokens = _flat(per_text)
        aggregates: dict[str, float] = {}
        details: dict[str, str] = {}
        longest = max((*self.checkpoints, self.token_budget or 0))
        # V after every token of the seeded order, up to the largest N asked for (or the set's end)
        prefix = budget_prefix(per_text, texts.ids, min(longest, len(tokens)), self.seed) if tokens else []
        seen = np.maximum.accumulate(token_codes(_flat(prefix))) + 1 if prefix else np.zeros(0, np.int64)

        def types_after(n: int) -> float:
            return float(seen[n - 1]) if n <= seen.size else float("nan")

        if self.token_budget is not None:
            v_b = types_after(self.token_budget)
            aggregates.update(types_budget=v_b, ttr_budget=v_b / self.token_budget,
                              budget_tokens=float(self.token_budget))
            if np.isnan(v_b):
                details["budget_reason"] = short_reason(self.token_budget, len(tokens))
        aggregates.update({f"types_at_{n}": types_after(n) for n in self.checkpoints})
        aggregates.update(types=float(len(set(tokens))), n_tokens=float(len(tokens)))
        return MetricResult(
            per_item={"types": np.array([len(set(t)) for t in per_text], dtype=np.float64)},
            aggregates=aggregates, details=details,
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

        coverage = |T ∩ types(S)| / |T|,   T = {w : 1 ≤ count_human(w) ≤ max_count}

    T — the tail — is defined by frequency over the whole human reference set (default: words
    seen once or twice), not by rank, so ties at a rank cut-off cannot make it arbitrary; it is
    the same yardstick for every set of a run. A collapsed model drifts to its own frequent words
    and stops reaching the long tail human writers use (Shumailov et al. 2024 report tails
    vanishing first under recursive training). Higher is better.

    Like any type count it grows with the length of S, so two versions:

    * ``value_budget`` (primary) — S = the first ``token_budget`` tokens of the set in its seeded,
      id-keyed order (:mod:`collapselab.metrics.budget`); NaN with the reason when the set is shorter;
    * ``value`` — S = the whole set (the human set scores 1 against itself); primary with
      ``token_budget: null``.

    Per item: the share of a text's tokens that belong to T (NaN for a text with no tokens).
    """

    family = "vocabulary"
    higher_is_better = True
    needs = frozenset({"human"})

    def __init__(self, *, max_count: int = 2, token_budget: int | None = DEFAULT_TOKEN_BUDGET, seed: int = 0) -> None:
        _check_positive("rare_tail_coverage", max_count=max_count)
        self.max_count = max_count
        self.token_budget = check_budget("rare_tail_coverage", token_budget)
        self.seed = check_seed("rare_tail_coverage", seed)
        self.primary = "value" if self.token_budget is None else "value_budget"
        extra = {} if self.token_budget is None else {"token_budget": self.token_budget}
        self.name = param_name("rare_tail_coverage", max_count=max_count, **extra, **({"seed": seed} if seed else {}))

    def compute(self, texts: TextSet) -> MetricResult:
        if texts.human is None:
            raise ValueError(f"{self.name}: text set {texts.name!r} has no human reference set")
        tail = human_tail(_flat(lowercase_tokens(texts.human.texts)), self.max_count)
        per_text = lowercase_tokens(texts.texts)
        used = set().union(*per_text) if per_text else set()
        covered = len(tail & used)
        in_tail = tail.__contains__
        share = np.array([sum(map(in_tail, t)) / len(t) if t else np.nan for t in per_text], dtype=np.float64)
        nan = float("nan")
        aggregates = {"value": covered / len(tail) if tail else nan,
                      "tail_types": float(len(tail)), "covered_types": float(covered)}
        details = {} if tail else {"reason": "the human references have no tail types"}
        if self.token_budget is not None:
            budget = _budget_tokens(texts, self.token_budget, self.seed)
            if budget is None:
                details["budget_reason"] = short_reason(self.token_budget, sum(map(len, per_text)))
            covered_b = len(tail & set(budget)) if budget is not None else nan
            aggregates = {"value_budget": covered_b / len(tail) if tail and budget is not None else nan,
                          "covered_types_budget": float(covered_b), "budget_tokens": float(self.token_budget),
                          **aggregates}
        return MetricResult(per_item={"tail_share": share}, aggregates=aggregates, details=details)
