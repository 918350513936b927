"""Per-target settings and the training objective in the config: ``lora.loss``, ``lora_overrides``
and ``preference.sources_by_target`` — validation with clear errors, and the stage keys they touch
(none at their defaults)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from collapselab.config.load import load_config, validate_data
from collapselab.config.spec import LoraSpec, target_names
from collapselab.errors import ConfigError
from collapselab.pipeline.experiments.preference import own_sources, preference_sources
from collapselab.pipeline.experiments.spine import target_names as spine_target_names
from collapselab.pipeline.graph import build_graph

SMALL, BIG = "tiny-chat", "tiny-big"
BASE: dict[str, Any] = {
    "name": "per-target",
    "corpus": {"kind": "jsonl", "path": "/fixed/corpus.jsonl", "columns": {"id": "id"}},
    "split": {"test_fraction": 0.25, "train_size": 16, "test_size": 6, "seed": 1},
    "decoding": {"max_new_tokens": 8, "seed": 3},
    "sources": [{"name": "a", "model": {"id": "mock/random"}}, {"name": "b", "model": {"id": "mock/echo"}},
                {"name": "c", "model": {"id": "hf//fixed/tiny-big"}}, {"name": "d", "model": {"id": "mock/fixed:x"}}],
    "conditions": ["vanilla", "human", "single:a", "multi:a,b"],
    "targets": [{"id": f"hf//fixed/{SMALL}"}, {"id": f"hf//fixed/{BIG}"}],
    "lora": {"epochs": 1, "batch_size": 4, "max_length": 96, "dtype": "float32"},
    "preference": {"enabled": True, "items": 3, "bootstrap": 50, "sources": ["a", "b"]},
}


def spec_of(**changes: Any):
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return validate_data(data, "test.yaml")


def keys(spec) -> dict[str, str]:
    return {s.label: s.key for s in build_graph(spec)}


def changed_roots(spec, reference: dict[str, str]) -> list[str]:
    """The changed stages none of whose inputs changed (where a change starts)."""
    stages = build_graph(spec)
    changed = {s.label for s in stages if reference.get(s.label) != s.key}
    return sorted(s.label for s in stages if s.label in changed and not any(i.label in changed for i in s.inputs))


# -- lora.loss -------------------------------------------------------------------------------------
def test_loss_enters_the_train_key_only_when_full():
    assert LoraSpec().loss == "completion"
    assert "loss" not in LoraSpec().key_settings()
    assert LoraSpec().key_settings() == {k: v for k, v in LoraSpec().model_dump(mode="json").items()
                                         if k not in ("loss", "strategy", "activation_checkpointing")}
    assert LoraSpec(loss="full").key_settings()["loss"] == "full"
    reference = keys(spec_of())
    assert keys(spec_of(lora__loss="completion")) == reference  # the default spelled out: same keys
    full = spec_of(lora__loss="full")
    roots = changed_roots(full, reference)
    assert roots and all(r.startswith("train/") for r in roots)
    assert len(roots) == 2 * 3  # both targets x the trained conditions (human, single, multi)
    with pytest.raises(ConfigError, match="lora.loss"):
        spec_of(lora__loss="answer")


def test_strategy_enters_the_train_key_only_when_not_single():
    assert "strategy" not in LoraSpec().key_settings()
    reference = keys(spec_of())
    assert keys(spec_of(lora__strategy="single")) == reference
    for strategy in ("fsdp", "qlora"):
        assert LoraSpec(strategy=strategy).key_settings()["strategy"] == strategy
        roots = changed_roots(spec_of(lora__strategy=strategy), reference)
        assert roots and all(r.startswith("train/") for r in roots)
    with pytest.raises(ConfigError, match="lora.strategy"):
        spec_of(lora__strategy="ddp")


def test_activation_checkpointing_never_enters_a_key():
    assert "activation_checkpointing" not in LoraSpec(activation_checkpointing=True).key_settings()
    assert keys(spec_of(lora__activation_checkpointing=True)) == keys(spec_of())


# -- lora_overrides --------------------------------------------------------------------------------
def test_lora_overrides_apply_to_their_target_only():
    spec = spec_of(lora_overrides={BIG: {"grad_accum": 16, "learning_rate": 1e-4}})
    assert spec.lora_for(SMALL) == spec.lora
    big = spec.lora_for(BIG)
    assert (big.grad_accum, big.learning_rate, big.batch_size, big.max_length) == (16, 1e-4, 4, 96)
    roots = changed_roots(spec, keys(spec_of()))
    assert roots and all(r.startswith(f"train/{BIG}-") for r in roots) and len(roots) == 3
    train = next(s for s in build_graph(spec) if s.label.startswith(f"train/{BIG}-"))
    assert train.settings["lora"]["grad_accum"] == 16
    # an override that repeats the shared values changes nothing
    assert keys(spec_of(lora_overrides={BIG: {"batch_size": 4}})) == keys(spec_of())


@pytest.mark.parametrize(("override", "message"), [
    ({"tiny": {"grad_accum": 2}},
     r"lora_overrides: 'tiny' is not a target name \(targets: \['tiny-chat', 'tiny-big'\]"),
    ({BIG: {"grad_accum": 0}}, r"lora_overrides.tiny-big: grad_accum: Input should be greater than or equal to 1"),
    ({BIG: {"grad_acum": 2}}, r"lora_overrides.tiny-big: grad_acum: Extra inputs are not permitted"),
    ({BIG: {"loss": "answers"}}, r"lora_overrides.tiny-big: loss: Input should be 'completion' or 'full'"),
])
def test_bad_lora_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        spec_of(lora_overrides=override)


def test_target_names_live_with_the_config():
    spec = spec_of(targets=[{"id": "hf/org/Model-1B"}, {"id": "hf//x/model-1b"}, {"id": "hf/./y/Other.gguf"}])
    assert spec.target_names == target_names(spec.targets) == spine_target_names(spec.targets)
    assert spec.target_names == ["model-1b-0", "model-1b-1", "other"]


# -- preference.sources_by_target ------------------------------------------------------------------
def test_sources_by_target_gives_each_targets_judges_their_sources():
    reference = keys(spec_of())
    spec = spec_of(preference__sources_by_target={BIG: ["c", "d"]})
    assert preference_sources(spec, SMALL) == ["a", "b"] and preference_sources(spec, BIG) == ["c", "d"]
    assert preference_sources(spec) == ["a", "b", "c", "d"]  # every text is written once
    stages = build_graph(spec)
    assert sorted(s.name for s in stages if s.kind == "candidates") == ["a", "b", "c", "d"]
    for s in (s for s in stages if s.kind == "prefer"):
        compared = [i.params.source for i in s.inputs if i.kind == "candidates"]
        assert compared == (["c", "d"] if s.params.target_name == BIG else ["a", "b"])
        assert (s.key == reference[s.label]) == (s.params.target_name == SMALL)
    # the big target's own family: the source with its model, among the sources it compares
    assert own_sources(spec, spec.target_names) == {SMALL: None, BIG: "c"}
    assert own_sources(spec_of(), spec_of().target_names) == {SMALL: None, BIG: None}
    # an entry that repeats the shared list changes no key
    assert keys(spec_of(preference__sources_by_target={BIG: ["a", "b"]})) == reference


@pytest.mark.parametrize(("changes", "message"), [
    ({"preference__sources_by_target": {"tiny": ["a"]}}, r"preference.sources_by_target: 'tiny' is not a target name"),
    ({"preference__sources_by_target": {BIG: ["a", "zz"]}},
     r"preference.sources_by_target.tiny-big: unknown source 'zz' \(sources: \['a', 'b', 'c', 'd'\]\)"),
    ({"preference__sources_by_target": {BIG: []}}, r"preference.sources_by_target.tiny-big: give at least one source"),
    ({"preference__sources_by_target": {BIG: ["a", "a"]}}, r"sources_by_target.tiny-big: a source is listed twice"),
    ({"preference__sources_by_target": {BIG: ["c", "d"]}, "preference__own": {BIG: "a"}},
     r"preference.own.tiny-big: 'a' is not among the sources this target's judges compare \['c', 'd'\]"),
    ({"preference__own": {SMALL: "c"}}, r"preference.own.tiny-chat: 'c' is not among the sources"),
])
def test_bad_per_target_preference_settings_are_clear_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        spec_of(**changes)


def test_own_in_the_targets_sources_is_accepted():
    spec = spec_of(preference__sources_by_target={BIG: ["c", "d"]}, preference__own={BIG: "d", SMALL: "b"})
    assert own_sources(spec, spec.target_names) == {SMALL: "b", BIG: "d"}


def test_a_dotted_command_line_key_gets_a_hint(tmp_path):
    path = tmp_path / "dotted.yaml"
    path.write_text(yaml.safe_dump({**copy.deepcopy(BASE), "targets": [{"id": "hf//x/model-1.5b"}]}))
    with pytest.raises(ConfigError, match=r"'model-1' is not a target name .* give the whole map"):
        load_config(path, ["lora_overrides.model-1.5b.grad_accum=2"], use_env=False)
    spec = load_config(path, ["lora_overrides={model-1.5b: {grad_accum: 2}}"], use_env=False)
    assert spec.lora_for("model-1.5b").grad_accum == 2
