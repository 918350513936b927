"""GPU memory and GPU-hours (collapselab.pipeline.memory): the estimates against hand arithmetic for
three model shapes, the activation formula against the tensors autograd really keeps, ``validate``
refusing what does not fit (naming the stage, the numbers and what would fit), and ``plan``'s
GPU columns and totals."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from collapselab.config.load import load_config, validate_data
from collapselab.config.spec import LoraSpec, ModelSpec
from collapselab.errors import ConfigError
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.memory import (
    KNOWN_SHAPES,
    ModelShape,
    activation_bytes_per_token_layer,
    check_memory,
    forward_memory,
    generation_memory,
    model_shape,
    shape_from_config,
    training_memory,
    vllm_memory,
)
from collapselab.pipeline.plan import plan_experiment, plan_totals
from collapselab.pipeline.validate import validate_experiment

ROOT = Path(__file__).resolve().parents[3]
GB = 1e9
LLAMA8 = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA70 = "meta-llama/Llama-3.1-70B-Instruct"

# SmolLM2-135M-Instruct's config.json as collapselab's packaged folder has it (the fields that matter)
SMOL_CONFIG = {"model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536,
               "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
               "tie_word_embeddings": True, "max_position_embeddings": 8192}


def close(estimate: dict[str, float], hand: dict[str, float]) -> None:
    assert set(estimate) == set(hand)
    for term, value in hand.items():
        assert estimate[term] == pytest.approx(value, rel=1e-9), term


# -- shapes ----------------------------------------------------------------------------------------
def test_parameter_counts_by_hand_and_as_published():
    # Llama-3.1-8B: embeddings and head 128,256 x 4,096 each (untied); per layer q and o 4,096 x 4,096,
    # k and v 4,096 x 1,024 (8 kv heads x 128), gate/up/down 3 x 4,096 x 14,336, two norms of 4,096
    per_layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert per_layer == 218_112_000
    assert 2 * 128_256 * 4096 + 32 * per_layer + 4096 == 8_030_261_248 == KNOWN_SHAPES[LLAMA8].params
    # Llama-3.1-70B: h 8,192, I 28,672, 80 layers, 64 heads, 8 kv heads of 128
    per_layer = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    assert 2 * 128_256 * 8192 + 80 * per_layer + 8192 == 70_553_706_496 == KNOWN_SHAPES[LLAMA70].params
    # the published totals (model cards; rounded)
    published = {"meta-llama/Llama-3.1-405B-Instruct": 405.85e9, "google/gemma-2-9b-it": 9.24e9,
                 "Qwen/Qwen2.5-7B-Instruct": 7.62e9, "Qwen/Qwen2.5-72B-Instruct": 72.7e9,
                 "tiiuae/Falcon3-10B-Instruct": 10.31e9, "smollm2-135m-instruct": 134.5e6}
    for name, count in published.items():
        assert KNOWN_SHAPES[name].params == pytest.approx(count, rel=2e-3), name
    # SmolLM2: tied embeddings 49,152 x 576, 30 layers of 576-wide attention (3 kv heads of 64) and
    # a 1,536-wide MLP
    assert 49_152 * 576 + 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576) + 576 == 134_515_008


def test_a_shape_is_read_from_a_local_config_json(tmp_path):
    folder = tmp_path / "smol"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMOL_CONFIG))
    shape, where = model_shape(ModelSpec(id=f"hf/{folder}"))
    assert shape is not None and where == str(folder / "config.json")
    assert shape.params == 134_515_008 == KNOWN_SHAPES["smollm2-135m-instruct"].params
    assert (shape.q_width, shape.kv_width, shape.tied) == (576, 192, True)


def test_the_packaged_smollm2_config_agrees_with_the_table():
    from collapselab.models.packaged import is_prepared, packaged_dir

    folder = packaged_dir("smollm2-135m-instruct")
    if not is_prepared(folder):
        pytest.skip("the packaged SmolLM2 is not prepared on this machine")
    shape, where = model_shape(ModelSpec(id="hf/smollm2-135m-instruct"))
    assert where.endswith("config.json")
    known = KNOWN_SHAPES["smollm2-135m-instruct"]
    assert (shape.layers, shape.hidden, shape.intermediate, shape.heads, shape.kv_heads, shape.head_dim,
            shape.vocab, shape.tied) == (known.layers, known.hidden, known.intermediate, known.heads,
                                         known.kv_heads, known.head_dim, known.vocab, known.tied)


def test_unknown_models_are_unknown_not_guessed(tmp_path):
    assert model_shape(ModelSpec(id="hf/some-org/never-heard-of"))[0] is None
    assert "not among the known shapes" in model_shape(ModelSpec(id="hf/some-org/never-heard-of"))[1]
    reason = shape_from_config({"model_type": "gpt2", "n_layer": 12}, "x/config.json")
    assert isinstance(reason, str) and "'gpt2' is not modelled" in reason
    assert model_shape(ModelSpec(id="openai/gpt-4o"))[0] is None


# -- estimates against hand arithmetic --------------------------------------------------------------
def test_training_smollm2_single_by_hand():
    shape = shape_from_config(SMOL_CONFIG, "test")
    lora = LoraSpec()  # r 16, dropout 0.1, all 7 projections, batch 8 x 1,024 tokens, bf16, single
    projections = 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536)
    assert projections == 106_168_320
    lora_params = 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 2 * (576 + 1536) + (1536 + 576))
    assert lora_params == 4_884_480
    # bytes per token and layer: norms 8h, SDPA 8q + 4a + 2s, MLP 6I, LoRA: 3 d_in + 2r per module
    # (q, k, v, gate, up read h = 576; o reads q = 576; down reads I = 1,536)
    per_token_layer = 8 * 576 + 8 * 576 + 4 * 9 + 2 * 1024 + 6 * 1536 + (6 * 3 * 576 + 3 * 1536) + 7 * 2 * 16
    assert per_token_layer == 35_716
    assert activation_bytes_per_token_layer(shape, lora, 1024) == per_token_layer
    hand = {"base weights": 4 * 134_515_008, "bf16 weight copies": 2 * (projections + 49_152 * 576),
            "LoRA + AdamW": 22 * lora_params, "activations": 8 * 1024 * 30 * per_token_layer,
            "logits": 8 * 1024 * 10 * 49_152}
    hand["overhead"] = 1e9 + 0.1 * (sum(hand.values()) - hand["base weights"])
    close(training_memory(shape, lora), hand)
    assert sum(hand.values()) / GB == pytest.approx(16.04, abs=0.01)


def test_training_llama8b_single_at_batch_2_by_hand():
    lora = LoraSpec(batch_size=2, grad_accum=32)
    projections = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    lora_params = 32 * 16 * (2 * (4096 + 4096) + 2 * (4096 + 1024) + 3 * (4096 + 14336))
    assert lora_params == 41_943_040
    per_token_layer = 8 * 4096 + 8 * 4096 + 4 * 32 + 2 * 1024 + 6 * 14336 + (6 * 3 * 4096 + 3 * 14336) + 7 * 32
    assert per_token_layer == 270_688
    hand = {"base weights": 4 * 8_030_261_248, "bf16 weight copies": 2 * (projections + 128_256 * 4096),
            "LoRA + AdamW": 22 * lora_params, "activations": 2 * 1024 * 32 * per_token_layer,
            "logits": 2 * 1024 * 10 * 128_256}
    hand["overhead"] = 1e9 + 0.1 * (sum(hand.values()) - hand["base weights"])
    close(training_memory(KNOWN_SHAPES[LLAMA8], lora), hand)
    assert sum(hand.values()) / GB == pytest.approx(73.05, abs=0.01)  # fits 80 GB


def test_training_llama70b_fsdp_and_qlora_by_hand():
    lora = LoraSpec(batch_size=1, grad_accum=128, strategy="fsdp")
    per_layer = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    lora_params = 80 * 16 * (2 * (8192 + 8192) + 2 * (8192 + 1024) + 3 * (8192 + 28672))
    assert lora_params == 207_093_760
    per_token_layer = 8 * 8192 + 8 * 8192 + 4 * 64 + 2 * 1024 + 6 * 28672 + (6 * 3 * 8192 + 3 * 28672) + 7 * 32
    assert per_token_layer == 539_104
    # 8 processes: bf16 base weights split 8 ways; the running and the prefetched layer and the root
    # unit (embeddings, head, final norm) gathered in bf16; LoRA states split, autocast's copy whole
    hand = {"base weights": 2 * 70_553_706_496 / 8,
            "fsdp gathered": 2 * (2 * per_layer + 2 * 128_256 * 8192 + 8192),
            "LoRA + AdamW": (20 / 8 + 2) * lora_params, "activations": 1024 * 80 * per_token_layer,
            "logits": 1024 * 10 * 128_256}
    hand["overhead"] = 1e9 + 0.1 * (sum(hand.values()) - hand["base weights"])
    close(training_memory(KNOWN_SHAPES[LLAMA70], lora, gpus=8), hand)
    assert sum(hand.values()) / GB == pytest.approx(78.08, abs=0.01)  # fits 80 GB
    # qlora: NF4 with double quantization, 0.5 + 1/64 + 4/(64 x 256) bytes per projection weight; the
    # embeddings, head and norms in float32; the head's bf16 copy under autocast
    projections = 80 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672)
    qlora = lora.model_copy(update={"strategy": "qlora"})
    hand = {"base weights": (0.5 + 1 / 64 + 4 / 16384) * projections + 4 * (70_553_706_496 - projections),
            "bf16 weight copies": 2 * 128_256 * 8192, "LoRA + AdamW": 22 * lora_params,
            "activations": 1024 * 80 * per_token_layer, "logits": 1024 * 10 * 128_256}
    hand["overhead"] = 1e9 + 0.1 * (sum(hand.values()) - hand["base weights"])
    close(training_memory(KNOWN_SHAPES[LLAMA70], qlora), hand)
    assert sum(hand.values()) / GB == pytest.approx(102.1, abs=0.1)  # does not fit 80 GB


def test_inference_by_hand():
    # Llama-3.1-8B in bf16, 16 prompts of 100 tokens + 1,024 new: KV 2 x 32 layers x 8 x 128 x 2 bytes
    kv_per_token = 2 * 32 * 8 * 128 * 2
    assert kv_per_token == 131_072
    hand = {"weights": 2 * 8_030_261_248, "KV cache": 16 * (100 + 1024) * kv_per_token,
            "prefill": 16 * 100 * (2 * 4096 + 3 * 14336) * 2, "sampling": 8 * 16 * 128_256}
    hand["overhead"] = 1e9 + 0.1 * (sum(hand.values()) - hand["weights"])
    close(generation_memory(KNOWN_SHAPES[LLAMA8], "bfloat16", 16, 100, 1024), hand)
    # SmolLM2 scoring 8 texts of 300 + 200 tokens in float32: logits at the 201 kept positions
    smol = shape_from_config(SMOL_CONFIG, "test")
    hand = {"weights": 4 * 134_515_008, "activations": 8 * 500 * (2 * 576 + 3 * 1536) * 4,
            "logits": 8 * 201 * 49_152 * 4 + 201 * 49_152 * 4}
    hand["overhead"] = 1e9 + 0.1 * (sum(hand.values()) - hand["weights"])
    close(forward_memory(smol, "float32", 8, 500, 201), hand)
    # vLLM, Llama-3.1-70B, one 8,192-token sequence: KV 2 x 80 x 8 x 128 x 2 bytes per token
    need = 2 * 70_553_706_496 + 8192 * (2 * 80 * 8 * 128 * 2) + 8192 * (2 * 8192 + 3 * 28672) * 2
    got = vllm_memory(KNOWN_SHAPES[LLAMA70], "bfloat16", 8192)
    assert sum(got.values()) == pytest.approx(need / 0.85 + 1e9, rel=1e-9)


def test_the_activation_formula_matches_what_autograd_keeps():
    """The recipe's forward on a tiny Llama (float32 weights, bf16 autocast, LoRA with dropout, a
    padded batch, the head at the label positions): the bytes of every tensor autograd keeps equal
    the formula's, less what the first layer does not keep (its input needs no gradient: its q/k/v
    dropout keeps no mask, its q/k/v projections and their lora_A no bf16 weight copy), with the CPU's
    float dropout mask (4 bytes) for CUDA's 1."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    h, inter, heads, kv, layers, vocab, b, s = 256, 704, 8, 2, 2, 1000, 2, 64
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=h, intermediate_size=inter, num_attention_heads=heads, num_key_value_heads=kv,
                         num_hidden_layers=layers, vocab_size=vocab, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    lora = LoraSpec(max_length=s)
    model = get_peft_model(AutoModelForCausalLM.from_config(config, dtype=torch.float32),
                           LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
    ids = torch.randint(0, vocab, (b, s))
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 48:] = 0  # a padded row: the attention mask is passed
    keep = torch.ones(b, s, dtype=torch.bool)
    keep[:, -1] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.base_model.model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        logits = model.base_model.model.lm_head(hidden[keep])
    loss = torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][keep[:, :-1]], reduction="sum")
    kept: dict[int, int] = {}
    seen, todo = set(), [loss.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for name in dir(node):
            if name.startswith("_saved_"):
                try:
                    values = getattr(node, name)
                except RuntimeError:
                    continue
                for t in values if isinstance(values, tuple) else (values,):
                    if isinstance(t, torch.Tensor) and t.numel() > 1:
                        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        todo.extend(n for n, _ in node.next_functions)
    measured = sum(kept.values())

    shape = ModelShape("llama", layers, h, inter, heads, kv, h // heads, vocab, False)
    rows = b * (s - 1)
    q, kvw = shape.q_width, shape.kv_width
    activations = b * s * layers * activation_bytes_per_token_layer(shape, lora, s, mask_bytes=4)
    activations -= 3 * 4 * h * b * s  # the first layer's q/k/v dropout masks
    copies = 2 * (layers * shape.linear_params + vocab * h) - 2 * h * (q + 2 * kvw)  # but the first q/k/v
    lora_copies = 2 * shape.lora_params(lora.r, lora.target_modules) - 2 * 3 * lora.r * h  # but the first q/k/v A
    log_softmax = 4 * rows * vocab
    expected = activations + copies + lora_copies + log_softmax
    # what the formula leaves out: RMSNorm weights, rotary cos/sin, the norms' 1/rms, the targets
    assert measured == pytest.approx(expected, rel=0.01)
    assert measured > expected  # the left-out pieces are all positive


# -- validate ----------------------------------------------------------------------------------------
def config(tmp_path: Path, target: str | dict = f"hf/{LLAMA70}", **changes) -> dict:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"r{i}", "instruction": f"Say {i}.", "response": f"{i}.",
                                          "category": "c"}) + "\n" for i in range(12)))
    data = {"name": "memory", "corpus": {"kind": "jsonl", "path": str(corpus), "columns": {"id": "id"}},
            "split": {"test_fraction": 0.25, "seed": 1}, "decoding": {"max_new_tokens": 64},
            "sources": [{"name": "a", "model": {"id": "mock/echo"}}], "conditions": ["vanilla", "single:a"],
            "targets": [target if isinstance(target, dict) else {"id": target}], "run": {"gpu_memory_gb": 80}}
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def test_validate_refuses_a_70b_target_on_one_80gb_gpu_naming_stage_numbers_and_fixes(tmp_path):
    spec = validate_data(config(tmp_path), "test.yaml")  # lora: single, batch_size 8 x 1,024 tokens
    with pytest.raises(ConfigError) as err:
        validate_experiment(spec)
    message = str(err.value)
    assert message.startswith("run.gpu_memory_gb:") and "GPUs of 80 GB" in message
    assert "train/llama-3.1-70b-instruct-single-a-seed42: needs ≈ 841.3 GB per GPU" in message
    # the main terms by hand: float32 weights 4 x 70,553,706,496; activations 8 x 1,024 x 80 x 539,104
    assert "base weights 282.2 GB" in message and "activations 353.3 GB" in message
    assert "bf16 weight copies 139.0 GB" in message and "> 80 GB" in message
    # what would fit, computed: fsdp over 8 GPUs with one sequence per micro-batch (78.1 GB, above)
    assert "lora.strategy fsdp over 8 GPUs (run.gpus_per_node 8), batch_size 1 x grad_accum 8: 78.1 GB each" \
        in message
    # the inference stages of a 70B model do not fit one GPU either, and say what would
    assert "respond/llama-3.1-70b-instruct-vanilla-seed42" in message
    # ... spread over 2 GPUs: 141.1 GB of bf16 weights / 2 = 70.6 GB, + KV cache and working set
    assert "the model's gpus: 2 (layers placed in turn)" in message


