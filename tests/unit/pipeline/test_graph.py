from pathlib import Path

from collapselab.config.load import load_config
from collapselab.pipeline.experiments.spine import shard_plan
from collapselab.pipeline.graph import build_graph

ROOT = Path(__file__).resolve().parents[3]


def keys(stages):
    return {s.label: s.key for s in stages}


def test_demo_graph_shape():
    spec = load_config(ROOT / "configs/demo.yaml", use_env=False)
    stages = build_graph(spec)
    kinds = [s.kind for s in stages]
    assert kinds.count("prepare") == 1
    # single:smollm2 and single:gemma need both shards of each; multi reuses smollm2-shard0 and gemma-shard1
    assert sorted(s.name for s in stages if s.kind == "generate") == [
        "gemma-shard0", "gemma-shard1", "smollm2-shard0", "smollm2-shard1"]
    assert kinds.count("mix") == 4 and kinds.count("train") == 4 and kinds.count("respond") == 5
    multi = next(s for s in stages if s.kind == "mix" and s.name.startswith("multi"))
    assert multi.settings["assignment"] == [["smollm2", 0], ["gemma", 1]]
    # every input comes before its consumer
    seen = set()
    for s in stages:
        assert all(i.label in seen for i in s.inputs)
        seen.add(s.label)


def test_changing_one_setting_changes_only_dependent_keys():
    path = ROOT / "configs/demo.yaml"
    base = keys(build_graph(load_config(path, use_env=False)))
    lora = keys(build_graph(load_config(path, ["lora.r=8"], use_env=False)))
    changed = {k for k in base if base[k] != lora[k]}
    downstream = ("train/", "respond/", "score/", "embed/", "evaluate/", "stats/", "safety_respond/", "judge/",
                  "safety/", "prefer/", "preference/", "embedding_map/", "familiarity/", "recognize/",
                  "preference_controls/")
    assert any(k.startswith("train/") for k in changed) and all(k.startswith(downstream) for k in changed)
    # nothing about the vanilla target's own answers changes
    vanilla = [k for k in base if k.startswith(("respond/", "embed/", "evaluate/")) and "vanilla" in k]
    assert vanilla and not set(vanilla) & changed

    gemma = keys(build_graph(load_config(path, ["sources.1.decoding={temperature: 1.0}"], use_env=False)))
    changed = {k for k in base if base[k] != gemma[k]}
    assert "generate/gemma-shard0" in changed and "generate/smollm2-shard0" not in changed
    assert "mix/single-smollm2" not in changed and "mix/multi-smollm2_gemma" in changed
    # batch size does not decide content
    batch = keys(build_graph(load_config(path, ["targets.0.batch_size=3"], use_env=False)))
    assert batch == base


def test_weighted_multi_assignment(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "sources: [{name: a, model: mock/echo}, {name: b, model: mock/echo}, {name: c, model: mock/echo}]\n"
        "conditions: ['multi:a=2,b=1,c=1']\nsplit: {shards: 8}\ntargets: [hf/smollm2-135m-instruct]\n")
    plan = shard_plan(load_config(cfg, use_env=False))
    assert plan["multi:a=0.5,b=0.25,c=0.25"] == [("a", [0, 1, 2, 3]), ("b", [4, 5]), ("c", [6, 7])]


def test_a_small_weight_shares_a_shard_instead_of_needing_more_shards(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "sources: [{name: a, model: mock/echo}, {name: b, model: mock/echo}]\n"
        "conditions: ['multi:a=20,b=1']\nsplit: {shards: 4}\ntargets: [hf/smollm2-135m-instruct]\n")
    mix = next(s for s in build_graph(load_config(cfg, use_env=False)) if s.kind == "mix")
    assert mix.settings["assignment"] == [["a", 0], ["a", 1], ["a", 2], ["a", 3], ["b", 3]]


def test_run_gpus_are_requested_by_model_stages_only():
    from collapselab.pipeline.kinds import stage_kind

    path = ROOT / "configs/demo.yaml"
    base = build_graph(load_config(path, use_env=False))
    gpu = build_graph(load_config(path, ["run.gpus=0.5"], use_env=False))
    assert keys(gpu) == keys(base)  # a scheduling request never changes what a stage writes
    for stage in gpu:
        assert stage.resources.get("gpus", 0) == (0.5 if stage_kind(stage.kind).loads_model else 0)
    assert {s.kind for s in gpu if s.resources.get("gpus")} >= {"generate", "train", "judge", "prefer"}
