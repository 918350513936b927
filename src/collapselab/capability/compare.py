"""Capability scores and each fine-tuned condition's difference from the vanilla model.

**Scores** (:func:`score_table`): lm-eval's own numbers per model run — every task and group it
reports, every metric and filter, with lm-eval's standard error (for a mean over items
``sd(ddof=1) / sqrt(n)``; for corpus-level metrics its bootstrap).

**Differences from vanilla** (:func:`differences`): per target × condition × generation × task ×
metric, on the items (documents) both the vanilla model and every seed of the condition answered —
lm-eval's ``limit`` takes the first documents of a task, so every model sees the same ones, matched
by ``(task, doc_id)`` and checked by ``doc_hash``. A group's items are its tasks' items pooled (the
difference of item means: lm-eval's group score when it weights its tasks by size, as MMLU does).
With several seeds, each item's value is its mean over the seeds (the items stay the unit: an
item's seeds are not independent).

* difference = mean_i(a_i − v_i), a_i the condition's value of item i, v_i the vanilla model's;
* interval: paired bootstrap of that mean (items resampled with replacement, both values of an
  item together; percentile interval; :func:`collapselab.stats.paired.bootstrap_mean_difference`);
* test, paired (``stats.paired``, the default):
  - a 0/1 metric (accuracy, exact match) with one seed: **McNemar's test**, exact form (McNemar
    1947; the exact conditional version: a two-sided binomial test of the b items only the
    condition gets right against the c only vanilla gets right, p = P(|B − n/2| ≥ |b − n/2|),
    B ~ Binomial(b + c, 1/2); ``scipy.stats.binomtest``) — the items both get right or both wrong
    say nothing about a difference;
  - otherwise (several seeds, or a graded metric): the **Wilcoxon signed-rank test** of the
    per-item differences (:func:`collapselab.stats.paired.signed_rank_test`, zeros dropped);
* unpaired (``stats.paired: false``): the bootstrap resamples each model's items on its own and the
  test is Mann–Whitney U (:func:`collapselab.stats.hypothesis.mann_whitney`);
* ``p_adj``: the p-values of one target's comparisons (every condition, generation, task and
  metric) adjusted as one family with ``stats.correction`` (Holm by default).

A metric whose per-item values are not numbers (BLEU's and F1's per-item tuples, aggregated over
the corpus) gets a row with its scores and no test; so does one whose lm-eval score is not the mean
of its item values (the note says which).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: lm-eval result keys that are not metrics
NOT_METRICS = ("alias", "name", "sample_len", "sample_count")
SCORE_COLUMNS = ["target", "condition", "seed", "generation", "task", "top_level", "group", "metric", "filter",
                 "value", "stderr", "n", "higher_is_better"]
DIFF_COLUMNS = ["target", "condition", "generation", "task", "metric", "filter", "higher_is_better", "n_items",
                "n_seeds", "vanilla", "value", "difference", "ci_low", "ci_high", "test", "statistic",
                "only_condition", "only_vanilla", "p", "p_adj", "paired", "confidence", "note"]


@dataclass
class CapabilityRun:
    """One capability stage's outputs: the model's cell, lm-eval's results document and its
    per-sample records."""

    target: str
    condition: str
    seed: int
    generation: int
    results: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def vanilla(self) -> bool:
        return self.condition == "vanilla"


def _float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def subtasks(results: dict[str, Any]) -> dict[str, list[str]]:
    """lm-eval's ``group_subtasks``: group → its direct members."""
    return {k: list(v or []) for k, v in (results.get("group_subtasks") or {}).items()}


def top_level(results: dict[str, Any]) -> list[str]:
    """The tasks and groups of a run that no group contains: what the configuration named (a tag
    stands for its tasks), in lm-eval's order."""
    members = {m for children in subtasks(results).values() for m in children}
    return [name for name in (results.get("results") or {}) if name not in members]


def leaves(results: dict[str, Any], name: str) -> list[str]:
    """The tasks under a group (recursively); a task is its own leaf."""
    groups = subtasks(results)
    if not groups.get(name):
        return [name]
    return [leaf for child in groups[name] for leaf in leaves(results, child)]


