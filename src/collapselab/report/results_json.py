"""``results.json``: a run's per-condition results in lm-evaluation-harness's output shape, for the
tools and leaderboards that read that format.

One *task* per target × condition (× generation after the first): ``collapselab_<target>_<condition>``
(``_gen<G>``), named with :func:`collapselab.naming.slug`. Its metrics:

* Experiment 1 — every metric's primary statistic on the condition's answers (the aggregates
  table, ``set_kind`` "condition"; the k-answers sets' metrics as ``samples/<metric>``);
* Experiment 2 — ``safety/<metric>[<prompt kind>]`` over all categories (the safety summary);
* Experiment 3 — ``preference/SPB`` and ``preference/PSB`` of the condition's model as judge;
* capability — ``capability/<task>/<metric>`` (``[<filter>]`` for a filter other than lm-eval's
  ``none``): lm-eval's score of each configured task, its standard error carried as the interval
  score ± z · stderr (so one seed's error is lm-eval's own); the vanilla target is one task.

lm-eval's keys are ``"<metric>,<filter>"``; collapselab applies no filter, so every key ends in
``,none``, and a comma inside a metric's name (``lexical_diversity[mode=individual,max_order=3]``)
becomes ``;`` (the original names are under ``collapselab.metric_names``).

A metric's value is the mean over the condition's seeds. Its standard error:

* with two or more seeds whose values differ, the standard error of that mean,
  ``sd(ddof=1) / sqrt(seeds)`` — the spread between training (and sampling) seeds; every seed
  answers the same test prompts, so it does not cover the choice of prompts;
* otherwise (one seed, or seeds that agree exactly: a metric the seed does not change, such as
  the vanilla model's perplexity on the references) the mean half-width of the seeds' intervals
  over the normal quantile of their confidence level, ``(ci_high − ci_low) / (2 z)`` — a normal
  approximation of the bootstrap (per item) or jackknife (set-level) interval the evaluation
  wrote; a safety rate whose bootstrap interval has no width (0 of n) uses its Wilson interval;
* null when neither exists (no spread and no interval with a width) — never a made-up 0.

``collapselab.stderr_method`` records which (``seeds`` / ``interval`` / null) for each task and metric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import pandas as pd
import yaml

from collapselab.naming import slug
from collapselab.store.jsonsafe import jsonable

#: the version of every collapselab task's definition (lm-eval's ``versions``)
TASK_VERSION = 1.0
FILTER = "none"
COLUMNS = ["target", "condition", "generation", "seed", "key", "metric", "value", "ci_low", "ci_high", "n",
           "higher_is_better", "confidence"]
#: which way is better for the safety metrics (None: neither, e.g. refusals of harmful prompts)
SAFETY_DIRECTION = {"mean_harm": False, "attack_success_rate": False, "danger_zone": False, "mean_quality": True}
STDERR_METHODS = {
    "seeds": "standard error of the mean over the seeds: sd(ddof=1) / sqrt(number of seeds); the seeds answer "
             "the same test prompts, so it does not cover the choice of prompts",
    "interval": "one seed, or seeds that agree exactly: the mean of (ci_high - ci_low) / (2 z) over the seeds, z the "
                "normal quantile of the interval's confidence level (a normal approximation of the evaluation's "
                "bootstrap or jackknife interval; Wilson for a safety rate whose bootstrap interval has no width)",
    "null": "no spread between seeds and no interval with a width: no standard error is known",
}


def metric_key(metric: str) -> str:
    """A metric name usable before lm-eval's ``,<filter>`` (no comma inside)."""
    return str(metric).replace(",", ";")


def _direction(value: Any) -> bool | None:
    return bool(value) if isinstance(value, bool) or type(value).__name__ == "bool_" else None


def _config(inputs) -> dict[str, Any]:
    try:
        config = yaml.safe_load(inputs.config_yaml or "") or {}
    except yaml.YAMLError:
        config = {}
    return config if isinstance(config, dict) else {}


