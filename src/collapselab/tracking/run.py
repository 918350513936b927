"""Tracking one collapselab run: open the backend's run, log each stage as the executor reports it
finished, log the report's final metrics, close the run.

Logging happens in the driver, from what the stages wrote into the run folder (a stage under the
Ray executor runs in a worker process; its committed folder is the same either way), through the
executor's :class:`~collapselab.executors.base.StageProgress` callbacks: :meth:`RunTracking.progress`
wraps the progress display.

Resume: one tracked run per run folder (and backend, project and URI). ``RUN_DIR/tracking/<backend>.json``
keeps its id and the stages logged into it (label → key); a rerun continues that tracked run and
logs every completed stage not logged yet (those it ran, and done ones an earlier attempt could not
log, e.g. with tracking off), so each stage's curve and seconds appear once. A stage whose key
changed (its settings did) is a new computation and is logged again.

Failures: a tracker that raises never fails the experiment. The first failure is reported through
``notify``; later ones are counted, and :meth:`RunTracking.close` reports the count. A backend that
cannot start (its package missing, say) is reported once and tracking is off for the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collapselab.executors.base import StageProgress
from collapselab.store.atomic import write_json
from collapselab.store.run import RunStore
from collapselab.tracking.base import Tracker, clean_name, flatten, open_tracker
from collapselab.tracking.records import final_metrics, stage_record


def _default_notify(message: str) -> None:
    import sys

    print(f"tracking: {message}", file=sys.stderr)


class RunTracking:
    """Tracking of one collapselab run (see the module docstring); with ``backend: none`` every
    method does nothing and nothing is imported or written."""

    def __init__(self, spec: Any, run_dir: str | Path, *, notify: Callable[[str], None] | None = None,
                 tracker: Tracker | None = None, name: str | None = None, ledger_dir: Path | None = None) -> None:
        self.spec = spec
        # a sweep's point: its own tracked run (named after it, its ledger in its folder), logging
        # the run folder's stages it uses into the shared store
        self.name, self.ledger_dir = name, ledger_dir
        self.backend: str = spec.tracking.backend
        self.enabled = self.backend != "none"
        self.run_dir = Path(run_dir)
        self.notify = notify or _default_notify
        self.tracker = tracker  # injectable for tests; else opened by open()
        self.failures = 0
        self.first_error = ""
        self.ran = self.skipped = self.logged_now = 0
        self.state: dict[str, Any] = {}
        self.opened = False
        self.started = time.perf_counter()

    # -- guarding --------------------------------------------------------------------------------
    def _fail(self, what: str, err: BaseException) -> None:
        self.failures += 1
        if self.failures == 1:
            self.first_error = f"{what}: {type(err).__name__}: {err}"
            self.notify(f"{self.backend} failed to {self.first_error}; the run goes on (further failures are "
                        "counted)")

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> bool:
        """Run one tracker call; False (and counted) when it raised."""
        try:
            fn(*args)
        except Exception as err:  # any backend error: tracking must not fail the experiment
            self._fail(what, err)
            return False
        return True

    # -- the ledger ------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return (self.ledger_dir or self.run_dir / "tracking") / f"{self.backend}.json"

    def _load_state(self, project: str, uri: str | None) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            state = {}
        if not isinstance(state, dict) or state.get("project") != project or state.get("uri") != uri:
            return {"project": project, "uri": uri, "run_id": None, "logged": {}}  # another tracked run
        state.setdefault("logged", {})
        return state

    def _save_state(self) -> None:
        try:
            write_json(self.state_path, self.state)
        except OSError as err:
            self._fail("save its ledger", err)

    # -- the run ---------------------------------------------------------------------------------
    def open(self) -> bool:
        """Open the backend and its tracked run (continuing the run folder's earlier one), once;
        whether there is a tracker to log to. Called on the first thing to log, not before: a run
        that never starts (its folder locked by another run, say) leaves the tracked run alone."""
        if not self.enabled:
            return False
        if self.opened:
            return self.tracker is not None
        self.opened = True
        settings = self.spec.tracking
        project = settings.project or self.spec.name
        self.state = self._load_state(project, settings.uri)
        try:
            if self.tracker is None:
                self.tracker = open_tracker(self.backend, project, settings.uri, self.run_dir)
            tags = {"collapselab.run_dir": str(self.run_dir.resolve()), "collapselab.experiment": self.spec.name}
            if self.name:
                tags["collapselab.sweep_point"] = self.name
            params = flatten(self.spec.model_dump(mode="json"))
            self.state["run_id"] = self.tracker.start(self.name or self.run_dir.resolve().name, params, tags,
                                                      self.state.get("run_id"))
        except Exception as err:
            self._fail("start", err)
            self.tracker = None  # nothing more is attempted: every call would fail the same way
            return False
        self._save_state()
        return True

    def progress(self, inner: StageProgress | None = None) -> StageProgress:
        """The executor's progress callbacks with tracking added (``inner`` itself when tracking is off)."""
        inner = inner or StageProgress()
        return _TrackingProgress(inner, self) if self.enabled else inner

    def stage_finished(self, stage: Any, skipped: bool) -> None:
        """Log a completed stage unless the tracked run has it already: its seconds
        (``seconds/<label>``) and, for a training stage, its curve and summary."""
        if skipped:
            self.skipped += 1
        else:
            self.ran += 1
        if not self.open() or self.state["logged"].get(stage.label) == stage.key:
            return
        try:
            record = stage_record(stage, RunStore(self.run_dir).final_dir(stage.ref))
        except Exception as err:  # an unreadable folder is the stage's problem, not the run's
            self._fail(f"read {stage.label}", err)
            return
        ok = True
        if record.seconds is not None:
            ok = self._call(f"log {stage.label}", self.tracker.log_metrics,
                            {clean_name(f"seconds/{stage.label}"): record.seconds})
        if record.curve:
            ok = self._call(f"log {stage.label}", self.tracker.log_stage, clean_name(stage.label),
                            record.params, record.curve, record.summary) and ok
        if ok:
            self.state["logged"][stage.label] = stage.key
            self.logged_now += 1
            self._save_state()

    def log_results(self, results_json: str | Path) -> None:
        """The report's final metrics (``results.json``) as ``final/<task>/<metric>``."""
        if not self.open():
            return
        try:
            metrics = final_metrics(Path(results_json))
        except Exception as err:
            self._fail("read the report's results", err)
            return
        if metrics:
            self._call("log the final metrics", self.tracker.log_metrics, metrics)

    def close(self, error: BaseException | None = None) -> None:
        """Log this attempt's totals, end the tracked run (``FAILED``/``KILLED`` after ``error``)
        and report where it went and how many calls failed."""
        if not self.opened:
            return
        if self.tracker is not None:
            self._call("log the run's totals", self.tracker.log_metrics, {
                "run/seconds": round(time.perf_counter() - self.started, 3),
                "run/stages_ran": float(self.ran), "run/stages_skipped": float(self.skipped)})
            status = "FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            self._call("finish", self.tracker.finish, status)
        if self.failures:
            self.notify(f"{self.backend}: {self.failures} tracking call(s) failed (first: {self.first_error}); "
                        "the experiment's results are unaffected")
        elif self.tracker is not None:
            self.notify(f"{self.backend}: {self.logged_now} stage(s) logged to {self.tracker.where}")


class _TrackingProgress(StageProgress):
    """Passes every callback on, then logs each finished stage."""

    def __init__(self, inner: StageProgress, tracking: RunTracking) -> None:
        self.inner, self.tracking = inner, tracking

    def start(self, stage: Any, index: int, total: int) -> None:
        self.inner.start(stage, index, total)

    def set_total(self, n: int) -> None:
        self.inner.set_total(n)

    def advance(self, n: int) -> None:
        self.inner.advance(n)

    def finish(self, stage: Any, skipped: bool) -> None:
        self.inner.finish(stage, skipped)
        self.tracking.stage_finished(stage, skipped)


@contextmanager
def track_run(spec: Any, run_dir: str | Path, *, notify: Callable[[str], None] | None = None,
              tracker: Tracker | None = None, name: str | None = None,
              ledger_dir: Path | None = None) -> Iterator[RunTracking]:
    """Track a run for the duration of the block (``spec.tracking.backend: none``: a no-op); the
    tracked run ends ``FAILED`` (``KILLED`` on Ctrl-C) when the block raises, and the error goes on.
    ``name`` and ``ledger_dir``: a sweep point's tracked run of its own (see :class:`RunTracking`)."""
    tracking = RunTracking(spec, run_dir, notify=notify, tracker=tracker, name=name, ledger_dir=ledger_dir)
    try:
        yield tracking
    except BaseException as err:
        tracking.close(err)
        raise
    tracking.close()
