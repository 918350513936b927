"""The spine on the real packaged SmolLM2-135M-Instruct and the offline Austen corpus, at tiny sizes."""

import json
import re

import pandas as pd

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.pipeline.graph import build_graph
from collapselab.store.run import RunStore

CONFIG = """\
name: e2e
corpus: {kind: austen}
split: {train_size: 8, test_size: 4, seed: 42}
decoding: {max_new_tokens: 24}
sources:
  - {name: smollm2, model: {id: hf/smollm2-135m-instruct, batch_size: 8}}
conditions: [vanilla, human, "single:smollm2"]
targets: [{id: hf/smollm2-135m-instruct, batch_size: 8}]
lora: {epochs: 1, batch_size: 4, max_length: 192, val_fraction: 0.25, eval_every: 1}
"""


def test_spine_on_packaged_smollm2(tmp_path):
    cfg = tmp_path / "e2e.yaml"
    cfg.write_text(CONFIG)
    spec = load_config(cfg, use_env=False)
    report = run_stages(spec, tmp_path / "run")
    stages = build_graph(spec)
    assert len(report.ran) == len(stages)
    store = RunStore(tmp_path / "run")

    prepare = pd.read_json(store.final_dir(stages[0].ref) / "train.jsonl", lines=True)
    assert len(prepare) == 8 and prepare["user"].str.startswith("Continue the following passage").all()

    gen = next(s for s in stages if s.kind == "generate")
    synthetic = pd.read_json(store.final_dir(gen.ref) / "synthetic.jsonl", lines=True)
    # a real instruct model writes real English, not noise
    words = " ".join(synthetic["response"]).split()
    assert len(words) > 40
    assert sum(bool(re.fullmatch(r"[A-Za-z,.;:'\"!?-]+", w)) for w in words) / len(words) > 0.8

    for stage in (s for s in stages if s.kind == "train"):
        summary = json.loads((store.final_dir(stage.ref) / "train_summary.json").read_text())
        assert summary["best_val_loss"] is not None and summary["best_val_loss"] < 10

    responses = [pd.read_json(store.final_dir(s.ref) / "responses.jsonl", lines=True)
                 for s in stages if s.kind == "respond"]
    assert [len(r) for r in responses] == [4, 4, 4]
    assert all(r["response"].str.len().gt(0).all() for r in responses)
