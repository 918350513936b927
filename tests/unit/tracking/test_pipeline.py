"""``collapselab run`` with ``tracking.backend=mlflow`` on the tiny experiment (mock sources, the tiny
random-init target): every train stage's loss curve, read back through MLflow's client, equals its
``loss_curve.jsonl``; every stage's seconds and the report's final metrics are in the tracked run."""

from __future__ import annotations

import json

import pytest

from collapselab.cli.run import run_command
from collapselab.config.load import load_config
from collapselab.pipeline.graph import build_graph
from collapselab.store.atomic import read_jsonl
from collapselab.store.run import RunStore
from collapselab.tracking.records import final_metrics
from tests.helpers import tiny_config, write_corpus
from tests.unit.tracking.conftest import history, runs_of

pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow  # a whole pipeline and its report


def test_logged_curves_equal_the_train_stages_curves(tmp_path, tiny_model_dir):
    config = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "corpus.jsonl"),
                         conditions=["vanilla", "human", "single:a"])
    run_dir = tmp_path / "run"
    run_command(config, ["tracking.backend=mlflow"], run_dir)
    spec, store = load_config(config, use_env=False), RunStore(run_dir)
    client, (parent,), children = runs_of(run_dir, "tiny")
    trains = [s for s in build_graph(spec) if s.kind == "train"]
    assert sorted(c.info.run_name for c in children) == sorted(s.label for s in trains) and len(trains) == 2
    for stage in trains:
        curve = read_jsonl(store.final_dir(stage.ref) / "loss_curve.jsonl")
        assert any("val_loss" in row for row in curve)
        child = next(c for c in children if c.info.run_name == stage.label)
        for metric in ("train_loss", "val_loss", "lr", "epoch"):
            assert history(client, child.info.run_id, metric) == [(r["step"], r[metric]) for r in curve if metric in r]
    metrics = parent.data.metrics
    for stage in build_graph(spec):
        seconds = json.loads((store.final_dir(stage.ref) / "provenance.json").read_text())["seconds"]
        assert metrics[f"seconds/{stage.label}"] == seconds
    final = final_metrics(run_dir / "report" / "results.json")
    assert final and {k: metrics[k] for k in final} == final
    assert parent.info.status == "FINISHED" and metrics["run/stages_ran"] == len(build_graph(spec))
