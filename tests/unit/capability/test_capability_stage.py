"""The capability stages on the tiny random-init target and one fine-tuned adapter, offline, with
the local task in tests/data/capability: lm-eval's scores match an independent computation with
collapselab's own hf backend, a second run is skipped, the report shows the section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("lm_eval")

from collapselab.config.load import load_config  # noqa: E402
from collapselab.errors import ConfigError  # noqa: E402
from collapselab.executors import run_stages  # noqa: E402
from collapselab.pipeline.graph import build_graph  # noqa: E402
from collapselab.pipeline.validate import validate_experiment  # noqa: E402
from collapselab.store.atomic import read_jsonl  # noqa: E402
from collapselab.store.run import RunStore  # noqa: E402
from tests.helpers import tiny_config, write_corpus  # noqa: E402

TASK = Path(__file__).resolve().parents[2] / "data" / "capability" / "tiny_mc.yaml"
ITEMS = read_jsonl(TASK.with_suffix(".jsonl"))
NAME = "collapselab_tiny_mc"
KINDS = ("prepare", "mix", "train", "capability", "capability_summary")


def _config(tmp: Path, model_dir: Path, **capability) -> Path:
    return tiny_config(tmp, model_dir, write_corpus(tmp / "corpus.jsonl"), conditions=["vanilla", "human"],
                       collapse={"enabled": False},
                       capability={"enabled": True, "tasks": [str(TASK)], "batch_size": 3, **capability})


@pytest.fixture(scope="module")
def capability_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("capability")
    spec = load_config(_config(tmp, tiny_model_dir), use_env=False)
    stages = [s for s in validate_experiment(spec) if s.kind in KINDS]  # the answers to the test prompts: not needed
    report = run_stages(spec, tmp / "out", stages=stages)
    return spec, tmp / "out", stages, report


def _folders(run_dir: Path, stages: list) -> dict:
    store = RunStore(run_dir)
    return {s.params.condition.label: (s, store.final_dir(s.ref)) for s in stages if s.kind == "capability"}


def test_every_model_ran_the_task_with_scores_errors_and_one_sample_per_item(capability_run):
    spec, run_dir, stages, report = capability_run
    name = spec.target_names[0]
    assert [s for s in report.ran if s.startswith("capability")] == [
        f"capability/{name}-vanilla", f"capability/{name}-human-seed42", "capability_summary/summary"]
    folders = _folders(run_dir, stages)
    assert set(folders) == {"vanilla", "human"}
    for condition, (stage, folder) in folders.items():
        results = json.loads((folder / "results.json").read_text())
        scores = results["results"][NAME]
        assert 0 <= scores["acc,none"] <= 1 and scores["acc_stderr,none"] > 0
        assert {"acc_norm,none", "acc_norm_stderr,none"} <= set(scores)
        assert results["n-samples"][NAME]["effective"] == len(ITEMS) == 8
        # nothing about the machine: no environment dump, date, git hash or absolute paths
        assert not {"pretty_env_info", "date", "git_hash", "samples"} & set(results)
        assert results["configs"][NAME]["dataset_kwargs"]["data_files"] == {"test": "tiny_mc.jsonl"}
        assert results["configs"][NAME]["metadata"]["config_source"] == str(TASK)  # as configured
        assert results["config"]["model"] == spec.targets[0].id and results["config"]["random_seed"] == 0
        assert results["config"]["batch_size"] == 3
        assert results["config"]["adapter"] == (None if condition == "vanilla" else stage.inputs[0].label)
        samples = read_jsonl(folder / "samples.jsonl")
        assert len(samples) == len(ITEMS) and [s["doc_id"] for s in samples] == list(range(len(ITEMS)))
        assert all(s["task"] == NAME and "arguments" not in s for s in samples)


def test_accuracy_equals_an_independent_computation_with_collapselabs_hf_backend(capability_run, tiny_model_dir):
    """Each choice's log-likelihood after the prompt (no chat template, as lm-eval), summed over its
    tokens; the highest one is the model's answer (acc), per character (acc_norm)."""
    from collapselab.config.spec import ModelSpec
    from collapselab.models.base import ChatPrompt, load_model

    _, run_dir, stages, _ = capability_run
    prompts, choices = [], []
    for i, item in enumerate(ITEMS):
        for c in item["choices"]:
            prompts.append(ChatPrompt(f"{i}-{c}", f"Question: {item['question']}\nAnswer:", None))
            choices.append(c)
    likelihoods = {}
    for condition, (stage, folder) in _folders(run_dir, stages).items():
        adapter = None if condition == "vanilla" else str(RunStore(run_dir).final_dir(stage.inputs[0].ref) / "adapter")
        model = load_model(ModelSpec(id=f"hf/{tiny_model_dir}", dtype="float32", chat="never", adapter=adapter))
        try:
            sums = [sum(x) for x in model.continuation_logprobs(prompts, choices)]
        finally:
            model.close()
        samples = read_jsonl(folder / "samples.jsonl")
        acc, acc_norm, k = [], [], 0
        for item, sample in zip(ITEMS, samples, strict=True):
            n = len(item["choices"])
            ours = np.array(sums[k:k + n])
            k += n
            theirs = np.array([r[0] for r in sample["filtered_resps"]])
            assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-4)
            acc.append(float(np.argmax(ours) == item["answer"]))
            acc_norm.append(float(np.argmax(ours / np.array([len(c) for c in item["choices"]])) == item["answer"]))
            assert (sample["acc"], sample["acc_norm"]) == (acc[-1], acc_norm[-1])
        results = json.loads((folder / "results.json").read_text())["results"][NAME]
        assert results["acc,none"] == np.mean(acc) and results["acc_norm,none"] == np.mean(acc_norm)
        assert results["acc_stderr,none"] == pytest.approx(np.std(acc, ddof=1) / np.sqrt(len(acc)))
        likelihoods[condition] = sums
    assert likelihoods["human"] != likelihoods["vanilla"]  # the adapter was applied


