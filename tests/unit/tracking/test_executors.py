"""Tracking around the executors on a toy experiment (mock sources, the toy target refitted by
counting: seconds): real stages, committed folders and the executor's progress callbacks, with the
local executor and with Ray (stages in worker processes, logged by the driver from their folders)."""

from __future__ import annotations

import pytest
import yaml

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.pipeline.graph import build_graph
from collapselab.store.atomic import read_jsonl
from collapselab.store.run import RunStore
from collapselab.tracking import track_run
from tests.helpers import write_corpus
from tests.unit.tracking.conftest import history, runs_of

pytest.importorskip("mlflow")


def toy_spec(tmp_path, executor: str):
    data = {
        "name": "toy", "corpus": {"kind": "jsonl", "path": str(write_corpus(tmp_path / "corpus.jsonl")),
                                  "columns": {"id": "id"}},
        "split": {"test_fraction": 0.25, "train_size": 16, "test_size": 6, "seed": 1},
        "decoding": {"max_new_tokens": 8, "seed": 3},
        "sources": [{"name": "a", "model": {"id": "mock/random"}}],
        "conditions": ["human", "single:a"], "targets": [{"id": "toy/unigram"}], "seeds": [1],
        "collapse": {"enabled": False}, "tracking": {"backend": "mlflow"},
        "run": {"threads": 1, "executor": executor},
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, use_env=False)


def check_tracked(spec, run_dir, report) -> None:
    client, (parent,), children = runs_of(run_dir, "toy")
    store, graph = RunStore(run_dir), build_graph(spec)
    trains = [s for s in graph if s.kind == "train"]
    assert sorted(c.info.run_name for c in children) == sorted(s.label for s in trains) and trains
    for stage in trains:
        curve = read_jsonl(store.final_dir(stage.ref) / "loss_curve.jsonl")
        child = next(c for c in children if c.info.run_name == stage.label)
        assert history(client, child.info.run_id, "train_loss") == [(r["step"], r["train_loss"]) for r in curve]
    assert {k for k in parent.data.metrics if k.startswith("seconds/")} == {f"seconds/{s.label}" for s in graph}
    assert parent.data.metrics["run/stages_ran"] == len(report.ran) == len(graph)


def test_local_executor(tmp_path):
    spec = toy_spec(tmp_path, "local")
    with track_run(spec, tmp_path / "run", notify=lambda m: None) as tracking:
        report = run_stages(spec, tmp_path / "run", progress=tracking.progress())
    assert tracking.failures == 0
    check_tracked(spec, tmp_path / "run", report)


@pytest.mark.slow
def test_ray_executor(tmp_path):
    pytest.importorskip("ray")
    spec = toy_spec(tmp_path, "ray")
    with track_run(spec, tmp_path / "run", notify=lambda m: None) as tracking:
        report = run_stages(spec, tmp_path / "run", progress=tracking.progress())
    assert tracking.failures == 0
    check_tracked(spec, tmp_path / "run", report)


def test_each_sweep_point_is_a_tracked_run_of_its_own(tmp_path):
    """``run -m``: every point gets a tracked run named after it in the run folder's one store,
    with the curves of every train stage it uses (shared ones too) and its final metrics."""
    from collapselab.cli.multirun import multirun_command

    spec = toy_spec(tmp_path, "local")
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({**spec.model_dump(mode="json"), "collapse": {
        "enabled": True, "metrics": ["distinct"]}}))
    multirun_command(config, ["seeds=[1],[2]"], tmp_path / "run")
    client, parents, children = runs_of(tmp_path / "run", "toy")
    assert sorted(p.info.run_name for p in parents) == ["seeds-1", "seeds-2"]
    assert all(p.data.tags["collapselab.sweep_point"] == p.info.run_name for p in parents)
    assert all(any(k.startswith("final/") for k in p.data.metrics) for p in parents)
    # each point's nested runs: its own train stages (seed 1's or seed 2's), curves as written
    store = RunStore(tmp_path / "run")
    for parent in parents:
        seed = parent.info.run_name.split("-")[1]
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert mine and all(c.info.run_name.endswith(f"seed{seed}") for c in mine)
        for child in mine:
            stage = next(s for s in build_graph(spec.model_copy(update={"seeds": (int(seed),)}))
                         if s.label == child.info.run_name)
            curve = read_jsonl(store.final_dir(stage.ref) / "loss_curve.jsonl")
            assert history(client, child.info.run_id, "train_loss") == [(r["step"], r["train_loss"]) for r in curve]
