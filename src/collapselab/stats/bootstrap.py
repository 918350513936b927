"""Bootstrap confidence intervals for a metric over the items of one text set.

Two entry points share one resampling stream and one interval computation:

* :func:`bootstrap_ci` — a statistic of per-item values (mean perplexity, median self-BLEU). The
  resamples are an index matrix (``n_resamples × n``) evaluated in one vectorised call per batch.
* :func:`bootstrap_ci_func` — a *corpus-level* statistic that must be recomputed from the
  resampled items themselves (a diversity over a resampled set of responses, a Heaps' law fit):
  the caller's ``fn(indices)`` is called once per resample (a loop).

For the same ``seed`` and ``n`` both draw exactly the same resamples, so ``bootstrap_ci(x, np.mean)``
equals ``bootstrap_ci_func(len(x), lambda i: x[i].mean())``.

Intervals (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13–14):

* **percentile**: the α/2 and 1 − α/2 quantiles of the B bootstrap statistics θ*_b
  (linear interpolation, as ``numpy.quantile``), α = 1 − confidence.
* **bca** (bias-corrected and accelerated): the quantiles are moved to
  α₁ = Φ(ẑ₀ + (ẑ₀ + z_{α/2}) / (1 − â(ẑ₀ + z_{α/2}))) and α₂ likewise with z_{1−α/2}, where
  ẑ₀ = Φ⁻¹((#{θ*_b < θ̂} + ½·#{θ*_b = θ̂}) / B) corrects the median bias and
  â = Σ_i (θ̄₍·₎ − θ₍ᵢ₎)³ / (6 [Σ_i (θ̄₍·₎ − θ₍ᵢ₎)²]^{3/2}) is the acceleration from the jackknife
  (leave-one-out) values θ₍ᵢ₎. Costs n extra evaluations of the statistic — for
  :func:`bootstrap_ci_func` that is n extra calls of ``fn``.

These are the definitions of ``scipy.stats.bootstrap`` (its tests compare against it); the resamples
themselves differ, so the intervals agree only up to Monte-Carlo error.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

Method = Literal["percentile", "bca"]

# Upper bound on the number of index entries materialised at once (≈ 16 MB of int64): the resample
# matrix is processed in row batches so memory stays bounded for large sets.
_BATCH_ELEMENTS = 2_000_000


class BootstrapResult(NamedTuple):
    """Point estimate on the full data and the two ends of the interval."""

    estimate: float
    low: float
    high: float


def _index_batches(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Resample index matrices (rows = resamples), in batches of at most ``_BATCH_ELEMENTS`` entries.

    The batch size depends only on ``n``, so a given (seed, n, n_resamples) always yields the same
    resamples — whichever entry point consumes them."""
    rng = np.random.default_rng(seed)
    rows = max(1, _BATCH_ELEMENTS // max(n, 1))
    done = 0
    while done < n_resamples:
        b = min(rows, n_resamples - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _leave_one_out_batches(n: int) -> Iterator[np.ndarray]:
    """Jackknife index matrices: row i holds every index but i (batched like the resamples)."""
    rows = max(1, _BATCH_ELEMENTS // max(n - 1, 1))
    base = np.arange(n - 1)
    for start in range(0, n, rows):
        left_out = np.arange(start, min(start + rows, n))
        # indices ≥ the left-out one shift up by one, skipping it
        yield base[None, :] + (base[None, :] >= left_out[:, None])


def _check(confidence: float, n_resamples: int, method: str) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be ≥ 1, got {n_resamples}")
    if method not in ("percentile", "bca"):
        raise ValueError(f"unknown method {method!r}; use 'percentile' or 'bca'")


def _interval(
    estimate: float, boot: np.ndarray, confidence: float, method: Method,
    jackknife: Callable[[], np.ndarray],
) -> BootstrapResult:
    """Percentile or BCa interval from the bootstrap statistics (``jackknife`` is only called for
    BCa). Non-finite bootstrap statistics (a resample where the statistic is undefined) are left out
    with a warning that says how many."""
    bad = ~np.isfinite(boot)
    if bad.any():
        warnings.warn(f"{int(bad.sum())} of {boot.size} bootstrap statistics are not finite; "
                      "the interval uses the others", RuntimeWarning, stacklevel=3)
        boot = boot[~bad]
    if boot.size == 0 or not np.isfinite(estimate):
        return BootstrapResult(float(estimate), np.nan, np.nan)
    if np.ptp(boot) == 0:  # every resample gives the same value: the interval is that point
        return BootstrapResult(float(estimate), float(boot[0]), float(boot[0]))
    alpha = (1 - confidence) / 2
    probs = np.array([alpha, 1 - alpha])
    if method == "bca":
        # ties count half, as scipy.stats.bootstrap does (matters for discrete statistics: median)
        share_below = ((boot < estimate).sum() + (boot <= estimate).sum()) / (2 * boot.size)
        z0 = ndtri(share_below)
        theta_i = jackknife()
        d = theta_i.mean() - theta_i
        denom = (d**2).sum() ** 1.5
        a = (d**3).sum() / (6 * denom) if denom > 0 else 0.0
        z = ndtri(probs)
        probs = ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
        if not np.all(np.isfinite(probs)):
            warnings.warn("BCa correction undefined (the estimate lies outside all bootstrap values)",
                          RuntimeWarning, stacklevel=3)
            return BootstrapResult(float(estimate), np.nan, np.nan)
    low, high = np.quantile(boot, probs)
    return BootstrapResult(float(estimate), float(low), float(high))


def _accepts_axis(statistic: Callable) -> bool:
    try:
        return "axis" in inspect.signature(statistic).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def bootstrap_ci(
    values: ArrayLike,
    statistic: Callable[..., float] = np.mean,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: Method = "percentile",
    vectorized: bool | None = None,
) -> BootstrapResult:
    """Bootstrap CI of ``statistic`` over per-item ``values`` (resampling items with replacement).

    ``statistic`` is called as ``statistic(matrix, axis=-1)`` on a batch of resampled rows when it
    takes an ``axis`` argument (numpy reductions do; ``vectorized=None`` detects this), else once per
    row. NaN values are dropped first — the caller counts them (``n_undefined`` in the aggregates
    table). Fewer than two values: the estimate with a NaN interval (no variability to resample).
    """
    _check(confidence, n_resamples, method)
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    n = x.size
    if n == 0:
        return BootstrapResult(np.nan, np.nan, np.nan)
    vec = _accepts_axis(statistic) if vectorized is None else vectorized

    def apply(matrix: np.ndarray) -> np.ndarray:
        if vec:
            return np.asarray(statistic(matrix, axis=-1), dtype=float)
        return np.array([statistic(row) for row in matrix], dtype=float)

    estimate = float(statistic(x))
    if n < 2:
        return BootstrapResult(estimate, np.nan, np.nan)
    boot = np.concatenate([apply(x[idx]) for idx in _index_batches(n, n_resamples, seed)])
    return _interval(estimate, boot, confidence, method,
                     lambda: np.concatenate([apply(x[idx]) for idx in _leave_one_out_batches(n)]))


def bootstrap_ci_func(
    n_items: int,
    fn: Callable[[np.ndarray], float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: Method = "percentile",
) -> BootstrapResult:
    """Bootstrap CI of a corpus-level statistic recomputed on each resample of the items.

    ``fn(indices)`` receives an integer array of item indices (with repeats) and returns the
    statistic of that resampled set; the estimate is ``fn(arange(n_items))``. One call per resample
    (seeded, same resamples as :func:`bootstrap_ci`); BCa adds ``n_items`` leave-one-out calls.
    Resamples where ``fn`` returns NaN/inf are left out with a warning.
    """
    _check(confidence, n_resamples, method)
    if n_items < 1:
        return BootstrapResult(np.nan, np.nan, np.nan)
    estimate = float(fn(np.arange(n_items)))
    if n_items < 2:
        return BootstrapResult(estimate, np.nan, np.nan)

    def run(batches: Iterator[np.ndarray]) -> np.ndarray:
        return np.array([float(fn(row)) for batch in batches for row in batch])

    boot = run(_index_batches(n_items, n_resamples, seed))
    return _interval(estimate, boot, confidence, method, lambda: run(_leave_one_out_batches(n_items)))