def test_a_second_run_is_skipped_and_only_the_model_and_settings_key_a_stage(capability_run, tiny_model_dir):
    spec, run_dir, stages, _ = capability_run
    assert not run_stages(spec, run_dir, stages=stages).ran
    keys = {s.label: s.key for s in stages if s.kind == "capability"}

    def keyed(**changes) -> dict[str, str]:
        # the same folder: the corpus's path is part of the spine's keys
        changed = load_config(_config(run_dir.parent, tiny_model_dir, **changes), use_env=False)
        return {s.label: s.key for s in build_graph(changed) if s.kind == "capability"}

    assert keyed(batch_size=1) == keys  # lm-eval's batch size is not part of the result
    assert all(keyed(limit=4)[label] != key for label, key in keys.items())
    assert all(keyed(num_fewshot=1)[label] != key for label, key in keys.items())


def test_the_summary_and_the_report_show_scores_and_the_difference_from_vanilla(capability_run):
    from collapselab.report.inputs import collect
    from collapselab.report.markdown import render_markdown
    from collapselab.report.results_json import lm_eval_results, task_name

    spec, run_dir, _, _ = capability_run
    inputs = collect(spec, run_dir)
    diffs = inputs.capability.differences
    assert list(diffs["metric"]) == ["acc", "acc_norm"] and (diffs["condition"] == "human").all()
    assert (diffs["n_items"] == 8).all() and (diffs["test"] == "mcnemar_exact").all()
    vanilla = inputs.capability.scores.query("condition == 'vanilla' and metric == 'acc'").iloc[0]
    markdown = render_markdown(inputs)
    assert "## Capability (lm-evaluation-harness)" in markdown and "### Difference from vanilla" in markdown
    section = markdown.split("## Capability", 1)[1]
    assert f"{vanilla['value']:.4f}" in section and "McNemar (exact)" in section
    task = lm_eval_results(inputs)["results"][task_name(spec.target_names[0], "vanilla", 0)]
    assert task[f"capability/{NAME}/acc,none"] == vanilla["value"]
    assert task[f"capability/{NAME}/acc_stderr,none"] == pytest.approx(vanilla["stderr"])


def test_validate_names_an_unknown_task_and_a_target_lm_eval_cannot_load(tmp_path, tiny_model_dir, monkeypatch):
    spec = load_config(_config(tmp_path, tiny_model_dir, tasks=[str(TASK), "arc_easyy"]), use_env=False)
    with pytest.raises(ConfigError, match=r"capability.tasks.1: 'arc_easyy' is not an lm-eval task.*arc_easy"):
        validate_experiment(spec)
    mock = load_config(_config(tmp_path, tiny_model_dir), ["targets.0.id=mock/echo", "conditions=[vanilla]"],
                       use_env=False)
    with pytest.raises(ConfigError, match=r"targets.0.id: capability .*mock"):
        validate_experiment(mock)
    empty = load_config(_config(tmp_path, tiny_model_dir, tasks=[]), use_env=False)
    with pytest.raises(ConfigError, match="capability.tasks: name at least one"):
        validate_experiment(empty)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"capability.enabled: .*pip install 'collapselab\[capability\]'"):
        validate_experiment(load_config(_config(tmp_path, tiny_model_dir), use_env=False))
