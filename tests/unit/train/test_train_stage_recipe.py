"""The train stage trains with its target's own recipe: ``lora`` with the target's
``lora_overrides`` (loss, gradient accumulation), the same recipe its key was built from."""

from __future__ import annotations

import json
import math

import pytest

from collapselab.config.load import load_config
from collapselab.config.spec import target_names
from collapselab.executors import run_stages
from collapselab.pipeline.graph import build_graph
from collapselab.store.run import RunStore
from tests.helpers import tiny_config, write_corpus

pytest.importorskip("peft")


def test_train_stage_uses_the_targets_overrides(tmp_path, tiny_model_dir):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    plain = load_config(tiny_config(tmp_path, tiny_model_dir, corpus), use_env=False)
    name = target_names(plain.targets)[0]
    cfg = tiny_config(tmp_path, tiny_model_dir, corpus,
                      lora_overrides={name: {"loss": "full", "grad_accum": 2}}, conditions=["human"])
    spec = load_config(cfg, use_env=False)
    graph = build_graph(spec)
    train = next(s for s in graph if s.kind == "train")
    assert train.settings["lora"]["loss"] == "full" and train.settings["lora"]["grad_accum"] == 2
    wanted = {"prepare/corpus", train.inputs[0].label, train.label}
    run_stages(spec, tmp_path / "out", stages=[s for s in graph if s.label in wanted])
    out = RunStore(tmp_path / "out").final_dir(train.ref)
    summary = json.loads((out / "train_summary.json").read_text())
    # 16 train prompts, 20% validation -> 12 to fit in micro-batches of 4, 2 accumulated: 2 steps
    assert summary["loss"] == "full" and (summary["n_train"], summary["n_val"]) == (12, 4)
    assert summary["total_steps"] == math.ceil(math.ceil(12 / 4) / 2) == 2
