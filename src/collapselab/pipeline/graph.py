"""The stage graph: the spine (prepare → generate → mix → train → respond) and every experiment's
stages added from it (see :mod:`collapselab.pipeline.experiments`).

The graph imports the experiments only through their ``add_stages`` interface; the experiments
never import the graph.
"""

from __future__ import annotations

from collapselab.config.spec import ExperimentSpec
from collapselab.pipeline.experiments import EXPERIMENTS
from collapselab.pipeline.experiments.spine import build_spine, shard_plan, target_names  # noqa: F401
from collapselab.pipeline.kinds import stage_kind
from collapselab.pipeline.stage import Stage


def build_graph(spec: ExperimentSpec) -> list[Stage]:
    """All stages of an experiment in an order where every stage follows its inputs."""
    spine = build_spine(spec)
    stages = list(spine.stages)
    for _, add_stages in EXPERIMENTS:
        stages += add_stages(spec, spine)
    if spec.run.gpus:  # a scheduling request only (not part of any key)
        for stage in stages:
            if stage_kind(stage.kind).loads_model:
                stage.resources["gpus"] = spec.run.gpus
    return stages