def metric_keys(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, filter) of one task's results entry (``"acc,none"`` → ("acc", "none"); the
    ``_stderr`` keys and the entry's labels left out)."""
    keys = []
    for key in entry:
        if "," not in key:
            continue
        metric, filt = key.split(",", 1)
        if metric in NOT_METRICS or metric.endswith("_stderr"):
            continue
        keys.append((metric, filt))
    return keys


def score_table(runs: Iterable[CapabilityRun]) -> pd.DataFrame:
    """One row per run × task (or group) × metric × filter: lm-eval's value and standard error
    (NaN where it gives none, e.g. "N/A"), the items behind it and which way is better."""
    rows = []
    for run in runs:
        r = run.results
        counts = {name: int((v or {}).get("effective", 0)) for name, v in (r.get("n-samples") or {}).items()}
        higher = r.get("higher_is_better") or {}
        tops = set(top_level(r))
        groups = subtasks(r)
        for task, entry in (r.get("results") or {}).items():
            direction = higher.get(task) or {}
            for metric, filt in metric_keys(entry):
                rows.append({
                    "target": run.target, "condition": run.condition, "seed": run.seed,
                    "generation": run.generation, "task": task, "top_level": task in tops,
                    "group": bool(groups.get(task)), "metric": metric, "filter": filt,
                    "value": _float(entry[f"{metric},{filt}"]),
                    "stderr": _float(entry.get(f"{metric}_stderr,{filt}")),
                    "n": sum(counts.get(leaf, 0) for leaf in leaves(r, task)),
                    "higher_is_better": direction.get(metric)})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


#: an item's key (leaf task, doc_id) → its value and document hash
Items = dict[tuple[str, int], tuple[float, Any]]


def item_values(run: CapabilityRun, task: str, metric: str, filt: str) -> Items | None:
    """``(leaf task, doc_id) → (value, doc_hash)`` of one metric over a task's (or group's) items;
    None when a value is not a number (a corpus-level metric's per-item tuple)."""
    wanted = set(leaves(run.results, task))
    out: Items = {}
    for rec in run.samples:
        if rec.get("task") not in wanted or rec.get("filter", "none") != filt or metric not in rec:
            continue
        value = rec[metric]
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, int | float):
            return None
        out[(rec["task"], int(rec["doc_id"]))] = (float(value), rec.get("doc_hash"))
    return out


