"""The collapse loop's new modes, run end to end on mock sources and the toy target (a unigram
model refitted by counting: seconds per run): the provenance of every example, the sizes each mode
promises, and a resumed run that redoes nothing."""

from __future__ import annotations

from collections import Counter

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.pipeline.graph import build_graph
from collapselab.store.atomic import read_jsonl
from collapselab.store.run import RunStore
from tests.unit.pipeline.test_loop_graph import config


def run(tmp_path, **changes):
    spec = load_config(config(tmp_path, **changes), use_env=False)
    report = run_stages(spec, tmp_path / "out")
    return spec, RunStore(tmp_path / "out"), {s.label: s for s in build_graph(spec)}, report


def rows(store, stage, file="train.jsonl"):
    return read_jsonl(store.final_dir(stage.ref) / file)


def test_accumulate_subsample_trains_on_a_fixed_size_sample_of_all_data_so_far(tmp_path):
    spec, store, stages, _ = run(tmp_path, conditions=["vanilla", "single:a"],
                                 generations={"count": 3, "mode": "accumulate-subsample", "subsample": 12})
    gen0 = rows(store, stages["mix/single-a"])
    assert len(gen0) == 16
    pool1 = rows(store, stages["mix/unigram-single-a-seed42-gen1"], "pool.jsonl")
    train1 = rows(store, stages["mix/unigram-single-a-seed42-gen1"])
    assert len(pool1) == 32 and [r["id"] for r in pool1[:16]] == [r["id"] for r in gen0]
    assert len(train1) == 12 and {r["id"] for r in train1} <= {r["id"] for r in pool1}
    pool2 = rows(store, stages["mix/unigram-single-a-seed42-gen2"], "pool.jsonl")
    train2 = rows(store, stages["mix/unigram-single-a-seed42-gen2"])
    # generation 2's pool: generation 1's whole pool (not its sample) and the new answers
    assert [r["id"] for r in pool2[:32]] == [r["id"] for r in pool1] and len(pool2) == 48
    assert len(train2) == 12 and len({r["id"] for r in train2}) == 12
    assert {r.get("generation", 0) for r in pool2} == {0, 1, 2}


def test_human_count_replaces_exactly_that_many_new_examples(tmp_path):
    _, store, stages, _ = run(tmp_path, conditions=["vanilla", "single:a"],
                              generations={"count": 2, "human_count": 5})
    train1 = rows(store, stages["mix/unigram-single-a-seed42-gen1"])
    assert Counter(r["origin"] for r in train1) == {"human": 5, "a": 11}


def test_a_closed_multi_source_loop_trains_on_its_own_models_answers(tmp_path):
    _, store, stages, _ = run(tmp_path, generations={"count": 2, "multi_loop": "closed"})
    gen0 = rows(store, stages["mix/multi-a_b"])
    assert Counter(r["origin"] for r in gen0) == {"a": 8, "b": 8}
    train1 = rows(store, stages["mix/unigram-multi-a_b-seed42-gen1"])
    assert len(train1) == 16 and {r["origin"] for r in train1} == {"multi:a,b"}
    for gen in (s for s in stages["mix/unigram-multi-a_b-seed42-gen1"].inputs if s.kind == "generate"):
        answers = rows(store, gen, "synthetic.jsonl")
        [train] = [i for i in gen.inputs if i.kind == "train"]
        assert train.params.condition.label == "multi:a,b"
        # the toy model answers only with tokens its training data had: the multi mix's words
        vocabulary = {w for r in gen0 for w in r["response"].split()}
        assert {w for r in answers for w in r["response"].split()} <= vocabulary


def test_a_decoding_variant_records_its_decoding_on_every_example(tmp_path):
    _, store, stages, _ = run(tmp_path, conditions=["vanilla", "single:a", "single:a|decoding=hot"],
                              decodings={"hot": {"temperature": 1.5}}, generations={"count": 2})
    hot = rows(store, stages["mix/single-a_decodinghot"])
    assert {r["decoding"]["temperature"] for r in hot} == {1.5}
    plain = rows(store, stages["mix/single-a"])
    assert {r["decoding"]["temperature"] for r in plain} == {0.7}
    gen1 = rows(store, stages["mix/unigram-single-a_decodinghot-seed42-gen1"])
    assert {r["decoding"]["temperature"] for r in gen1} == {1.5}


def test_a_rerun_redoes_nothing(tmp_path):
    changes = {"generations": {"count": 2, "mode": "accumulate-subsample", "multi_loop": "closed",
                               "human_count": 2}}
    _, _, _, first = run(tmp_path, **changes)
    assert first.ran
    _, _, _, second = run(tmp_path, **changes)
    assert not second.ran and len(second.skipped) == len(first.ran)


def test_concordance_ranks_the_conditions_on_generation_0(tmp_path):
    """With recursive generations the concordance compares the round every condition has; a mean
    over a chain's generations would set vanilla's one round against the chain's average. The
    run's own tables, with single:b's generation 1 made the most diverse set of all: the ranks
    must not move."""
    import pandas as pd

    from collapselab.stats.collapse import collapse_statistics

    spec, store, stages, _ = run(tmp_path, conditions=["vanilla", "single:a", "single:b"],
                                 generations={"count": 2},
                                 collapse={"metrics": ["distinct"], "bootstrap": 10, "jackknife_groups": 3,
                                           "training_data": False})
    assert stages["stats/collapse"].settings["round"].startswith("generation 0")
    evaluates = [s for s in stages.values() if s.kind == "evaluate"]
    aggs = pd.concat([pd.read_parquet(store.final_dir(s.ref) / "aggregates.parquet") for s in evaluates],
                     ignore_index=True)
    per_item = pd.concat([pd.read_parquet(store.final_dir(s.ref) / "per_item.parquet") for s in evaluates],
                         ignore_index=True)
    labels = {s.params.text_set.name: s.params.text_set.labels for s in evaluates}
    primary = aggs[(aggs["set_kind"] == "condition") & aggs["primary"]]
    gen0 = primary[primary["generation"] == 0].set_index("condition")["value"]
    assert gen0.nunique() == 3  # three distinct values: the ranks are the values' order
    later = (aggs["condition"] == "single:b") & (aggs["generation"] == 1) & aggs["primary"]
    aggs.loc[later, "value"] = 10 * gen0.max()  # its mean over generations would now rank first
    out = tmp_path / "stats"
    collapse_statistics(aggs, per_item, labels, out, seed=0)
    ranks = pd.read_parquet(next((out / "concordance").iterdir()) / "ranks.parquet").set_index("condition")
    metric = next(c for c in ranks.columns if c.startswith("distinct"))
    assert ranks[metric].to_dict() == gen0.rank(ascending=False).to_dict()
