"""Executors run a graph's stages: :mod:`~collapselab.executors.local` (one process, in graph
order) and :mod:`~collapselab.executors.ray_executor` (independent stages at once, as Ray tasks).
Both share :mod:`~collapselab.executors.base`; :func:`run_stages` picks one by ``run.executor``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from collapselab.config.spec import ExperimentSpec
from collapselab.executors.base import RunReport, StageProgress, check_done_stages, stage_status
from collapselab.executors.local import run_stages_local
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.stage import Stage
from collapselab.store.run import RunStore

__all__ = ["RunReport", "StageProgress", "run_stages", "stage_status"]


def run_stages(
    spec: ExperimentSpec,
    run_dir: str | Path,
    *,
    progress: StageProgress | None = None,
    stages: list[Stage] | None = None,
    stop_after: Callable[[Stage], bool] | None = None,
) -> RunReport:
    """Run every stage not yet done (``run.executor: ray``: as Ray tasks, else in this process).

    First every completed stage's files are checked against the sizes recorded when it finished
    (:func:`~collapselab.executors.base.check_done_stages`): a changed artifact fails the run
    before anything reads it."""
    stages = build_graph(spec) if stages is None else stages
    unverified = check_done_stages(RunStore(run_dir), stages)
    if spec.run.executor == "ray":  # imported here: Ray is an optional extra
        from collapselab.executors.ray_executor import run_stages_ray

        report = run_stages_ray(spec, run_dir, progress=progress, stages=stages, stop_after=stop_after)
    else:
        report = run_stages_local(spec, run_dir, progress=progress, stages=stages, stop_after=stop_after)
    report.unverified = unverified
    return report
