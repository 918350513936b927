"""``lora.strategy``: the sharded recipe (FSDP2 over 2 gloo processes on the CPU) against the
single-process one on the tiny model, and QLoRA's configuration and refusals.

Stated tolerances: with float32 weights the two runs may differ only by floating-point summation
order (the gradient reduce across processes), so losses agree to 1e-6 relative and adapter weights
to 1e-5; with ``dtype: bfloat16`` the sharded recipe keeps the frozen base weights in bf16 (the
single one upcasts them to float32), so losses agree to 1e-3 relative.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from collapselab.config.spec import LoraSpec, RunSpec  # noqa: E402
from collapselab.errors import TrainingError  # noqa: E402
from collapselab.models.base import ChatPrompt  # noqa: E402
from collapselab.train import lora as lora_module  # noqa: E402
from collapselab.train.distributed import Ranks, launch_command, launch_fsdp, training_processes  # noqa: E402
from collapselab.train.lora import TrainExample, qlora_config, train_lora  # noqa: E402

EXAMPLES = [TrainExample(ChatPrompt(f"p{i}", f"Tell me about item {i}, please.", "Be brief."),
                         f"Item {i} is a thing of {i * 3} parts.", f"p{i}") for i in range(21)]
# 3 micro-batches per optimizer step (one process gets 2, the other 1) and 3 validation batches
SETTINGS = {"r": 4, "alpha": 8, "dropout": 0.0, "learning_rate": 5e-3, "epochs": 2, "batch_size": 2,
            "grad_accum": 3, "eval_every": 2, "val_fraction": 0.2, "target_modules": ("q_proj", "v_proj", "o_proj")}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (tests/conftest.py)."""


def _curve(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "loss_curve.jsonl").read_text().splitlines()]


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter" / "adapter_model.safetensors")


def _pair(tiny_model_dir: Path, tmp_path: Path, dtype: str) -> tuple[Path, Path, list]:
    lora = LoraSpec(**SETTINGS, dtype=dtype)
    train_lora(tiny_model_dir, EXAMPLES, lora, seed=3, out_dir=tmp_path / "single")
    steps: list = []
    launch_fsdp(tiny_model_dir, EXAMPLES, lora.model_copy(update={"strategy": "fsdp"}), seed=3,
                out_dir=tmp_path / "fsdp", processes=2, progress=lambda *a: steps.append(a), threads=1)
    return tmp_path / "single", tmp_path / "fsdp", steps


def test_fsdp_on_two_processes_gives_the_single_process_losses(tiny_model_dir, tmp_path):
    single, sharded, steps = _pair(tiny_model_dir, tmp_path, "float32")
    a, b = _curve(single), _curve(sharded)
    assert len(a) == len(b) == 6 and [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b, strict=True):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-6)
        assert y["lr"] == x["lr"]
        assert ("val_loss" in x) == ("val_loss" in y)
        if "val_loss" in x:
            assert y["val_loss"] == pytest.approx(x["val_loss"], rel=1e-6)
    # rank 0's progress lines reached the caller, one per optimizer step
    assert [s[0] for s in steps] == list(range(1, 7)) and all(s[1] == 6 for s in steps)
    assert [s[2] for s in steps] == pytest.approx([r["train_loss"] for r in b], rel=1e-12)
    sa, sb = (json.loads((d / "train_summary.json").read_text()) for d in (single, sharded))
    for field in ("n_train", "n_val", "total_steps", "steps_run", "best_step", "train_tokens", "val_ids",
                  "target_modules"):
        assert sa[field] == sb[field], field
    wa, wb = _adapter(single), _adapter(sharded)
    assert sorted(wa) == sorted(wb) and len(wa) == 2 * 3 * 2  # A and B of 3 modules in each of 2 layers
    for name in wa:
        assert torch.allclose(wa[name], wb[name], rtol=1e-5, atol=1e-6), name
    config = json.loads((sharded / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["target_modules"] == ["o_proj", "q_proj", "v_proj"]
    assert not list(sharded.glob(".fsdp-job-*"))  # the job folder is removed


def test_fsdp_in_bfloat16_keeps_the_losses_within_bf16_rounding(tiny_model_dir, tmp_path):
    single, sharded, _ = _pair(tiny_model_dir, tmp_path, "bfloat16")
    for x, y in zip(_curve(single), _curve(sharded), strict=True):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-3)


def test_activation_checkpointing_gives_the_same_losses_and_weights(tiny_model_dir, tmp_path):
    """Recomputing the layers in the backward pass replays their dropout masks: with dropout on,
    the curve and the adapter are those of the run that keeps its activations (CPU, float32)."""
    lora = LoraSpec(**{**SETTINGS, "dropout": 0.1, "epochs": 1}, dtype="float32")
    train_lora(tiny_model_dir, EXAMPLES, lora, seed=5, out_dir=tmp_path / "kept")
    train_lora(tiny_model_dir, EXAMPLES, lora.model_copy(update={"activation_checkpointing": True}), seed=5,
               out_dir=tmp_path / "recomputed")
    a, b = _curve(tmp_path / "kept"), _curve(tmp_path / "recomputed")
    assert [r["train_loss"] for r in a] == pytest.approx([r["train_loss"] for r in b], rel=1e-6)
    wa, wb = _adapter(tmp_path / "kept"), _adapter(tmp_path / "recomputed")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6) for k in wa)
    # and under FSDP: the sharded recipe with checkpointing keeps the single process's losses
    fsdp = lora.model_copy(update={"dropout": 0.0, "strategy": "fsdp", "activation_checkpointing": True})
    train_lora(tiny_model_dir, EXAMPLES, fsdp.model_copy(update={"strategy": "single"}), seed=5,
               out_dir=tmp_path / "single0")
    launch_fsdp(tiny_model_dir, EXAMPLES, fsdp, seed=5, out_dir=tmp_path / "fsdp", processes=2, threads=1)
    assert [r["train_loss"] for r in _curve(tmp_path / "fsdp")] == \
        pytest.approx([r["train_loss"] for r in _curve(tmp_path / "single0")], rel=1e-6)