def test_a_model_spread_over_gpus_divides_its_weights_and_kv_cache(tmp_path):
    """gpus: N (hf: accelerate's placement; vllm: tensor parallel) — weights and KV cache per GPU
    are 1/N of one GPU's (hand arithmetic on Llama-3.1-70B in bf16: 2 x 70,553,706,496 bytes)."""
    from collapselab.pipeline.memory import ModelShape, generation_memory, model_shape, vllm_memory

    shape, _ = model_shape(ModelSpec(id="hf/meta-llama/Llama-3.1-70B-Instruct"))
    assert isinstance(shape, ModelShape)
    one, four = (generation_memory(shape, "bfloat16", 16, 500, 1024, gpus=g) for g in (1, 4))
    assert one["weights"] == 2 * 70_553_706_496 and four["weights"] == 2 * 70_553_706_496 / 4
    # KV: 16 x 1,524 tokens x 2 (K, V) x 80 layers x 8 kv heads x 128 dims x 2 bytes, then / 4
    assert one["KV cache"] == 16 * 1524 * 2 * 80 * 8 * 128 * 2 and four["KV cache"] == one["KV cache"] / 4
    v1, v4 = vllm_memory(shape, "bfloat16", 8192), vllm_memory(shape, "bfloat16", 8192, gpus=4)
    assert v4["weights"] == v1["weights"] / 4 and v4["KV of one sequence"] == v1["KV of one sequence"] / 4
    # in a config: the 70B's inference stages on 2 GPUs each fit 80 GB GPUs, and ask Ray for 2
    spec = validate_data(config(tmp_path, {"id": "hf/meta-llama/Llama-3.1-70B-Instruct", "gpus": 2},
                                lora={"strategy": "fsdp", "batch_size": 1, "grad_accum": 8},
                                run={"gpu_memory_gb": 80, "gpus_per_node": 8}), "test.yaml")
    stages = validate_experiment(spec)
    responds = [s for s in stages if s.kind == "respond"]
    assert responds and all(s.resources["gpus"] == 2 for s in responds)


