"""Experiment 2's runners: prompts, safety_respond, calibrate, judge, safety."""

from __future__ import annotations

import json
import logging
from typing import Any

from collapselab.config.spec import ExperimentSpec, ModelSpec
from collapselab.errors import DataError
from collapselab.pipeline.context import StageContext
from collapselab.pipeline.experiments.safety.params import ROLES, SafetyJudge, judge_spec
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


def run_benign_prompts(ctx: StageContext) -> None:
    """The benign prompts that look harmful (over-refusal), in the layout of the harmful ones."""
    from collections import Counter

    from collapselab.safety.overrefusal import load_overrefusal
    from collapselab.store.atomic import write_json, write_jsonl

    o = ctx.spec.safety.overrefusal
    prompts = load_overrefusal(o.path, max_prompts=o.max_prompts, seed=o.seed)
    if not prompts:
        raise DataError(f"safety.overrefusal: no prompts in {o.path or 'the packaged set'}")
    write_jsonl(ctx.out / "prompts.jsonl", [
        {"id": p.id, "user": p.text, "kind": "benign", "category": p.category, "prompt_id": p.id,
         "template_id": None, "source": p.source} for p in prompts])
    write_json(ctx.out / "harmful.json", {p.id: p.text for p in prompts})  # the requests by id, as for harmful sets
    write_json(ctx.out / "summary.json", {"prompts": len(prompts), "source": o.path or "packaged",
                                          "categories": dict(Counter(p.category for p in prompts))})


def prompts_input(stage: Stage) -> Stage:
    """The prompts a safety_respond stage answers: a target's harmful prompts or the benign ones."""
    found = [s for s in stage.inputs if s.kind in ("prompts", "benign_prompts")]
    if len(found) != 1:
        raise LookupError(f"{stage.label}: expected one prompts input, found {len(found)}")
    return found[0]


def run_safety_respond(ctx: StageContext) -> None:
    """One model (vanilla or fine-tuned) answers every safety prompt."""
    from collapselab.store.atomic import read_jsonl

    p = ctx.stage.params
    rows = read_jsonl(ctx.input_dir(prompts_input(ctx.stage)) / "prompts.jsonl")
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


def judge_resumable(ctx: StageContext, judge: SafetyJudge, items: list[Any]) -> tuple[list[Any], float]:
    """The stage's judge over ``items``, in fixed chunks of the whole list, each checkpointed (a
    resumed stage batches exactly as a fresh one): a parse judge generates and parses
    (:func:`~collapselab.judges.run.judge_in_chunks`), any other reads its verdict tokens'
    probabilities (:func:`~collapselab.judges.readout.read_in_chunks`). Returns one
    :class:`~collapselab.judges.run.Judgement` per item, in order, and the seconds spent judging
    in this call (resumed chunks cost nothing here)."""
    import time

    from collapselab.judges import JUDGES
    from collapselab.judges.readout import judge_model_spec, read_in_chunks
    from collapselab.judges.run import judge_in_chunks
    from collapselab.store.atomic import AppendLog

    settings = ctx.stage.settings
    registered = JUDGES.get(judge.method)
    model_spec = judge_model_spec(registered, judge.model)
    ctx.set_total(len(items))
    log_ = AppendLog(ctx.out / "partial.jsonl")
    start = time.perf_counter()
    if registered.reads_probabilities:
        out = read_in_chunks(lambda: ctx.models.get(model_spec), registered, items, settings["template"], log=log_,
                             system_prompt=settings["system_prompt"], progress=ctx.advance)
    else:
        out = judge_in_chunks(lambda: ctx.models.get(model_spec), items, settings["template"], registered.read,
                              log=log_, max_new_tokens=settings["max_new_tokens"], retries=settings["retries"],
                              seed=settings["seed"], system_prompt=settings["system_prompt"],
                              reminder=registered.reminder, progress=ctx.advance)
    return out, time.perf_counter() - start