def test_a_failing_process_is_a_training_error_with_its_reason(tiny_model_dir, tmp_path):
    lora = LoraSpec(**{**SETTINGS, "target_modules": ("no_such_layer",)}, strategy="fsdp")
    with pytest.raises(TrainingError, match=r"2 training processes failed.*none of the LoRA target modules"):
        launch_fsdp(tiny_model_dir, EXAMPLES, lora, seed=3, out_dir=tmp_path / "bad", processes=2, threads=1)
    assert not (tmp_path / "bad" / "adapter").exists()


def test_fsdp_is_refused_in_one_process_and_without_gpus_per_node(tiny_model_dir, tmp_path):
    with pytest.raises(TrainingError, match="several processes"):
        train_lora(tiny_model_dir, EXAMPLES, LoraSpec(**SETTINGS, strategy="fsdp"), seed=3, out_dir=tmp_path)
    with pytest.raises(TrainingError, match="at least 2 processes"):
        launch_fsdp(tiny_model_dir, EXAMPLES, LoraSpec(strategy="fsdp"), seed=3, out_dir=tmp_path, processes=1)
    with pytest.raises(TrainingError, match="run.gpus_per_node is None"):
        training_processes(RunSpec())
    assert training_processes(RunSpec(gpus_per_node=4)) == 4
    assert training_processes(RunSpec(gpus_per_node=4, nodes=2)) == 4
    assert training_processes(RunSpec(gpus_per_node=1, nodes=2)) == 1  # one process on each of 2 nodes
    assert not list(tmp_path.iterdir())


def test_launch_command_is_torchrun_on_one_node():
    cmd = launch_command(Path("/x/job.json"), 4, python="/venv/bin/python")
    assert cmd == ["/venv/bin/python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
                   "-m", "collapselab.train.distributed", "/x/job.json"]


