"""The spine end to end on a local corpus, mock sources and the tiny random-init target."""

import json

import pandas as pd
import pytest

from collapselab.config.load import load_config
from collapselab.errors import DataError, ModelError
from collapselab.executors import run_stages, stage_status
from collapselab.pipeline.graph import build_graph
from collapselab.store.run import RunStore
from tests.helpers import tiny_config, write_corpus

# slow: every test runs a whole pipeline (run_stages on the tiny model)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tmp, tiny_model_dir, write_corpus(tmp / "corpus.jsonl"))
    spec = load_config(cfg, use_env=False)
    report = run_stages(spec, tmp / "out")
    return spec, tmp / "out", report, cfg


def stage_dir(run_dir, spec, label):
    stage = next(s for s in build_graph(spec) if s.label == label)
    return RunStore(run_dir).final_dir(stage.ref)


def test_every_stage_ran_and_is_done(finished_run):
    spec, run_dir, report, _ = finished_run
    assert len(report.ran) == len(build_graph(spec)) and not report.skipped
    assert all(state == "done" for _, state in stage_status(spec, run_dir))


def test_prepare_split_and_shards(finished_run):
    spec, run_dir, _, _ = finished_run
    out = stage_dir(run_dir, spec, "prepare/corpus")
    train = pd.read_json(out / "train.jsonl", lines=True)
    test = pd.read_json(out / "test.jsonl", lines=True)
    assert len(train) == 16 and len(test) == 6
    assert not set(train["id"]) & set(test["id"])
    assert sorted(train["shard"].value_counts().tolist()) == [8, 8]
    # Dolly-style formatting: the context comes before the instruction
    with_context = train[train["context"] != ""].iloc[0]
    assert with_context["user"].startswith(with_context["context"])


def test_synthetic_records_keep_provenance(finished_run):
    spec, run_dir, _, _ = finished_run
    mix = pd.read_json(stage_dir(run_dir, spec, "mix/multi-a_b") / "train.jsonl", lines=True)
    assert set(mix["origin"]) == {"a", "b"}
    assert mix.groupby("origin").size().tolist() == [8, 8]
    row = mix.iloc[0]
    assert row["decoding"]["temperature"] == pytest.approx(0.7) and row["seed"] == 3
    assert row["model"].startswith("mock/")
    # the multi condition reuses source a's answers to shard 0 from the single-source generation
    gen = pd.read_json(stage_dir(run_dir, spec, "generate/a-shard0") / "synthetic.jsonl", lines=True)
    a_rows = mix[mix["origin"] == "a"].set_index("id")["response"]
    assert (gen.set_index("prompt_id").loc[a_rows.index, "response"] == a_rows).all()
    human = pd.read_json(stage_dir(run_dir, spec, "mix/human") / "train.jsonl", lines=True)
    assert (human["origin"] == "human").all() and len(human) == 16


def test_training_outputs(finished_run):
    spec, run_dir, _, _ = finished_run
    train = next(s for s in build_graph(spec) if s.kind == "train" and s.params.condition.kind == "human")
    out = RunStore(run_dir).final_dir(train.ref)
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    curve = [json.loads(line) for line in (out / "loss_curve.jsonl").read_text().splitlines()]
    assert curve and any("val_loss" in c for c in curve)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["n_val"] >= 1 and summary["n_train"] + summary["n_val"] == 16


def test_responses_for_every_condition(finished_run):
    spec, run_dir, _, _ = finished_run
    responds = [s for s in build_graph(spec) if s.kind == "respond"]
    assert len(responds) == 4
    frames = [pd.read_json(RunStore(run_dir).final_dir(s.ref) / "responses.jsonl", lines=True) for s in responds]
    for s, df in zip(responds, frames, strict=True):
        assert len(df) == 6 and (df["condition"] == s.params.condition.label).all()
        assert {"prompt_id", "response", "human_response", "model", "decoding", "seed"} <= set(df.columns)
    # fine-tuned models answer differently from the vanilla target
    assert any((f["response"] != frames[0]["response"]).any() for f in frames[1:])


