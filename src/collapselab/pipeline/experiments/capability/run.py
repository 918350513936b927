"""The runners of the capability experiment's stage kinds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from collapselab.config.spec import ModelSpec
from collapselab.pipeline.context import StageContext

#: the capability_summary stage's interval: resamples and confidence (no config fields: fixed
#: here, and in the stage's key, so changing them re-runs only that stage)
BOOTSTRAP = 2000
CONFIDENCE = 0.95


def evaluated_spec(ctx: StageContext) -> ModelSpec:
    """The model a capability stage evaluates: the target as transformers loads it (its params'
    ``model``), with its train stage's adapter for a fine-tuned cell."""
    p = ctx.stage.params
    target: ModelSpec = p.model or p.target
    if p.condition.kind != "vanilla":
        target = target.model_copy(update={"adapter": str(ctx.input_dir(ctx.stage.input("train")) / "adapter")})
    return target


def run_capability(ctx: StageContext) -> None:
    """One model (the vanilla target or a fine-tuned adapter) runs the configured lm-eval tasks:
    ``results.json`` (lm-eval's results without the machine's details), ``samples.jsonl`` (its
    per-sample records) and ``summary.json``."""
    from collapselab.capability import harness
    from collapselab.capability.tasks import task_refs
    from collapselab.errors import ModelError
    from collapselab.store.atomic import write_json, write_jsonl

    harness.require_lm_eval()
    p = ctx.stage.params
    refs = task_refs(ctx.spec.capability.tasks)
    spec = evaluated_spec(ctx)
    ctx.set_total(1)
    model = ctx.models.get(spec)
    if not (hasattr(model, "model") and hasattr(model, "tokenizer")):  # a test's loader, an engine model
        raise ModelError(f"{ctx.stage.label}: lm-eval needs a transformers model; {spec.id!r} loaded as "
                         f"{type(model).__name__}")
    start = time.perf_counter()
    results = harness.evaluate(model.model, model.tokenizer, refs, ctx.spec.capability,
                               max_length=getattr(model, "max_context", None))
    seconds = time.perf_counter() - start
    train = next((s for s in ctx.stage.inputs if s.kind == "train"), None)
    records = list(harness.sample_records(results))
    write_jsonl(ctx.out / "samples.jsonl", records)
    write_json(ctx.out / "results.json", harness.portable_results(
        results, refs, model=p.target.id, adapter=train.label if train is not None else None))
    write_json(ctx.out / "summary.json", {
        "target": p.target_name, "condition": p.condition.label, "seed": p.seed, "generation": p.generation,
        "model": p.target.id, "adapter": train.label if train is not None else None,
        "tasks": [r.name for r in refs], "samples": len(records), "seconds": seconds,
        "lm_eval_version": results.get("lm_eval_version") or harness.installed_version()})
    ctx.advance(1)


def load_runs(ctx: StageContext) -> list[Any]:
    """The capability stages' outputs, as :class:`~collapselab.capability.compare.CapabilityRun`."""
    from collapselab.capability.compare import CapabilityRun
    from collapselab.store.atomic import read_jsonl

    runs = []
    for s in ctx.stage.inputs:
        folder: Path = ctx.input_dir(s)
        p = s.params
        runs.append(CapabilityRun(p.target_name, p.condition.label, p.seed, p.generation,
                                  json.loads((folder / "results.json").read_text()),
                                  read_jsonl(folder / "samples.jsonl")))
    return runs


def run_capability_summary(ctx: StageContext) -> None:
    """Every model's scores and each condition's difference from the vanilla model with a paired
    interval and test (:mod:`collapselab.capability.compare`)."""
    from collapselab.capability.compare import differences, score_table
    from collapselab.store.atomic import write_json
    from collapselab.store.frames import write_parquet

    st = ctx.stage.settings
    ctx.set_total(2)
    runs = load_runs(ctx)
    ctx.advance(1)
    scores = score_table(runs)
    diffs = differences(runs, n_resamples=st["bootstrap"], confidence=st["confidence"], seed=st["seed"],
                        correction=st["correction"], paired=st.get("stats", {}).get("paired", True))
    write_parquet(scores, ctx.out / "scores.parquet")
    write_parquet(diffs, ctx.out / "differences.parquet")
    versions = sorted({str(r.results.get("lm_eval_version")) for r in runs})
    write_json(ctx.out / "summary.json", {
        "models": len(runs), "tasks": sorted(set(scores["task"][scores["top_level"]])) if len(scores) else [],
        "lm_eval_versions": versions, "bootstrap": st["bootstrap"], "confidence": st["confidence"],
        "correction": st["correction"], "paired": st.get("stats", {}).get("paired", True)})
    ctx.advance(1)
