"""The Ray executor: independent stages of the graph run at the same time, as Ray tasks.

The driver (this process) holds the run lock for the whole run, as the local executor does, and
schedules every stage that is not done yet as soon as all of its inputs are done (a small DAG
scheduler around ``ray.wait``). Each task asks Ray for the stage's ``resources`` (``cpus``,
``gpus``), rebuilds the graph from the spec to find its stage (``Stage`` objects carry model
specs and other params that need not travel), and runs it exactly as the local executor would:
``RunStore.begin`` (which resumes a partial folder), the kind's runner, ``RunStore.commit``
(:func:`collapselab.executors.base.execute_stage`).
So the run folder, the stage keys and the resume rules are those of the local executor, and a
run can switch executors between attempts.

On a cluster of several machines, the run folder and every local path in the config must be
visible at the same path on every node (a shared file system); the workers of a local Ray
instance share the driver's file system and working directory.

vLLM needs an environment of its own (``scripts/setup-vllm.sh`` makes ``.venv-vllm``; vLLM pins
its own torch and transformers). A Ray run uses it in one of two ways (docs/vllm.md):

* ``run.vllm.python: .venv-vllm/bin/python`` — the driver and the workers run from collapselab's
  environment; each task that needs a ``vllm/`` model starts its own engine as a child process of
  that interpreter, on the GPUs Ray gave the task, ended with the task. On a cluster the
  interpreter must exist at that path on every GPU node.
* ``.venv-vllm/bin/collapselab run ...`` — the driver runs in the vLLM environment (collapselab
  and its extras, with vLLM's torch and transformers in place of its pins); a local Ray
  instance starts its workers with the driver's interpreter, and on a cluster every node's Ray
  must be started from that environment (same Ray and Python as the driver).

(``openai/`` models served by ``vllm serve`` need no vLLM in the run's environment at all.)

Ray is imported only inside this module's functions: nothing else in collapselab needs it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collapselab.cluster import ensure_ray
from collapselab.config.load import spec_to_yaml
from collapselab.config.spec import ExperimentSpec
from collapselab.errors import ConfigError
from collapselab.executors.base import RunReport, StageProgress, configure_threads, execute_stage
from collapselab.pipeline.context import ModelPool
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.stage import Stage
from collapselab.store.atomic import write_json, write_text
from collapselab.store.run import RunStore


# -- resources -------------------------------------------------------------------------------------
def task_resources(stage: Stage, node_cpus: float, cluster_gpus: float) -> dict[str, float]:
    """The Ray resource request of a stage: ``{"num_cpus": ..., "num_gpus": ...}``.

    CPUs are clamped to the largest node's CPU count: a stage asking for 2 CPUs must still run
    on a 1- or 2-core machine (the request is a scheduling hint, not a correctness requirement).
    GPUs are not clamped: a stage that needs a GPU cannot run without one, so a cluster without
    enough GPUs is an error rather than a task that waits forever.
    """
    cpus = float(stage.resources.get("cpus", 1))
    gpus = float(stage.resources.get("gpus", 0))
    if gpus > cluster_gpus:
        raise ConfigError(
            f"stage {stage.label} asks for {gpus:g} GPU(s) (its resources field) but the Ray cluster has "
            f"{cluster_gpus:g}; start Ray on a machine with a GPU or set run.ray_address to such a cluster"
        )
    return {"num_cpus": min(cpus, node_cpus) if node_cpus > 0 else cpus, "num_gpus": gpus}


def task_threads(num_cpus: float, run_threads: int | None) -> int:
    """Torch/BLAS threads of a task: its CPU request, capped by ``run.threads`` when set (so
    ``run.threads: 1`` means one thread per stage under either executor, and the same numbers)."""
    threads = max(1, math.floor(num_cpus))
    return min(threads, run_threads) if run_threads else threads


# -- the task (runs in a Ray worker) ---------------------------------------------------------------
def _ignore(_: int) -> None:
    """Per-item progress is not sent back from workers."""


def find_stage(stages: list[Stage], label: str, key: str) -> Stage:
    """The stage with this label, checked to have the key the driver scheduled (a corpus edited
    while the run was going would change it: computing the other stage silently would be wrong)."""
    for stage in stages:
        if stage.label == label:
            if stage.key != key:
                raise ConfigError(
                    f"stage {label}: its key changed while the run was going ({key} when scheduled, "
                    f"{stage.key} in the worker); was the corpus or a config file edited? Run again."
                )
            return stage
    raise ConfigError(f"stage {label}: not in the graph built from the experiment's config")


def run_stage_task(spec: ExperimentSpec, run_dir: str, label: str, key: str, threads: int) -> float:
    """Run one stage inside a worker, as the local executor does; return its seconds.

    Module level so that Ray pickles it by reference (the worker imports this module).
    """
    configure_threads(spec.model_copy(update={"run": spec.run.model_copy(update={"threads": threads})}))
    stage = find_stage(build_graph(spec), label, key)
    # one per task: workers are shared by stages of different models. A vLLM engine is a child
    # process of the worker, on the GPUs Ray gave the task, and ends with the task
    pool = ModelPool.for_run(spec, run_dir)
    try:
        return execute_stage(stage, spec, RunStore(run_dir), pool, _ignore, _ignore)
    finally:
        pool.close()


# -- Ray set-up ------------------------------------------------------------------------------------
def cluster_capacity() -> tuple[float, float]:
    """(CPUs of the largest alive node, GPUs of the whole cluster)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    node_cpus = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    return node_cpus, float(ray.cluster_resources().get("GPU", 0.0))


