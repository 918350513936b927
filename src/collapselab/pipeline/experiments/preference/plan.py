"""How ``plan`` sizes Experiment 3's stages (items, candidates, prefer, familiarity, recognize)."""

from __future__ import annotations

from collapselab.pipeline.sizing import (
    CHARS_PER_TOKEN,
    Estimate,
    PlanContext,
    estimate_tokens,
    system_chars,
    times,
)
from collapselab.pipeline.stage import Stage


def plan_items(stage: Stage, ctx: PlanContext) -> Estimate:
    facts = ctx.items()
    return Estimate(None, facts.count, bound=facts.bound, notes=[facts.note])


def plan_candidates(stage: Stage, ctx: PlanContext) -> Estimate:
    facts = ctx.items()
    decoding = stage.params.decoding
    est = Estimate(stage.params.model.id, facts.count, times(facts.count, decoding.max_new_tokens),
                   bound=facts.bound,
                   notes=[f"≤ {decoding.max_new_tokens:,} new tokens per text", facts.note])
    if facts.count is None or facts.mean_user is None:
        est.tokens_prefill = None
        est.notes.append("prefill unknown: item texts not read offline")
    else:
        est.tokens_prefill = estimate_tokens(facts.count * (system_chars(decoding.system_prompt) + facts.mean_user))
    return est


def plan_prefer(stage: Stage, ctx: PlanContext) -> Estimate:
    facts = ctx.items()
    st = stage.settings
    cands = [s for s in stage.inputs if s.kind == "candidates"]
    n_sources = len(cands) + 1  # and the human text
    ratings = st["templates"]["rating"] is not None
    per_item = n_sources * (n_sources - 1) + (n_sources if ratings else 0)
    what = (f"{n_sources} texts per item: {n_sources * (n_sources - 1)} ordered pairs"
            + (f" + {n_sources} ratings" if ratings else "") + "; one next-token read-out each, no sampling")
    est = Estimate(stage.params.target.id, times(facts.count, per_item), 0, bound=facts.bound,
                   notes=[what, facts.note])
    if facts.count is None or facts.mean_user is None or facts.mean_human is None:
        est.tokens_prefill = None
        est.notes.append("prefill unknown: item texts not read offline")
        return est
    limit = st["max_text_chars"]
    synthetic = sum(min(c.params.decoding.max_new_tokens * CHARS_PER_TOKEN, limit) for c in cands)
    texts = synthetic + facts.mean_human  # one text of every source, per item
    base = system_chars(st["system_prompt"]) + facts.mean_user
    pairs = n_sources * (n_sources - 1)
    # every ordered pair shows two texts: each text appears in 2 (S - 1) of them
    chars = pairs * (base + len(st["templates"]["pairwise"])) + 2 * (n_sources - 1) * texts
    if ratings:
        chars += n_sources * (base + len(st["templates"]["rating"])) + texts
    est.tokens_prefill = estimate_tokens(facts.count * chars)
    est.notes.append(f"prefill counts synthetic texts at min(max_new_tokens, {limit:,} chars)")
    return est



def _text_chars(stage: Stage, limit: int) -> dict[str, float]:
    """The expected characters of each source's text as a judge sees it: synthetic texts at
    min(max_new_tokens, ``limit`` chars) (candidates' inputs; no item facts needed)."""
    return {c.params.source: min(c.params.decoding.max_new_tokens * CHARS_PER_TOKEN, limit)
            for c in stage.inputs if c.kind == "candidates"}


def plan_familiarity(stage: Stage, ctx: PlanContext) -> Estimate:
    """One teacher-forced pass per text (every source and the human one) after its instruction."""
    facts = ctx.items()
    st = stage.settings
    n_sources = sum(1 for s in stage.inputs if s.kind == "candidates") + 1  # and the human text
    est = Estimate(stage.params.target.id, times(facts.count, n_sources), 0, bound=facts.bound,
                   notes=[f"{n_sources} texts per item, each teacher-forced once after its instruction; no sampling",
                          facts.note])
    if facts.count is None or facts.mean_user is None or facts.mean_human is None:
        est.tokens_prefill = est.tokens_score = None
        est.notes.append("prefill and scored tokens unknown: item texts not read offline")
        return est
    texts = sum(_text_chars(stage, st["max_text_chars"]).values()) + facts.mean_human
    prompt = system_chars(st["system_prompt"]) + facts.mean_user
    est.tokens_prefill = estimate_tokens(facts.count * n_sources * prompt)
    est.tokens_score = estimate_tokens(facts.count * texts)
    est.notes.append(f"scored tokens count synthetic texts at min(max_new_tokens, {st['max_text_chars']:,} chars)")
    return est


def plan_recognize(stage: Stage, ctx: PlanContext) -> Estimate:
    """The own text against every other text, both orders: 2 (k − 1) read-outs per item."""
    facts = ctx.items()
    st = stage.settings
    n_sources = sum(1 for s in stage.inputs if s.kind == "candidates") + 1
    prompts = 2 * (n_sources - 1)
    est = Estimate(stage.params.target.id, times(facts.count, prompts), 0, bound=facts.bound,
                   notes=[f"own text ({st['own']}) vs {n_sources - 1} others in both orders: {prompts} prompts per "
                          "item; one next-token read-out each, no sampling", facts.note])
    if facts.count is None or facts.mean_user is None or facts.mean_human is None:
        est.tokens_prefill = None
        est.notes.append("prefill unknown: item texts not read offline")
        return est
    chars = {**_text_chars(stage, st["max_text_chars"]), "human": facts.mean_human}
    own = chars[st["own"]]
    others = sum(v for s, v in chars.items() if s != st["own"])
    base = system_chars(st["system_prompt"]) + facts.mean_user + len(st["template"])
    # the own text is in every prompt, each other text in two
    est.tokens_prefill = estimate_tokens(facts.count * (prompts * (base + own) + 2 * others))
    est.notes.append(f"prefill counts synthetic texts at min(max_new_tokens, {st['max_text_chars']:,} chars)")
    return est