def test_validate_says_what_fits_a_smaller_model(tmp_path):
    spec = validate_data(config(tmp_path, f"hf/{LLAMA8}"), "test.yaml")
    with pytest.raises(ConfigError) as err:
        validate_experiment(spec)
    message = str(err.value)
    assert "train/llama-3.1-8b-instruct-single-a-seed42: needs ≈ 140.3 GB" in message
    assert "the same strategy, batch_size 2 x grad_accum 4: 73.0 GB" in message  # batch 8 x 1 = 8 examples
    assert "lora.strategy qlora" in message and "respond/" not in message  # 8B inference fits
    fixed = validate_data(config(tmp_path, f"hf/{LLAMA8}", lora={"batch_size": 2, "grad_accum": 4}), "test.yaml")
    validate_experiment(fixed)
    check = check_memory(fixed, validate_experiment(fixed))
    assert not check.refused and check.largest[0] == "train/llama-3.1-8b-instruct-single-a-seed42"


def test_fsdp_needs_a_nodes_gpus(tmp_path):
    lora = {"strategy": "fsdp"}
    with pytest.raises(ConfigError, match=r"run.gpus_per_node: lora.strategy is fsdp .* is not set"):
        validate_experiment(validate_data(config(tmp_path, lora=lora), "test.yaml"))
    with pytest.raises(ConfigError, match=r"run.gpus_per_node: .* is 1"):
        validate_experiment(validate_data(config(tmp_path, lora=lora, run={"gpus_per_node": 1}), "test.yaml"))
    with pytest.raises(ConfigError, match=r"run.nodes: lora.strategy is fsdp .* run.nodes 2"):
        validate_experiment(validate_data(config(tmp_path, lora=lora, run={"gpus_per_node": 8, "nodes": 2}),
                                          "test.yaml"))
    # the 70B trains over 8 GPUs at one sequence per micro-batch; its inference stages still do not fit
    ok = validate_data(config(tmp_path, lora={**lora, "batch_size": 1}, run={"gpus_per_node": 8}), "test.yaml")
    with pytest.raises(ConfigError) as err:
        validate_experiment(ok)
    assert "train/" not in str(err.value) and "respond/" in str(err.value)