def remote_error(err: Exception) -> BaseException:
    """The exception a stage raised in its worker (a ``DataError`` stays a ``DataError``), or
    Ray's own error when there is none (a worker that died, say)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


# -- the scheduler ---------------------------------------------------------------------------------
class _Scheduler:
    """Submits ready stages, collects finished ones; one instance per run."""

    def __init__(self, spec: ExperimentSpec, store: RunStore, stages: list[Stage], progress: StageProgress,
                 report: RunReport, stop_after: Callable[[Stage], bool] | None) -> None:
        import ray

        self.ray = ray
        self.spec, self.store, self.progress, self.report = spec, store, progress, report
        self.stop_after = stop_after
        self.total = len(stages)
        self.index = {s.label: i for i, s in enumerate(stages)}
        self.pending: list[Stage] = []
        for stage in stages:
            if store.is_done(stage.ref):
                report.skipped.append(stage.label)
                progress.finish(stage, skipped=True)
            else:
                self.pending.append(stage)
        pending_labels = {s.label for s in self.pending}
        # only inputs that this run computes are waited for; others are done already (or, as in
        # the local executor, missing: their runner then fails naming the folder it cannot read)
        self.waiting = {s.label: {i.label for i in s.inputs if i.label in pending_labels}
                        for s in self.pending}
        self.running: dict[Any, Stage] = {}
        self.error: BaseException | None = None  # the first failed stage's own exception
        self.ray_error: BaseException | None = None  # Ray's wrapper of it (the worker's traceback)
        self.stopped = False
        node_cpus, gpus = cluster_capacity()
        self.requests = {s.label: task_resources(s, node_cpus, gpus) for s in self.pending}
        self.task = ray.remote(run_stage_task)
        self.spec_ref = ray.put(spec)  # sent to the object store once, not once per task

    def submit_ready(self) -> None:
        """Submit, in graph order, every pending stage whose inputs are all done."""
        for stage in [s for s in self.pending if not self.waiting[s.label]]:
            self.pending.remove(stage)
            request = self.requests[stage.label]
            threads = task_threads(request["num_cpus"], self.spec.run.threads)
            # max_retries=0: a stage that killed its worker (out of memory, say) would most likely
            # do it again; the error surfaces at once and a rerun resumes the stage's partial folder
            ref = self.task.options(**request, max_retries=0).remote(
                self.spec_ref, str(self.store.root), stage.label, stage.key, threads)
            self.running[ref] = stage
            self.progress.start(stage, self.index[stage.label], self.total)
        self.mark_active()

    def mark_active(self) -> None:
        """``.active.json`` as the local executor writes it (``stage``: the oldest running stage,
        which ``status`` shows as running), plus ``stages``: every stage running now."""
        labels = sorted((s.label for s in self.running.values()), key=self.index.__getitem__)
        write_json(self.store.root / ".active.json", {
            "pid": os.getpid(), "stage": labels[0] if labels else None, "stages": labels,
            "since": time.time(),
        })

    def collect(self) -> None:
        """Wait for one task to end and record what it did."""
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        for ref in ready:
            stage = self.running.pop(ref)
            try:
                self.ray.get(ref)
            except self.ray.exceptions.RayError as err:
                # keep the first error; later ones are often its consequences
                if self.error is None:
                    self.error, self.ray_error = remote_error(err), err
                continue
            self.report.ran.append(stage.label)
            self.progress.finish(stage, skipped=False)
            for waiting in self.waiting.values():
                waiting.discard(stage.label)
            if self.stop_after and self.stop_after(stage):
                self.stopped = True
        self.mark_active()

    def run(self) -> None:
        """Until nothing is left: submit what is ready, wait for a task. After a failure (or
        ``stop_after``), nothing new starts and the running tasks finish, so their work is kept."""
        try:
            while self.pending or self.running:
                if self.error is None and not self.stopped:
                    self.submit_ready()
                if not self.running:
                    break
                self.collect()
        except BaseException:
            # Ctrl-C (or any error of the driver's own): interrupt the tasks; their partial folders
            # stay and the next run resumes them
            for ref in list(self.running):
                self.ray.cancel(ref)
            raise
        if self.error is None:
            return
        if self.error is self.ray_error:  # no exception of the stage's own (a worker died, say)
            raise self.error
        raise self.error from self.ray_error  # Ray's error carries the worker's traceback


def run_stages_ray(
    spec: ExperimentSpec,
    run_dir: str | Path,
    *,
    progress: StageProgress | None = None,
    stages: list[Stage] | None = None,
    address: str | None = None,
    stop_after: Callable[[Stage], bool] | None = None,
) -> RunReport:
    """Run every stage not yet done as Ray tasks, each as soon as its inputs are done.

    ``address``: the Ray cluster to join (default ``spec.run.ray_address``; None starts a local
    instance); ignored when this process is already connected to Ray. A Ray instance started here
    is shut down at the end. ``report.ran`` lists stages in the order they finished. When a stage
    fails, no new stage starts, the running ones finish (and are committed), then the stage's own
    error (a :class:`~collapselab.errors.CollapselabError` stays one) is raised.
    """
    import ray

    progress = progress or StageProgress()
    # workers resolve paths against their own working directory: give them an absolute one
    store = RunStore(Path(run_dir).resolve())
    stages = build_graph(spec) if stages is None else stages
    report = RunReport(Path(run_dir))
    started = time.perf_counter()
    with store.lock():
        write_text(store.root / "experiment.yaml", spec_to_yaml(spec))
        owns_ray = ensure_ray(address if address is not None else spec.run.ray_address)
        try:
            _Scheduler(spec, store, stages, progress, report, stop_after).run()
        finally:
            if owns_ray:
                ray.shutdown()
    report.seconds = time.perf_counter() - started
    return report
