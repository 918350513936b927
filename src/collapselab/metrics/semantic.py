"""Semantic family: how spread out a set's texts are in embedding space.

Both metrics read the shared embeddings (all-MiniLM-L6-v2 by default, unit-norm rows; see
:mod:`collapselab.metrics.embeddings`) and never build an n×n matrix, so they run on every
sentence of a set instead of a sample.

* ``semantic_diversity`` — mean pairwise cosine distance (Schaffelder & Gatt, Experiment 1).
* ``vendi`` — the Vendi score (Friedman & Dieng 2023), the effective number of distinct texts.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from collapselab.errors import ConfigError
from collapselab.metrics.base import MetricResult, TextSet, param_name
from collapselab.metrics.embeddings import Level, unit_embeddings

LEVELS: tuple[Level, ...] = ("sentence", "response")


def _check_level(metric: str, level: str) -> Level:
    if level not in LEVELS:
        raise ConfigError(f"{metric}: level must be one of {', '.join(LEVELS)}, not {level!r}")
    return level  # type: ignore[return-value]


def _undefined(reason: str, *keys: str) -> MetricResult:
    return MetricResult(aggregates={k: float("nan") for k in keys}, details={"reason": reason})


# ------------------------------------------------------------------------------------------
# Mean pairwise cosine distance in O(n·d)
# ------------------------------------------------------------------------------------------


def mean_pairwise_cosine_distance(e: np.ndarray) -> float:
    """Mean of 1 − e_i·e_j over all ordered pairs i ≠ j of the rows of ``e`` (unit rows).

    Σ_{i≠j} e_i·e_j = ‖Σ_i e_i‖² − Σ_i ‖e_i‖², so the mean is
    1 − (‖Σe‖² − Σ‖e_i‖²) / (n(n−1)) — O(n·d) time and O(d) memory instead of an n×n matrix.
    Computed in float64: the two terms are O(n²) and their difference must keep ~1e-12 relative.
    """
    n = e.shape[0]
    s = e.sum(axis=0)
    self_sim = float(np.einsum("ij,ij->", e, e))  # Σ‖e_i‖² (= n for unit rows)
    return 1.0 - (float(s @ s) - self_sim) / (n * (n - 1))


def per_row_cosine_distance(e: np.ndarray) -> np.ndarray:
    """For each row i, the mean of 1 − e_i·e_j over the other n − 1 rows:
    1 − (e_i·Σe − ‖e_i‖²)/(n − 1). Their plain mean is :func:`mean_pairwise_cosine_distance`."""
    n = e.shape[0]
    s = e.sum(axis=0)
    return 1.0 - (e @ s - np.einsum("ij,ij->i", e, e)) / (n - 1)


class SemanticDiversity:
    """Mean pairwise cosine distance of a set's embeddings (Schaffelder & Gatt, Experiment 1):

        D = 1/(n(n−1)) · Σ_{i≠j} (1 − cos(e_i, e_j))

    over the n sentence embeddings of the whole set (``level="sentence"``, the study's choice;
    the study sampled 5,000 sentences, here all are used, exactly) or over the n response
    embeddings (``level="response"``). Higher is more diverse.

    Per item (text t): the mean, over t's sentences, of each sentence's mean distance to every
    other sentence of the set (at response level: the text's mean distance to the other texts).
    D is the mean of the per-sentence values, so at sentence level D equals the per-item values
    averaged with weights = sentences per text (a text without sentences is NaN and weighs 0);
    at response level D is their plain mean.
    """

    family = "semantic"
    higher_is_better = True
    primary = "mean"

    def __init__(self, *, level: Level = "sentence") -> None:
        self.level = _check_level("semantic_diversity", level)
        self.name = param_name("semantic_diversity", level=level)
        self.needs = frozenset({"sentence_embeddings"} if level == "sentence" else {"embeddings"})

    def compute(self, texts: TextSet) -> MetricResult:
        e = unit_embeddings(texts, self.level, who=self.name)
        n = e.shape[0]
        if n < 2:
            return _undefined(f"needs at least 2 {self.level}s, got {n}", "mean")
        per_row = per_row_cosine_distance(e)
        if self.level == "response":
            per_item = per_row
        else:
            if texts.sentence_owner is None:
                raise ValueError(f"{self.name}: text set {texts.name!r} has no sentence_owner")
            owner = np.asarray(texts.sentence_owner)
            counts = np.bincount(owner, minlength=len(texts)).astype(np.float64)
            sums = np.bincount(owner, weights=per_row, minlength=len(texts))
            per_item = np.divide(sums, counts, out=np.full(len(texts), np.nan), where=counts > 0)
        return MetricResult(
            per_item={"distance": per_item},
            aggregates={"mean": mean_pairwise_cosine_distance(e), "n_units": float(n)},
        )


# ------------------------------------------------------------------------------------------
# Vendi score
# ------------------------------------------------------------------------------------------


def vendi_from_unit_rows(x: np.ndarray) -> float:
    """exp(−Σ λ log λ) over the eigenvalues λ of K/n, K = X Xᵀ (cosine kernel, unit rows).

    K/n = X Xᵀ/n and Xᵀ X/n share their non-zero eigenvalues, so the smaller of the two is
    decomposed: d×d (O(n·d²)) when n > d — the usual case — and n×n otherwise.
    """
    n, d = x.shape
    gram = (x.T @ x) if n > d else (x @ x.T)
    lam = scipy.linalg.eigvalsh(gram / n)
    lam = lam[lam > 0]  # round-off gives tiny negatives; 0·log 0 = 0
    return float(np.exp(-np.sum(lam * np.log(lam))))


class Vendi:
    """Vendi score (Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation Metric for
    Machine Learning") with the cosine-similarity kernel on the embeddings:

        VS = exp(−Σ_i λ_i log λ_i),   λ = eigenvalues of K/n,   K_ij = cos(e_i, e_j)

    the exponential of the Shannon entropy of K/n's spectrum (order q = 1): the effective number
    of distinct items, from 1 (all identical) to n (all orthogonal; at most d with d-dimensional
    embeddings). Higher is more diverse. Matches ``vendi_score.vendi.score_dual``. Set-level only:
    no per-item values.
    """

    family = "semantic"
    higher_is_better = True
    primary = "value"

    def __init__(self, *, level: Level = "response") -> None:
        self.level = _check_level("vendi", level)
        self.name = param_name("vendi", level=level)
        self.needs = frozenset({"sentence_embeddings"} if level == "sentence" else {"embeddings"})

    def compute(self, texts: TextSet) -> MetricResult:
        x = unit_embeddings(texts, self.level, who=self.name)
        if x.shape[0] == 0:
            return _undefined("no embeddings", "value")
        return MetricResult(aggregates={"value": vendi_from_unit_rows(x), "n_units": float(x.shape[0])})
