"""The stage graph: the spine (prepare → generate → mix → train → respond) and every experiment's
stages added from it (see :mod:`collapselab.pipeline.experiments`).

The graph imports the experiments only through their ``add_stages`` interface; the experiments
never import the graph.
"""

from __future__ import annotations

import functools

from collapselab.config.spec import ExperimentSpec
from collapselab.loop.trajectory import trajectory_stages
from collapselab.pipeline.experiments import EXPERIMENTS
from collapselab.pipeline.experiments.spine import build_spine
from collapselab.pipeline.kinds import STAGE_KINDS, StageKind, stage_kind
from collapselab.pipeline.stage import Stage

#: the entry-point group whose modules are imported before a graph is built (they register stage
#: kinds, experiments, metrics, judges, ...); see docs/extending.md
PLUGIN_GROUP = "collapselab.plugins"


@functools.cache
def load_plugins() -> tuple[str, ...]:
    """Import every module of the ``collapselab.plugins`` entry-point group once; their names."""
    from importlib.metadata import entry_points

    loaded = []
    for entry in entry_points(group=PLUGIN_GROUP):
        entry.load()
        loaded.append(entry.value)
    return tuple(loaded)


def build_graph(spec: ExperimentSpec) -> list[Stage]:
    """All stages of an experiment in an order where every stage follows its inputs."""
    load_plugins()
    spine = build_spine(spec)
    stages = list(spine.stages) + trajectory_stages(spec, spine)  # the loop's trajectory (with generations)
    for name in EXPERIMENTS.in_order():
        stages += EXPERIMENTS.get(name)(spec, spine)
    for stage in stages:  # scheduling requests only (not part of any key)
        if stage_kind(stage.kind).loads_model:
            # a model spread over several GPUs needs them all (and each data-parallel engine its own)
            model, gpus = stage.model, spec.run.gpus
            if model is not None and model.backend == "vllm" and spec.run.vllm.placement == "ray" \
                    and stage.kind != "train":
                gpus = 0.0  # its engines are Ray actors that hold the GPUs themselves
            elif model is not None and model.gpus > 1 and stage.kind != "train":
                engines = spec.run.vllm.data_parallel if model.backend == "vllm" else 1
                gpus = max(gpus, float(model.gpus * engines))
            if gpus:
                stage.resources["gpus"] = gpus
    for stage in stages:  # a sharded train stage asks for a node's GPUs, one per process
        if stage.kind == "train" and spec.run.gpus_per_node and \
                spec.lora_for(stage.params.target_name).strategy == "fsdp":
            # over several nodes the launchers' placement group reserves them (train/multinode.py)
            stage.resources["gpus"] = float(spec.run.gpus_per_node) if spec.run.nodes == 1 else 0.0
    return stages


def all_kinds() -> list[StageKind]:
    """Every stage kind of every experiment: the spine's, then each experiment's in the order the
    graph adds them (within one experiment, in registration order: inputs' kinds first)."""
    load_plugins()
    order = ["spine", *EXPERIMENTS.in_order()]
    kinds = [STAGE_KINDS.get(name) for name in STAGE_KINDS.in_order()]
    rank = {k.name: (order.index(k.experiment) if k.experiment in order else len(order), i)
            for i, k in enumerate(kinds)}
    return sorted(kinds, key=lambda k: rank[k.name])
