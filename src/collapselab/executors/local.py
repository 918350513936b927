"""The local executor: runs the graph's stages one after another in this process.

Completed stages are skipped; an interrupted stage resumes from its partial folder; the run
folder is locked for the whole run so two runs never interleave their writes. The order is the
graph's, except that with a shared vLLM engine the stages of one engine are grouped
(:func:`~collapselab.executors.order.engine_order`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from collapselab.config.load import spec_to_yaml
from collapselab.config.spec import ExperimentSpec
from collapselab.executors.base import RunReport, StageProgress, configure_threads, execute_stage
from collapselab.executors.order import engine_order
from collapselab.pipeline.context import ModelPool
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.stage import Stage
from collapselab.store.atomic import write_text
from collapselab.store.run import RunStore


def run_stages_local(
    spec: ExperimentSpec,
    run_dir: str | Path,
    *,
    progress: StageProgress | None = None,
    stages: list[Stage] | None = None,
    stop_after: Callable[[Stage], bool] | None = None,
) -> RunReport:
    """Run every stage not yet done, in graph order (grouped by vLLM engine with a shared engine),
    in this process."""
    progress = progress or StageProgress()
    store = RunStore(run_dir)
    stages = build_graph(spec) if stages is None else stages
    report = RunReport(Path(run_dir))
    started = time.perf_counter()
    with store.lock():
        write_text(store.root / "experiment.yaml", spec_to_yaml(spec))
        pool = ModelPool.for_run(spec, store.root)
        configure_threads(spec)
        try:
            for index, stage in enumerate(engine_order(stages, spec, lambda s: store.is_done(s.ref))):
                if store.is_done(stage.ref):
                    report.skipped.append(stage.label)
                    progress.finish(stage, skipped=True)
                    continue
                progress.start(stage, index, len(stages))
                store.set_active(stage.label)
                execute_stage(stage, spec, store, pool, progress.set_total, progress.advance)
                report.ran.append(stage.label)
                progress.finish(stage, skipped=False)
                if stop_after and stop_after(stage):
                    break
        finally:
            pool.close()
    report.seconds = time.perf_counter() - started
    return report
