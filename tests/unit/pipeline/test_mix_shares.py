"""Multi-source mixes by example through the pipeline (audit a3): the mix stage's training set,
its summary, the generate stages that answer only part of a shard, plan and validate."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from collapselab.config.load import load_config
from collapselab.corpora.shares import assign_examples
from collapselab.errors import CollapselabError
from collapselab.pipeline.graph import build_graph
from tests.helpers import write_corpus


def config(tmp_path: Path, conditions, n: int = 80, **split):
    """80 records, a quarter for test: 60 train prompts; source X always answers "from-X"."""
    corpus = write_corpus(tmp_path / "c.jsonl", n=n)
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps({
        "name": "m", "corpus": {"kind": "jsonl", "path": str(corpus), "columns": {"id": "id"}},
        "split": {"test_fraction": 0.25, "seed": 1, **split},
        "decoding": {"max_new_tokens": 6, "seed": 3},
        "sources": [{"name": s, "model": {"id": f"mock/fixed:from-{s}"}} for s in ("a", "b", "c")],
        "conditions": conditions, "targets": ["hf/smollm2-135m-instruct"], "collapse": {"enabled": False},
        "run": {"threads": 1},
    }))
    return path


def run_data_stages(spec, folder: Path):
    from collapselab.executors import run_stages
    from collapselab.store.run import RunStore

    stages = [s for s in build_graph(spec) if s.kind in ("prepare", "generate", "mix")]
    run_stages(spec, folder, stages=stages)
    store = RunStore(folder)
    return stages, store


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_mix_realises_the_weights_by_example(tmp_path):
    """Before the fix, 4 shards gave 30/15/15 and 45/15 of 60 prompts."""
    spec = load_config(config(tmp_path, ["multi:a,b,c", "multi:a=0.7,b=0.3"], shards=4), [])
    stages, store = run_data_stages(spec, tmp_path / "run")
    prepare = next(s for s in stages if s.kind == "prepare")
    train = read(store.final_dir(prepare.ref) / "train.jsonl")
    assert len(train) == 60
    for label, expected in (("multi:a,b,c", {"a": 20, "b": 20, "c": 20}), ("multi:a=0.7,b=0.3", {"a": 42, "b": 18})):
        mix = next(s for s in stages if s.kind == "mix" and s.params.condition.label == label)
        cond = mix.params.condition
        rows = read(store.final_dir(mix.ref) / "train.jsonl")
        # one example per prompt, answered by the source the assignment gives it
        assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in train)
        owner = assign_examples(train, 4, cond.normalized_weights, seed=1)
        assert all(r["origin"] == cond.sources[owner[r["id"]]] and r["response"] == f"from-{r['origin']}"
                   for r in rows)
        assert dict(Counter(r["origin"] for r in rows)) == expected
        summary = json.loads((store.final_dir(mix.ref) / "summary.json").read_text())
        assert summary["realised_counts"] == summary["assigned_counts"] == expected
        assert summary["realised_shares"] == pytest.approx({s: c / 60 for s, c in expected.items()})
        assert summary["requested_shares"] == pytest.approx(dict(zip(cond.sources, cond.normalized_weights,
                                                                     strict=True)))


def test_partly_used_shards_are_answered_only_in_part(tmp_path):
    """Without a single-source condition, no prompt is answered by two sources: 60 answers for 60
    prompts (whole shards would have cost 90)."""
    spec = load_config(config(tmp_path, ["multi:a,b,c"], shards=4), [])
    stages, store = run_data_stages(spec, tmp_path / "run")
    generates = [s for s in stages if s.kind == "generate"]
    assert sorted(s.name for s in generates) == [
        "a-shard0", "a-shard1-for-multi-a_b_c", "b-shard1-for-multi-a_b_c", "b-shard2-for-multi-a_b_c",
        "c-shard2-for-multi-a_b_c", "c-shard3"]
    answered = Counter()
    for s in generates:
        answered.update(r["prompt_id"] for r in read(store.final_dir(s.ref) / "synthetic.jsonl"))
    assert len(answered) == 60 and set(answered.values()) == {1}


def test_whole_shards_are_shared_and_keep_the_single_source_keys(tmp_path):
    single = {s.label: s.key for s in build_graph(load_config(config(tmp_path, ["single:a", "single:b"],
                                                                     shards=4), []))}
    both = build_graph(load_config(config(tmp_path, ["single:a", "single:b", "multi:a,b,c"], shards=4), []))
    keys = {s.label: s.key for s in both}
    assert all(keys[label] == key for label, key in single.items() if label.startswith("generate/"))
    mix = next(s for s in both if s.kind == "mix" and s.name.startswith("multi"))
    # a and b answer every shard for their single-source conditions: the mix reuses those stages;
    # c is needed for part of shard 2 and all of shard 3
    assert sorted(i.name for i in mix.inputs if i.kind == "generate") == [
        "a-shard0", "a-shard1", "b-shard1", "b-shard2", "c-shard2-for-multi-a_b_c", "c-shard3"]
    assert mix.settings["apportion"] == "largest-remainder"


def test_only_mixes_that_cut_a_shard_have_a_new_key_setting(tmp_path):
    stages = build_graph(load_config(config(tmp_path, ["human", "single:a", "multi:a,b", "multi:a,b,c"], shards=4),
                                     []))
    mixes = {s.params.condition.label: s.settings for s in stages if s.kind == "mix"}
    assert "apportion" in mixes["multi:a,b,c"]
    assert all("apportion" not in mixes[c] for c in ("human", "single:a", "multi:a,b"))


def test_plan_counts_what_each_generate_stage_answers(tmp_path):
    from collapselab.pipeline.plan import plan_experiment

    spec = load_config(config(tmp_path, ["single:a", "multi:a,b,c"], shards=4), [])
    plan = plan_experiment(spec)
    generate = plan[plan["kind"] == "generate"].set_index("name")
    # a answers every shard whole (single:a); b and c only what the mix takes from them
    assert generate["n_items"].sum() == 60 + 40
    assert generate.loc["b-shard1-for-multi-a_b_c", "n_items"] == 10
    assert "only the prompts of shard 1 that multi:a,b,c assigns to b (10 of 15)" in \
        generate.loc["b-shard1-for-multi-a_b_c", "basis"]
    mix = plan[(plan["kind"] == "mix") & plan["name"].str.startswith("multi")].iloc[0]
    assert mix["n_items"] == 60
    assert "a 20 (33.3% of 33.3% requested; shard 0: 15, shard 1: 5)" in mix["basis"]


def test_validate_reports_and_enforces_the_tolerance(tmp_path):
    """10 prompts cannot be split 1/3 each: 4/3/3, 40% for a is off by 6.7 points."""
    from collapselab.pipeline.validate import mix_shares, validate_experiment

    spec = load_config(config(tmp_path, ["multi:a,b,c"], shards=4, train_size=10), [])
    shares = mix_shares(spec)["multi:a,b,c"]
    assert [v["count"] for v in shares.values()] == [4, 3, 3]
    with pytest.raises(CollapselabError, match=r"multi:a,b,c: source a would make up 40.0%.*33.3% were requested"):
        validate_experiment(spec)
    validate_experiment(load_config(config(tmp_path, ["multi:a,b,c"], shards=4, train_size=10,
                                           weight_tolerance=0.1), []))
    assert mix_shares(load_config(config(tmp_path, ["vanilla"]), [])) == {}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "collapselab", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "COLUMNS": "200"})


def test_validate_command_prints_the_shares_and_fails_beyond_the_tolerance(tmp_path):
    path = config(tmp_path, ["multi:a,b,c"], shards=4, train_size=10)
    res = cli("validate", path, "split.weight_tolerance=0.01")
    assert res.returncode != 0
    assert "multi:a,b,c" in res.stderr and "40.0%" in res.stderr and "33.3% were requested" in res.stderr
    res = cli("validate", path, "split.weight_tolerance=0.1")
    assert res.returncode == 0, res.stderr
    assert "multi:a,b,c: realised shares of the 10 training prompts: a 4 = 40.0% (requested 33.3%), " \
           "b 3 = 30.0% (requested 33.3%), c 3 = 30.0% (requested 33.3%)" in res.stdout


def test_a_part_left_empty_is_an_empty_stage(tmp_path):
    """0.999/0.001 of 60 prompts: b's largest-remainder count is 0, so its stage for shard 3 answers nothing."""
    spec = load_config(config(tmp_path, ["multi:a=0.999,b=0.001"], shards=4), [])
    stages, store = run_data_stages(spec, tmp_path / "run")
    empty = next(s for s in stages if s.kind == "generate" and s.params.source == "b")
    assert empty.settings["part"] == {"sources": ["a", "b"], "weights": [0.999, 0.001]}
    assert read(store.final_dir(empty.ref) / "synthetic.jsonl") == []
    assert json.loads((store.final_dir(empty.ref) / "summary.json").read_text())["n"] == 0
    mix = next(s for s in stages if s.kind == "mix")
    assert json.loads((store.final_dir(mix.ref) / "summary.json").read_text())["realised_counts"] == {"a": 60, "b": 0}