def test_ranks_share_every_item_once_and_pad_to_the_largest_share():
    items = list(range(7))
    shares = [Ranks(r, 3).share(items) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert Ranks(0, 3).calls(7) == 3 and Ranks(0, 3).calls(6) == 2 and Ranks().calls(5) == 5
    assert Ranks().share(items) == items and Ranks().sum(1, 2.5) == [1.0, 2.5]


def test_a_sharded_train_stage_asks_ray_for_a_node_of_gpus(tmp_path):
    from collapselab.pipeline.graph import build_graph
    from tests.unit.config.test_per_target import spec_of

    spec = spec_of(lora__strategy="fsdp", run__gpus_per_node=4, run__gpus=1)
    stages = build_graph(spec)
    trains = [s for s in stages if s.kind == "train"]
    assert trains and all(s.resources["gpus"] == 4.0 for s in trains)
    assert all(s.resources["gpus"] == 1 for s in stages if s.kind == "respond")


# -- QLoRA ----------------------------------------------------------------------------------------
def test_qlora_configuration_is_nf4_with_double_quantization():
    config = qlora_config(LoraSpec(strategy="qlora"))
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert qlora_config(LoraSpec(strategy="qlora", dtype="float32")).bnb_4bit_compute_dtype == torch.float32


def test_qlora_is_refused_without_bitsandbytes_or_without_cuda(tiny_model_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec

    def pretend(found):
        return lambda name, *a: found if name == "bitsandbytes" else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", pretend(None))
    with pytest.raises(TrainingError, match=r"not installed: pip install 'collapselab\[qlora\]'"):
        train_lora(tiny_model_dir, EXAMPLES, LoraSpec(**SETTINGS, strategy="qlora"), seed=3, out_dir=tmp_path / "q")
    # installed (as if) but no CUDA GPU: bitsandbytes' 4-bit kernels are not used on CPUs
    monkeypatch.setattr(importlib.util, "find_spec", pretend(object()))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match="qlora needs a CUDA GPU"):
        lora_module.check_qlora()
    with pytest.raises(TrainingError, match="qlora needs a CUDA GPU"):
        train_lora(tiny_model_dir, EXAMPLES, LoraSpec(**SETTINGS, strategy="qlora"), seed=3, out_dir=tmp_path / "q")
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
def test_a_pipeline_with_fsdp_trains_in_two_processes_like_one(tmp_path, tiny_model_dir):
    from collapselab.config.load import load_config
    from collapselab.executors import run_stages
    from collapselab.pipeline.graph import build_graph
    from collapselab.store.run import RunStore
    from tests.helpers import tiny_config, write_corpus

    corpus = write_corpus(tmp_path / "corpus.jsonl")
    curves = {}
    for strategy in ("single", "fsdp"):
        (tmp_path / strategy).mkdir()
        cfg = tiny_config(tmp_path / strategy, tiny_model_dir, corpus, conditions=["vanilla", "human"],
                          lora__strategy=strategy, lora__dropout=0.0, run__gpus_per_node=2)
        spec = load_config(cfg, use_env=False)
        train = next(s for s in build_graph(spec) if s.kind == "train")
        run_stages(spec, tmp_path / strategy / "out", stop_after=lambda s: s.kind == "train")
        folder = RunStore(tmp_path / strategy / "out").final_dir(train.ref)
        curves[strategy] = _curve(folder)
    assert len(curves["fsdp"]) == len(curves["single"]) > 1
    for x, y in zip(curves["single"], curves["fsdp"], strict=True):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-6)


@pytest.mark.slow
def test_fsdp_over_two_nodes_started_by_ray_gives_the_single_process_losses(tiny_model_dir, tmp_path, monkeypatch):
    """run.nodes 2: one torchrun per node, started by Ray actors in a placement group, meeting at
    node 0's address. On one machine the two "nodes" share the host (the placement strategy is
    relaxed from STRICT_SPREAD); the processes, the rendezvous and the losses are a real 2-node job's."""
    ray = pytest.importorskip("ray")
    from collapselab.train import multinode

    monkeypatch.setattr(multinode, "PLACEMENT_STRATEGY", "SPREAD")
    lora = LoraSpec(**SETTINGS, dtype="float32")
    train_lora(tiny_model_dir, EXAMPLES, lora, seed=3, out_dir=tmp_path / "single")
    steps: list = []
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        launch_fsdp(tiny_model_dir, EXAMPLES, lora.model_copy(update={"strategy": "fsdp"}), seed=3,
                    out_dir=tmp_path / "nodes", processes=1, nodes=2, progress=lambda *a: steps.append(a), threads=1)
        for x, y in zip(_curve(tmp_path / "single"), _curve(tmp_path / "nodes"), strict=True):
            assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-6)
        assert [s[0] for s in steps] == list(range(1, 7))  # node 0's progress reached the stage
        bad = LoraSpec(**{**SETTINGS, "target_modules": ("no_such_layer",)}, strategy="fsdp")
        with pytest.raises(TrainingError, match=r"node \d of 2 failed.*none of the LoRA target modules"):
            launch_fsdp(tiny_model_dir, EXAMPLES, bad, seed=3, out_dir=tmp_path / "bad", processes=1, nodes=2,
                        threads=1)
    finally:
        ray.shutdown()


def test_fsdp_over_nodes_needs_ray():
    from collapselab.errors import ConfigError
    from collapselab.pipeline.validate import _check_strategies
    from tests.unit.config.test_per_target import spec_of

    with pytest.raises(ConfigError, match="run.nodes: .* which Ray starts"):
        _check_strategies(spec_of(lora__strategy="fsdp", run__gpus_per_node=4, run__nodes=2))
    _check_strategies(spec_of(lora__strategy="fsdp", run__gpus_per_node=4, run__nodes=2, run__executor="ray"))
    # one GPU on each of two nodes is two processes, as the launcher counts them
    _check_strategies(spec_of(lora__strategy="fsdp", run__gpus_per_node=1, run__nodes=2, run__executor="ray"))
