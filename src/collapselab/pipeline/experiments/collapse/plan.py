"""How ``plan`` sizes Experiment 1's stages (embed, score, evaluate)."""

from __future__ import annotations

from typing import Any

from collapselab.pipeline.sizing import (
    Estimate,
    PlanContext,
    estimate_tokens,
    test_prefill,
    times,
)
from collapselab.pipeline.stage import Stage


def _samples_count(ctx: PlanContext) -> int | None:
    """How many answers a sample stage draws: k per prompt for the first ``prompts`` test prompts."""
    samples = ctx.spec.collapse.samples
    if ctx.corpus.test is None or samples is None:
        return None
    return min(ctx.corpus.test, samples.prompts or ctx.corpus.test) * samples.k


def _set_size(info: Any, ctx: PlanContext) -> int | None:
    """The number of texts in one collapse text set."""
    if info.file == "samples.jsonl":
        return _samples_count(ctx)
    if info.kind in ("condition", "human"):
        return ctx.corpus.test
    if info.name == "source:human":
        return ctx.corpus.train
    if ctx.corpus.shards is None:
        return None
    return sum(ctx.corpus.shards[g.params.shard] for g in info.producers)


def plan_sample(stage: Stage, ctx: PlanContext) -> Estimate:
    decoding = ctx.spec.decoding
    samples = ctx.spec.collapse.samples
    n = _samples_count(ctx)
    est = Estimate(stage.params.target.id, n, times(n, decoding.max_new_tokens),
                   notes=[f"{samples.k} answers per prompt" if samples else "",
                          f"≤ {decoding.max_new_tokens:,} new tokens per answer"])
    if stage.params.condition.kind != "vanilla":
        est.notes.append("with the LoRA adapter of its train stage")
    test_prefill(est, ctx, decoding.system_prompt)
    if est.tokens_prefill is not None and samples is not None and ctx.corpus.test:
        est.tokens_prefill = est.tokens_prefill * (n or 0) // ctx.corpus.test
    return est


def plan_embed(stage: Stage, ctx: PlanContext) -> Estimate:
    return Estimate(stage.settings["embedder"]["model"], _set_size(stage.params.text_set, ctx),
                    notes=["sentence-embedding model: not counted in LLM tokens"])


def plan_score(stage: Stage, ctx: PlanContext) -> Estimate:
    info = stage.params.text_set
    est = Estimate(stage.params.model.id, ctx.corpus.test)
    if info.kind == "condition":
        mnt = ctx.spec.decoding.max_new_tokens
        est.tokens_score = times(est.n_items, mnt)
        est.notes.append(f"answers of ≤ {mnt:,} tokens, teacher-forced")
    elif ctx.corpus.test_rows is not None:
        est.tokens_score = estimate_tokens(sum(t.response for t in ctx.corpus.test_rows))
        est.notes.append("human test answers, teacher-forced")
    else:
        est.tokens_score = None
        est.notes.append("score unknown: human answers not read offline")
    if any(i.kind == "train" for i in stage.inputs):
        est.notes.append("with a LoRA adapter")
    test_prefill(est, ctx, stage.settings["system_prompt"])
    return est


def plan_evaluate(stage: Stage, ctx: PlanContext) -> Estimate:
    note = "metrics on stored texts, embeddings, log-probs"
    return Estimate(None, _set_size(stage.params.text_set, ctx), notes=[note])



def plan_embedding_map(stage: Stage, ctx: PlanContext) -> Estimate:
    sizes = [_set_size(s.params.text_set, ctx) for s in stage.inputs]
    n = None if any(x is None for x in sizes) else sum(sizes)
    return Estimate(None, n, notes=["one PCA over stored embeddings"])
