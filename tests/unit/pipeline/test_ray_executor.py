"""The Ray executor on a local Ray instance started by the tests: the same run folder as the local
executor (every artifact byte for byte, timings aside), the same skip/resume rules, the same
errors, and no Ray import anywhere else in the pipeline."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collapselab.config.load import load_config
from collapselab.errors import ConfigError, DataError
from collapselab.executors import run_stages
from collapselab.executors.ray_executor import find_stage, task_resources, task_threads
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.stage import Stage
from collapselab.store.atomic import read_jsonl, write_jsonl
from collapselab.store.run import RunStore
from tests.helpers import tiny_config, write_corpus

#: JSON fields that measure time, not results (summary.json, train_summary.json, details.json)
TIMING_FIELDS = {"seconds", "seconds_this_attempt", "tokens_per_second"}
SMALL_COLLAPSE = {"metrics": ["distinct", "length"], "bootstrap": 20, "jackknife_groups": 4}


def drop_timing(node):
    """A JSON value without its timing fields, at any depth."""
    if isinstance(node, dict):
        return {k: drop_timing(v) for k, v in node.items() if k not in TIMING_FIELDS}
    if isinstance(node, list):
        return [drop_timing(v) for v in node]
    return node


def artifact_digests(run_dir: Path) -> dict[str, str]:
    """sha256 of every file under ``stages/`` (adapters, parquet tables, JSONL...), JSON files
    without their timing fields; provenance and done markers (host, time) are left out."""
    out = {}
    for p in sorted((run_dir / "stages").rglob("*")):
        if not p.is_file() or p.name in {"provenance.json", "_DONE"}:
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            data = json.dumps(drop_timing(json.loads(data)), sort_keys=True).encode()
        out[str(p.relative_to(run_dir))] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, tiny_model_dir, ray_cluster):
    """The same small experiment run once by each executor, into fresh run folders."""
    tmp = tmp_path_factory.mktemp("ray-vs-local")
    cfg = tiny_config(tmp, tiny_model_dir, write_corpus(tmp / "corpus.jsonl"), collapse=SMALL_COLLAPSE)
    local_spec = load_config(cfg, use_env=False)
    ray_spec = load_config(cfg, ["run.executor=ray"], use_env=False)
    local_report = run_stages(local_spec, tmp / "local")
    ray_report = run_stages(ray_spec, tmp / "ray")  # dispatched to run_stages_ray by run.executor
    return ray_spec, tmp, local_report, ray_report


@pytest.mark.slow
def test_ray_run_writes_exactly_the_local_runs_artifacts(both_runs):
    spec, tmp, local_report, ray_report = both_runs
    labels = [s.label for s in build_graph(spec)]
    assert sorted(ray_report.ran) == sorted(local_report.ran) == sorted(labels)
    assert not ray_report.skipped
    local, ray_digests = artifact_digests(tmp / "local"), artifact_digests(tmp / "ray")
    assert len(local) > 3 * len(labels)  # every stage's files, not only its stage.json
    assert any("adapter_model.safetensors" in name for name in local)
    assert ray_digests == local
    # the lock and the active marker are released; nothing was left half-written
    store = RunStore(tmp / "ray")
    assert not store.is_locked() and store.active() is None
    assert not list((tmp / "ray" / "stages").glob("*/.partial-*"))


@pytest.mark.slow
def test_ray_schedules_each_stage_after_its_inputs(both_runs):
    spec, _, _, ray_report = both_runs
    finished_at = {label: i for i, label in enumerate(ray_report.ran)}  # ran lists finishing order
    for stage in build_graph(spec):
        for dep in stage.inputs:
            assert finished_at[dep.label] < finished_at[stage.label], (dep.label, stage.label)


@pytest.mark.slow
def test_ray_rerun_skips_every_done_stage(both_runs):
    spec, tmp, _, _ = both_runs
    before = artifact_digests(tmp / "ray")
    again = run_stages(spec, tmp / "ray")
    assert not again.ran and sorted(again.skipped) == sorted(s.label for s in build_graph(spec))
    assert artifact_digests(tmp / "ray") == before


@pytest.mark.slow
def test_ray_resumes_a_partial_stage_and_one_killed_before_its_marker(both_runs):
    spec, tmp, _, _ = both_runs
    run_dir = tmp / "resumed"
    shutil.copytree(tmp / "ray", run_dir)
    store = RunStore(run_dir)
    graph = build_graph(spec)
    # 1. killed mid-stage: only the append log of finished chunks is left in the partial folder
    respond = next(s for s in graph if s.kind == "respond" and s.params.condition.kind == "vanilla")
    final = store.final_dir(respond.ref)
    expected = read_jsonl(final / "responses.jsonl")
    shutil.rmtree(final)
    write_jsonl(store.partial_dir(respond.ref) / "partial.jsonl", expected)
    # 2. killed between the rename of its folder and its done marker
    generate = next(s for s in graph if s.label == "generate/a-shard0")
    (store.final_dir(generate.ref) / "_DONE").unlink()

    report = run_stages(spec, run_dir)
    assert sorted(report.ran) == sorted([respond.label, generate.label])
    assert read_jsonl(final / "responses.jsonl") == expected
    summary = json.loads((final / "summary.json").read_text())
    assert summary["resumed"] == len(expected) and summary["generated_this_attempt"] == 0
    synthetic = store.final_dir(generate.ref).relative_to(run_dir) / "synthetic.jsonl"
    assert (run_dir / synthetic).read_bytes() == (tmp / "local" / synthetic).read_bytes()
    assert not list((run_dir / "stages").glob("*/.partial-*"))


@pytest.mark.slow
def test_a_failing_stage_raises_its_own_error_and_keeps_finished_stages(tmp_path, tiny_model_dir,
                                                                        ray_cluster):
    # a mock target cannot be fine-tuned: the train stages fail after prepare/generate/mix are done
    cfg = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "corpus.jsonl"),
                      targets=[{"id": "mock/echo"}], collapse={"enabled": False})
    local_spec = load_config(cfg, use_env=False)
    ray_spec = load_config(cfg, ["run.executor=ray"], use_env=False)
    with pytest.raises(DataError) as local_err:
        run_stages(local_spec, tmp_path / "local")
    with pytest.raises(DataError) as ray_err:
        run_stages(ray_spec, tmp_path / "ray")
    assert type(ray_err.value) is DataError  # the stage's own exception, not Ray's wrapper
    assert str(ray_err.value) == str(local_err.value)
    assert "only 'hf' targets" in str(ray_err.value) and "can be fine-tuned" in str(ray_err.value)

    store = RunStore(tmp_path / "ray")
    graph = build_graph(ray_spec)
    for stage in graph:
        if stage.kind in ("prepare", "generate", "mix"):
            assert store.is_done(stage.ref), stage.label
        if stage.kind == "train" or any(i.kind == "train" for i in stage.inputs):
            assert not store.is_done(stage.ref), stage.label
    # the driver waited for every task it had started: only failed stages left partial folders
    partial_kinds = {p.parent.name for p in (tmp_path / "ray" / "stages").glob("*/.partial-*")}
    assert partial_kinds <= {"train"}
    assert not store.is_locked()

    # a rerun with a fine-tunable target reuses everything that finished
    fixed = load_config(cfg, ["run.executor=ray", f"targets=[hf/{tiny_model_dir}]"], use_env=False)
    no_responses = [s for s in build_graph(fixed) if s.kind != "respond"]
    report = run_stages(fixed, tmp_path / "ray", stages=no_responses)
    assert {label.split("/")[0] for label in report.skipped} == {"prepare", "generate", "mix"}
    assert {label.split("/")[0] for label in report.ran} == {"train"}


# -- pure helpers ------------------------------------------------------------------------------------
def test_task_resources_clamps_cpus_and_refuses_missing_gpus():
    two = Stage("prepare", "t", settings={}, resources={"cpus": 2})
    assert task_resources(two, node_cpus=2, cluster_gpus=0) == {"num_cpus": 2, "num_gpus": 0}
    assert task_resources(two, node_cpus=1, cluster_gpus=0) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources(two, node_cpus=16, cluster_gpus=0) == {"num_cpus": 2, "num_gpus": 0}
    default = Stage("prepare", "m", settings={})  # resources default: one CPU
    assert task_resources(default, node_cpus=8, cluster_gpus=0) == {"num_cpus": 1, "num_gpus": 0}
    gpu = Stage("prepare", "g", settings={}, resources={"cpus": 4, "gpus": 1})
    assert task_resources(gpu, node_cpus=2, cluster_gpus=1) == {"num_cpus": 2, "num_gpus": 1}
    with pytest.raises(ConfigError, match="prepare/g asks for 1 GPU.*has 0"):
        task_resources(gpu, node_cpus=2, cluster_gpus=0)


def test_task_threads_follow_the_cpu_request_capped_by_run_threads():
    assert task_threads(2, None) == 2
    assert task_threads(2, 1) == 1
    assert task_threads(1, 4) == 1
    assert task_threads(0.5, None) == 1  # a fractional request still gets one thread


def test_find_stage_checks_the_key(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "c.jsonl"))
    spec = load_config(cfg, use_env=False)
    graph = build_graph(spec)
    assert find_stage(graph, graph[3].label, graph[3].key) is graph[3]
    with pytest.raises(ConfigError, match="prepare/corpus: its key changed"):
        find_stage(graph, "prepare/corpus", "0" * 12)
    with pytest.raises(ConfigError, match="train/nope: not in the graph"):
        find_stage(graph, "train/nope", "x")


def test_pipeline_modules_never_import_ray():
    code = (
        "import importlib, pkgutil, sys\n"
        "import collapselab.pipeline as p\n"
        "names = [m.name for m in pkgutil.iter_modules(p.__path__) if m.name != 'ray_executor']\n"
        "for n in names: importlib.import_module('collapselab.pipeline.' + n)\n"
        "import collapselab.cli.run\n"
        "print(len(names), 'ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         check=True)
    n_modules, imported = out.stdout.split()
    assert int(n_modules) >= 6  # graph, local, stages, collapse, safety, preference, validate
    assert imported == "False"
