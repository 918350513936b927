"""The collapse loop's graph (issue 13): closed multi-source loops, decoding variants, curation,
accumulate-subsample, fresh human data as a count, k answers per prompt — graph shape and the
settings validate refuses, with messages that name the field. Nothing runs here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from collapselab.config.load import load_config
from collapselab.errors import ConfigError
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.validate import validate_experiment
from tests.helpers import write_corpus


def config(tmp_path: Path, **changes) -> Path:
    data = {
        "name": "loop",
        "corpus": {"kind": "jsonl", "path": str(write_corpus(tmp_path / "corpus.jsonl")), "columns": {"id": "id"}},
        "split": {"test_fraction": 0.25, "train_size": 16, "test_size": 6, "seed": 1},
        "decoding": {"max_new_tokens": 8, "seed": 3},
        "sources": [{"name": "a", "model": {"id": "mock/random"}}, {"name": "b", "model": {"id": "mock/echo"}}],
        "conditions": ["vanilla", "single:a", "single:b", "multi:a,b"],
        "targets": [{"id": "toy/unigram"}],
        "generations": {"count": 2},
        "collapse": {"enabled": False},
        "run": {"threads": 1},
    }
    data.update(changes)
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def graph(tmp_path: Path, **changes):
    return build_graph(load_config(config(tmp_path, **changes), use_env=False))


def load(tmp_path: Path, **changes):
    return load_config(config(tmp_path, **changes), use_env=False)


def by_label(stages):
    return {s.label: s for s in stages}


def test_chains_mode_takes_each_share_from_the_single_source_chains(tmp_path):
    stages = by_label(graph(tmp_path))
    mix = stages["mix/unigram-multi-a_b-seed42-gen1"]
    assert {i.settings["chain"] for i in mix.inputs if i.kind == "generate"} == {"single:a", "single:b"}
    assert "multi_loop" not in mix.settings


def test_closed_mode_lets_the_mixture_trained_model_write_its_own_next_generation(tmp_path):
    stages = by_label(graph(tmp_path, generations={"count": 3, "multi_loop": "closed"}))
    for g in (1, 2):
        mix = stages[f"mix/unigram-multi-a_b-seed42-gen{g}"]
        assert mix.settings["multi_loop"] == "closed"
        gens = [i for i in mix.inputs if i.kind == "generate"]
        assert gens and {i.settings["chain"] for i in gens} == {"multi:a,b"}
        for gen in gens:  # written by the multi condition's own model of the previous generation
            [train] = [i for i in gen.inputs if i.kind == "train"]
            assert (train.params.condition.label, train.params.generation) == ("multi:a,b", g - 1)
    # the single-source chains are unchanged by the mode
    single = stages["mix/unigram-single-a-seed42-gen1"]
    assert {i.settings["chain"] for i in single.inputs if i.kind == "generate"} == {"single:a"}


def test_closed_mode_needs_no_single_source_chains(tmp_path):
    stages = graph(tmp_path, conditions=["vanilla", "multi:a,b"], generations={"count": 2, "multi_loop": "closed"})
    assert any(s.kind == "mix" and s.params.generation == 1 for s in stages)
    with pytest.raises(ConfigError, match="add the conditions single:a, single:b"):
        load(tmp_path, conditions=["vanilla", "multi:a,b"], generations={"count": 2})


@pytest.mark.parametrize(("generations", "conditions", "message"), [
    ({"count": 1, "multi_loop": "closed"}, None, r"generations.multi_loop: 'closed' needs generations.count ≥ 2"),
    ({"count": 2, "multi_loop": "closed"}, ["vanilla", "single:a"], "the conditions have none"),
    ({"count": 2, "subsample": 8}, None, "generations.subsample: only mode 'accumulate-subsample'"),
    ({"count": 2, "human_fraction": 0.2, "human_count": 3}, None, "generations.human_count: give"),
])
def test_inconsistent_generation_settings_are_refused_naming_the_field(tmp_path, generations, conditions, message):
    changes = {"generations": generations, **({"conditions": conditions} if conditions else {})}
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, **changes)


def test_a_decoding_variant_samples_its_own_training_data(tmp_path):
    stages = graph(tmp_path, conditions=["vanilla", "single:a", "single:a|decoding=hot"],
                   decodings={"hot": {"temperature": 1.3, "top_p": 1.0}})
    gen0 = [s for s in stages if s.kind == "generate" and s.params.generation == 0]
    plain = [s for s in gen0 if "decoding" not in s.name]
    hot = [s for s in gen0 if s.name.endswith("-decoding-hot")]
    assert plain and len(hot) == len(plain)
    assert {s.params.decoding.temperature for s in hot} == {1.3} and {s.params.decoding.top_p for s in hot} == {1.0}
    assert {s.params.decoding.temperature for s in plain} == {0.7}
    # its later generations are its own chain, sampled with the variant too
    gen1 = [s for s in stages if s.kind == "generate" and s.params.generation == 1
            and s.settings["chain"] == "single:a|decoding=hot"]
    assert gen1 and {s.params.decoding.temperature for s in gen1} == {1.3}
    labels = {s.params.condition.label for s in stages if s.kind == "respond"}
    assert "single:a|decoding=hot" in labels


def test_decoding_variants_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="decodings.hot: seed cannot vary by condition"):
        load(tmp_path, decodings={"hot": {"seed": 3}}, conditions=["vanilla", "single:a|decoding=hot"])
    with pytest.raises(ConfigError, match="uses decoding 'cold', which decodings does not define"):
        load(tmp_path, conditions=["vanilla", "single:a|decoding=cold"], generations={"count": 1})
    with pytest.raises(ConfigError, match="only synthetic conditions"):
        load(tmp_path, conditions=["vanilla", "human|decoding=hot"], decodings={"hot": {"temperature": 1.0}})
    spec = load(tmp_path, conditions=["vanilla", "single:a|decoding=beam"], decodings={"beam": {"num_beams": 4}},
                generations={"count": 1})
    with pytest.raises(ConfigError, match="decodings.beam.num_beams: beam search is offered by the hf backend"):
        validate_experiment(spec)


def test_accumulate_subsample_reads_the_previous_pool(tmp_path):
    stages = by_label(graph(tmp_path, generations={"count": 3, "mode": "accumulate-subsample", "subsample": 12}))
    mix = stages["mix/unigram-single-a-seed42-gen2"]
    assert mix.settings["mode"] == "accumulate-subsample" and mix.settings["subsample"] == 12
    assert stages["mix/unigram-single-a-seed42-gen1"] in mix.inputs
    assert stages["train/unigram-single-a-seed42-gen2"].settings["val_split"] == "prompt"


def test_a_curated_condition_scores_the_shared_answers_before_its_mix(tmp_path):
    stages = graph(tmp_path, conditions=["vanilla", "single:a", "single:a|curate=short"],
                   curation=[{"name": "short", "score": "length", "keep": "low", "keep_rate": 0.5}])
    labels = by_label(stages)
    curate = labels["curate/single-a_curateshort"]
    mix = labels["mix/single-a_curateshort"]
    assert curate in mix.inputs
    # the curated condition answers with the same generate stages as its uncurated twin
    assert {i.label for i in curate.inputs if i.kind == "generate"} == \
        {i.label for i in labels["mix/single-a"].inputs if i.kind == "generate"}
    # every later generation is curated too
    assert "curate/unigram-single-a_curateshort-seed42-gen1" in labels


@pytest.mark.parametrize(("step", "message"), [
    ({"name": "x", "score": "length", "keep": "low", "keep_rate": 0.0}, r"curation.x.keep_rate: 0 is outside \(0, 1\]"),
    ({"name": "x", "score": "length", "keep": "low", "keep_rate": 1.5}, r"keep_rate: 1.5 is outside \(0, 1\]"),
    ({"name": "x", "score": "length"}, "curation.x.keep: length has no better end"),
    ({"name": "x", "score": "perplexity", "rule": "resample"}, "curation.x.rule: 'resample'"),
    ({"name": "x", "score": "perplexity", "rule": "threshold"}, "curation.x.threshold: rule 'threshold' needs"),
    ({"name": "x", "score": "judge"}, "curation.x.model: score 'judge' needs a model"),
])
def test_curation_settings_are_checked(tmp_path, step, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, conditions=["vanilla", "single:a|curate=x"], curation=[step])


def test_an_unused_curation_step_is_refused(tmp_path):
    spec = load(tmp_path, curation=[{"name": "x", "score": "length", "keep": "low"}])
    with pytest.raises(ConfigError, match="curation.0: 'x' is used by no condition"):
        validate_experiment(spec)


def test_k_answers_per_prompt_add_a_sample_stage_and_a_within_prompt_set_per_cell(tmp_path):
    stages = graph(tmp_path, collapse={"samples": {"k": 3, "prompts": 4}, "metrics": ["distinct"]},
                   generations={"count": 1})
    samples = [s for s in stages if s.kind == "sample"]
    responds = [s for s in stages if s.kind == "respond"]
    assert sorted(s.name for s in samples) == sorted(s.name for s in responds)
    evaluates = {s.settings["set"]: s for s in stages if s.kind == "evaluate"}
    within = evaluates["unigram/single:a/seed42/samples"]
    assert [m["name"] for m in within.settings["metrics"]] == ["distinct_at_k", "within_prompt_distance"]
    [stats] = [s for s in stages if s.kind == "stats"]
    assert within in stats.inputs
    with pytest.raises(ConfigError, match=r"collapse.samples.k: 1 answers per prompt cannot show diversity"):
        load(tmp_path, collapse={"samples": {"k": 1}})


def test_a_sources_training_data_set_leaves_out_the_decoding_variants_answers(tmp_path):
    stages = graph(tmp_path, conditions=["vanilla", "single:a", "single:a|decoding=hot"],
                   decodings={"hot": {"temperature": 1.3}}, generations={"count": 1},
                   collapse={"metrics": ["distinct"]})
    [embed] = [s for s in stages if s.kind == "embed" and s.settings["set"] == "source:a"]
    producers = [i for i in embed.inputs if i.kind == "generate"]
    assert producers and all("decoding" not in i.name for i in producers)
    assert {i.params.decoding.temperature for i in producers} == {0.7}
