"""Recursive generations: a 2-generation run in replace and accumulate mode on the tiny target."""

from __future__ import annotations

import pandas as pd
import pytest

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.pipeline.graph import build_graph
from collapselab.store.run import RunStore
from tests.helpers import tiny_config, write_corpus


def _run(tmp, model_dir, mode, **extra):
    cfg = tiny_config(tmp, model_dir, write_corpus(tmp / "corpus.jsonl"),
                      conditions=["vanilla", "single:a", "single:b", "multi:a,b"],
                      collapse={"metrics": ["distinct", "length"], "bootstrap": 20, "jackknife_groups": 4,
                                "training_data": False},
                      generations={"count": 2, "mode": mode, **extra})
    spec = load_config(cfg, use_env=False)
    run_stages(spec, tmp / "out")
    return spec, RunStore(tmp / "out"), build_graph(spec)


def _rows(store, stage, file):
    return pd.read_json(store.final_dir(stage.ref) / file, lines=True)


@pytest.fixture(scope="module")
def replace_run(tmp_path_factory, tiny_model_dir):
    return _run(tmp_path_factory.mktemp("gen-replace"), tiny_model_dir, "replace")


@pytest.fixture(scope="module")
def accumulate_run(tmp_path_factory, tiny_model_dir):
    return _run(tmp_path_factory.mktemp("gen-acc"), tiny_model_dir, "accumulate", human_fraction=0.5)


@pytest.mark.slow
def test_graph_chains_each_generation_to_the_previous_models(replace_run):
    spec, store, stages = replace_run
    by_label = {s.label: s for s in stages}
    gen1 = [s for s in stages if s.kind == "generate" and s.params.generation == 1]
    # each single-source chain's gen-0 model answers every shard once (2 shards × 2 chains)
    assert sorted(s.name for s in gen1) == sorted(
        f"tiny-chat0-single-{src}-seed42-gen1-shard{k}" for src in "ab" for k in (0, 1))
    for s in gen1:
        [train] = [i for i in s.inputs if i.kind == "train"]
        assert train.params.generation == 0 and train.params.condition.label == f"single:{s.params.source}"
    # the multi chain's generation 1 takes each source's half from that source's chain
    mix = by_label["mix/tiny-chat0-multi-a_b-seed42-gen1"]
    chains = {i.settings["chain"] for i in mix.inputs if i.kind == "generate"}
    assert chains == {"single:a", "single:b"}
    # later-generation stages come after their inputs
    order = {s.label: i for i, s in enumerate(stages)}
    assert all(order[i.label] < order[s.label] for s in stages for i in s.inputs)
    # vanilla has only generation 0; every synthetic chain has a gen-1 respond stage
    responds = {(s.params.condition.label, s.params.generation) for s in stages if s.kind == "respond"}
    assert ("vanilla", 1) not in responds and {("single:a", 1), ("single:b", 1), ("multi:a,b", 1)} <= responds


@pytest.mark.slow
def test_replace_trains_generation_one_on_the_previous_models_answers_only(replace_run):
    spec, store, stages = replace_run
    gen = next(s for s in stages if s.label == "generate/tiny-chat0-single-a-seed42-gen1-shard0")
    answers = _rows(store, gen, "synthetic.jsonl")
    gen0_responses = next(s for s in stages if s.kind == "train" and s.params.generation == 0
                          and s.params.condition.label == "single:a")
    assert answers["model"].eq(gen0_responses.params.target.id).all()
    mix = next(s for s in stages if s.label == "mix/tiny-chat0-single-a-seed42-gen1")
    examples = _rows(store, mix, "train.jsonl")
    assert len(examples) == 16 and examples["id"].str.endswith("@g1").all()
    shard_answers = pd.concat([_rows(store, s, "synthetic.jsonl") for s in mix.inputs if s.kind == "generate"])
    nonempty = shard_answers[shard_answers["response"].str.strip() != ""]
    assert sorted(examples["response"]) == sorted(nonempty["response"])


@pytest.mark.slow
def test_accumulate_keeps_all_earlier_data_and_mixes_in_fresh_human_answers(accumulate_run):
    spec, store, stages = accumulate_run
    gen0 = _rows(store, next(s for s in stages if s.label == "mix/single-a"), "train.jsonl")
    gen1 = _rows(store, next(s for s in stages if s.label == "mix/tiny-chat0-single-a-seed42-gen1"), "train.jsonl")
    assert len(gen1) > len(gen0)
    old = gen1[~gen1["id"].str.contains("@g1")]
    assert list(old["response"]) == list(gen0["response"])  # generation 0's data, unchanged
    new = gen1[gen1["id"].str.endswith("@g1")]
    human = new[new["origin"] == "human"]
    assert 0 < len(human) < len(new)  # about half is fresh human data (a seeded per-prompt draw)
    prepare = _rows(store, stages[0], "train.jsonl").set_index("id")["response"]
    assert all(prepare[i.split("@")[0]] == r for i, r in zip(human["id"], human["response"], strict=True))


@pytest.mark.slow
def test_metrics_are_computed_per_generation(replace_run):
    spec, store, stages = replace_run
    stats = next(s for s in stages if s.kind == "stats")
    tests = pd.read_parquet(store.final_dir(stats.ref) / "tests.parquet")
    assert set(tests["generation"].dropna().astype(int)) == {0, 1}
    evaluate = [s for s in stages if s.kind == "evaluate"]
    agg = pd.concat([pd.read_parquet(store.final_dir(s.ref) / "aggregates.parquet") for s in evaluate])
    gen1 = agg[agg["generation"] == 1]
    assert set(gen1["condition"]) == {"single:a", "single:b", "multi:a,b"}


def test_seed_scope_data_draws_synthetic_data_per_seed(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "corpus.jsonl"),
                      conditions=["human", "single:a"], seeds=[1, 2], seed_scope="data",
                      collapse={"enabled": False})
    spec = load_config(cfg, use_env=False)
    stages = build_graph(spec)
    gens = [s for s in stages if s.kind == "generate"]
    assert sorted((s.params.data_seed, s.params.decoding.seed) for s in gens) == [(1, 1), (2, 2)]
    mixes = {s.name: s for s in stages if s.kind == "mix"}
    assert set(mixes) == {"human", "single-a-seed1", "single-a-seed2"}
    for train in (s for s in stages if s.kind == "train"):
        mix = train.inputs[0]
        if train.params.condition.kind == "single":
            assert mix.name == f"single-a-seed{train.params.seed}"
        else:
            assert mix.name == "human"
    # the default scope draws the data once for every seed
    shared = build_graph(load_config(tiny_config(tmp_path, tiny_model_dir, tmp_path / "corpus.jsonl",
                                                 conditions=["human", "single:a"], seeds=[1, 2],
                                                 collapse={"enabled": False}), use_env=False))
    assert len([s for s in shared if s.kind == "generate"]) == 1


@pytest.mark.slow
def test_report_plots_metrics_against_the_generation(replace_run, tmp_path):
    from collapselab.report.inputs import collect
    from collapselab.report.write import write_report

    spec, store, stages = replace_run
    paths = write_report(collect(spec, store.root), tmp_path / "report")
    html = paths["report.html"].read_text()
    assert 'id="generations"' in html and "plot-generations-collapse" in html
    frame = pd.read_csv(paths["generations_collapse.csv"])
    assert set(frame["generation"]) == {0, 1}
    assert set(frame.loc[frame["generation"] == 1, "condition"]) == {"single:a", "single:b", "multi:a,b"}
