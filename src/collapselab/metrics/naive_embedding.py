"""Naive reference implementations of the semantic, distance and vocabulary metrics.

Each computes a metric the obvious way — an explicit n×n similarity matrix, a loop over pairs,
a ``Counter`` of n-grams, ``len(set(...))`` at every checkpoint — straight from its definition.
The benchmark times the suite against them and the tests use them as the independent
computation. Inputs are the same as the fast versions' (unit-norm embeddings, lower-cased token
lists), so results must agree to round-off. Never used by the pipeline.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.linalg
from scipy.optimize import curve_fit
from scipy.spatial.distance import jensenshannon


def semantic_diversity_matrix(e: np.ndarray) -> float:
    """Mean of 1 − cos over the off-diagonal of the full n×n cosine matrix (O(n²) memory)."""
    e = np.asarray(e, dtype=np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    n = len(e)
    off_diagonal = ~np.eye(n, dtype=bool)
    return float((1.0 - sim[off_diagonal]).mean())


def semantic_diversity_loop(e: np.ndarray) -> float:
    """The same, one cosine at a time over the n(n−1)/2 unordered pairs (pure Python loop)."""
    rows = [list(map(float, r)) for r in np.asarray(e, dtype=np.float64)]
    norms = [math.sqrt(sum(v * v for v in r)) for r in rows]
    total, pairs = 0.0, 0
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            cos = sum(a * b for a, b in zip(rows[i], rows[j], strict=True)) / (norms[i] * norms[j])
            total += 1.0 - cos
            pairs += 1
    return total / pairs


def per_item_distance_matrix(e: np.ndarray, owner: np.ndarray, n_items: int) -> np.ndarray:
    """Per text: mean over its sentences of the mean distance to every other sentence (n×n)."""
    e = np.asarray(e, dtype=np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    dist = 1.0 - e @ e.T
    np.fill_diagonal(dist, 0.0)
    per_row = dist.sum(axis=1) / (len(e) - 1)
    return np.array([per_row[owner == i].mean() if np.any(owner == i) else np.nan for i in range(n_items)])


def vendi_primal(e: np.ndarray) -> float:
    """Vendi score from the eigenvalues of the full n×n cosine kernel K/n."""
    e = np.asarray(e, dtype=np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    lam = scipy.linalg.eigvalsh(e @ e.T / len(e))
    lam = lam[lam > 0]
    return float(np.exp(-np.sum(lam * np.log(lam))))


def heaps_points_naive(tokens: Sequence[str], step: int = 1000) -> tuple[list[int], list[int]]:
    """(N, V) with V = ``len(set(tokens[:N]))`` recomputed at every N = step, 2·step, …"""
    ns = list(range(step, len(tokens) + 1, step))
    return ns, [len(set(tokens[:n])) for n in ns]


def heaps_naive(tokens: Sequence[str], step: int = 1000) -> tuple[float, float]:
    """(K, β) by plain ``curve_fit`` (default start) on the naive curve."""
    ns, vs = heaps_points_naive(tokens, step)
    (k, beta), _ = curve_fit(lambda n, k, b: k * n ** b, np.array(ns, float), np.array(vs, float),
                             maxfev=10_000)
    return float(k), float(beta)


def ngram_counter(per_text: Sequence[Sequence[str]], n: int) -> Counter[tuple[str, ...]]:
    """Counts of within-text n-grams (tuples of tokens)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for toks in per_text:
        counts.update(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    return counts


def js_divergence_naive(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]], n: int = 1) -> float:
    """JS divergence (bits) of the two n-gram distributions via ``Counter`` and scipy."""
    ca, cb = ngram_counter(a, n), ngram_counter(b, n)
    keys = sorted(set(ca) | set(cb))
    p = np.array([ca[k] for k in keys], dtype=np.float64)
    q = np.array([cb[k] for k in keys], dtype=np.float64)
    return float(jensenshannon(p, q, base=2) ** 2)


def frechet_naive(x: np.ndarray, y: np.ndarray) -> float:
    """FID formula with explicit means, covariances and ``scipy.linalg.sqrtm`` (no ε retry)."""
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def budget_prefix_naive(per_text: Sequence[Sequence[str]], ids: Sequence[str], budget: int,
                        seed: int = 0) -> list[str] | None:
    """The first ``budget`` tokens of the texts sorted by the hex SHA-256 of ``f"{seed}\\x00{id}"`` (ties in
    set order), one token at a time; None when the texts hold fewer."""
    keyed = sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}\x00{ids[i]}".encode()).hexdigest())
    out: list[str] = []
    for i in keyed:
        for tok in per_text[i]:
            if len(out) == budget:
                return out
            out.append(tok)
    return out if len(out) == budget else None


def vocabulary_size_naive(per_text: Sequence[Sequence[str]], ids: Sequence[str], budget: int,
                          seed: int = 0) -> tuple[int, float]:
    """(distinct types of the whole set, distinct types among the first ``budget`` tokens of the
    seeded order — NaN when the set is shorter) by plain loops."""
    types = {tok for toks in per_text for tok in toks}
    first = budget_prefix_naive(per_text, ids, budget, seed)
    return len(types), (float(len(set(first))) if first is not None else float("nan"))


def rare_tail_coverage_naive(per_text: Sequence[Sequence[str]], human: Sequence[Sequence[str]],
                             max_count: int) -> float:
    """Share of the human types seen ≤ max_count times that the set uses, by plain loops."""
    counts: dict[str, int] = {}
    for toks in human:
        for tok in toks:
            counts[tok] = counts.get(tok, 0) + 1
    tail = [w for w, c in counts.items() if c <= max_count]
    used = {tok for toks in per_text for tok in toks}
    return sum(1 for w in tail if w in used) / len(tail) if tail else float("nan")
