"""Exact expectations for the simplest collapse loop: a categorical distribution over types,
refitted by maximum likelihood on n samples of itself every generation.

Setting (the toy backend, :mod:`collapselab.models.toy`, with :func:`collapselab.train.toy.train_toy`):
the true distribution p over K types; generation 0's data are n i.i.d. samples of p, and the
model fitted in generation g is p̂_g, the empirical distribution of its training data.

* ``replace`` — generation g ≥ 1's data are n samples of p̂_{g−1}, and p̂_g is fitted on them
  alone. Per type, the count c_g = n·p̂_{g,i} is the Wright–Fisher chain
  c_0 ~ Bin(n, p_i), c_{g+1} | c_g ~ Bin(n, c_g / n), with 0 absorbing: a type once lost never
  returns, and the chain fixes on one type (Shumailov et al. 2024, "AI models collapse when
  trained on recursively generated data", Nature 631; Seddik et al. 2024, "How bad is training
  on synthetic data? A statistical analysis of language model collapse", COLM).
* ``accumulate`` — generation g ≥ 1 draws n samples of p̂_{g−1} and p̂_g is fitted on all
  (g + 1)·n samples so far (Gerstgrasser et al. 2024, "Is model collapse inevitable? Breaking
  the curse of recursion by accumulating real and synthetic data"). Per type, the cumulative count
  C_g = Σ_{k ≤ g} c_k is a Markov chain: C_0 ~ Bin(n, p_i), C_g = C_{g−1} + c_g with
  c_g | C_{g−1} ~ Bin(n, C_{g−1} / (g·n)).

Each type's marginal is a binomial chain because a multinomial's margins are binomial and the
fitted probability of a type depends on its own count alone; so an expectation that is a sum over
types (distinct types, squared error, Gini–Simpson) is exact from the per-type chains, though the
types are not independent. Types with equal p_i share a chain (grouped once).

Here ``n`` counts *tokens*: in the pipeline one generation's data are (train prompts × answer
length) tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.stats import binom

Mode = Literal["replace", "accumulate"]
MODES = ("replace", "accumulate")


def _check(p: np.ndarray | list[float], n: int, generations: int, mode: str) -> np.ndarray:
    """``p`` as a checked probability vector; ValueError names the bad argument."""
    arr = np.asarray(p, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"p must be a non-empty 1-D probability vector, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or abs(arr.sum() - 1.0) > 1e-9:
        raise ValueError(f"p must be non-negative and sum to 1 (sums to {arr.sum():.12g})")
    if int(n) != n or n < 1:
        raise ValueError(f"n (samples per generation) must be an integer ≥ 1, not {n!r}")
    if int(generations) != generations or generations < 1:
        raise ValueError(f"generations must be an integer ≥ 1, not {generations!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return arr


def _groups(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct positive probabilities and how many types have each (zero-probability types
    are never sampled and contribute nothing)."""
    values, multiplicity = np.unique(p[p > 0], return_counts=True)
    return values, multiplicity