def test_rerun_skips_everything_and_a_change_reruns_only_dependents(finished_run):
    spec, run_dir, _, cfg = finished_run
    again = run_stages(spec, run_dir)
    assert not again.ran
    changed = load_config(cfg, ["lora.r=4"], use_env=False)
    report = run_stages(changed, run_dir)
    downstream = ("train/", "respond/", "score/", "embed/", "evaluate/", "stats/", "embedding_map/")
    assert report.ran and all(label.startswith(downstream) for label in report.ran)
    assert not any(label.startswith(("respond/", "embed/", "evaluate/")) and "vanilla" in label for label in report.ran)


def test_corrupt_corpus_line_names_file_and_line(tmp_path, tiny_model_dir):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    lines = corpus.read_text().splitlines()
    lines[4] = '{"id": "broken", "instruction": '
    corpus.write_text("\n".join(lines) + "\n")
    spec = load_config(tiny_config(tmp_path, tiny_model_dir, corpus), use_env=False)
    with pytest.raises(DataError, match=r"corpus.jsonl.*line 5"):
        run_stages(spec, tmp_path / "out")


def test_prompt_longer_than_context_is_a_clear_error_and_keeps_earlier_stages(tmp_path, tiny_model_dir):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    cfg = tiny_config(tmp_path, tiny_model_dir, corpus, sources=[
        {"name": "a", "model": {"id": "mock/random", "max_context": 10}},
        {"name": "b", "model": {"id": "mock/echo"}}])
    spec = load_config(cfg, use_env=False)
    with pytest.raises(ModelError, match="exceed"):
        run_stages(spec, tmp_path / "out")
    prepare = build_graph(spec)[0]
    assert RunStore(tmp_path / "out").is_done(prepare.ref)


def test_collapse_metrics_for_every_set(finished_run):
    spec, run_dir, _, _ = finished_run
    store = RunStore(run_dir)
    evaluates = [s for s in build_graph(spec) if s.kind == "evaluate"]
    aggs = pd.concat([pd.read_parquet(store.final_dir(s.ref) / "aggregates.parquet") for s in evaluates])
    # 4 conditions, 3 training sets (human, a, b) and the human references
    assert set(aggs["set_kind"]) == {"condition", "source", "human"}
    assert sorted(aggs.loc[aggs["set_kind"] == "source", "source"].unique()) == ["a", "b", "human"]
    conditions = aggs[aggs["set_kind"] == "condition"]
    assert set(conditions["condition"]) == {"vanilla", "human", "single:a", "multi:a,b"}
    # perplexity only where a model scored the texts; one primary statistic per metric and set
    assert {"output_perplexity", "human_perplexity"} <= set(conditions["metric"])
    assert "human_perplexity" not in set(aggs.loc[aggs["set_kind"] == "source", "metric"])
    primaries = aggs[aggs["primary"]].groupby(["set_name", "metric"]).size()
    assert (primaries == 1).all()
    stats_dir = store.final_dir(next(s for s in build_graph(spec) if s.kind == "stats").ref)
    tests = pd.read_parquet(stats_dir / "tests.parquet")
    # every condition answered the same test prompts: paired tests by item
    assert set(tests["test"]) == {"friedman", "wilcoxon"} and tests["paired"].all()
    assert len(tests[(tests["test"] == "friedman") & (tests["metric"] == "output_perplexity")]) == 1
    # 4 conditions → 6 pairs per metric, each with a difference and its interval; the memorization
    # metrics compare a model with its own training set, which vanilla has not: 3 conditions, 3 pairs
    pairs = tests[tests["test"] == "wilcoxon"]
    sizes = pairs.groupby("metric").size()
    memorization = sizes.index.str.startswith(("verbatim_ngrams", "longest_copy"))
    assert memorization.any() and (sizes[memorization] == 3).all()
    assert (sizes[~memorization] == 6).all() and pairs["diff"].notna().any()