def test_unknown_shapes_are_unchecked_not_refused(tmp_path):
    folder = tmp_path / "gpt2-like"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    spec = validate_data(config(tmp_path, f"hf/{folder}", run={"gpu_memory_gb": 1}), "test.yaml")
    stages = validate_experiment(spec)  # a 1 GB GPU: nothing known, so nothing refused
    check = check_memory(spec, stages)
    assert not check.refused and check.checked == 0
    assert {"train", "respond"} <= {label.split("/")[0] for label, _ in check.unchecked}
    assert all("'gpt2' is not modelled" in " ".join(mem.notes) for _, mem in check.unchecked)
    table = plan_experiment(spec).set_index("label")
    row = table.loc["train/gpt2-like-single-a-seed42"]
    assert pd.isna(row["gpu_gb"]) and "not modelled" in row["basis"] and "not modelled" in row["gpu_memory"]


# -- plan and the paper config -----------------------------------------------------------------------
@pytest.fixture()
def paper():
    return load_config(ROOT / "configs" / "paper.yaml", use_env=False)


def test_the_paper_plan_shows_memory_and_gpu_hours(paper):
    table = plan_experiment(paper)
    trains = table[table["kind"] == "train"]
    eight = trains[trains["model"] == f"hf/{LLAMA8}"]
    seventy = trains[trains["model"] == f"hf/{LLAMA70}"]
    assert (eight["gpu_gb"].round(2) == 69.37).all() and (seventy["gpu_gb"].round(2) == 68.09).all()
    # activations recomputed: each layer keeps its float32 input, one layer its own (by hand: the 8B
    # at 8 x 1,024 tokens, 32 layers x 4 x 4,096 + 270,688 bytes per token of a layer)
    assert 8 * 1024 * (32 * 4 * 4096 + 270_688) == 6_512_443_392
    assert "activations 6.5 GB" in eight["gpu_memory"].iloc[0]
    assert seventy["gpu_memory"].str.startswith("per GPU of 8: activations 25.9 GB").all()
    assert table["fits"].dropna().all()  # every checked stage fits the 8 x 141 GB node paper.yaml declares
    # GPU-hours of an 8B run: (6 N x 39,422,976 training tokens — 4 N, + 2 N for the recomputed
    # forward — + 2 N x 31 x 676 x 1,024 validation tokens) / 395.76e12 FLOP/s, N = 7,504,924,672
    # (projections + head)
    n = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336) + 128_256 * 4096
    assert n == 7_504_658_432
    hours = (6 * n * 3 * 12_833 * 1024 + 2 * n * 31 * 676 * 1024) / (989.4e12 * 0.4) / 3600
    assert eight["gpu_hours"].astype(float).to_numpy() == pytest.approx([hours] * 7)
    # hosted sources use no GPU of this run; Dolly is not read, so prompt-less lower bounds
    hosted = table[table["model"].fillna("").str.startswith("openai/")]
    assert hosted["gpu_gb"].isna().all() and hosted["gpu_memory"].str.startswith("no GPU").all()
    generate = table[(table["kind"] == "generate") & table["model"].str.startswith("hf/")]
    assert generate["gpu_gb_lower"].all()
    kinds = plan_totals(table, "kind").set_index("kind")
    assert kinds.loc["train", "gpu_gb"] == pytest.approx(69.37, abs=0.01)
    assert kinds.loc["train", "gpu_hours"] == pytest.approx(trains["gpu_hours"].sum())
    assert "gpu_hours" not in kinds.loc["train", "incomplete"] and "gpu_gb" in kinds.loc["generate", "incomplete"]
    assert kinds.loc["all", "gpu_hours"] == pytest.approx(table["gpu_hours"].sum())
    assert pd.isna(kinds.loc["prepare", "gpu_gb"]) and kinds.loc["all", "refused"] == 0


