"""What every executor shares: thread configuration, the run report, progress callbacks, running
one stage (begin → runner → commit, the resume rules of :class:`~collapselab.store.run.RunStore`)
and each stage's status."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from collapselab.config.spec import ExperimentSpec
from collapselab.pipeline.context import ModelPool, StageContext
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.kinds import stage_kind
from collapselab.pipeline.stage import Stage
from collapselab.store.run import RunStore


@dataclass
class RunReport:
    """What a run did."""

    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unverified: list[str] = field(default_factory=list)  # done stages written before manifests


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


def execute_stage(stage: Stage, spec: ExperimentSpec, store: RunStore, pool: ModelPool,
                  set_total: Callable[[int], None], advance: Callable[[int], None]) -> float:
    """Run one stage in this process: open (or resume) its partial folder, run its kind's runner,
    commit the folder; returns the runner's seconds."""
    out = store.begin(stage.ref)
    started = time.perf_counter()
    stage_kind(stage.kind).run(StageContext(stage, out, spec, store, pool, set_total, advance))
    seconds = time.perf_counter() - started
    store.commit(stage.ref, stage.settings, [i.ref for i in stage.inputs], seconds)
    return seconds


def check_done_stages(store: RunStore, stages: list[Stage]) -> list[str]:
    """Before a run goes on: every completed stage's files still have the sizes recorded when it
    finished (else a :class:`DataError` names the files and the folder to delete). Returns the
    labels of completed stages written before manifests existed, which cannot be checked."""
    unverified = []
    for stage in stages:
        if store.is_done(stage.ref):
            if store.check(stage.ref) is None:
                unverified.append(stage.label)
            else:
                store.require_intact(stage.ref)
    return unverified


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