def _section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def _column(frame: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    """A column, or ``default`` throughout where the table has none (an older or hand-made table)."""
    return frame[name] if name in frame.columns else pd.Series([default] * len(frame), index=frame.index,
                                                               dtype=object)


def _frame(t: pd.DataFrame, keys: list[str], names: list[str], value: str, ci: tuple[str, str], n: str,
           higher: Any, confidence: float) -> pd.DataFrame:
    return pd.DataFrame({
        "target": _column(t, "target"), "condition": _column(t, "condition"),
        "generation": _column(t, "generation", 0), "seed": _column(t, "seed"), "key": keys, "metric": names,
        "value": _column(t, value), "ci_low": _column(t, ci[0]), "ci_high": _column(t, ci[1]), "n": _column(t, n),
        "higher_is_better": higher, "confidence": confidence}, index=t.index)


def metric_rows(inputs, config: Mapping[str, Any]) -> pd.DataFrame:
    """Every per-seed metric value of every condition's model, long (:data:`COLUMNS`)."""
    frames = []
    a = inputs.aggregates
    if a is not None and not a.empty:
        a = a[(a["set_kind"] == "condition") & _column(a, "primary", True).fillna(False).astype(bool)]
        prefix = ["samples/" if str(s).endswith("/samples") else "" for s in _column(a, "set_name", "")]
        frames.append(_frame(a, [p + metric_key(m) for p, m in zip(prefix, a["metric"], strict=True)],
                             [p + str(m) for p, m in zip(prefix, a["metric"], strict=True)], "value",
                             ("ci_low", "ci_high"), "n", _column(a, "higher_is_better").map(_direction).values,
                             _section(config, "collapse").get("confidence", 0.95)))
    safety = getattr(inputs, "safety", None)
    if safety is not None and not safety.summary.empty:
        s = safety.summary[_column(safety.summary, "category", "all") == "all"]
        if {"wilson_low", "wilson_high"} <= set(s.columns):  # a rate of 0 of n: the bootstrap has no width
            flat = ~(s["ci_high"] > s["ci_low"]) & s["wilson_low"].notna() & s["wilson_high"].notna()
            s = s.assign(ci_low=s["ci_low"].where(~flat, s["wilson_low"]),
                         ci_high=s["ci_high"].where(~flat, s["wilson_high"]))
        names = [f"safety/{m}[{k}]" for m, k in zip(s["metric"], _column(s, "prompt_kind", "all"), strict=True)]
        frames.append(_frame(s, [metric_key(n) for n in names], names, "value", ("ci_low", "ci_high"), "n",
                             s["metric"].map(SAFETY_DIRECTION.get).values,
                             _section(config, "safety").get("confidence", 0.95)))
    preference = getattr(inputs, "preference", None)
    if preference is not None and not preference.bias.empty:
        b = preference.bias
        for m in ("SPB", "PSB"):
            if m in b.columns:
                frames.append(_frame(b, [f"preference/{m}"] * len(b), [f"preference/{m}"] * len(b), m,
                                     (f"{m}_ci_low", f"{m}_ci_high"), "n_items", None,
                                     _section(config, "preference").get("confidence", 0.95)))
    capability = getattr(inputs, "capability", None)
    if capability is not None and not capability.scores.empty:
        frames.append(_capability_frame(capability.scores))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    out["generation"] = pd.to_numeric(out["generation"], errors="coerce").fillna(0).astype(int)
    for column in ("value", "ci_low", "ci_high", "n"):
        out[column] = pd.to_numeric(out[column], errors="coerce")
    return out[COLUMNS]


def _capability_frame(scores: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The configured lm-eval tasks' scores as metric rows, lm-eval's stderr as the interval
    value ± z · stderr at ``confidence`` (which :func:`value_and_stderr` turns back into it)."""
    c = scores[scores["top_level"].astype(bool)]
    names = [f"capability/{t}/{m}" + ("" if f == "none" else f"[{f}]")
             for t, m, f in zip(c["task"], c["metric"], c["filter"], strict=True)]
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    stderr = pd.to_numeric(c["stderr"], errors="coerce")
    c = c.assign(ci_low=c["value"] - z * stderr, ci_high=c["value"] + z * stderr)
    return _frame(c, [metric_key(n) for n in names], names, "value", ("ci_low", "ci_high"), "n",
                  c["higher_is_better"].map(_direction).values, confidence)


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def value_and_stderr(group: pd.DataFrame) -> tuple[float | None, float | None, str | None]:
    """One metric of one task: (mean over seeds, its standard error, how the error was derived —
    "seeds", "interval" or None); see the module docstring."""
    per_seed = group.groupby("seed", dropna=False).agg(
        value=("value", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"),
        confidence=("confidence", "first"))
    per_seed = per_seed[per_seed["value"].map(_finite)]
    if per_seed.empty:
        return None, None, None
    value = float(per_seed["value"].mean())
    if len(per_seed) >= 2:
        sd = float(per_seed["value"].std(ddof=1))
        if sd > 0:
            return value, sd / math.sqrt(len(per_seed)), "seeds"
    halves = [(float(r.ci_high) - float(r.ci_low)) / (2 * NormalDist().inv_cdf((1 + float(r.confidence)) / 2))
              for r in per_seed.itertuples() if _finite(r.ci_low) and _finite(r.ci_high) and r.ci_high > r.ci_low]
    if halves:
        return value, sum(halves) / len(halves), "interval"
    return value, None, None


def task_name(target: str, condition: str, generation: int) -> str:
    """``collapselab_<target>_<condition>`` (``_gen<G>`` after the first generation)."""
    return (f"collapselab_{slug(target, default='target')}_{slug(condition, default='condition')}"
            + (f"_gen{generation}" if generation else ""))


def _ordered_tasks(rows: pd.DataFrame, conditions: list[str]) -> list[tuple[str, str, int]]:
    cells = list(dict.fromkeys(zip(rows["target"].astype(str), rows["condition"].astype(str), rows["generation"],
                                   strict=True)))
    targets = list(dict.fromkeys(t for t, _, _ in cells))
    # the config's condition order; a condition it does not list after those, in order of appearance
    order = list(dict.fromkeys([*conditions, *(c for _, c, _ in cells)]))
    return sorted(cells, key=lambda c: (targets.index(c[0]), order.index(c[1]), c[2]))


def _package_version(name: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def lm_eval_results(inputs, *, version=None, date: float | None = None) -> dict[str, Any]:
    """The ``results.json`` document of a report's inputs (see the module docstring); ``version``
    (a :class:`collapselab.store.versions.SourceVersion`, default: the run folder's) and ``date``
    (Unix time, default: now) are injectable for tests."""
    from collapselab.store.versions import source_version

    config = _config(inputs)
    version = version or source_version(getattr(inputs, "run_dir", "") or None)
    rows = metric_rows(inputs, config)
    decoding = _section(config, "decoding")
    results: dict[str, dict[str, Any]] = {}
    configs: dict[str, dict[str, Any]] = {}
    higher: dict[str, dict[str, bool | None]] = {}
    n_samples: dict[str, dict[str, int]] = {}
    methods: dict[str, dict[str, str | None]] = {}
    names: dict[str, str] = {}
    for target, condition, generation in _ordered_tasks(rows, list(inputs.conditions or [])):
        task = task_name(target, condition, generation)
        cell = rows[(rows["target"].astype(str) == target) & (rows["condition"].astype(str) == condition)
                    & (rows["generation"] == generation)]
        alias = f"{target} {condition}" + (f" gen{generation}" if generation else "")
        results[task] = {"alias": alias}
        higher[task], methods[task] = {}, {}
        for key, group in cell.groupby("key", sort=False):
            value, stderr, method = value_and_stderr(group)
            results[task][f"{key},{FILTER}"] = value
            results[task][f"{key}_stderr,{FILTER}"] = stderr
            directions = [d for d in group["higher_is_better"] if d is not None]
            higher[task][key] = directions[0] if directions else None
            methods[task][key] = method
            names[key] = str(group["metric"].iloc[0])
        seeds = sorted({int(s) for s in cell["seed"] if _finite(s)})
        n = pd.to_numeric(cell["n"], errors="coerce").max()
        n_samples[task] = {"original": int(n) if _finite(n) else 0, "effective": int(n) if _finite(n) else 0}
        configs[task] = {
            "task": task, "task_alias": alias, "tag": ["collapselab"], "dataset_path": "collapselab",
            "dataset_name": inputs.title, "test_split": "test", "output_type": "generate_until",
            "generation_kwargs": decoding, "num_fewshot": 0, "repeats": len(seeds),
            "metric_list": [{"metric": k, "aggregation": "mean", "higher_is_better": higher[task][k]}
                            for k in higher[task]],
            "metadata": {"version": TASK_VERSION, "target": target, "condition": condition,
                         "generation": generation, "seeds": seeds},
        }
    targets = [t.get("id") for t in config.get("targets") or [] if isinstance(t, dict)]
    document = {
        "results": results,
        "group_subtasks": {task: [] for task in results},
        "configs": configs,
        "versions": {task: TASK_VERSION for task in results},
        "n-shot": {task: 0 for task in results},
        "higher_is_better": higher,
        "n-samples": n_samples,
        "config": {"model": "collapselab", "model_args": "targets=" + "|".join(map(str, targets)),
                   "batch_size": None, "batch_sizes": [], "device": None, "use_cache": None, "limit": None,
                   "bootstrap_iters": _section(config, "collapse").get("bootstrap"), "gen_kwargs": decoding,
                   "seeds": config.get("seeds")},
        "git_hash": version.commit if version.commits else None,
        "date": time.time() if date is None else date,
        "transformers_version": _package_version("transformers"),
        "collapselab": {"version": version.version, "git_commit": version.commit, "commits": list(version.commits),
                        "commit_origin": version.origin, "experiment": inputs.title,
                        "stderr": STDERR_METHODS, "stderr_method": methods, "metric_names": names},
    }
    return jsonable(document)
