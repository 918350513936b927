"""Tracking whatever the backend: ``none`` imports and writes nothing, a failing tracker never fails
the run (it is reported, once, and counted), a missing package is named, and the trackio and wandb
adapters log what they should (their packages faked at the module boundary: neither is installed in
CI; the fakes record the calls the adapters make)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from collapselab.config.load import spec_to_yaml
from collapselab.tracking import track_run
from tests.unit.tracking.conftest import CURVE

ROOT = Path(__file__).resolve().parents[3]
TRACKING_PACKAGES = ("mlflow", "trackio", "wandb", "sqlalchemy")

IMPORTS = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from collapselab.config.load import load_config
from collapselab.store.run import StageRef
from collapselab.tracking import track_run

spec = load_config(sys.argv[1], use_env=False)
run_dir = Path(sys.argv[2])
stage = SimpleNamespace(kind="prepare", name="corpus", key="def456", label="prepare/corpus",
                        ref=StageRef("prepare", "corpus", "def456"), settings={}, params=SimpleNamespace())
with track_run(spec, run_dir, notify=lambda m: None) as tracking:
    tracking.progress().finish(stage, skipped=False)
    tracking.log_results(run_dir / "report" / "results.json")
print(json.dumps({"imported": [m for m in PACKAGES if m in sys.modules],
                  "wrote": (run_dir / "tracking").exists()}))
""".replace("PACKAGES", repr(TRACKING_PACKAGES))


