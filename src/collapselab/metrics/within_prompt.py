"""Within-prompt family: how different a model's k answers to the *same* prompt are.

A set here is ``collapse.samples``: item i is a prompt, ``TextSet.samples[i]`` its k answers and
``TextSet.sample_embeddings[i]`` their unit-norm sentence embeddings (k × d, the shared
all-MiniLM-L6-v2 pass). Cross-prompt diversity (semantic diversity, Vendi, distinct-n over a set of
one answer per prompt) cannot see per-prompt mode collapse: a model that gives every prompt its one
favourite answer still answers different prompts differently (NoveltyBench, Zhang et al. 2025).

Every metric has one value per prompt, and its aggregates are a function of those values
(``aggregate_items``), so intervals resample prompts (percentile bootstrap) and the statistics
compare conditions paired by prompt.

* ``distinct_at_k`` — NoveltyBench's distinct@k: equivalence classes among the k answers.
* ``within_prompt_distance`` — mean pairwise cosine distance among the k answers.
* ``within_prompt_distinct_ngrams`` — distinct n-grams / total n-grams pooled over the k answers.

A prompt with fewer than 2 answers is NaN (one answer shows no diversity, and counting it as a
single class would report it as collapsed).
"""

from __future__ import annotations

from collections.abc import Sequence, Sized

import numpy as np

from collapselab.errors import ConfigError
from collapselab.metrics.base import MetricResult, TextSet, param_name
from collapselab.metrics.embeddings import unit_rows
from collapselab.metrics.semantic import mean_pairwise_cosine_distance
from collapselab.metrics.text import plain_text, simple_tokens, summarize

#: cosine similarity at or above which two answers count as the same (distinct@k's default). With
#: all-MiniLM-L6-v2, paraphrases of one answer score about 0.97, a short and a long statement of the
#: same fact about 0.78, two different poems on one theme 0.6–0.65 (measured on hand-written
#: answers): 0.9 merges rewordings and keeps different contents apart.
DEFAULT_THRESHOLD = 0.9


def _sample_embeddings(metric: str, texts: TextSet) -> list[np.ndarray]:
    if texts.sample_embeddings is None:
        raise ValueError(f"{metric}: text set {texts.name!r} has no sample_embeddings "
                         "(the k-samples embedding pass did not run)")
    if len(texts.sample_embeddings) != len(texts):
        raise ValueError(f"{metric}: {len(texts.sample_embeddings)} sample-embedding blocks for "
                         f"{len(texts)} prompts in {texts.name!r}")
    return [unit_rows(np.atleast_2d(e)) if np.size(e) else np.zeros((0, 0)) for e in texts.sample_embeddings]


def _k_details(blocks: Sequence[Sized]) -> dict[str, int]:
    ks = [len(b) for b in blocks]
    return {"k_min": min(ks), "k_max": max(ks)} if ks else {}


# ------------------------------------------------------------------------------------------
# distinct@k
# ------------------------------------------------------------------------------------------


def greedy_classes(e: np.ndarray, threshold: float) -> np.ndarray:
    """The equivalence class of each row of ``e`` (unit rows), by NoveltyBench's partition
    procedure: answers in order, each joins the first existing class whose *representative* (its
    first member) has cosine similarity ≥ ``threshold`` with it, else opens a new class. Labels are
    0, 1, … in order of opening.

    Representative linkage, as NoveltyBench compares a generation with one member per class, not
    any-member (single) linkage: single linkage chains — a, b, c with a≈b and b≈c but a≉c would be one
    class — so a slow drift across k answers would count as one answer. The result depends on the
    answers' order (the sampling order, which is random)."""
    sim = e @ e.T
    representatives: list[int] = []
    labels = np.empty(len(e), dtype=np.int64)
    for i in range(len(e)):
        for c, r in enumerate(representatives):
            if sim[i, r] >= threshold:
                labels[i] = c
                break
        else:
            labels[i] = len(representatives)
            representatives.append(i)
    return labels


