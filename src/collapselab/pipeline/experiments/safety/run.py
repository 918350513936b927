"""Experiment 2's runners: prompts, safety_respond, calibrate, judge, safety."""

from __future__ import annotations

import json
import logging
from typing import Any

from collapselab.config.spec import ExperimentSpec, ModelSpec
from collapselab.errors import DataError
from collapselab.pipeline.context import StageContext
from collapselab.pipeline.experiments.safety.params import ROLES, judge_spec
from collapselab.pipeline.experiments.spine.run import answer_rows
from collapselab.pipeline.stage import Stage
from collapselab.store.jsonsafe import jsonable

log = logging.getLogger(__name__)


def run_prompts(ctx: StageContext) -> None:
    """Load, sample and wrap the harmful prompts for one target."""
    from collections import Counter

    from collapselab.safety.jailbreaks import build_safety_prompts, filter_templates, load_templates
    from collapselab.safety.names import resolve_rename, target_naming
    from collapselab.safety.prompts import load_prompts
    from collapselab.store.atomic import write_json, write_jsonl

    s = ctx.spec.safety
    p = ctx.stage.params
    naming = target_naming(s, p.target_name, p.model_id)
    rename = resolve_rename(s.jailbreaks.rename, naming)
    if "fallback" in naming.source and s.jailbreaks.kind != "none":
        log.warning("safety: no family/maker known for target %r (model %s): the jailbreak templates name "
                    "it %r; set safety.target_names.%s: {family: ..., maker: ...}", p.target_name,
                    p.model_id, p.target_name, p.target_name)
    harmful = load_prompts(s.prompts)
    if not harmful:
        raise DataError("safety.prompts: no harmful prompts were loaded")
    loaded = load_templates(s.jailbreaks)
    j = s.jailbreaks
    short = [t for t in loaded if j.max_chars is None or len(t.text) <= j.max_chars]
    templates = filter_templates(short, j.min_votes, j.require_placeholder, j.max_templates, j.seed)
    rows = build_safety_prompts(harmful, templates, j, p.target_name, rename)
    write_jsonl(ctx.out / "prompts.jsonl", [
        {"id": p.id, "user": p.text, "kind": p.kind, "category": p.category, "prompt_id": p.prompt_id,
         "template_id": p.template_id, "source": p.source} for p in rows])
    write_jsonl(ctx.out / "templates.jsonl", [
        {"id": t.id, "name": t.name, "votes": t.votes, "source": t.source, "text": t.text} for t in templates])
    by_id = {h.id: h.text for h in harmful}
    write_json(ctx.out / "harmful.json", by_id)
    write_json(ctx.out / "summary.json", {
        "harmful_prompts": len(harmful), "templates_loaded": len(loaded),
        "templates_too_long": len(loaded) - len(short), "templates_kept": len(templates),
        "plain": sum(p.kind == "plain" for p in rows), "jailbreak": sum(p.kind == "jailbreak" for p in rows),
        "categories": dict(Counter(h.category for h in harmful)),
        "names": {"family": naming.family, "maker": naming.maker, "source": naming.source},
        "rename": rename,
    })


def run_safety_respond(ctx: StageContext) -> None:
    """One model (vanilla or fine-tuned) answers every safety prompt."""
    from collapselab.store.atomic import read_jsonl

    p = ctx.stage.params
    rows = read_jsonl(ctx.input_dir(ctx.stage.input("prompts")) / "prompts.jsonl")
    target: ModelSpec = p.target
    if p.condition.kind != "vanilla":
        target = target.model_copy(update={"adapter": str(ctx.input_dir(ctx.stage.input("train")) / "adapter")})
    extra = {"target": p.target_name, "condition": p.condition.label}
    answer_rows(ctx, target, rows, p.decoding, extra, "responses.jsonl",
                lambda r: {"kind": r["kind"], "category": r["category"], "harmful_prompt_id": r["prompt_id"],
                           "template_id": r["template_id"]})


def _judge_items(rows: list[dict], harmful: dict[str, str]) -> list[Any]:
    from collapselab.judges.run import JudgeItem

    return [JudgeItem(r["prompt_id"], harmful.get(r["harmful_prompt_id"], r["prompt"]), r["response"]) for r in rows]


