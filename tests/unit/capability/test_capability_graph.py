"""The capability stages in the graph (no model, no lm-eval): which models get a stage, what keys
them, what the runner and the executors load."""

from __future__ import annotations

from pathlib import Path

from collapselab.config.load import load_config
from collapselab.pipeline.graph import build_graph
from tests.helpers import tiny_config, write_corpus

TASK = Path(__file__).resolve().parents[2] / "data" / "capability" / "tiny_mc.yaml"


def _graph(tmp_path: Path, *overrides: str, **changes):
    cfg = tiny_config(tmp_path, tmp_path / "model", write_corpus(tmp_path / "corpus.jsonl"),
                      capability={"enabled": True, "tasks": [str(TASK), "arc_easy"]}, **changes)
    return build_graph(load_config(cfg, list(overrides), use_env=False))


def test_one_vanilla_stage_per_target_and_one_per_trained_cell(tmp_path):
    stages = _graph(tmp_path, "seeds=[1,2]")
    capability = [s for s in stages if s.kind == "capability"]
    names = sorted(s.name for s in capability)
    assert names == sorted(["model-vanilla", *(f"model-{c}-seed{s}" for c in ("human", "single-a", "multi-a_b")
                                               for s in (1, 2))])
    for s in capability:
        trains = [i for i in s.inputs if i.kind == "train"]
        assert len(trains) == (0 if s.params.condition.kind == "vanilla" else 1)
        if trains:
            assert (trains[0].params.condition, trains[0].params.seed) == (s.params.condition, s.params.seed)
    summary = next(s for s in stages if s.kind == "capability_summary")
    assert set(summary.inputs) == set(capability)
    settings = capability[0].settings
    assert settings["tasks"][1] == "arc_easy" and settings["tasks"][0]["name"] == "collapselab_tiny_mc"
    assert "batch_size" not in settings and settings["lm_eval"]


def test_the_vanilla_stage_does_not_depend_on_the_seeds_or_on_vanilla_being_a_condition(tmp_path):
    def vanilla(*overrides: str) -> str:
        return next(s.key for s in _graph(tmp_path, *overrides) if s.label == "capability/model-vanilla")

    assert vanilla("seeds=[1]") == vanilla("seeds=[7,8]") == vanilla("conditions=[human]")


def test_later_generations_get_their_own_stages(tmp_path):
    stages = _graph(tmp_path, "generations.count=2", "conditions=[vanilla,single:a]")
    names = {s.name for s in stages if s.kind == "capability"}
    assert names == {"model-vanilla", "model-single-a-seed42", "model-single-a-seed42-gen1"}


def test_first_generation_only_and_the_chat_template_setting(tmp_path):
    first = _graph(tmp_path, "generations.count=2", "conditions=[vanilla,single:a]", "capability.generations=first")
    assert {s.name for s in first if s.kind == "capability"} == {"model-vanilla", "model-single-a-seed42"}
    plain = {s.label: s for s in _graph(tmp_path) if s.kind == "capability"}
    chat = {s.label: s for s in _graph(tmp_path, "capability.apply_chat_template=true") if s.kind == "capability"}
    assert "apply_chat_template" not in next(iter(plain.values())).settings
    assert all(chat[label].settings["apply_chat_template"] is True and chat[label].key != plain[label].key
               for label in plain)


def test_a_vllm_target_is_evaluated_through_transformers(tmp_path):
    stages = _graph(tmp_path, f"targets.0.id=vllm/{tmp_path / 'model'}")
    stage = next(s for s in stages if s.kind == "capability")
    assert stage.params.target.backend == "vllm"
    assert stage.model.id == f"hf/{tmp_path / 'model'}" and stage.params.model.dtype == stage.params.target.dtype


def test_disabled_adds_nothing(tmp_path):
    stages = _graph(tmp_path, "capability.enabled=false")
    assert not any(s.kind.startswith("capability") for s in stages)
