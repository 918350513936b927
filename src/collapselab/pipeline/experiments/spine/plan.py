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


def _part_count(stage: Stage, ctx: PlanContext) -> int | None:
    """How many prompts of its shard a partial generate stage answers (known from the shard sizes)."""
    from collapselab.corpora.shares import shard_counts

    p = stage.params
    if ctx.corpus.shards is None:
        return None
    source = p.part.sources.index(p.source)
    return shard_counts(ctx.corpus.shards, p.part.normalized_weights)[source].get(p.shard, 0)


def plan_generate(stage: Stage, ctx: PlanContext) -> Estimate:
    p = stage.params
    shard = p.shard
    n = None if ctx.corpus.shards is None else ctx.corpus.shards[shard]
    rows = rows_of_shard(ctx, shard)
    d = p.decoding
    notes = [f"≤ {d.max_new_tokens:,} new tokens per answer; "
             + (f"beam search ({d.num_beams} beams)" if d.num_beams > 1
                else "greedy" if d.temperature == 0 else f"temperature {d.temperature:g}, top-p {d.top_p:g}")]
    if p.part is not None:
        whole, n = n, _part_count(stage, ctx)
        counted = "" if n is None or whole is None else f" ({n:,} of {whole:,})"
        notes.append(f"only the prompts of shard {shard} that {p.part.label} assigns to {p.source}{counted}: "
                     "no condition needs the whole shard")
    est = Estimate(p.model.id, n, times(n, p.decoding.max_new_tokens), notes=notes)
    if rows is None:
        est.tokens_prefill = None
        est.notes.append(unknown_prefill(ctx))
    elif p.part is not None:  # which of the shard's prompts is known only at run time: its mean length
        chars = [system_chars(p.decoding.system_prompt) + t.user for t in rows]
        est.tokens_prefill = estimate_tokens(fmean(chars) * (n or 0)) if chars else 0
    else:
        est.tokens_prefill = estimate_tokens(sum(system_chars(p.decoding.system_prompt) + t.user for t in rows))
    return est


def _mix_examples(stage: Stage, ctx: PlanContext) -> tuple[int | None, list[float] | None]:
    """A mix's example count and each example's length in characters (prompt + answer), the
    synthetic answers counted at their sources' ``max_new_tokens`` (an upper bound: the largest of
    a shard's sources where two share it)."""
    system = system_chars(stage.settings["system_prompt"])
    if stage.params.condition.kind == "human":
        rows = ctx.corpus.train_rows
        lengths = None if rows is None else [system + t.user + t.response for t in rows]
        return ctx.corpus.train, lengths
    answer_chars: dict[int, int] = {}
    for gen in (s for s in stage.inputs if s.kind == "generate"):
        chars = gen.params.decoding.max_new_tokens * CHARS_PER_TOKEN
        answer_chars[gen.params.shard] = max(chars, answer_chars.get(gen.params.shard, 0))
    if ctx.corpus.shards is None:
        return None, None
    n = sum(ctx.corpus.shards[s] for s in answer_chars)
    rows = ctx.corpus.train_rows
    lengths = None if rows is None else [system + t.user + answer_chars[t.shard] for t in rows
                                         if t.shard in answer_chars]
    return n, lengths


def plan_mix(stage: Stage, ctx: PlanContext) -> Estimate:
    from collapselab.corpora.shares import shard_counts

    n, _ = _mix_examples(stage, ctx)
    cond = stage.params.condition
    note = "human answers" if cond.kind == "human" else \
        "synthetic answers (empty answers are dropped at run time)"
    est = Estimate(n_items=n, notes=[note])
    if cond.kind == "multi" and ctx.corpus.shards is not None:
        parts = shard_counts(ctx.corpus.shards, cond.normalized_weights)
        est.notes.append("one answer per prompt, by source: " + "; ".join(
            f"{source} {sum(c.values()):,} ({sum(c.values()) / max(1, n or 0):.1%} of {w:.1%} requested; "
            + ", ".join(f"shard {j}: {k:,}" for j, k in c.items()) + ")"
            for source, c, w in zip(cond.sources, parts, cond.normalized_weights, strict=True)))
    return est


def plan_train(stage: Stage, ctx: PlanContext) -> Estimate:
    lora = ctx.spec.lora_for(stage.params.target_name)  # with the target's lora_overrides
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
                     f"{plan['steps']:,} steps of {lora.batch_size * lora.grad_accum:,} examples "
                     f"(batch {lora.batch_size} × grad_accum {lora.grad_accum}; {lora.epochs:g} epochs; "
                     f"early stopping can end sooner); score = {plan['evals']} validation passes; "
                     f"loss on {'every token' if lora.loss == 'full' else 'the answers'}")
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