def judge_resumable(ctx: StageContext, model_spec: ModelSpec, items: list[Any]) -> list[Any]:
    """The stage's judge (``settings["role"]`` in :data:`~collapselab.judges.registry.JUDGES`) over
    ``items``, in fixed chunks of the whole list, each checkpointed (a resumed stage batches exactly
    as a fresh one); one :class:`~collapselab.judges.run.Judgement` per item, in order."""
    from collapselab.judges import JUDGES
    from collapselab.judges.run import judge_in_chunks
    from collapselab.store.atomic import AppendLog

    settings = ctx.stage.settings
    judge = JUDGES.get(settings["role"])
    ctx.set_total(len(items))
    return judge_in_chunks(lambda: ctx.models.get(model_spec), items, settings["template"], judge.read,
                           log=AppendLog(ctx.out / "partial.jsonl"),
                           max_new_tokens=settings["max_new_tokens"], retries=settings["retries"],
                           seed=settings["seed"], system_prompt=settings["system_prompt"],
                           reminder=judge.reminder, progress=ctx.advance)


def run_judge_stage(ctx: StageContext) -> None:
    """One judge rates one model's answers to the safety prompts."""
    from dataclasses import asdict

    from collapselab.store.atomic import read_jsonl, write_json, write_jsonl

    p = ctx.stage.params
    respond = p.respond
    rows = read_jsonl(ctx.input_dir(respond) / "responses.jsonl")
    prompts_dir = ctx.input_dir(respond.input("prompts"))
    harmful = json.loads((prompts_dir / "harmful.json").read_text())
    judgements = judge_resumable(ctx, p.model, _judge_items(rows, harmful))
    write_jsonl(ctx.out / "judgements.jsonl", [asdict(j) for j in judgements])
    write_json(ctx.out / "summary.json", {
        "role": p.role, "judge": p.model.id, "items": len(judgements),
        "parsed": sum(j.score is not None for j in judgements),
        "unparsed": sum(j.score is None for j in judgements),
        "retried": sum(j.attempts > 1 for j in judgements),
    })
    (ctx.out / "partial.jsonl").unlink(missing_ok=True)


def run_calibrate(ctx: StageContext) -> None:
    """A judge rates the labelled calibration set; its agreement with the labels is saved."""
    from dataclasses import asdict

    from collapselab.judges.calibration import score_judge
    from collapselab.judges.run import JudgeItem
    from collapselab.store.atomic import write_json, write_jsonl

    p = ctx.stage.params
    items = calibration_items(ctx.spec)
    judgements = judge_resumable(ctx, p.model, [JudgeItem(i.id, i.prompt, i.response) for i in items])
    write_jsonl(ctx.out / "judgements.jsonl", [asdict(j) for j in judgements])
    threshold = ctx.spec.safety.harmful_threshold if p.role == "harm" else ctx.spec.safety.quality_threshold
    scores = score_judge(items, judgements, p.role, threshold, min_kappa=ctx.spec.safety.min_kappa)
    write_json(ctx.out / "agreement.json", {"role": p.role, "judge": p.model.id, **scores})
    (ctx.out / "partial.jsonl").unlink(missing_ok=True)


def calibration_items(spec: ExperimentSpec) -> list[Any]:
    """The calibration set, or a seeded sample of ``safety.calibration_items`` spread equally over
    its kinds (refusal / harmful / benign), in file order."""
    import random

    from collapselab.judges.calibration import load_calibration

    items = load_calibration(spec.safety.calibration)
    n = spec.safety.calibration_items
    if n is None or n >= len(items):
        return items
    kinds = sorted({i.kind for i in items})
    rng = random.Random(spec.safety.seed)
    keep: set[str] = set()
    for k, kind in enumerate(kinds):
        of_kind = [i.id for i in items if i.kind == kind]
        share = n // len(kinds) + (1 if k < n % len(kinds) else 0)
        keep.update(rng.sample(of_kind, min(share, len(of_kind))))
    return [i for i in items if i.id in keep]


