"""Preference-leakage relations of judge–source pairs (Li et al. 2025): same model, fine-tuned on
its data, same family, unrelated — on hand-made cases and on the paper grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from collapselab.config.load import load_config
from collapselab.config.spec import Condition, ModelSpec
from collapselab.pipeline.graph import build_graph
from collapselab.preference.relations import (
    HUMAN_TEXT,
    SAME_FAMILY,
    SAME_MODEL,
    TRAINED_ON,
    UNRELATED,
    model_family,
    relation_of,
)

PAPER = Path(__file__).resolve().parents[3] / "configs" / "paper.yaml"
LLAMA_8B = ModelSpec(id="hf/meta-llama/Llama-3.1-8B-Instruct")
LLAMA_70B = ModelSpec(id="hf/meta-llama/Llama-3.1-70B-Instruct")
QWEN = ModelSpec(id="hf/Qwen/Qwen2.5-7B-Instruct")


def rel(condition: str, source: str, model: ModelSpec | None, *, judge: ModelSpec = LLAMA_8B, own=None) -> str:
    judge_family = model_family("llama-3.1-8b-instruct", judge.id)
    family = model_family(source, model.id) if model is not None else None
    return relation_of(Condition.parse(condition) if ":" in condition else Condition(kind=condition), judge,
                       judge_family, source, model, family, own=own).relation


@pytest.mark.parametrize(("condition", "source", "model", "expected"), [
    ("vanilla", "llama-3.1-8b", LLAMA_8B, SAME_MODEL),
    ("vanilla", "llama-3.1-70b", LLAMA_70B, SAME_FAMILY),
    ("vanilla", "qwen2.5-7b", QWEN, UNRELATED),
    ("single:qwen2.5-7b", "qwen2.5-7b", QWEN, TRAINED_ON),
    ("single:qwen2.5-7b", "llama-3.1-8b", LLAMA_8B, SAME_MODEL),  # fine-tuned on other data, same base
    ("single:llama-3.1-8b", "llama-3.1-8b", LLAMA_8B, TRAINED_ON),  # the stronger relation wins
    ("multi:qwen2.5-7b,llama-3.1-70b", "llama-3.1-70b", LLAMA_70B, TRAINED_ON),
    ("multi:qwen2.5-7b,llama-3.1-70b", "gemma", ModelSpec(id="hf/google/gemma-2-9b-it"), UNRELATED),
    ("human", "human", None, TRAINED_ON),
    ("vanilla", "human", None, HUMAN_TEXT),
    ("single:qwen2.5-7b", "human", None, HUMAN_TEXT),
])
def test_relation_of(condition, source, model, expected):
    assert rel(condition, source, model) == expected


def test_the_facts_behind_a_relation_and_a_configured_own_family():
    r = relation_of(Condition.parse("single:llama-3.1-8b"), LLAMA_8B, "Llama", "llama-3.1-8b", LLAMA_8B, "Llama")
    assert (r.trained_on, r.same_model, r.same_family) == (True, True, True)
    # an unknown family (a mock or a local path) is unrelated unless the config names it own
    mock = ModelSpec(id="mock/echo")
    assert model_family("b", mock.id) is None
    vanilla, other = Condition(kind="vanilla"), ModelSpec(id="mock/random")
    assert relation_of(vanilla, mock, None, "b", other, None).relation == UNRELATED
    assert relation_of(vanilla, mock, None, "b", other, None, own="b").relation == SAME_FAMILY


def test_every_judge_source_pair_of_the_paper_grid_has_a_relation():
    stages = build_graph(load_config(PAPER, use_env=False))
    controls = next(s for s in stages if s.kind == "preference_controls")
    relations = controls.settings["relations"]
    prefers = {s.name: s for s in stages if s.kind == "prefer"}
    assert set(relations) == set(prefers)
    for name, stage in prefers.items():
        sources = [i.params.source for i in stage.inputs if i.kind == "candidates"]
        assert list(relations[name]) == [*sources, "human"]
    small = relations["llama-3.1-8b-instruct-vanilla"]
    assert {s: r["relation"] for s, r in small.items()} == {
        "llama-3.1-8b": SAME_MODEL, "gemma-2-9b": UNRELATED, "qwen2.5-7b": UNRELATED, "falcon3-10b": UNRELATED,
        "human": HUMAN_TEXT}
    multi = relations["llama-3.1-8b-instruct-multi-llama-3.1-8b_gemma-2-9b_qwen2.5-7b_falcon3-10b-seed42"]
    assert {r["relation"] for s, r in multi.items() if s != "human"} == {TRAINED_ON}
    big = relations["llama-3.1-70b-instruct-single-llama-3.1-8b-seed42"]  # trained on the small Llama's data
    assert {s: r["relation"] for s, r in big.items()} == {
        "llama-3.1-70b": SAME_MODEL, "mistral-large": UNRELATED, "qwen2.5-72b": UNRELATED,
        "command-r-plus": UNRELATED, "human": HUMAN_TEXT}
    assert relations["llama-3.1-70b-instruct-human-seed42"]["human"]["relation"] == TRAINED_ON
