"""Bootstrap resampling weights for Experiment 2's items, which are clustered.

A jailbreak item is a template × prompt: one template is filled with many prompts and one prompt
goes into many templates (and is asked plain too). Answers to the same template (a persona that
works, or not) and to the same prompt (a request every model refuses) are correlated, so an
interval that resamples *items* as if independent is too narrow for a statistic meant to hold
for other templates and prompts (audit c4). ``safety.jailbreak_bootstrap`` chooses what a
resample draws:

* ``two_way`` (default) — the **pigeonhole bootstrap** (Owen 2007, "The pigeonhole bootstrap",
  *Ann. Appl. Stat.* 1:386): draw T templates with replacement from the cell's T templates and,
  independently, P prompts from its P prompts; item (t, p) enters the resample w_t · w_p times,
  where w_t and w_p are how often t and p were drawn (an absent pair — a template not filled with
  that prompt — contributes nothing). McCullagh (2000, "Resampling and exchangeable arrays",
  *Bernoulli* 6:285) showed that no bootstrap reproduces the variance of a mean over a crossed
  design exactly; Owen (2007) shows this one errs on the safe side — in expectation it
  over-estimates the variance, by terms (the interaction/noise variance counted more than once)
  that shrink as templates and prompts grow — so its intervals are at worst a little wide.
  With few templates a percentile interval is still slightly short (a bootstrap over T clusters
  sees (T − 1)/T of their variance): 10 templates × 12 prompts with a strong template effect
  gave 94% coverage for a nominal 95% (``tests/unit/safety/test_clusters.py``).
* ``template`` — draw T templates with replacement; every item of a drawn template comes along
  (w_t). Right when templates carry the dependence and prompts are many; it ignores the
  correlation through shared prompts (same simulation: 91% coverage).
* ``item`` — every item independently (the percentile bootstrap of independent items, what
  collapselab did before): too narrow when templates or prompts matter (same simulation: 57%).

Plain items (no template) are resampled by prompt in every mode: weight w_p. In a cell that mixes
plain and jailbreak items (the "all" roll-up) a resample draws the prompts once for both kinds —
the same prompt is asked plain and wrapped — and the templates among the jailbreak templates
only, so the plain items are never dropped as a block. A cell without jailbreak items uses the
item stream of :func:`collapselab.stats.bootstrap._index_batches` (one item per prompt: the same
thing), so plain intervals are those of the item bootstrap exactly.

The stream: ``numpy.random.default_rng(seed)``; per batch of b resamples, first the template
draws ``integers(0, T, (b, T))``, then the prompt draws ``integers(0, P, (b, P))`` (templates and
prompts numbered in sorted order of their ids). The batch size depends only on T and P, so the
same (seed, T, P) gives the same resamples whatever the mode; :func:`cluster_draws` exposes it for
checks against a plain loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from collapselab.errors import DataError
from collapselab.stats.bootstrap import _BATCH_ELEMENTS, _index_batches

MODES = ("two_way", "template", "item")
#: what the interval of a cell resampled, per mode (the ``bootstrap`` column of the summary)
UNITS = {"two_way": "template×prompt", "template": "template", "item": "item"}


@dataclass(frozen=True)
class Clusters:
    """The cluster of every item of a cell: ``template`` (index into the cell's sorted template
    ids, −1 for a plain item) and ``prompt`` (index into its sorted prompt ids)."""

    template: np.ndarray
    prompt: np.ndarray
    n_templates: int
    n_prompts: int

    @property
    def has_templates(self) -> bool:
        return self.n_templates > 0


def clusters_of(template_ids: ArrayLike, prompt_ids: ArrayLike) -> Clusters:
    """Number the templates and prompts of a cell's items in sorted order of their ids (a missing
    template id marks a plain item)."""
    templates = np.asarray(template_ids, dtype=object)
    prompts = np.asarray(prompt_ids, dtype=object)
    if pd.isna(prompts).any():
        raise DataError("judged table, column 'prompt_id': a row has no prompt id; the cluster bootstrap "
                        "needs it (or set safety.jailbreak_bootstrap: item)")
    has = ~pd.isna(templates)
    t_codes = np.full(len(templates), -1, dtype=np.int64)
    t_uniques, t_inverse = np.unique(templates[has].astype(str), return_inverse=True)
    t_codes[has] = t_inverse
    p_uniques, p_inverse = np.unique(prompts.astype(str), return_inverse=True)
    return Clusters(t_codes, p_inverse.astype(np.int64).ravel(), len(t_uniques), len(p_uniques))


def cluster_draws(n_templates: int, n_prompts: int, n_resamples: int,
                  seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of (template draws b × T, prompt draws b × P): the indices drawn with replacement."""
    rng = np.random.default_rng(seed)
    rows = max(1, _BATCH_ELEMENTS // max(n_templates + n_prompts, 1))
    done = 0
    while done < n_resamples:
        b = min(rows, n_resamples - done)
        yield rng.integers(0, n_templates, size=(b, n_templates)), rng.integers(0, n_prompts, size=(b, n_prompts))
        done += b


def _counts(idx: np.ndarray, k: int) -> np.ndarray:
    """How often each of 0..k−1 appears in each row of ``idx`` (b × draws) → b × k."""
    b = idx.shape[0]
    flat = (idx + k * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * k).reshape(b, k).astype(float)


def resample_weights(n: int, clusters: Clusters | None, mode: str, n_resamples: int,
                     seed: int) -> Iterator[np.ndarray]:
    """Batches of resample weights (b × n): how many times each of the ``n`` items enters each
    resample. ``mode`` "item", or ``clusters`` None or without templates: the item bootstrap."""
    if mode not in MODES:
        raise ValueError(f"unknown jailbreak bootstrap {mode!r}; use one of {list(MODES)}")
    if mode == "item" or clusters is None or not clusters.has_templates:
        for idx in _index_batches(n, n_resamples, seed):
            yield _counts(idx, n)
        return
    jb = clusters.template >= 0
    for t_idx, p_idx in cluster_draws(clusters.n_templates, clusters.n_prompts, n_resamples, seed):
        w_t = _counts(t_idx, clusters.n_templates)
        weights = _counts(p_idx, clusters.n_prompts)[:, clusters.prompt]  # w_p for every item
        if mode == "template":
            weights[:, jb] = w_t[:, clusters.template[jb]]
        else:
            weights[:, jb] *= w_t[:, clusters.template[jb]]
        yield weights


def bootstrap_sums(values: np.ndarray, clusters: Clusters | None, mode: str, n_resamples: int,
                   seed: int) -> np.ndarray:
    """Weighted column sums of ``values`` (n × k) over each resample → B × k (one matrix product
    per batch: Σ_i w_bi · values_ij)."""
    return np.concatenate([w @ values for w in resample_weights(len(values), clusters, mode, n_resamples, seed)])


def enough_clusters(clusters: Clusters | None, mode: str) -> bool:
    """Whether a cluster bootstrap can say anything: at least two templates (and, two-way, two
    prompts). With one template its resamples cannot show how much templates differ."""
    if mode == "item" or clusters is None or not clusters.has_templates:
        return True
    return clusters.n_templates >= 2 and (mode == "template" or clusters.n_prompts >= 2)


def units(clusters: Clusters | None, mode: str) -> str:
    """What the interval of a cell resampled (``UNITS``; "item" for a cell without templates)."""
    if clusters is None or not clusters.has_templates:
        return "item"
    return UNITS[mode]