def expected_distinct(p: np.ndarray | list[float], n: int, generations: int, mode: Mode = "replace",
                      of: Literal["samples", "training"] = "samples") -> np.ndarray:
    """E[number of distinct types] in generation g = 0 … generations − 1, exactly.

    ``of="samples"``: among generation g's n new samples (generation 0's are n samples of p);
    ``of="training"``: in generation g's training data (the same for ``replace``; for
    ``accumulate`` all (g + 1)·n samples so far, whose count only grows: a type once drawn stays).

    E[distinct] = Σ_i P(count_i > 0), each probability from the type's chain (module docstring),
    propagated as a probability vector over counts:

    * replace: P(c_0 = c) = Bin(c; n, p_i), then P(c_{g+1} = ·) = P(c_g = ·) · T with the
      (n + 1) × (n + 1) Wright–Fisher matrix T[c, c'] = Bin(c'; n, c/n); the answer is 1 − P(c_g = 0).
    * accumulate: P(C_0 = ·) = Bin(·; n, p_i); a new sample of generation g ≥ 1 is present with
      probability Σ_C P(C_{g−1} = C)·(1 − (1 − C/(g n))^n), and
      P(C_g = C + k) += P(C_{g−1} = C)·Bin(k; n, C/(g n)) (states 0 … (g + 1)·n). No approximation.

    Cost: O(generations · n²) per distinct probability value (replace), O(generations² · n²) (accumulate).
    """
    arr = _check(p, n, generations, mode)
    if of not in ("samples", "training"):
        raise ValueError(f"of must be 'samples' or 'training', not {of!r}")
    n = int(n)
    out = np.zeros(generations)
    counts = np.arange(n + 1)
    if mode == "replace":
        transition = binom.pmf(counts[None, :], n, counts[:, None] / n)  # row c: Bin(n, c/n)
    for value, multiplicity in zip(*_groups(arr), strict=True):
        dist = binom.pmf(counts, n, value)
        for g in range(generations):
            if mode == "replace":
                if g:
                    dist = dist @ transition
                out[g] += multiplicity * (1.0 - dist[0])
                continue
            if g == 0:
                out[g] += multiplicity * (1.0 - dist[0])
                continue
            states = np.arange(dist.size)  # C_{g−1} ∈ 0 … g·n
            rate = states / (g * n)
            present = 1.0 - (1.0 - rate) ** n
            step = binom.pmf(counts[None, :], n, rate[:, None])  # row C: Bin(k; n, C/(g n))
            new = np.zeros(dist.size + n)
            np.add.at(new, states[:, None] + counts[None, :], dist[:, None] * step)
            out[g] += multiplicity * (float(dist @ present) if of == "samples" else 1.0 - new[0])
            dist = new
    return out


def expected_sq_error(p: np.ndarray | list[float], n: int, generations: int, mode: Mode = "replace") -> np.ndarray:
    """E‖p̂_g − p‖² (squared Euclidean distance) of the model fitted in generation g = 0 … generations − 1.

    With H_0 = 1 − Σ p_i² (the Gini–Simpson index of p) and s_g = E‖p̂_g − p‖²:

    * replace: s_g = H_0 · (1 − (1 − 1/n)^(g+1)) → H_0 (the chain fixes on one type);
    * accumulate: s_g = s_{g−1} + (H_0 − s_{g−1}) / (n (g + 1)²), s_{−1} = 0, so
      s_g ≤ H_0 · Σ_k 1/(n k²) < H_0 · π² / (6 n) (bounded: Gerstgrasser et al. 2024's result for
      this model).

    Derivation. p̂_{−1} := p. Given p̂_{g−1}, a generation's n new samples have empirical
    distribution q_g with E[q_g] = p̂_{g−1} and E‖q_g − p̂_{g−1}‖² = (1 − Σ p̂_{g−1,i}²)/n
    (multinomial variance). Replace: p̂_g = q_g; accumulate: p̂_g = (g·p̂_{g−1} + q_g)/(g + 1), so
    p̂_g − p = (p̂_{g−1} − p) + (q_g − p̂_{g−1})/(g + 1). The noise has mean zero given the past (p̂
    is a martingale), so the cross term vanishes:
    s_g = s_{g−1} + E[1 − Σ p̂_{g−1,i}²] / (n·w_g²), w_g = 1 (replace) or g + 1 (accumulate). And
    E[1 − Σ p̂²] = H_0 − s (expand Σ p̂² = Σ p² + ‖p̂ − p‖² + 2 Σ p (p̂ − p), the last with mean 0),
    which gives both recursions; replace's solves to the closed form above.
    """
    arr = _check(p, n, generations, mode)
    h0 = 1.0 - float(np.sum(arr**2))
    out = np.zeros(generations)
    s = 0.0
    for g in range(generations):
        weight = 1 if mode == "replace" else g + 1
        s = s + (h0 - s) / (n * weight**2)
        out[g] = s
    return out


