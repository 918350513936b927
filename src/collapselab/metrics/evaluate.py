"""Run a metric suite on one text set and attach bootstrap confidence intervals.

Two kinds of interval, both percentile bootstrap over the set's texts:

* metrics whose aggregates are a function of their per-item values (they expose
  ``aggregate_items``, e.g. perplexity) resample the per-item values — cheap, ``bootstrap``
  resamples;
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
from collapselab.metrics.base import METRICS, Metric, MetricResult, TextSet, build_metric, subset
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
    }
    missing = [n for n in needs if checks.get(n)]
    return f"needs {', '.join(sorted(missing))}, which this set does not have" if missing else None


def _percentile_ci(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size < 2:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    low, high = np.percentile(samples, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def _jackknife_ci(replicates: np.ndarray, estimate: float, confidence: float) -> tuple[float, float]:
    from scipy import stats

    replicates = replicates[np.isfinite(replicates)]
    g = replicates.size
    if g < 2 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    se = float(np.sqrt((g - 1) / g * np.sum((replicates - replicates.mean()) ** 2)))
    half = float(stats.t.ppf(0.5 + confidence / 2, g - 1)) * se
    return estimate - half, estimate + half


def bootstrap_intervals(metric: Metric, texts: TextSet, result: MetricResult, *, bootstrap: int,
                        jackknife_groups: int, confidence: float,
                        seed: int) -> tuple[dict[str, tuple[float, float]], int]:
    """Intervals for every aggregate (see the module docstring); returns (intervals, failed replicates)."""
    rng = np.random.default_rng(seed)
    keys = list(result.aggregates)
    draws: dict[str, list[float]] = {k: [] for k in keys}
    failed = 0
    aggregate_items = getattr(metric, "aggregate_items", None)
    if aggregate_items is not None and result.per_item:
        values = next(iter(result.per_item.values()))
        n = len(values)
        for _ in range(bootstrap if n else 0):
            agg = aggregate_items(values[rng.integers(0, n, n)])
            for k in keys:
                draws[k].append(agg.get(k, np.nan))
    elif jackknife_groups >= 2 and len(texts) > 2:
        n = len(texts)
        groups = np.array_split(rng.permutation(n), min(jackknife_groups, n))
        # a metric that draws a random sample inside compute keeps the full set's draw in every
        # replicate (else each replicate adds fresh sampling noise and the interval is too wide)
        replicate = metric.pinned(result, texts) if hasattr(metric, "pinned") else metric
        for group in groups:
            keep = np.setdiff1d(np.arange(n), group)
            try:
                agg = replicate.compute(subset(texts, keep)).aggregates
            except Exception:  # a replicate too degenerate for the metric
                failed += 1
                continue
            for k in keys:
                draws[k].append(agg.get(k, np.nan))
        return {k: _jackknife_ci(np.asarray(v, dtype=float), float(result.aggregates[k]), confidence)
                for k, v in draws.items()}, failed
    return {k: _percentile_ci(np.asarray(v, dtype=float), confidence) for k, v in draws.items()}, failed


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
        intervals, failed = bootstrap_intervals(metric, texts, result, bootstrap=bootstrap,
                                                jackknife_groups=jackknife_groups, confidence=confidence,
                                                seed=seed)
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
        details[metric.name] = {**{k: v for k, v in result.details.items() if k != "per_item_ids"},
                                "seconds": round(seconds, 4), "failed_resamples": failed,
                                "primary": primary}
        if progress:
            progress(1)
    aggregates = pd.DataFrame(agg_rows, columns=AGGREGATE_COLUMNS)
    per_item = (pd.concat(item_frames, ignore_index=True) if item_frames
                else pd.DataFrame(columns=PER_ITEM_COLUMNS))[PER_ITEM_COLUMNS]
    return aggregates, per_item, details
