"""MLflow, the offline backend CI installs (collapselab[tracking]): what a run logs, read back
through MLflow's own client from its file store under RUN_DIR/tracking/mlruns."""

from __future__ import annotations

import pytest

from collapselab.tracking import track_run
from tests.unit.tracking.conftest import CURVE, fake_stage, history, runs_of, write_stage

pytest.importorskip("mlflow")


def log_folder(spec, folder, messages, *stages, skipped=False):
    with track_run(spec, folder.run_dir, notify=messages.append) as tracking:
        progress = tracking.progress()
        for stage in stages:
            progress.finish(stage, skipped=skipped)
        tracking.log_results(folder.results)
    return tracking


def test_loss_curve_timings_and_final_metrics(make_spec, run_folder):
    messages: list[str] = []
    tracking = log_folder(make_spec("mlflow"), run_folder, messages, run_folder.prepare, run_folder.train)
    assert tracking.failures == 0, messages
    assert messages == [f"mlflow: 2 stage(s) logged to {tracking.tracker.where}"]
    client, (parent,), (child,) = runs_of(run_folder.run_dir, "tiny")  # project: the experiment's name
    # the train stage's nested run: its curve, exactly, at the optimizer steps
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.run_name == "train/tiny-human-seed1" and child.info.status == "FINISHED"
    for metric in ("train_loss", "lr", "epoch", "val_loss"):
        assert history(client, child.info.run_id, metric) == [(r["step"], r[metric]) for r in CURVE if metric in r]
    assert child.data.metrics["summary/best_val_loss"] == 2.5 and child.data.metrics["summary/stopped_early"] == 0
    assert child.data.params["condition"] == "human" and child.data.params["settings.lora.r"] == "4"
    assert child.data.params["seed"] == "1" and child.data.params["key"] == "abc123"
    # the run: stage timings, totals, the report's final metrics (stderr, text and nulls left out)
    metrics = parent.data.metrics
    assert metrics["seconds/train/tiny-human-seed1"] == 12.5 and metrics["seconds/prepare/corpus"] == 0.25
    assert metrics["run/stages_ran"] == 2 and metrics["run/stages_skipped"] == 0
    assert metrics["final/collapselab_tiny_human/distinct_2"] == 0.75
    assert metrics["final/collapselab_tiny_human/lexical_diversity_mode_a_b_"] == 0.5
    assert not [k for k in metrics if "stderr" in k or "self_bleu" in k or "alias" in k]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "run"
    assert parent.data.params["name"] == "tiny" and parent.data.params["lora.learning_rate"] == "0.001"
    assert parent.data.tags["collapselab.run_dir"] == str(run_folder.run_dir.resolve())


def test_rerun_continues_the_tracked_run_and_logs_each_stage_once(make_spec, run_folder):
    spec = make_spec("mlflow", project="proj")
    log_folder(spec, run_folder, [], run_folder.prepare)  # first attempt: only prepare finished
    # second attempt: both skipped (done), the train stage was never logged; a new stage ran
    extra = fake_stage("respond", "tiny-human-seed1", "0f0f0f")
    write_stage(run_folder.run_dir, extra, 3.0)
    log_folder(spec, run_folder, [], run_folder.prepare, run_folder.train, skipped=True)
    log_folder(spec, run_folder, [], extra)
    client, (parent,), children = runs_of(run_folder.run_dir, "proj")
    assert [c.info.run_name for c in children] == ["train/tiny-human-seed1"]  # once, not per attempt
    assert history(client, parent.info.run_id, "seconds/prepare/corpus") == [(0, 0.25)]
    assert history(client, parent.info.run_id, "seconds/respond/tiny-human-seed1") == [(0, 3.0)]
    # three attempts, one tracked run: each added its totals (skipping 0, 2 and 0 stages)
    assert [v for _, v in history(client, parent.info.run_id, "run/stages_skipped")] == [0, 0, 2]


def test_failed_block_marks_the_run_failed(make_spec, run_folder):
    with pytest.raises(RuntimeError, match="stage broke"):
        with track_run(make_spec("mlflow"), run_folder.run_dir, notify=lambda m: None) as tracking:
            tracking.progress().finish(run_folder.prepare, skipped=False)
            raise RuntimeError("stage broke")
    _, (parent,), _ = runs_of(run_folder.run_dir, "tiny")
    assert parent.info.status == "FAILED"


def test_uri_names_another_store(make_spec, run_folder, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    log_folder(make_spec("mlflow", uri=uri), run_folder, [], run_folder.train)
    assert not (run_folder.run_dir / "tracking" / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=uri)
    assert len(client.search_runs([client.get_experiment_by_name("tiny").experiment_id])) == 2