def expected_gini_simpson(p: np.ndarray | list[float], n: int, generations: int,
                          mode: Mode = "replace") -> np.ndarray:
    """E[1 − Σ p̂_{g,i}²], the expected Gini–Simpson index of the model fitted in generation g:
    H_0 − s_g with s_g of :func:`expected_sq_error` (see its derivation). Replace:
    H_0 (1 − 1/n)^(g+1), the heterozygosity decay of the Wright–Fisher model."""
    arr = _check(p, n, generations, mode)
    return (1.0 - float(np.sum(arr**2))) - expected_sq_error(arr, n, generations, mode)


@dataclass(frozen=True)
class GenerationCheck:
    """One generation's comparison: the seeds' mean, the expectation, the standard error of the
    mean and whether ``|mean − expected| ≤ z·se + atol``."""

    generation: int
    mean: float
    expected: float
    se: float
    seeds: int
    ok: bool

    @property
    def z_score(self) -> float:
        """(mean − expected) / se (±inf when se is 0 and they differ, 0 when they agree)."""
        diff = self.mean - self.expected
        if self.se > 0:
            return diff / self.se
        return 0.0 if diff == 0 else float(np.copysign(np.inf, diff))


@dataclass(frozen=True)
class ToleranceResult:
    """Per-generation checks of :func:`within_tolerance`; ``ok`` when every generation passes."""

    z: float
    checks: list[GenerationCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[int]:
        """The generations outside the tolerance."""
        return [c.generation for c in self.checks if not c.ok]

    def describe(self) -> str:
        """One line per generation (for assertion messages and logs)."""
        return "\n".join(f"generation {c.generation}: mean {c.mean:.6g} expected {c.expected:.6g} se {c.se:.3g} "
                         f"z {c.z_score:+.2f} {'ok' if c.ok else 'FAILED'}" for c in self.checks)


def within_tolerance(measured_per_seed: np.ndarray | list[list[float]], expected: np.ndarray | list[float],
                     z: float = 4.0, atol: float = 1e-9) -> ToleranceResult:
    """Whether the seeds' measurements agree with the expectation, generation by generation.

    ``measured_per_seed``: one row per seed (independent replicates), one column per generation;
    ``expected``: one value per generation. Per generation, mean = the seeds' mean, se = their
    sample standard deviation (ddof 1) / √(seeds), and the check passes when
    ``|mean − expected| ≤ z·se + atol`` (``atol`` only lets identical values pass when every seed
    measured the same number, se = 0).

    False-alarm rate: if the per-seed values are normal with the expected mean, (mean − expected)/se
    follows Student's t with seeds − 1 degrees of freedom, so one generation fails with probability
    P(|t_{k−1}| > z); for z = 4 that is 3.1e-3 with 10 seeds, 7.7e-4 with 20, 5.3e-4 with 25, 4.0e-4
    with 30 (6.3e-5 in the normal limit). A run of G generations fails somewhere with at most G times
    that. Counts of rare events are not normal with few seeds; the rates are then approximate.
    """
    measured = np.asarray(measured_per_seed, dtype=float)
    exp = np.asarray(expected, dtype=float)
    if measured.ndim != 2:
        raise ValueError(f"measured_per_seed must be a seeds × generations table, got shape {measured.shape}")
    if exp.shape != (measured.shape[1],):
        raise ValueError(f"expected must hold one value per generation ({measured.shape[1]}), got shape {exp.shape}")
    if measured.shape[0] < 2:
        raise ValueError(f"measured_per_seed needs at least 2 seeds for a standard error, got {measured.shape[0]}")
    if not np.all(np.isfinite(measured)) or not np.all(np.isfinite(exp)):
        raise ValueError("measured_per_seed and expected must be finite")
    if not z > 0:
        raise ValueError(f"z must be positive, not {z!r}")
    k = measured.shape[0]
    means = measured.mean(axis=0)
    ses = measured.std(axis=0, ddof=1) / np.sqrt(k)
    checks = [GenerationCheck(g, float(means[g]), float(exp[g]), float(ses[g]), k,
                              bool(abs(means[g] - exp[g]) <= z * ses[g] + atol))
              for g in range(measured.shape[1])]
    return ToleranceResult(z, checks)
