"""How ``plan`` sizes Experiment 2's stages (prompts, safety_respond, calibrate, judge)."""

from __future__ import annotations

from collapselab.pipeline.experiments.safety.run import calibration_items
from collapselab.pipeline.sizing import (
    CHARS_PER_TOKEN,
    Estimate,
    PlanContext,
    SafetyFacts,
    estimate_tokens,
    retry_note,
    system_chars,
    times,
)
from collapselab.pipeline.stage import Stage


def plan_prompts(stage: Stage, ctx: PlanContext) -> Estimate:
    facts = ctx.safety(stage.params.target_name)
    return Estimate(None, facts.count, bound=facts.bound, notes=[facts.note, rename_note(stage, ctx)])


def rename_note(stage: Stage, ctx: PlanContext) -> str:
    """How the jailbreak templates name this target, and whether its names had to fall back."""
    from collapselab.safety.names import resolve_rename, target_naming

    s = ctx.spec.safety
    if s.jailbreaks.kind == "none":
        return "no jailbreak templates: nothing renamed"
    naming = target_naming(s, stage.params.target_name, stage.params.model_id)
    rename = resolve_rename(s.jailbreaks.rename, naming)
    text = ", ".join(f"{word} → {value}" for word, value in rename.items()) or "nothing renamed"
    if "fallback" in naming.source:
        text += (f" (family/maker unknown for this model: set safety.target_names.{stage.params.target_name})")
    return f"jailbreak renaming: {text}"


def benign_facts(ctx: PlanContext) -> SafetyFacts:
    """The over-refusal prompts (read offline: a packaged or local file)."""
    from collapselab.safety.overrefusal import load_overrefusal

    o = ctx.spec.safety.overrefusal
    prompts = load_overrefusal(o.path, max_prompts=o.max_prompts, seed=o.seed)
    texts = [p.text for p in prompts]
    return SafetyFacts(len(prompts), False, texts, texts, f"{len(prompts)} over-refusal prompts")


def plan_benign_prompts(stage: Stage, ctx: PlanContext) -> Estimate:
    facts = benign_facts(ctx)
    return Estimate(None, facts.count, notes=[facts.note])


def _facts(respond: Stage, ctx: PlanContext) -> SafetyFacts:
    """The prompts a safety_respond stage answers: its target's harmful ones, or the benign ones."""
    if any(i.kind == "benign_prompts" for i in respond.inputs):
        return benign_facts(ctx)
    return ctx.safety(respond.params.target_name)


def _reads_probabilities(settings: dict) -> bool:
    return "method" in settings  # only a probability read-out names its method in the key


_READ_NOTE = "one forward pass per item: the verdict tokens' probabilities (no generation, no retries)"


def _safety_max_new_tokens(ctx: PlanContext) -> int:
    return ctx.spec.safety.max_new_tokens or ctx.spec.decoding.max_new_tokens


def plan_safety_respond(stage: Stage, ctx: PlanContext) -> Estimate:
    facts = _facts(stage, ctx)
    mnt = stage.params.decoding.max_new_tokens
    est = Estimate(stage.params.target.id, facts.count, times(facts.count, mnt), bound=facts.bound,
                   notes=[f"≤ {mnt:,} new tokens per answer", facts.note])
    system = system_chars(stage.params.decoding.system_prompt)
    if facts.texts is None:
        est.tokens_prefill = None
        est.notes.append("prefill unknown: the prompts are not read offline")
    else:
        est.tokens_prefill = estimate_tokens(sum(system + len(t) for t in facts.texts))
    return est


def plan_calibrate(stage: Stage, ctx: PlanContext) -> Estimate:
    items = calibration_items(ctx.spec)  # the whole set, or the configured sample
    st = stage.settings
    overhead = system_chars(st["system_prompt"]) + len(st["template"] or "")
    reads = _reads_probabilities(st)
    return Estimate(stage.params.model.id, len(items), 0 if reads else len(items) * st["max_new_tokens"],
                    estimate_tokens(sum(overhead + len(i.prompt) + len(i.response) for i in items)),
                    notes=[_READ_NOTE if reads else retry_note(st)])



def plan_judge(stage: Stage, ctx: PlanContext) -> Estimate:
    respond = stage.params.respond
    facts = _facts(respond, ctx)
    st = stage.settings
    reads = _reads_probabilities(st)
    est = Estimate(stage.params.model.id, facts.count, 0 if reads else times(facts.count, st["max_new_tokens"]),
                   bound=facts.bound, notes=[_READ_NOTE if reads else retry_note(st)])
    if facts.harmful is None:
        est.tokens_prefill = None
        est.notes.append("prefill unknown: the prompts are not read offline")
    else:
        # the judge reads the template, the underlying request and an answer of at most the
        # answering stage's max_new_tokens
        answer = respond.params.decoding.max_new_tokens * CHARS_PER_TOKEN
        overhead = system_chars(st["system_prompt"]) + len(st["template"] or "") + answer
        est.tokens_prefill = estimate_tokens(sum(overhead + len(h) for h in facts.harmful))
        est.notes.append("prefill counts each answer at max_new_tokens")
    return est

