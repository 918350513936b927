"""Capability alongside collapse (issue 16): lm-evaluation-harness tasks on the vanilla target and
every fine-tuned adapter, so the report can say whether a collapsed model also lost ability.

* ``capability``         — one model (a target as it is, or with one cell's adapter: every trained
                           condition × seed × generation) runs the configured lm-eval tasks;
                           lm-eval's results and per-sample records;
* ``capability_summary`` — every model's scores ± lm-eval's standard error, and each condition's
                           difference from the vanilla model on the same items with a paired
                           bootstrap interval and test (:mod:`collapselab.capability.compare`).

One vanilla stage per target whatever the seeds (lm-eval's scoring does not depend on the training
seed) and whether or not ``vanilla`` is among the conditions: it is what every difference is
measured from. A stage's key: the task names (a local task file by its name and the content of
every file it reads), ``limit``, ``num_fewshot``, ``seed``, the pinned lm-eval release and the
model (its target's key settings; an adapter through its train stage, an input).
"""

from __future__ import annotations

from dataclasses import fields

from collapselab.config.spec import Condition, ExperimentSpec
from collapselab.pipeline.experiments.capability import plan, run
from collapselab.pipeline.experiments.capability.params import CapabilityParams, transformers_spec
from collapselab.pipeline.experiments.spine import Spine, gen_suffix
from collapselab.pipeline.keying import model_key_settings
from collapselab.pipeline.kinds import StageKind, register_kind
from collapselab.pipeline.sizing import plan_summary
from collapselab.pipeline.stage import Stage

EXPERIMENT = "capability"

register_kind(StageKind(
    "capability", 1, run.run_capability, plan.plan_capability, unit="items", params=CapabilityParams,
    loads_model=True, experiment=EXPERIMENT, outputs=("results.json", "samples.jsonl", "summary.json"),
    description="a vanilla or fine-tuned model runs the configured lm-evaluation-harness tasks"))
register_kind(StageKind(
    "capability_summary", 1, run.run_capability_summary, plan_summary, unit="models", experiment=EXPERIMENT,
    outputs=("scores.parquet", "differences.parquet", "summary.json"), report=True,
    description="lm-eval scores per model and each condition's paired difference from the vanilla model"))

#: the targets' backends lm-eval can run (through transformers, on the weights folder)
BACKENDS = ("hf", "vllm")


def task_settings(spec: ExperimentSpec) -> dict:
    """What every capability stage is keyed by besides its model (see the module docstring)."""
    from collapselab.capability.harness import PINNED
    from collapselab.capability.tasks import key_entry, task_refs

    c = spec.capability
    settings = {"tasks": [key_entry(r) for r in task_refs(c.tasks)], "limit": c.limit, "num_fewshot": c.num_fewshot,
                "seed": c.seed, "lm_eval": PINNED}
    if c.apply_chat_template:  # another rendering of every request: other scores
        settings["apply_chat_template"] = True
    return settings


def add_stages(spec: ExperimentSpec, spine: Spine) -> list[Stage]:
    """The capability stages (none when ``capability.enabled`` is false): one per target's vanilla
    model, one per trained cell (every condition × seed × generation), and the summary."""
    c = spec.capability
    if not c.enabled:
        return []
    settings = task_settings(spec)
    vanilla = Condition(kind="vanilla")
    stages: list[Stage] = []
    for target, tname in zip(spec.targets, spine.target_names, strict=True):
        stages.append(Stage(
            "capability", f"{tname}-vanilla",
            settings={**settings, "target": model_key_settings(target), "condition": vanilla.label},
            params=CapabilityParams(target, tname, vanilla, spec.seeds[0], model=transformers_spec(target),
                                    batch_size=c.batch_size)))
    for cell, train in spine.cells():
        if train is None or (c.generations == "first" and cell.generation):  # vanilla: the stage above
            continue
        cell_settings = {**settings, "target": model_key_settings(cell.target), "condition": cell.condition.label,
                         "seed": cell.seed}
        if cell.generation:
            cell_settings["generation"] = cell.generation
        stages.append(Stage(
            "capability", f"{cell.target_name}-{cell.condition.slug}-seed{cell.seed}{gen_suffix(cell.generation)}",
            settings=cell_settings, inputs=(train,),
            params=CapabilityParams(**{f.name: getattr(cell, f.name) for f in fields(cell)},
                                    model=transformers_spec(cell.target), batch_size=c.batch_size)))
    stages.append(Stage(
        "capability_summary", "summary",
        settings={"bootstrap": run.BOOTSTRAP, "confidence": run.CONFIDENCE, "seed": c.seed,
                  "correction": spec.stats.correction, **spec.stats.key_settings()},
        inputs=tuple(stages)))
    return stages


def check_capability(spec: ExperimentSpec) -> None:
    """``validate``'s checks: lm-eval installed, at least one task, local task files readable with
    their data files, registered names known to lm-eval (from its index: nothing downloaded), and
    targets lm-eval can load. Raises a ConfigError naming the field."""
    from collapselab.capability.harness import check_names, require_lm_eval
    from collapselab.capability.tasks import task_refs
    from collapselab.errors import ConfigError

    c = spec.capability
    if not c.tasks:
        raise ConfigError("capability.tasks: name at least one lm-eval task (e.g. arc_easy) or the path of a local "
                          "task YAML file")
    for i, target in enumerate(spec.targets):
        if target.backend not in BACKENDS:
            raise ConfigError(f"targets.{i}.id: capability runs lm-eval on a transformers model; {target.id!r} "
                              f"({target.backend} backend) has none (only {', '.join(BACKENDS)} targets)")
    refs = task_refs(c.tasks)  # local files: exist, parse, name a task, their data files exist
    require_lm_eval()
    check_names(refs)
