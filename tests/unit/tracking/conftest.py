"""Fixtures of the tracking tests: a spec per backend and completed stage folders written by hand
(what a train stage and another stage leave in a run folder), so no model runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from collapselab.config.load import load_config
from collapselab.config.spec import TrackingSpec
from collapselab.store.atomic import write_json, write_jsonl
from collapselab.store.run import MARKER, RunStore, StageRef
from tests.helpers import tiny_config, write_corpus

#: a loss curve as train/lora.py writes it: val_loss every second step, digits that must survive
CURVE = [
    {"step": 1, "epoch": 0.25, "train_loss": 3.141592653589793, "lr": 0.001},
    {"step": 2, "epoch": 0.5, "train_loss": 2.718281828459045, "lr": 0.0009045084971874737,
     "val_loss": 2.9000000000000004},
    {"step": 3, "epoch": 0.75, "train_loss": 1.4142135623730951, "lr": 0.0006545084971874737},
    {"step": 4, "epoch": 1.0, "train_loss": 1.1, "lr": 0.0, "val_loss": 2.5},
]
SUMMARY = {"n_train": 12, "n_val": 4, "best_step": 4, "best_val_loss": 2.5, "final_train_loss": 1.1,
           "stopped_early": False, "seconds": 0.5, "val_ids": ["r1"], "loss": "completion"}
RESULTS = {"results": {"collapselab_tiny_human": {"alias": "tiny human", "distinct_2,none": 0.75,
                                                  "distinct_2_stderr,none": 0.01,
                                                  "lexical_diversity[mode=a;b],none": 0.5,
                                                  "self_bleu,none": None}}}


@pytest.fixture
def make_spec(tmp_path):
    """``make_spec(backend, **tracking)``: the tiny experiment's spec with that tracking section."""
    cfg = tiny_config(tmp_path, Path("/nonexistent/tiny"), write_corpus(tmp_path / "corpus.jsonl"))
    spec = load_config(cfg, use_env=False)

    def make(backend: str = "none", **tracking):
        return spec.model_copy(update={"tracking": TrackingSpec(backend=backend, **tracking)})

    return make


def fake_stage(kind: str, name: str, key: str, **params):
    """A stand-in for a graph Stage: what tracking reads of one."""
    return SimpleNamespace(kind=kind, name=name, key=key, label=f"{kind}/{name}", ref=StageRef(kind, name, key),
                           settings={"lora": {"r": 4, "learning_rate": 0.001}, "seed": 1},
                           params=SimpleNamespace(**params))


def write_stage(run_dir: Path, stage, seconds: float, curve=None, summary=None) -> Path:
    """A completed stage folder as ``RunStore.commit`` leaves it (provenance, marker)."""
    folder = RunStore(run_dir).final_dir(stage.ref)
    folder.mkdir(parents=True)
    write_json(folder / "provenance.json", {"seconds": seconds})
    if curve is not None:
        write_jsonl(folder / "loss_curve.jsonl", curve)
        (folder / "train_summary.json").write_text(json.dumps(summary or {}))
    write_json(folder / MARKER, {"files": {}})
    return folder


@pytest.fixture
def run_folder(tmp_path):
    """A run folder with a completed train stage and a completed prepare stage, and results.json."""
    run_dir = tmp_path / "run"
    train = fake_stage("train", "tiny-human-seed1", "abc123", target_name="tiny",
                       condition=SimpleNamespace(label="human"), seed=1, generation=0)
    prepare = fake_stage("prepare", "corpus", "def456")
    write_stage(run_dir, train, 12.5, CURVE, SUMMARY)
    write_stage(run_dir, prepare, 0.25)
    write_json(run_dir / "report" / "results.json", RESULTS)
    return SimpleNamespace(run_dir=run_dir, train=train, prepare=prepare,
                           results=run_dir / "report" / "results.json")


# -- reading MLflow's default store back -----------------------------------------------------------
def runs_of(run_dir: Path, experiment: str):
    """MLflow's client on the run folder's store, the tracked run(s) and their nested runs."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir.resolve() / 'tracking' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def history(client, run_id: str, metric: str) -> list[tuple[int, float]]:
    """A metric's logged ``(step, value)`` pairs, by step."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric))
