"""The export of real LoRA adapters: the tiny random-init target fine-tuned on mock sources' data (two
one-epoch trainings on 16 examples: seconds), each adapter folder loadable with ``peft`` (and onto its
base model) and carrying its model card."""

from __future__ import annotations

import pytest
import yaml

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.export.run import export_run
from tests.helpers import tiny_config, write_corpus


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("export-peft")
    cfg = tiny_config(tmp, tiny_model_dir, write_corpus(tmp / "corpus.jsonl"),
                      conditions=["vanilla", "human", "single:a"], collapse={"enabled": False})
    spec = load_config(cfg, use_env=False)
    run_stages(spec, tmp / "run")
    return spec, tiny_model_dir, export_run(tmp / "run", tmp / "out")


def test_every_adapter_loads_with_peft_and_has_a_model_card(exported):
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    spec, model_dir, result = exported
    assert set(result.adapters) == {f"{spec.target_names[0]}-{c}-seed42" for c in ("human", "single-a")}
    for name, folder in result.adapters.items():
        config = PeftConfig.from_pretrained(str(folder))
        assert config.peft_type == "LORA" and config.r == spec.lora.r
        # a local folder target has no Hub repository: the adapter keeps the path it was trained on
        assert "base_model" not in (folder / "README.md").read_text().split("---")[1]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(folder))
        assert model.peft_config["default"].r == spec.lora.r
        header = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
        assert header["library_name"] == "peft" and header["license"] == "unknown"
        text = (folder / "README.md").read_text()
        assert "## LoRA settings" in text and "| best_val_loss |" in text and "| steps_run |" in text
        assert f"config `train-{name.split('-seed')[0].removeprefix(spec.target_names[0] + '-')}`" in text
