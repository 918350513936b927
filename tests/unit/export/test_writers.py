"""The export's writers on hand-made data (no pipeline): Parquet tables that ``datasets`` loads back
unchanged, the dataset card's YAML and text, secrets redacted, an adapter folder with its card."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from collapselab.config.load import load_config
from collapselab.config.spec import Condition, ModelSpec
from collapselab.export.adapters import write_adapter
from collapselab.export.cards import CardContext, dataset_card, redacted_config_yaml
from collapselab.export.dataset import arrow_table, write_tables
from collapselab.export.tables import AdapterSource, Table
from collapselab.pipeline.experiments.spine.params import CellParams
from collapselab.store.versions import SourceVersion

COMMIT = "0123456789abcdef0123456789abcdef01234567"
VERSION = SourceVersion("0.1.0", (COMMIT,), "run")
DECODING = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 8, "system_prompt": "Be brief.", "seed": 3}
TRAIN_ROWS = [
    {"id": "r001", "prompt": "Write.", "response": "Words.", "category": "alpha", "origin": "human", "shard": 0},
    {"id": "r002", "prompt": "Say.", "response": "Text | with a pipe.", "category": "beta", "origin": "a",
     "model": "hf/smollm2-135m-instruct", "decoding": DECODING, "seed": 3, "shard": 1},
    {"id": "r003@g1", "prompt": "Tell.", "response": "Más texto.", "category": "beta", "origin": "a",
     "model": "hf/smollm2-135m-instruct", "decoding": DECODING, "seed": 3, "shard": 1, "generation": 1},
]


def config(tmp_path: Path, **changes) -> Path:
    data = {
        "name": "cards", "corpus": {"kind": "austen"},
        "decoding": {"max_new_tokens": 8, "seed": 3, "system_prompt": "Be brief."},
        "sources": [{"name": "a", "model": {"id": "hf/smollm2-135m-instruct"}},
                    {"name": "g", "model": {"id": "hf/gemma3-270m"}, "decoding": {"temperature": 1.1, "seed": 5}},
                    {"name": "api", "model": {"id": "openai/some-model", "base_url": "http://localhost:1",
                                              "api_key_env": "MY_KEY_VARIABLE"}}],
        "conditions": ["vanilla", "human", "single:a", "multi:a,g"],
        "targets": ["hf/smollm2-135m-instruct"], "seeds": [11, 12],
        "collapse": {"enabled": False},
    }
    data.update(changes)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def card_context(tmp_path: Path, repo: str | None = None) -> CardContext:
    path = config(tmp_path)
    return CardContext(load_config(path, use_env=False), redacted_config_yaml(path.read_text()), VERSION, repo)


def load(folder: Path, name: str) -> list[dict]:
    from datasets import load_dataset

    return load_dataset(str(folder), name, split="train", cache_dir=str(folder.parent / ".hf-cache")).to_list()


def split_header(card: str) -> tuple[dict, str]:
    _, header, text = card.split("---\n", 2)
    return yaml.safe_load(header), text


def test_arrow_table_keeps_types_and_writes_nested_values_as_json():
    table = arrow_table(TRAIN_ROWS + [{"id": "x", "seed": "text", "shard": None}])
    assert table.column_names[:6] == ["id", "prompt", "response", "category", "origin", "shard"]
    assert str(table.schema.field("shard").type) == "int64"  # ints with a missing value stay ints
    assert str(table.schema.field("seed").type) == "string"  # an int here, text there: text
    assert str(table.schema.field("decoding").type) == "string"
    decoded = [json.loads(v) if v else None for v in table.column("decoding").to_pylist()]
    assert decoded == [None, DECODING, DECODING, None]
    assert table.column("generation").to_pylist() == [None, None, 1, None]


def test_tables_round_trip_through_load_dataset(tmp_path):
    frame = pd.DataFrame({"target": ["t", "t"], "seed": [1, 2], "harm": [1.5, float("nan")]})
    frame.to_parquet(tmp_path / "judged.parquet", index=False)
    tables = {"train-human": Table("train-human", "a training set", rows=TRAIN_ROWS, stages=["mix/human"]),
              "safety_judgements": Table("safety_judgements", "judgements", parquet=tmp_path / "judged.parquet",
                                         stages=["safety/summary"])}
    folder = tmp_path / "out" / "dataset"
    rows = write_tables(tables, folder)
    ctx = card_context(tmp_path)
    (folder / "README.md").write_text(dataset_card(ctx, tables, rows))
    assert rows == {"train-human": 3, "safety_judgements": 2}
    back = load(folder, "train-human")
    for original, loaded in zip(TRAIN_ROWS, back, strict=True):
        for key, value in original.items():
            got = json.loads(loaded[key]) if key == "decoding" else loaded[key]
            assert got == value, key
    judged = load(folder, "safety_judgements")
    assert [r["seed"] for r in judged] == [1, 2] and judged[0]["harm"] == 1.5 and judged[1]["harm"] is None


def test_dataset_card_lists_configs_licences_models_decoding_seeds_sizes_and_commit(tmp_path):
    tables = {"train-single-a": Table("train-single-a", "training set of condition single:a", rows=TRAIN_ROWS,
                                      stages=["mix/single-a"]),
              "responses": Table("responses", "answers", rows=[{"a": 1}] * 5, stages=["respond/x"])}
    ctx = card_context(tmp_path, repo="org/study")
    card = dataset_card(ctx, tables, {"train-single-a": 3, "responses": 5}, adapters=["smollm2-135m-instruct-h"],
                        missing=["train/smollm2-135m-instruct-human-seed12"],
                        split={"corpus_records": 1792, "train": 48, "test": 100})
    meta, text = split_header(card)
    assert [c["config_name"] for c in meta["configs"]] == ["train-single-a", "responses"]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-single-a.parquet"}]
    # the corpus is public domain ("other"), the sources Apache-2.0 and Gemma, the API model unknown
    assert meta["license"] == ["apache-2.0", "gemma", "other", "unknown"]
    assert "collapselab" in meta["tags"] and meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"]
    facts = meta["collapselab"]  # the same facts for programs
    assert facts["commit"] == COMMIT and facts["seeds"] == [11, 12] and facts["decoding"]["max_new_tokens"] == 8
    assert [(s["name"], s["model"], s["licence"]) for s in facts["sources"]] == [
        ("a", "hf/smollm2-135m-instruct", "Apache-2.0"), ("g", "hf/gemma3-270m", "Gemma Terms of Use"),
        ("api", "openai/some-model", "unknown")]
    assert facts["sources"][1]["decoding"]["temperature"] == 1.1
    for expected in ("hf/smollm2-135m-instruct", "hf/gemma3-270m", "openai/some-model",  # models
                     "Apache-2.0", "Gemma Terms of Use", "public domain",  # licences
                     "temperature=1.1", "seed=5", "max_new_tokens=8", "'Be brief.'",  # decoding
                     "training seeds: 11, 12", "split seed: 42",  # seeds
                     "1792 records", "48 train prompts", "100 test prompts", "| train-single-a | 3 |",  # sizes
                     f"collapselab commit: {COMMIT}", "collapselab version: 0.1.0",  # provenance
                     "`org/study-smollm2-135m-instruct-h`", "train/smollm2-135m-instruct-human-seed12",
                     "load_dataset('org/study', 'train-single-a'"):
        assert expected in text, expected
    assert "Text \\| with a pipe" not in text  # rows are not in the card; a cell's pipe would be escaped
    config_block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(config_block)["name"] == "cards"  # the config, embedded whole


def test_secrets_are_redacted_and_key_names_kept():
    text = yaml.safe_dump({"sources": [{"model": {"id": "openai/x", "api_key": "sk-SECRET", "api_key_env": "VAR",
                                                  "hub_token": "hf_SECRET", "base_url": "http://h"}},
                                   {"model": {"id": "openai/y", "base_url": "https://me:SECRET@host/v1"}}]})
    out = redacted_config_yaml(text)
    assert "SECRET" not in out and "api_key_env: VAR" in out and "base_url: http://h" in out
    assert "https://<redacted>@host/v1" in out


def test_an_adapter_is_copied_with_a_model_card(tmp_path):
    from peft import LoraConfig, PeftConfig

    source = tmp_path / "stage" / "adapter"
    LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], base_model_name_or_path="/home/me/.cache/x",
               task_type="CAUSAL_LM").save_pretrained(str(source))
    (source / "adapter_model.safetensors").write_bytes(b"\x00weights\x01")
    (source / "README.md").write_text("PEFT's template")
    ctx = card_context(tmp_path, repo="org/study")
    target = ModelSpec(id="hf/smollm2-135m-instruct")
    cell = CellParams(target, "smollm2-135m-instruct", Condition(kind="single", sources=("a",)), 11, 1)
    stage = SimpleNamespace(params=cell, label="train/smollm2-135m-instruct-single-a-seed11-gen1")
    adapter = AdapterSource("smollm2-135m-instruct-single-a-seed11-gen1", source, stage,
                            {"steps_run": 7, "total_steps": 9, "best_val_loss": 1.25, "n_train": 40},
                            "train-smollm2-135m-instruct-single-a-seed1-gen1")
    dest = write_adapter(adapter, tmp_path / "out" / adapter.name, ctx)
    assert (dest / "adapter_model.safetensors").read_bytes() == b"\x00weights\x01"
    config = PeftConfig.from_pretrained(str(dest))
    assert config.r == 4 and config.base_model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    meta, text = split_header((dest / "README.md").read_text())
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["library_name"] == "peft"
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["org/study"] and "lora" in meta["tags"]
    for expected in ("`single:a` with seed 11, generation 1", "config `train-smollm2-135m-instruct-single-a-seed1-gen1`"
                     " of org/study", "| r | 16 |", "| learning_rate |", "| steps_run | 7 |",
                     "| best_val_loss | 1.25 |", COMMIT, "PeftModel.from_pretrained(base, "
                     "'org/study-smollm2-135m-instruct-single-a-seed11-gen1')"):
        assert expected in text, expected
    assert "PEFT's template" not in (dest / "README.md").read_text()


@pytest.mark.parametrize(("rows", "category"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"),
                                                 (250_000, "100K<n<1M")])
def test_size_categories(rows, category):
    from collapselab.export.cards import size_category

    assert size_category(rows) == category
