"""Run a metric suite on one text set and attach bootstrap confidence intervals.

Three kinds of interval, chosen by what the metric exposes:

* metrics whose aggregates are a function of their per-item values (they expose
  ``aggregate_items``, e.g. perplexity) get a percentile bootstrap of the per-item values — cheap,
  ``bootstrap`` resamples;
* metrics that resample themselves (``bootstrap_replicates``, MAUVE) get a normal interval on a
  range-respecting scale from their replicates (below);
* every other (corpus-level) metric is recomputed with the texts of one of ``jackknife_groups``
  random groups left out (delete-a-group jackknife; Efron & Tibshirani 1993, ch. 11), giving
  θ̂ ± t_(g−1) · SE_jack with SE_jack² = (g−1)/g · Σ_k (θ̂_(−k) − θ̄)². Not the bootstrap: resampling
  texts *with replacement* duplicates them, which moves set-level diversity and distance metrics
  (distinct-n, Self-BLEU over a pool, pairwise distances, MAUVE) so far that neither percentile nor
  basic bootstrap intervals contain the full-set value; leaving groups out never duplicates a text
  and every replicate has the same size, so the size-dependence of these metrics cancels out of
  the spread. The point estimate is always the full-set value. A metric that draws a random
  sample inside ``compute`` (aggregated Self-BLEU's ``sample``) exposes ``pinned(result, texts)``:
  its replicates keep the full set's draw (by text id, intersected with the kept texts) instead
  of drawing afresh, which would add the sampling noise to every replicate and widen the interval
  about 3x (600 texts, ``sample=100``).

**Intervals stay inside the metric's range** (``register_metric(range=...)``, audit a2). The
jackknife interval is built on a scale where the range is the whole real line and mapped back:
logit of (θ − lo)/(hi − lo) for a statistic bounded on both sides (MAUVE, JS divergence, shares),
log(θ − lo) for one bounded below (Fréchet distance, perplexity, Vendi), the identity otherwise:
g⁻¹(g(θ̂) ± t_(g−1) · SE_jack[g(θ̂_(−k))]). The SE is the jackknife of the transformed replicates
g(θ̂_(−k)) themselves — to first order the delta-method SE g′(θ̂)·SE_jack[θ̂], without assuming g is
linear over the replicates' spread. The interval is asymmetric on the raw scale (narrower towards a
near bound) and contains θ̂. When the estimate or a replicate sits on a bound (JS = 0,
MAUVE = 1 of a set against itself; within 1e-12 of the range's width, i.e. round-off, counts as on
it), the transform is infinite there and the raw-scale interval θ̂ ± t·SE_jack is clipped to the
range instead (counted in ``details[name]["clipped_intervals"]``): never NaN, never outside the
range, and [θ̂, θ̂] when every replicate equals the estimate. Percentile
bootstrap intervals respect the range by construction; they are clipped too, for safety.

**Distance-to-human metrics resample the human side too** (audit c4): the sampling error of the
human references is half of these metrics' uncertainty. Their jackknife replicates leave a group
of the human texts out as well — the references of the same prompts when the set answers them
(paired, :func:`~collapselab.metrics.base.human_pairing`; references no text answers are dealt
over the groups at random), an independent random partition otherwise — so SE_jack covers both
samples: for a smooth statistic, θ̂_(−k) − θ̂ is then the sum of the two samples' influences of
group k, and with independent partitions the cross terms average out (paired, they are the
within-prompt covariance, which belongs in the variance).

**Metrics with their own resampling.** A metric exposing ``bootstrap_replicates(texts, result,
n, rng)`` (MAUVE: resampled histograms over a quantization fitted once; a jackknife would
re-run k-means in every replicate and measure its noise) gets the same transformed-scale normal
interval, g⁻¹(g(θ̂) ± z · SD[g(θ*)]), from its ``n`` replicates.

A metric that cannot run on a set (e.g. human-text perplexity on training data, which has no
model of its own) is skipped and listed with its reason in ``details["skipped"]``; resamples on
which a metric fails are counted in ``details[name]["failed_resamples"]`` (jackknife replicates).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from collapselab.config.spec import MetricSpec
from collapselab.metrics.base import (
    METRICS,
    UNBOUNDED,
    Metric,
    MetricResult,
    Range,
    TextSet,
    build_metric,
    human_pairing,
    statistic_range,
    subset,
)
from collapselab.metrics.tables import AGGREGATE_COLUMNS, PER_ITEM_COLUMNS


def primary_statistic(metric: Metric, result: MetricResult) -> str:
    """The aggregate used by tests, concordance and plots: the metric's ``primary`` attribute,
    else ``value``, else ``mean``, else the first aggregate."""
    for key in (getattr(metric, "primary", None), "value", "mean"):
        if key and key in result.aggregates:
            return key
    return next(iter(result.aggregates))


def missing_inputs(metric: Metric, texts: TextSet) -> str | None:
    """Why a metric cannot run on a set, or None."""
    needs = getattr(metric, "needs", frozenset())
    checks = {
        "logprobs": texts.logprobs is None,
        "human_logprobs": texts.human_logprobs is None,
        "human": texts.human is None,
        "embeddings": texts.embeddings is None,
        "sentence_embeddings": texts.sentence_embeddings is None,
        "sentences": texts.sentences is None,
        "samples": texts.samples is None,
        "sample_embeddings": texts.sample_embeddings is None,
        "training_texts": texts.training_texts is None,
    }
    missing = [n for n in needs if checks.get(n)]
    return f"needs {', '.join(sorted(missing))}, which this set does not have" if missing else None


def _transform(bounds: Range) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """(g, g⁻¹) mapping the open range onto the real line: logit of the rescaled value for two
    bounds, log of the distance to the one bound, the identity for none."""
    lo, hi = bounds
    if lo is not None and hi is not None:
        width = hi - lo
        return (lambda x: np.log((x - lo) / (hi - x)),
                lambda y: lo + width / (1 + np.exp(-y)))
    if lo is not None:
        return (lambda x: np.log(x - lo), lambda y: lo + np.exp(y))
    if hi is not None:
        return (lambda x: np.log(hi - x), lambda y: hi - np.exp(y))
    return (lambda x: x, lambda y: y)


#: a value this close to a bound (relative to the range's width, or to 1 for a one-sided range) is on it:
#: MAUVE of two equal histograms comes out as 1 − 1e-16, whose logit (36.7) is round-off, not information
_ON_BOUND = 1e-12


def _inside(x: np.ndarray, bounds: Range) -> bool:
    """Whether every value lies strictly inside the range, by more than round-off."""
    lo, hi = bounds
    tol = _ON_BOUND * (hi - lo if lo is not None and hi is not None else 1.0)
    above = np.all(x > lo + tol) if lo is not None else True
    below = np.all(x < hi - tol) if hi is not None else True
    return bool(above and below)


def _clip(low: float, high: float, bounds: Range) -> tuple[float, float]:
    lo, hi = bounds
    return (float(np.clip(low, lo, hi)), float(np.clip(high, lo, hi)))


def _percentile_ci(samples: np.ndarray, confidence: float, bounds: Range = UNBOUNDED) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size < 2:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    low, high = np.percentile(samples, [100 * alpha, 100 * (1 - alpha)])
    return _clip(low, high, bounds)


def _normal_ci(estimate: float, replicates: np.ndarray, half: Callable[[np.ndarray], float],
               bounds: Range) -> tuple[tuple[float, float], bool]:
    """g⁻¹(g(θ̂) ± half(g(replicates))); the raw-scale interval clipped to the range when the
    estimate or a replicate is on a bound. Returns (interval, whether it was clipped)."""
    if np.all(replicates == estimate):  # no spread: the point itself, not g⁻¹(g(θ̂)) with its round-off
        return (float(estimate), float(estimate)), False
    if _inside(np.append(replicates, estimate), bounds):
        g, g_inv = _transform(bounds)
        centre, h = float(g(np.float64(estimate))), half(g(replicates))
        return (float(g_inv(np.float64(centre - h))), float(g_inv(np.float64(centre + h)))), False
    h = half(replicates)
    return _clip(estimate - h, estimate + h, bounds), True


def _jackknife_ci(replicates: np.ndarray, estimate: float, confidence: float,
                  bounds: Range = UNBOUNDED) -> tuple[tuple[float, float], bool]:
    """θ̂ ± t_(g−1)·SE_jack on the range-respecting scale; ((low, high), clipped)."""
    from scipy import stats

    replicates = replicates[np.isfinite(replicates)]
    g = replicates.size
    if g < 2 or not np.isfinite(estimate):
        return (float("nan"), float("nan")), False
    t = float(stats.t.ppf(0.5 + confidence / 2, g - 1))

    def half(x: np.ndarray) -> float:
        return t * float(np.sqrt((g - 1) / g * np.sum((x - x.mean()) ** 2)))

    return _normal_ci(estimate, replicates, half, bounds)


def _bootstrap_normal_ci(replicates: np.ndarray, estimate: float, confidence: float,
                         bounds: Range) -> tuple[tuple[float, float], bool]:
    """θ̂ ± z·SD of bootstrap replicates on the range-respecting scale."""
    from scipy import stats

    replicates = replicates[np.isfinite(replicates)]
    if replicates.size < 2 or not np.isfinite(estimate):
        return (float("nan"), float("nan")), False
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return _normal_ci(estimate, replicates, lambda x: z * float(np.std(x, ddof=1)), bounds)


def _paired_human_groups(texts: TextSet, groups: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """For each group of the set's texts, the human texts to leave out with it: the references of
    the same prompts when the set answers them (:func:`~collapselab.metrics.base.human_pairing`),
    plus an equal share of the references no text of the set answers, dealt at random; an
    independent random partition of the references when the set is not paired with them."""
    n_human = len(texts.human)
    pairs = human_pairing(texts)
    if pairs is None:
        return np.array_split(rng.permutation(n_human), len(groups))
    unmatched = np.array_split(rng.permutation(np.setdiff1d(np.arange(n_human), pairs)), len(groups))
    return [np.concatenate([pairs[group], extra]).astype(np.int64) for group, extra in zip(groups, unmatched,
                                                                                           strict=True)]


def bootstrap_intervals(metric: Metric, texts: TextSet, result: MetricResult, *, bootstrap: int,
                        jackknife_groups: int, confidence: float, seed: int,
                        metric_name: str | None = None) -> tuple[dict[str, tuple[float, float]], int, int]:
    """Intervals for every aggregate (see the module docstring); returns (intervals, failed
    replicates, intervals clipped to the range). ``metric_name`` is the registered name whose
    declared ranges apply (none: unbounded)."""
    rng = np.random.default_rng(seed)
    keys = list(result.aggregates)
    bounds = {k: statistic_range(metric_name, k) if metric_name else UNBOUNDED for k in keys}
    draws: dict[str, list[float]] = {k: [] for k in keys}
    failed = clipped = 0
    aggregate_items = getattr(metric, "aggregate_items", None)
    own = getattr(metric, "bootstrap_replicates", None)
    if aggregate_items is not None and result.per_item:
        values = next(iter(result.per_item.values()))
        n = len(values)
        for _ in range(bootstrap if n else 0):
            agg = aggregate_items(values[rng.integers(0, n, n)])
            for k in keys:
                draws[k].append(agg.get(k, np.nan))
    elif own is not None:
        for agg in own(texts, result, bootstrap, rng):
            for k in keys:
                draws[k].append(agg.get(k, np.nan))
        out = {}
        for k, v in draws.items():
            out[k], was = _bootstrap_normal_ci(np.asarray(v, dtype=float), float(result.aggregates[k]),
                                               confidence, bounds[k])
            clipped += was
        return out, failed, clipped
    elif jackknife_groups >= 2 and len(texts) > 2:
        n = len(texts)
        groups = np.array_split(rng.permutation(n), min(jackknife_groups, n))
        # a metric that draws a random sample inside compute keeps the full set's draw in every
        # replicate (else each replicate adds fresh sampling noise and the interval is too wide)
        replicate = metric.pinned(result, texts) if hasattr(metric, "pinned") else metric
        # a distance to the human references leaves human texts out too: both samples' error counts
        human_groups = (_paired_human_groups(texts, groups, rng)
                        if "human" in getattr(metric, "needs", ()) and texts.human is not None
                        and len(texts.human) > len(groups) else None)
        for k, group in enumerate(groups):
            kept = subset(texts, np.setdiff1d(np.arange(n), group))
            if human_groups is not None:
                kept.human = subset(texts.human, np.setdiff1d(np.arange(len(texts.human)), human_groups[k]))
            try:
                agg = replicate.compute(kept).aggregates
            except Exception:  # a replicate too degenerate for the metric
                failed += 1
                continue
            for k2 in keys:
                draws[k2].append(agg.get(k2, np.nan))
        out = {}
        for k, v in draws.items():
            out[k], was = _jackknife_ci(np.asarray(v, dtype=float), float(result.aggregates[k]), confidence,
                                        bounds[k])
            clipped += was
        return out, failed, clipped
    return {k: _percentile_ci(np.asarray(v, dtype=float), confidence, bounds[k]) for k, v in draws.items()}, \
        failed, clipped


def evaluate_textset(
    texts: TextSet,
    specs: Sequence[MetricSpec],
    labels: dict[str, Any],
    *,
    bootstrap: int = 1000,
    jackknife_groups: int = 20,
    confidence: float = 0.95,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """All metrics on one set → (aggregates table, per-item table, details)."""
    agg_rows: list[dict[str, Any]] = []
    item_frames: list[pd.DataFrame] = []
    details: dict[str, Any] = {"skipped": {}}
    for spec in specs:
        metric = build_metric(spec.name, **spec.settings)
        info = METRICS.info(spec.name)
        reason = missing_inputs(metric, texts)
        if reason:
            details["skipped"][metric.name] = reason
            if progress:
                progress(1)
            continue
        started = time.perf_counter()
        result = metric.compute(texts)
        seconds = time.perf_counter() - started
        intervals, failed, clipped = bootstrap_intervals(metric, texts, result, bootstrap=bootstrap,
                                                         jackknife_groups=jackknife_groups, confidence=confidence,
                                                         seed=seed, metric_name=spec.name)
        primary = primary_statistic(metric, result)
        item_ids = texts.human.ids if result.details.get("per_item_ids") == "human" and texts.human else texts.ids
        first = next(iter(result.per_item.values()), None)
        n_undefined = int(result.aggregates.get("n_undefined", np.isnan(first).sum() if first is not None else 0))
        n_items = len(first) if first is not None else len(texts)
        for key, value in result.aggregates.items():
            low, high = intervals.get(key, (np.nan, np.nan))
            agg_rows.append({**labels, "metric": metric.name, "family": info["family"],
                             "higher_is_better": metric.higher_is_better, "statistic": key,
                             "primary": key == primary, "value": float(value), "ci_low": low, "ci_high": high,
                             "n": n_items, "n_undefined": n_undefined})
        for key, values in result.per_item.items():
            name = metric.name if len(result.per_item) == 1 else f"{metric.name}.{key}"
            item_frames.append(pd.DataFrame({**labels, "metric": name, "item_id": item_ids,
                                             "value": np.asarray(values, dtype=float)}))
        # keys starting with "_" are the metric's own working data (MAUVE's per-text buckets), not reported
        details[metric.name] = {**{k: v for k, v in result.details.items()
                                   if k != "per_item_ids" and not k.startswith("_")},
                                "seconds": round(seconds, 4), "failed_resamples": failed,
                                "clipped_intervals": clipped,
                                "primary": primary}
        if progress:
            progress(1)
    aggregates = pd.DataFrame(agg_rows, columns=AGGREGATE_COLUMNS)
    per_item = (pd.concat(item_frames, ignore_index=True) if item_frames
                else pd.DataFrame(columns=PER_ITEM_COLUMNS))[PER_ITEM_COLUMNS]
    return aggregates, per_item, details