def imports_of(spec, run_dir: Path, tmp_path: Path) -> dict:
    config = tmp_path / f"{spec.tracking.backend}.yaml"
    config.write_text(spec_to_yaml(spec))
    out = subprocess.run([sys.executable, "-c", IMPORTS, str(config), str(run_dir)], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_backend_none_imports_and_writes_nothing(make_spec, run_folder, tmp_path):
    assert imports_of(make_spec("none"), run_folder.run_dir, tmp_path) == {"imported": [], "wrote": False}


def test_the_import_check_sees_a_backend(make_spec, run_folder, tmp_path):
    pytest.importorskip("mlflow")
    seen = imports_of(make_spec("mlflow"), run_folder.run_dir, tmp_path)
    assert "mlflow" in seen["imported"] and seen["wrote"]


def test_none_passes_progress_through(make_spec, run_folder):
    inner = SimpleNamespace()
    with track_run(make_spec("none"), run_folder.run_dir) as tracking:
        assert tracking.progress(inner) is inner
        tracking.stage_finished(run_folder.train, skipped=False)
        tracking.log_results(run_folder.results)


class Raising:
    """A tracker whose every call raises (a full disk, a server gone)."""

    backend, where = "mlflow", "nowhere"

    def __init__(self, fail_start: bool = False) -> None:
        self.fail_start, self.calls = fail_start, 0

    def start(self, *args):
        if self.fail_start:
            raise ConnectionError("server unreachable")
        return "run-1"

    def _raise(self, *args):
        self.calls += 1
        raise OSError("disk full")

    log_metrics = log_stage = finish = _raise


def test_a_failing_tracker_does_not_fail_the_run(make_spec, run_folder):
    messages: list[str] = []
    tracker = Raising()
    with track_run(make_spec("mlflow"), run_folder.run_dir, notify=messages.append, tracker=tracker) as tracking:
        progress = tracking.progress()
        progress.finish(run_folder.prepare, skipped=False)
        progress.finish(run_folder.train, skipped=False)
        tracking.log_results(run_folder.results)
    # seconds of 2 stages, the curve, final metrics, totals, finish: every call tried, each counted
    assert tracker.calls == tracking.failures == 6
    assert messages[0].startswith("mlflow failed to log prepare/corpus: OSError: disk full; the run goes on")
    assert messages[1:] == ["mlflow: 6 tracking call(s) failed (first: log prepare/corpus: OSError: disk full); "
                            "the experiment's results are unaffected"]
    ledger = json.loads((run_folder.run_dir / "tracking" / "mlflow.json").read_text())
    assert ledger["logged"] == {}  # nothing counts as logged: a rerun tries again


def test_a_tracker_that_cannot_start_turns_tracking_off(make_spec, run_folder):
    messages: list[str] = []
    tracker = Raising(fail_start=True)
    with track_run(make_spec("mlflow"), run_folder.run_dir, notify=messages.append, tracker=tracker) as tracking:
        tracking.progress().finish(run_folder.train, skipped=False)
        tracking.log_results(run_folder.results)
    assert tracker.calls == 0 and tracking.failures == 1 and len(messages) == 2
    assert "failed to start: ConnectionError: server unreachable" in messages[0]


def test_a_missing_package_is_named(make_spec, run_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ModuleNotFoundError
    messages: list[str] = []
    with track_run(make_spec("wandb"), run_folder.run_dir, notify=messages.append) as tracking:
        tracking.progress().finish(run_folder.train, skipped=False)
    assert "tracking.backend wandb: wandb is not installed (pip install wandb)" in messages[0]


# -- trackio and wandb, faked ----------------------------------------------------------------------
class FakeRun:
    """What trackio's and wandb's run objects offer the adapters: log, summary, finish."""

    def __init__(self, **init) -> None:
        self.init, self.logged, self.summary, self.finished = init, [], {}, None
        self.id = f"id-{init.get('name')}"

    def log(self, metrics, step=None):
        self.logged.append((dict(metrics), step))

    def finish(self, exit_code=0):
        self.finished = exit_code


def fake_package(name: str, monkeypatch) -> list[FakeRun]:
    runs: list[FakeRun] = []
    module = ModuleType(name)
    module.init = lambda **kwargs: runs.append(FakeRun(**kwargs)) or runs[-1]
    monkeypatch.setitem(sys.modules, name, module)
    return runs


def curve_of(logged: list, prefix: str = "") -> list[dict]:
    """The curve back from a run's log calls (each with its step)."""
    return [{"step": step, **{k.removeprefix(prefix): v for k, v in metrics.items()}}
            for metrics, step in logged if any(k.startswith(prefix) and "summary" not in k for k in metrics)]


def test_trackio_logs_the_curve_under_the_stage_label(make_spec, run_folder, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", "/elsewhere")  # restored afterwards; the adapter sets it
    runs = fake_package("trackio", monkeypatch)
    with track_run(make_spec("trackio"), run_folder.run_dir, notify=lambda m: None) as tracking:
        progress = tracking.progress()
        progress.finish(run_folder.prepare, skipped=False)
        progress.finish(run_folder.train, skipped=False)
        tracking.log_results(run_folder.results)
    import os

    assert os.environ["TRACKIO_DIR"] == str(run_folder.run_dir.resolve() / "tracking" / "trackio")
    (run,) = runs
    assert run.init["project"] == "tiny" and run.init["name"] == "run" and run.init["resume"] == "allow"
    assert run.init["config"]["lora.learning_rate"] == "0.001"
    assert curve_of(run.logged, "train/tiny-human-seed1/") == CURVE
    logged = {k: v for metrics, _ in run.logged for k, v in metrics.items()}
    assert logged["seconds/train/tiny-human-seed1"] == 12.5
    assert logged["train/tiny-human-seed1/summary/best_val_loss"] == 2.5
    assert logged["final/collapselab_tiny_human/distinct_2"] == 0.75 and logged["run/stages_ran"] == 2
    assert run.finished == 0 and tracking.failures == 0


def test_wandb_logs_each_training_stage_as_a_run_of_the_group(make_spec, run_folder, monkeypatch):
    runs = fake_package("wandb", monkeypatch)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with track_run(make_spec("wandb"), run_folder.run_dir, notify=lambda m: None) as tracking:
        tracking.progress().finish(run_folder.train, skipped=False)
        tracking.log_results(run_folder.results)
    main, child = runs
    for run in runs:  # offline, in the run folder, side by side
        assert run.init["mode"] == "offline" and run.init["reinit"] == "create_new"
        assert run.init["dir"] == str(run_folder.run_dir.resolve() / "tracking")
    assert main.init["name"] == main.init["group"] == child.init["group"] == "run"
    assert child.init["name"] == "train/tiny-human-seed1" and child.init["config"]["condition"] == "human"
    assert curve_of(child.logged) == CURVE and child.summary["summary/best_val_loss"] == 2.5
    assert child.finished == 0 and main.finished == 0
    assert main.summary["seconds/train/tiny-human-seed1"] == 12.5
    assert main.summary["final/collapselab_tiny_human/distinct_2"] == 0.75
    # a rerun continues the main run by its id
    with track_run(make_spec("wandb"), run_folder.run_dir, notify=lambda m: None) as tracking:
        tracking.progress().finish(run_folder.train, skipped=True)
    assert runs[2].init["id"] == "id-run" and runs[2].init["resume"] == "allow" and len(runs) == 3
