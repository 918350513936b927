"""The local executor: runs the graph's stages one after another in this process.

Completed stages are skipped; an interrupted stage resumes from its partial folder; the run
folder is locked for the whole run so two runs never interleave their writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from collapselab.config.load import spec_to_yaml
from collapselab.config.spec import ExperimentSpec
from collapselab.pipeline.graph import Stage, build_graph
from collapselab.pipeline.stages import RUNNERS, ModelPool, StageContext
from collapselab.store.atomic import write_text
from collapselab.store.run import RunStore


@dataclass
class RunReport:
    """What a run did."""

    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


class StageProgress:
    """Progress callbacks for the executor (no-op by default; the CLI passes a rich one)."""

    def start(self, stage: Stage, index: int, total: int) -> None: ...

    def set_total(self, n: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self, stage: Stage, skipped: bool) -> None: ...


def configure_threads(spec: ExperimentSpec) -> None:
    """Use every core (or ``run.threads``) for torch; must happen before the first model loads."""
    threads = spec.run.threads or os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:  # BLAS pools (numpy, faiss) ignore OMP_NUM_THREADS once loaded: limit them explicitly
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)
    try:  # the run shows its own progress bars; transformers' per-load bars are noise in logs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def run_stages(
    spec: ExperimentSpec,
    run_dir: str | Path,
    *,
    progress: StageProgress | None = None,
    stages: list[Stage] | None = None,
    stop_after: Callable[[Stage], bool] | None = None,
) -> RunReport:
    """Run every stage not yet done, in graph order (``run.executor: ray``: as Ray tasks)."""
    if spec.run.executor == "ray":  # imported here: Ray is an optional extra
        from collapselab.pipeline.ray_executor import run_stages_ray

        return run_stages_ray(spec, run_dir, progress=progress, stages=stages, stop_after=stop_after)
    progress = progress or StageProgress()
    store = RunStore(run_dir)
    stages = build_graph(spec) if stages is None else stages
    report = RunReport(Path(run_dir))
    started = time.perf_counter()
    with store.lock():
        write_text(store.root / "experiment.yaml", spec_to_yaml(spec))
        pool = ModelPool()
        configure_threads(spec)
        try:
            for index, stage in enumerate(stages):
                if store.is_done(stage.ref):
                    report.skipped.append(stage.label)
                    progress.finish(stage, skipped=True)
                    continue
                progress.start(stage, index, len(stages))
                store.set_active(stage.label)
                out = store.begin(stage.ref)
                t0 = time.perf_counter()
                ctx = StageContext(stage, out, spec, store, pool, progress.set_total, progress.advance)
                RUNNERS[stage.kind](ctx)
                store.commit(stage.ref, stage.settings, [i.ref for i in stage.inputs], time.perf_counter() - t0)
                report.ran.append(stage.label)
                progress.finish(stage, skipped=False)
                if stop_after and stop_after(stage):
                    break
        finally:
            pool.close()
    report.seconds = time.perf_counter() - started
    return report


def stage_status(spec: ExperimentSpec, run_dir: str | Path) -> list[tuple[Stage, str]]:
    """Each stage with one of ``done``, ``running``, ``interrupted`` (partial work kept) or ``missing``."""
    store = RunStore(run_dir)
    active = store.active() if store.is_locked() else None
    out = []
    for stage in build_graph(spec):
        if store.is_done(stage.ref):
            state = "done"
        elif active and stage.label in (active.get("stages") or [active.get("stage")]):
            state = "running"
        elif store.has_partial(stage.ref):
            state = "interrupted"
        else:
            state = "missing"
        out.append((stage, state))
    return out