def test_the_paper_grid_fits_its_node_and_on_80gb_gpus_all_but_its_largest_models(paper, monkeypatch):
    for name in ("OPENAI_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY", "MISTRAL_API_KEY", "COHERE_API_KEY"):
        monkeypatch.setenv(name, "fake-key-for-tests")
    validate_experiment(paper)  # as shipped: 8 x 141 GB, every stage checked and fits
    check = check_memory(paper, build_graph(paper))
    assert not check.refused and check.checked > 50  # the others: unknown prompt lengths (lower bounds)
    at_80 = load_config(ROOT / "configs" / "paper.yaml", ["run.gpu_memory_gb=80"], use_env=False)
    with pytest.raises(ConfigError) as err:
        validate_experiment(at_80)
    check = check_memory(at_80, build_graph(at_80))
    refused = {mem.model for _, mem in check.refused}
    # the 70B on 2 GPUs judges at batch 16 with ≈ 83.6 GB; the 405B on 8 needs ≈ 103.6 GB
    assert refused == {f"hf/{LLAMA70}", "hf/meta-llama/Llama-3.1-405B-Instruct"}
    assert "the model's gpus: 4" in str(err.value)
    assert all(mem.workload != "train" for _, mem in check.refused)
    assert "train/" not in str(err.value)
    table = plan_experiment(at_80)
    assert table.loc[table["kind"] == "train", "fits"].all()


def test_plan_command_prints_the_gpu_columns_and_totals(paper, capsys, monkeypatch):
    from collapselab.cli.plan import plan_command

    monkeypatch.setenv("COLUMNS", "250")
    plan_command(ROOT / "configs" / "paper.yaml", ["run.gpu_memory_gb=80"], True, None)
    out = capsys.readouterr().out
    assert "GB/GPU" in out and "GPU h" in out and "✗" in out
    assert "checked against run.gpu_memory_gb 80" in out and "396 TFLOP/s" in out
    train = next(line for line in out.splitlines() if line.startswith("│ train "))
    assert "69.4" in train  # the largest training peak: the 8B at 8 sequences of 1,024 tokens