def mcnemar_exact(a: np.ndarray, v: np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar test of paired 0/1 outcomes: (b = items only ``a`` got right, c = items only
    ``v`` got right, two-sided p of b among b + c discordant items under Binomial(b + c, 1/2);
    1.0 when no item is discordant)."""
    from scipy.stats import binomtest

    b = int(np.sum((a == 1) & (v == 0)))
    c = int(np.sum((a == 0) & (v == 1)))
    p = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return b, c, p


def _paired_test(a: np.ndarray, v: np.ndarray, n_seeds: int, binary: bool) -> dict[str, Any]:
    from collapselab.stats.paired import signed_rank_test

    if binary and n_seeds == 1:
        b, c, p = mcnemar_exact(a, v)
        return {"test": "mcnemar_exact", "statistic": float(b), "only_condition": b, "only_vanilla": c, "p": p}
    d = a - v
    if not np.any(d != 0):
        return {"test": "wilcoxon", "statistic": 0.0, "p": 1.0, "extra": "no item differs"}
    statistic, p = signed_rank_test(d)
    return {"test": "wilcoxon", "statistic": statistic, "p": p}


def _score(run: CapabilityRun, task: str, metric: str, filt: str) -> float:
    return _float(((run.results.get("results") or {}).get(task) or {}).get(f"{metric},{filt}"))


def _compare(base: CapabilityRun, seeds: list[CapabilityRun], task: str, metric: str, filt: str, *,
             n_resamples: int, confidence: float, seed: int, paired: bool) -> dict[str, Any]:
    """One condition (all its seeds) against the vanilla model on one task × metric × filter."""
    from collapselab.stats.hypothesis import mann_whitney
    from collapselab.stats.paired import bootstrap_mean_difference

    row: dict[str, Any] = {"n_seeds": len(seeds), "paired": paired, "confidence": confidence, "test": None}
    notes = []
    v_items = item_values(base, task, metric, filt)
    a_items = [item_values(run, task, metric, filt) for run in seeds]
    if v_items is None or any(a is None for a in a_items):
        row["note"] = "per-item values are not numbers (a corpus-level metric): scores only, no test"
        row["value"] = float(np.mean([_score(run, task, metric, filt) for run in seeds]))
        row["vanilla"] = _score(base, task, metric, filt)
        row["difference"] = row["value"] - row["vanilla"]
        return row
    common = set(v_items)
    for a in a_items:
        common &= set(a)
    # the same document id must be the same document (a changed data file would break the match)
    items = sorted(i for i in common if all(a[i][1] == v_items[i][1] for a in a_items))  # type: ignore[index]
    if len(items) < len(common):
        notes.append(f"{len(common) - len(items)} items left out: their documents differ between the models")
    left = len(v_items) - len(common)
    if left:
        notes.append(f"{left} vanilla items without a match in every seed, left out")
    row["n_items"] = len(items)
    if not items:
        row["note"] = "; ".join([*notes, "no item in common with the vanilla model"])
        return row
    v = np.array([v_items[i][0] for i in items])
    matrix = np.array([[a[i][0] for i in items] for a in a_items])  # type: ignore[index]
    a_mean = matrix.mean(axis=0)
    row.update(vanilla=float(v.mean()), value=float(a_mean.mean()), difference=float((a_mean - v).mean()))
    if any(abs(_score(r, task, metric, filt) - float(np.mean([vals[i][0] for i in vals])))
           > 1e-6 for r, vals in ((base, v_items), *zip(seeds, a_items, strict=True))):
        notes.append("lm-eval's score here is not the mean of its items' values; the difference is of item means")
    row["ci_low"], row["ci_high"] = bootstrap_mean_difference(a_mean, v, n_resamples=n_resamples,
                                                              confidence=confidence, seed=seed, paired=paired)
    binary = bool(np.isin(np.concatenate([v, matrix.ravel()]), (0.0, 1.0)).all())
    if paired:
        test = _paired_test(a_mean, v, len(seeds), binary)
        if "extra" in test:
            notes.append(test.pop("extra"))
        row.update(test)
    elif len(items) >= 2:
        mw = mann_whitney(a_mean, v)
        row.update(test="mann_whitney", statistic=mw["statistic"], p=mw["p"])
    if len(seeds) > 1:
        notes.append(f"each item's value is its mean over {len(seeds)} seeds")
    row["note"] = "; ".join(notes)
    return row


def differences(runs: list[CapabilityRun], *, n_resamples: int, confidence: float, seed: int,
                correction: str = "holm", paired: bool = True) -> pd.DataFrame:
    """Every fine-tuned condition (its seeds pooled) against its target's vanilla model, per
    generation × top-level task × metric × filter (see the module docstring)."""
    from collapselab.stats.hypothesis import adjust_pvalues

    vanilla = {r.target: r for r in runs if r.vanilla}
    cells: dict[tuple[str, str, int], list[CapabilityRun]] = {}
    for r in runs:
        if not r.vanilla:
            cells.setdefault((r.target, r.condition, r.generation), []).append(r)
    rows = []
    for (target, condition, generation), seeds in cells.items():
        base = vanilla.get(target)
        if base is None:
            continue
        direction = base.results.get("higher_is_better") or {}
        for task in top_level(base.results):
            entry = (base.results.get("results") or {}).get(task) or {}
            for metric, filt in metric_keys(entry):
                row = _compare(base, seeds, task, metric, filt, n_resamples=n_resamples, confidence=confidence,
                               seed=seed, paired=paired)
                rows.append({"target": target, "condition": condition, "generation": generation, "task": task,
                             "metric": metric, "filter": filt,
                             "higher_is_better": (direction.get(task) or {}).get(metric), **row})
    out = pd.DataFrame(rows, columns=DIFF_COLUMNS)
    if out.empty:
        return out
    out["p"] = pd.to_numeric(out["p"], errors="coerce")
    for _, index in out.groupby("target").groups.items():
        out.loc[index, "p_adj"] = adjust_pvalues(out.loc[index, "p"].to_numpy(dtype=float), correction)
    return out