class DistinctAtK:
    """distinct@k (Zhang et al. 2025, "NoveltyBench: Evaluating Language Models for Humanlike
    Diversity"): the number of equivalence classes among a prompt's k answers,

        distinct_k = |{classes of the greedy partition of the k answers}|,  1 ≤ distinct_k ≤ k,

    where two answers are equivalent when the cosine similarity of their embeddings is ≥
    ``threshold`` (default 0.9, :data:`DEFAULT_THRESHOLD`), and the partition is NoveltyBench's
    greedy one with representative linkage (:func:`greedy_classes`). NoveltyBench judges
    equivalence with a fine-tuned DeBERTa classifier; an embedding threshold is the cheap,
    model-free stand-in, so values compare conditions of one run, not NoveltyBench's leaderboard.

    Per prompt: distinct_k (NaN for fewer than 2 answers). Aggregates: ``mean`` (primary),
    ``median``, ``sd``, ``min``, ``max``, ``n``, ``n_undefined`` of the per-prompt counts, and
    ``collapsed`` — the share of prompts whose k answers form a single class (lower is better, unlike
    the metric's direction). The count grows with k: compare sets with the same k
    (``details`` gives ``k_min``/``k_max``). Higher is more diverse.
    """

    family = "within-prompt"
    higher_is_better = True
    primary = "mean"
    needs = frozenset({"sample_embeddings"})

    def __init__(self, *, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not -1.0 < threshold <= 1.0:
            raise ConfigError(f"distinct_at_k: threshold is a cosine similarity in (-1, 1], not {threshold!r}")
        self.threshold = float(threshold)
        self.name = param_name("distinct_at_k", threshold=threshold)

    def compute(self, texts: TextSet) -> MetricResult:
        blocks = _sample_embeddings(self.name, texts)
        counts = np.array([float(greedy_classes(e, self.threshold).max() + 1) if len(e) >= 2 else np.nan
                           for e in blocks])
        return MetricResult(per_item={"distinct": counts}, aggregates=self.aggregate_items(counts),
                            details=_k_details(blocks))

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        """The summary of the per-prompt counts and the share of single-class prompts."""
        values = np.asarray(values, dtype=np.float64)
        valid = values[~np.isnan(values)]
        return summarize(values) | {"collapsed": float(np.mean(valid == 1)) if valid.size else float("nan")}


# ------------------------------------------------------------------------------------------
# Mean pairwise distance within a prompt
# ------------------------------------------------------------------------------------------


class WithinPromptDistance:
    """Mean pairwise cosine distance among a prompt's k answers,

        D_p = 1/(k(k−1)) · Σ_{i≠j} (1 − cos(e_i, e_j)),   0 ≤ D_p ≤ 2,

    the semantic-diversity formula (Schaffelder & Gatt, Experiment 1; :mod:`~collapselab.metrics.semantic`)
    applied within each prompt instead of across the set — the continuous counterpart of
    distinct@k (no threshold). Per prompt: D_p (NaN for fewer than 2 answers). Aggregates:
    ``mean`` (primary), ``median``, ``sd``, ``min``, ``max``, ``n``, ``n_undefined``. Higher is more
    diverse.
    """

    family = "within-prompt"
    higher_is_better = True
    primary = "mean"
    needs = frozenset({"sample_embeddings"})
    name = "within_prompt_distance"

    def compute(self, texts: TextSet) -> MetricResult:
        blocks = _sample_embeddings(self.name, texts)
        # clipped: for k identical answers the O(k·d) identity leaves ±1e-16 round-off around 0
        values = np.array([min(max(mean_pairwise_cosine_distance(e), 0.0), 2.0) if len(e) >= 2 else np.nan
                           for e in blocks])
        return MetricResult(per_item={"distance": values}, aggregates=self.aggregate_items(values),
                            details=_k_details(blocks))

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        """Mean, median, sd, min, max and counts of the per-prompt distances."""
        return summarize(values)


# ------------------------------------------------------------------------------------------
# Pooled distinct-n within a prompt
# ------------------------------------------------------------------------------------------


def pooled_distinct_ngrams(answers: Sequence[str], n: int) -> float:
    """Distinct n-grams / total n-grams over all of ``answers`` (n-grams do not cross answers;
    :func:`~collapselab.metrics.text.simple_tokens` of the markdown-stripped text, as distinct-n);
    NaN when there is no n-gram."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for answer in answers:
        tokens = simple_tokens(plain_text(answer))
        grams = list(zip(*(tokens[i:] for i in range(n)), strict=False))
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else float("nan")


class WithinPromptDistinctNgrams:
    """Distinct-n (Li et al. 2016) pooled over a prompt's k answers,

        d_p = |distinct n-grams of the k answers| / |n-grams of the k answers|,   0 < d_p ≤ 1,

    the lexical counterpart of :class:`WithinPromptDistance`: k answers that reuse each other's
    phrasing repeat n-grams across answers, so d_p falls. Tokens and n-grams as the lexical family's
    distinct-n (markdown stripped, simple tokens, no n-gram across answers). Like every distinct-n it
    falls as the answers get longer; compare it alongside length. Per prompt: d_p (NaN for fewer than
    2 answers or no n-gram). Aggregates: ``mean`` (primary), ``median``, ``sd``, ``min``, ``max``,
    ``n``, ``n_undefined``. Higher is more diverse.
    """

    family = "within-prompt"
    higher_is_better = True
    primary = "mean"
    needs = frozenset({"samples"})

    def __init__(self, *, n: int = 2) -> None:
        if not (isinstance(n, int) and n >= 1):
            raise ConfigError(f"within_prompt_distinct_ngrams: n must be an integer ≥ 1, not {n!r}")
        self.n = n
        self.name = param_name("within_prompt_distinct_ngrams", n=n)

    def compute(self, texts: TextSet) -> MetricResult:
        if texts.samples is None:
            raise ValueError(f"{self.name}: text set {texts.name!r} has no samples")
        values = np.array([pooled_distinct_ngrams(answers, self.n) if len(answers) >= 2 else np.nan
                           for answers in texts.samples], dtype=np.float64)
        return MetricResult(per_item={"distinct_ngrams": values}, aggregates=self.aggregate_items(values),
                            details=_k_details(texts.samples))

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        """Mean, median, sd, min, max and counts of the per-prompt ratios."""
        return summarize(values)