def judged_table(stages: list[Stage], final_dir) -> Any:
    """One row per answer with its judgements and the refusal flag (the input of the metrics)."""
    import numpy as np
    import pandas as pd

    from collapselab.judges import JUDGES
    from collapselab.store.atomic import read_jsonl

    is_refusal = JUDGES.get("refusal").read  # the registered rule judge
    responds = [s for s in stages if s.kind == "safety_respond"]
    judged: dict[tuple[str, str], dict[str, dict]] = {}
    for s in (x for x in stages if x.kind == "judge"):
        judged[(s.params.respond.label, s.params.role)] = {
            r["id"]: r for r in read_jsonl(final_dir(s) / "judgements.jsonl")}
    rows = []
    for r in responds:
        p = r.params
        harm = judged.get((r.label, "harm"), {})
        quality = judged.get((r.label, "quality"), {})
        for rec in read_jsonl(final_dir(r) / "responses.jsonl"):
            pid = rec["prompt_id"]
            h, q = harm.get(pid, {}), quality.get(pid, {})
            rows.append({
                "target": p.target_name, "condition": p.condition.label, "seed": p.seed,
                "generation": p.generation, "prompt_kind": rec["kind"], "category": rec["category"],
                "template_id": rec["template_id"],
                "prompt_id": rec["harmful_prompt_id"], "item_id": pid,
                "harm": np.nan if h.get("score") is None else float(h["score"]),
                "quality": np.nan if q.get("score") is None else float(q["score"]),
                "refused": bool(is_refusal(rec["response"])), "empty": not rec["response"].strip(),
                "harm_error": h.get("error"), "quality_error": q.get("error"),
                "harm_reason": h.get("reason"), "quality_reason": q.get("reason"),
                "prompt": rec["prompt"], "response": rec["response"],
            })
    return pd.DataFrame(rows)


def run_safety(ctx: StageContext) -> None:
    """Metrics with intervals (jailbreak items resampled as clusters), paired differences between
    conditions, joint distributions, per-template attack success and the tests."""
    from collapselab.judges.calibration import score_refusal_detector
    from collapselab.safety.differences import condition_differences
    from collapselab.safety.metrics import (
        attack_success_by_template,
        joint_distribution,
        safety_summary,
        safety_tests,
    )
    from collapselab.store.atomic import write_json
    from collapselab.store.frames import write_parquet

    st = ctx.stage.settings
    judged = judged_table(list(ctx.stage.inputs), ctx.input_dir)
    clusters = st.get("jailbreak_bootstrap", "two_way")  # what the intervals of jailbreak items resample
    ctx.set_total(6)
    tables = {
        "judged": judged,
        "summary": safety_summary(judged, harmful_threshold=st["harmful_threshold"],
                                  quality_threshold=st["quality_threshold"], n_resamples=st["bootstrap"],
                                  confidence=st["confidence"], seed=st["seed"], jailbreak_bootstrap=clusters),
        "differences": condition_differences(judged, harmful_threshold=st["harmful_threshold"],
                                             quality_threshold=st["quality_threshold"], n_resamples=st["bootstrap"],
                                             confidence=st["confidence"], seed=st["seed"],
                                             jailbreak_bootstrap=clusters),
        "joint": joint_distribution(judged),
        "templates": attack_success_by_template(judged, harmful_threshold=st["harmful_threshold"]),
        "tests": safety_tests(judged, paired=st.get("stats", {}).get("paired", True)),
    }
    for name, frame in tables.items():
        write_parquet(frame, ctx.out / f"{name}.parquet")
        ctx.advance(1)
    calibration = []
    for s in (x for x in ctx.stage.inputs if x.kind == "calibrate"):
        calibration.append(json.loads((ctx.input_dir(s) / "agreement.json").read_text()))
    if ctx.spec.safety.calibrate:
        items = calibration_items(ctx.spec)
        calibration.append({"role": "refusal", "judge": "phrase detector",
                            **score_refusal_detector(items, min_kappa=st["min_kappa"])})
    write_json(ctx.out / "calibration.json", json.loads(json.dumps(calibration, default=jsonable)))
    write_json(ctx.out / "summary.json", {
        "answers": len(judged),
        "unparsed_harm": int(judged["harm"].isna().sum()) if len(judged) else 0,
        "unparsed_quality": int(judged["quality"].isna().sum()) if len(judged) else 0,
        "judges": {role: judge_spec(ctx.spec, role).id for role in ROLES},
    })
