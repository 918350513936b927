"""How ``plan`` sizes the spine's stages (prepare, generate, mix, train, respond)."""

from __future__ import annotations

from statistics import fmean

from collapselab.pipeline.sizing import (
    CHARS_PER_TOKEN,
    Estimate,
    PlanContext,
    ceil_count,
    estimate_tokens,
    lora_schedule,
    rows_of_shard,
    system_chars,
    test_prefill,
    times,
    unknown_prefill,
)
from collapselab.pipeline.stage import Stage


def plan_prepare(stage: Stage, ctx: PlanContext) -> Estimate:
    return Estimate(n_items=ctx.corpus.records, notes=[ctx.corpus.note])


def plan_generate(stage: Stage, ctx: PlanContext) -> Estimate:
    p = stage.params
    shard = p.shard
    n = None if ctx.corpus.shards is None else ctx.corpus.shards[shard]
    rows = rows_of_shard(ctx, shard)
    est = Estimate(p.model.id, n, times(n, p.decoding.max_new_tokens),
                   notes=[f"≤ {p.decoding.max_new_tokens:,} new tokens per answer"])
    if rows is None:
        est.tokens_prefill = None
        est.notes.append(unknown_prefill(ctx))
    else:
        est.tokens_prefill = estimate_tokens(sum(system_chars(p.decoding.system_prompt) + t.user for t in rows))
    return est


def _mix_examples(stage: Stage, ctx: PlanContext) -> tuple[int | None, list[float] | None]:
    """A mix's example count and each example's length in characters (prompt + answer), the
    synthetic answers counted at their sources' ``max_new_tokens`` (an upper bound)."""
    system = system_chars(stage.settings["system_prompt"])
    if stage.params.condition.kind == "human":
        rows = ctx.corpus.train_rows
        lengths = None if rows is None else [system + t.user + t.response for t in rows]
        return ctx.corpus.train, lengths
    answer_chars = {}
    for gen in (s for s in stage.inputs if s.kind == "generate"):
        answer_chars[gen.params.shard] = gen.params.decoding.max_new_tokens * CHARS_PER_TOKEN
    if ctx.corpus.shards is None:
        return None, None
    n = sum(ctx.corpus.shards[s] for s in answer_chars)
    rows = ctx.corpus.train_rows
    lengths = None if rows is None else [system + t.user + answer_chars[t.shard] for t in rows
                                         if t.shard in answer_chars]
    return n, lengths


def plan_mix(stage: Stage, ctx: PlanContext) -> Estimate:
    n, _ = _mix_examples(stage, ctx)
    note = "human answers" if stage.params.condition.kind == "human" else \
        "synthetic answers (empty answers are dropped at run time)"
    return Estimate(n_items=n, notes=[note])



def plan_train(stage: Stage, ctx: PlanContext) -> Estimate:
    lora = ctx.spec.lora
    n, lengths = _mix_examples(stage.input("mix"), ctx)
    est = Estimate(stage.params.target.id, n, 0, 0)
    if n is None:
        est.tokens_train = est.tokens_score = None
        est.notes.append(f"unknown: the training set's size is not known offline ({ctx.corpus.note})")
        return est
    if lengths:
        mean_len = fmean(min(lora.max_length, c / CHARS_PER_TOKEN) for c in lengths)
        est.notes.append(f"mean example ≈ {mean_len:,.0f} tokens (min(max_length, chars/4); synthetic "
                         "answers at max_new_tokens)")
    else:
        mean_len = float(lora.max_length)
        est.notes.append(f"example lengths unknown offline: max_length {lora.max_length:,} each "
                         "(upper bound)")
    plan = lora_schedule(n, lora)
    est.tokens_train = ceil_count(plan["processed"] * mean_len)
    est.tokens_score = ceil_count(plan["evals"] * plan["n_val"] * mean_len)
    est.notes.append(f"{plan['n_fit']:,} train / {plan['n_val']:,} validation examples, "
                     f"{plan['steps']:,} steps ({lora.epochs:g} epochs; early stopping can end sooner); "
                     f"score = {plan['evals']} validation passes")
    return est


def plan_respond(stage: Stage, ctx: PlanContext) -> Estimate:
    decoding = ctx.spec.decoding
    n = ctx.corpus.test
    est = Estimate(stage.params.target.id, n, times(n, decoding.max_new_tokens),
                   notes=[f"≤ {decoding.max_new_tokens:,} new tokens per answer"])
    if stage.params.condition.kind != "vanilla":
        est.notes.append("with the LoRA adapter of its train stage")
    test_prefill(est, ctx, decoding.system_prompt)
    return est