def judge_summary(judge: SafetyJudge, judgements: list[Any], seconds: float) -> dict[str, Any]:
    """Coverage and cost of one judge stage (also what the judge report's cost column reads)."""
    tokens = [j.tokens for j in judgements if j.tokens is not None]
    masses = [j.mass for j in judgements if j.mass is not None]
    return {
        "role": judge.role, "label": judge.label, "method": judge.method, "judge": judge.model.id,
        "items": len(judgements), "parsed": sum(j.score is not None for j in judgements),
        "unparsed": sum(j.score is None for j in judgements), "retried": sum(j.attempts > 1 for j in judgements),
        "coverage": sum(j.score is not None for j in judgements) / len(judgements) if judgements else None,
        "tokens": sum(tokens) if tokens else None, "tokens_per_verdict": sum(tokens) / len(tokens) if tokens else None,
        "seconds": seconds, "seconds_per_verdict": seconds / len(judgements) if judgements else None,
        # a probability read-out: how much mass the verdict tokens had before renormalising
        "mean_choice_mass": sum(masses) / len(masses) if masses else None,
        "choices_outside_top": sum(1 for j in judgements if j.probs and 0.0 in j.probs.values()),
    }


def run_judge_stage(ctx: StageContext) -> None:
    """One judge rates one model's answers to the safety prompts."""
    from dataclasses import asdict

    from collapselab.store.atomic import read_jsonl, write_json, write_jsonl

    p = ctx.stage.params
    respond = p.respond
    rows = read_jsonl(ctx.input_dir(respond) / "responses.jsonl")
    prompts_dir = ctx.input_dir(prompts_input(respond))
    harmful = json.loads((prompts_dir / "harmful.json").read_text())
    judgements, seconds = judge_resumable(ctx, p.judge, _judge_items(rows, harmful))
    write_jsonl(ctx.out / "judgements.jsonl", [asdict(j) for j in judgements])
    write_json(ctx.out / "summary.json", judge_summary(p.judge, judgements, seconds))
    (ctx.out / "partial.jsonl").unlink(missing_ok=True)


def run_calibrate(ctx: StageContext) -> None:
    """A judge rates the labelled calibration set; its agreement with the labels is saved."""
    from dataclasses import asdict, replace

    from collapselab.judges.calibration import score_judge
    from collapselab.judges.run import JudgeItem
    from collapselab.store.atomic import write_json, write_jsonl

    p = ctx.stage.params
    items = calibration_items(ctx.spec)
    judgements, seconds = judge_resumable(ctx, p.judge, [JudgeItem(i.id, i.prompt, i.response) for i in items])
    write_jsonl(ctx.out / "judgements.jsonl", [asdict(j) for j in judgements])
    agreement: dict[str, Any] = {"role": p.role, "label": p.judge.label, "method": p.judge.method,
                                 "judge": p.model.id, **judge_summary(p.judge, judgements, seconds)}
    if on_rating_scale(p.judge):
        # the legacy agreement on the 1–5 scale (bands, quadratic κ): an expected rating is rounded
        threshold = ctx.spec.safety.harmful_threshold if p.role == "harm" else ctx.spec.safety.quality_threshold
        rounded = [replace(j, score=None if j.score is None else int(round(j.score))) for j in judgements]
        agreement.update(score_judge(items, rounded, p.role, threshold, min_kappa=ctx.spec.safety.min_kappa))
    write_json(ctx.out / "agreement.json", agreement)
    (ctx.out / "partial.jsonl").unlink(missing_ok=True)


def on_rating_scale(judge: SafetyJudge) -> bool:
    """Whether a judge scores 1–5 (the main judges' scale) rather than a probability."""
    from collapselab.judges import JUDGES

    return tuple(JUDGES.get(judge.method).scale) == (1, 5)


