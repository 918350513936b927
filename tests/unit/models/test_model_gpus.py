"""A model's ``gpus``: one instance spread over several GPUs (hf: accelerate's placement; vllm:
tensor parallelism, and GPUs per data-parallel engine). Never part of a key."""

from __future__ import annotations

from pathlib import Path

import pytest

from collapselab.config.spec import ModelSpec
from collapselab.errors import ModelError
from collapselab.models.hf import SPREAD_WEIGHT_SHARE, spread_over_gpus
from collapselab.models.vllm_backend import engine_args
from collapselab.models.vllm_engine import engine_devices, engine_spec
from collapselab.pipeline.keying import model_key_settings


def test_gpus_is_an_execution_setting():
    one, four = ModelSpec(id="hf/x"), ModelSpec(id="hf/x", gpus=4)
    assert model_key_settings(one) == model_key_settings(four)
    assert "gpus" not in one.model_dump() and four.model_dump()["gpus"] == 4
    with pytest.raises(ValueError):
        ModelSpec(id="hf/x", gpus=0)


def test_hf_places_a_model_over_the_first_gpus_without_offload():
    assert spread_over_gpus(ModelSpec(id="hf/x"), device_count=8) == {}
    placed = spread_over_gpus(ModelSpec(id="hf/x", gpus=2), device_count=8, memory=lambda i: 80_000_000_000)
    assert placed == {"device_map": "auto",
                      "max_memory": {0: int(SPREAD_WEIGHT_SHARE * 80e9), 1: int(SPREAD_WEIGHT_SHARE * 80e9)}}
    with pytest.raises(ModelError, match="gpus: 4 but 2 GPU"):
        spread_over_gpus(ModelSpec(id="hf/x", gpus=4), device_count=2)


def test_vllm_shards_a_model_and_gives_each_engine_its_gpus():
    assert "tensor_parallel_size" not in engine_args(ModelSpec(id="vllm/x"), Path("/m"), 4096)
    assert engine_args(ModelSpec(id="vllm/x", gpus=4), Path("/m"), 4096)["tensor_parallel_size"] == 4
    assert engine_spec(ModelSpec(id="vllm/x", gpus=2, adapter="/a", batch_size=64)) == ModelSpec(id="vllm/x", gpus=2)
    assert engine_devices(1, "3,4", 2) == [None]
    assert engine_devices(2, None, 2) == ["0,1", "2,3"]
    assert engine_devices(2, "4,5,6,7", 2) == ["4,5", "6,7"]
    with pytest.raises(ModelError, match="2 GPU\\(s\\) per engine but CUDA_VISIBLE_DEVICES lists 3"):
        engine_devices(2, "0,1,2", 2)