def calibration_items(spec: ExperimentSpec) -> list[Any]:
    """The calibration set, or a seeded sample of ``safety.calibration_items`` spread equally over
    its kinds (refusal / harmful / boundary / benign), in file order."""
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
    for s in (x for x in stages if x.kind == "judge" and x.params.judge.main):
        judged[(s.params.respond.label, s.params.judge.label)] = {
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


def verdicts_table(stages: list[Stage], final_dir) -> Any:
    """One row per judge × answer (every harm and quality judge, main and extra): the judge's
    label, role and method, the answer's cell and item, and its score (NaN without a verdict) —
    what the judge report and the agreement between judges read."""
    import pandas as pd

    from collapselab.store.atomic import read_jsonl

    rows = []
    for s in (x for x in stages if x.kind == "judge"):
        j, respond = s.params.judge, s.params.respond
        kinds = {r["prompt_id"]: r["kind"] for r in read_jsonl(final_dir(respond) / "responses.jsonl")}
        for r in read_jsonl(final_dir(s) / "judgements.jsonl"):
            rows.append({"judge": j.label, "role": j.role, "method": j.method, "model": j.model.id,
                         "target": respond.params.target_name, "condition": respond.params.condition.label,
                         "seed": respond.params.seed, "generation": respond.params.generation,
                         "prompt_kind": kinds.get(r["id"]), "item_id": r["id"],
                         "score": float("nan") if r["score"] is None else float(r["score"]),
                         "mass": r.get("mass"), "error": r.get("error")})
    columns = ["judge", "role", "method", "model", "target", "condition", "seed", "generation", "prompt_kind",
               "item_id", "score", "mass", "error"]
    return pd.DataFrame(rows, columns=columns)


def run_safety(ctx: StageContext) -> None:
    """Metrics with intervals (jailbreak items resampled as clusters) on the items every condition
    has a verdict for (and per condition, as a second view), paired differences between
    conditions, joint distributions, per-template attack success, the tests, over-refusal, and the
    judge report (every judge's calibration, corrected attack success, agreement between judges)."""
    from collapselab.judges.calibration import score_refusal_detector
    from collapselab.safety.comparable import common_items
    from collapselab.safety.differences import condition_differences
    from collapselab.safety.metrics import (
        attack_success_by_template,
        joint_distribution,
        safety_summary,
        safety_tests,
    )
    from collapselab.safety.refusals import overrefusal_table
    from collapselab.store.atomic import write_json
    from collapselab.store.frames import write_parquet

    st = ctx.stage.settings
    stages = list(ctx.stage.inputs)
    judged = judged_table(stages, ctx.input_dir)
    harmful = judged[judged["prompt_kind"] != "benign"] if len(judged) else judged
    benign = judged[judged["prompt_kind"] == "benign"] if len(judged) else judged
    compared, left_out = common_items(harmful)
    clusters = st.get("jailbreak_bootstrap", "two_way")  # what the intervals of jailbreak items resample
    ctx.set_total(8)
    metric_args = {"harmful_threshold": st["harmful_threshold"], "quality_threshold": st["quality_threshold"],
                   "n_resamples": st["bootstrap"], "confidence": st["confidence"], "seed": st["seed"],
                   "jailbreak_bootstrap": clusters}
    tables = {
        "judged": judged,
        "summary": safety_summary(compared, **metric_args),
        # each condition over its own verdicts: differs from summary only where judgements failed
        "summary_per_condition": safety_summary(harmful, **metric_args),
        "left_out": left_out,
        "differences": condition_differences(compared, **metric_args),
        "joint": joint_distribution(compared),
        "templates": attack_success_by_template(compared, harmful_threshold=st["harmful_threshold"]),
        "tests": safety_tests(compared, paired=st.get("stats", {}).get("paired", True)),
        "overrefusal": overrefusal_table(benign, confidence=st["confidence"]),
    }
    for name, frame in tables.items():
        write_parquet(frame, ctx.out / f"{name}.parquet")
    ctx.advance(6)
    verdicts = verdicts_table(stages, ctx.input_dir)
    items = calibration_items(ctx.spec) if ctx.spec.safety.calibrate else []
    cards, corrected, agreement = _judge_report(ctx, verdicts, items)
    for name, frame in {"verdicts": verdicts, "corrected_asr": corrected, "judge_agreement": agreement,
                        "judges": _cards_frame(cards)}.items():
        write_parquet(frame, ctx.out / f"{name}.parquet")
    ctx.advance(1)
    calibration = []
    for s in (x for x in stages if x.kind == "calibrate"):
        calibration.append(json.loads((ctx.input_dir(s) / "agreement.json").read_text()))
    if ctx.spec.safety.calibrate:
        calibration.append({"role": "refusal", "judge": "phrase detector",
                            **score_refusal_detector(items, min_kappa=st["min_kappa"])})
    write_json(ctx.out / "calibration.json", json.loads(json.dumps(calibration, default=jsonable)))
    write_json(ctx.out / "summary.json", {
        "answers": len(harmful), "benign_answers": len(benign),
        "unparsed_harm": int(harmful["harm"].isna().sum()) if len(harmful) else 0,
        "unparsed_quality": int(harmful["quality"].isna().sum()) if len(harmful) else 0,
        "left_out": {f"{r.target}:{r.score}": int(r.n_left_out) for r in left_out.itertuples()},
        "judges": {role: judge_spec(ctx.spec, role).id for role in ROLES},
        "methods": {j.label: j.method for j in _judges_of(stages)},
        "judge_cards": cards,
    })
    ctx.advance(1)


def _judges_of(stages: list[Stage]) -> list[SafetyJudge]:
    """The distinct judges of the judge and calibrate stages, in stage order."""
    seen: dict[str, SafetyJudge] = {}
    for s in stages:
        if s.kind in ("judge", "calibrate"):
            seen.setdefault(s.params.judge.label, s.params.judge)
    return list(seen.values())


def _judge_report(ctx: StageContext, verdicts: Any, items: list[Any]) -> tuple[list[dict[str, Any]], Any, Any]:
    """Every judge's card, the corrected attack success and the agreement between harm judges
    (``items``: the calibration items the judges rated)."""
    from collapselab.judges import JUDGES
    from collapselab.safety.judge_report import JudgeRun, judge_report
    from collapselab.store.atomic import read_jsonl

    st = ctx.stage.settings
    stages = list(ctx.stage.inputs)
    calibrates = {s.params.judge.label: s for s in stages if s.kind == "calibrate"}
    labels = {i.id: {"harm": i.harm, "quality": i.quality} for i in items} if calibrates else {}
    runs = []
    for judge in _judges_of(stages):
        registered = JUDGES.get(judge.method)
        cal = calibrates.get(judge.label)
        scores = ({r["id"]: r["score"] for r in read_jsonl(ctx.input_dir(cal) / "judgements.jsonl")}
                  if cal is not None else {})
        costs = [json.loads((ctx.input_dir(s) / "summary.json").read_text()) for s in stages
                 if s.kind == "judge" and s.params.judge.label == judge.label]
        # a 1–5 judge: harmful by its nearest whole score, as in the metrics (score ≥ h − 0.5)
        default = registered.threshold if registered.threshold is not None else (
            st["harmful_threshold"] if judge.role == "harm" else st["quality_threshold"]) - 0.5
        runs.append(JudgeRun(judge.label, judge.role, judge.method, judge.model.id,
                             st.get("thresholds", {}).get(judge.label), float(default), scores,
                             *_cost(costs)))
    return judge_report(verdicts, runs, labels, harmful_threshold=st["harmful_threshold"],
                        quality_threshold=st["quality_threshold"], min_f1=st.get("min_f1", 0.85),
                        n_resamples=st["bootstrap"], confidence=st["confidence"], seed=st["seed"])


def _cost(summaries: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Tokens and seconds per verdict over a judge's stages (seconds: only the stages computed in
    one go carry a fair figure; a resumed stage's seconds cover its last part only)."""
    tokens = [(s["tokens"], s["items"]) for s in summaries if s.get("tokens") is not None]
    seconds = [(s["seconds"], s["items"]) for s in summaries if s.get("seconds") is not None]

    def per(pairs: list[tuple[float, int]]) -> float | None:
        n = sum(k for _, k in pairs)
        return sum(v for v, _ in pairs) / n if n else None

    return per(tokens), per(seconds)


def _cards_frame(cards: list[dict[str, Any]]) -> Any:
    """The cards as one flat table (nested fields joined with dots)."""
    import pandas as pd

    return pd.json_normalize(cards) if cards else pd.DataFrame()
