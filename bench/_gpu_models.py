"""Random-init models at the study's shapes for bench/gpu.py: hub-style configurations of
SmolLM2-135M and Llama-3.1-8B, a synthetic word-level tokenizer, building a model directly on the
device, the logit-scale calibration, prompts of random words, and the FLOPs of a LoRA step."""

from __future__ import annotations

import inspect
import random
from typing import Any

TARGET_ENTROPY = 2.0  # nats at the decoding temperature: the order of a trained chat model's

# --------------------------------------------------------------------------------------------
# Model configurations, as their hub config.json files spell them
# --------------------------------------------------------------------------------------------

SMOLLM2_135M: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True, "attention_bias": False,
    "mlp_bias": False, "initializer_range": 0.02, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
}


LLAMA_31_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
    "bos_token_id": 128000, "eos_token_id": 128001,
}
MODELS = {"smollm2-135m": SMOLLM2_135M, "llama-3.1-8b": LLAMA_31_8B}


def tiny_config(config: dict[str, Any], hidden: int, vocab: int) -> dict[str, Any]:
    """The same architecture (head ratios, tying, RoPE) at dry-run size: 2 layers."""
    heads = 4
    kv = max(1, heads * config["num_key_value_heads"] // config["num_attention_heads"])
    return {**config, "hidden_size": hidden, "intermediate_size": hidden * 3, "num_hidden_layers": 2,
            "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hidden // heads,
            "vocab_size": vocab, "bos_token_id": None, "eos_token_id": 2,
            "pad_token_id": 0}


def synthetic_tokenizer(vocab_size: int) -> Any:
    """A word-level fast tokenizer with ``vocab_size`` entries: ChatML specials (ids 0-2), ``<unk>``,
    the three role names, then ``t7`` … ``t<V-1>``; whitespace-split; the ChatML chat template.
    Every id decodes to its own word, so two texts are equal exactly when their tokens are."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from collapselab.models.tiny import CHATML_TEMPLATE

    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<unk>": 3,
             "system": 4, "user": 5, "assistant": 6}
    vocab.update({f"t{i}": i for i in range(len(vocab), vocab_size)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>",
        bos_token=None, additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_model(config: dict[str, Any], dtype: Any, device: str, seed: int = 0) -> Any:
    """A random-init causal LM from a hub-style config, created directly on ``device`` in ``dtype``
    (no CPU copy of an 8B model). Attention as ``load_hf_model`` chooses it (eager on CPU)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(
                cfg, dtype=dtype, attn_implementation=None if device == "cuda" else "eager"
            )
    finally:
        torch.set_default_dtype(previous)
    if device != "meta" and next(model.parameters()).device.type != torch.device(device).type:
        model = model.to(device)  # a transformers version that ignores the device context
    return model


def matmul_weights(model: Any) -> int:
    """Weights taking part in matrix products: every nn.Linear (the LM head included, also when
    tied to the embedding), not the embedding lookup or the norms."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def lora_model(config: dict[str, Any], base_dtype: Any, device: str) -> tuple[Any, dict[str, int]]:
    """A random-init model wrapped with LoRA as train_lora wraps it (LoraSpec defaults)."""
    from peft import LoraConfig, get_peft_model

    from collapselab.config.spec import LoraSpec
    from collapselab.train.lora import matching_targets

    spec = LoraSpec()
    model = build_model(config, base_dtype, device)
    counts = {"n_matmul": matmul_weights(model), "n_params": sum(p.numel() for p in model.parameters())}
    model = get_peft_model(model, LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=matching_targets(model, spec.target_modules), task_type="CAUSAL_LM",
    ))
    counts["n_lora"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, counts


def lora_flops_per_token(n_matmul: int, n_lora: int, layers: int, seq: int, d_attn: int) -> float:
    """Model FLOPs per trained token of a LoRA step on a frozen base, forward and backward:
    ``4·N + 6·N_lora + 12·L·s·d_attn`` (after Chowdhery et al. 2022, PaLM, appendix B).

    N: weights in matrix products (``matmul_weights``): 2·N forward, 2·N backward for the
    activation gradients; frozen weights get no weight gradients (full fine-tuning: 6·N).
    N_lora: LoRA weights, which get both (6·N_lora). Attention: QKᵀ and PV cost 4·s·d_attn per layer
    and token forward, twice that backward (s: sequence length, d_attn: query heads × head dim; no
    causal discount). One gradient autograd never computes is still counted, as model FLOPs
    conventionally do: the first layer's q/k/v projections read the frozen embedding, so their
    input gradients are skipped (2·N_qkv of one layer: 0.16% of the 8B shape's FLOPs at s = 1024)."""
    return 4.0 * n_matmul + 6.0 * n_lora + 12.0 * layers * seq * d_attn


def calibrate_logit_scale(model: Any, rows: list[list[int]], temperature: float, device: str) -> dict[str, float]:
    """Scale the final norm so the mean next-token entropy at ``temperature`` over ``rows`` (at
    the last position) is about :data:`TARGET_ENTROPY` nats; returns the scale and entropies.

    Logits are linear in the final norm's weight, so the scale is found by bisection (in log
    space) on the logits of one forward pass, then applied to the weight."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(type(model).forward).parameters else {}
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       use_cache=False, **keep).logits[:, -1].float()

    def entropy(scale: float) -> float:
        logp = torch.log_softmax(logits * scale / temperature, dim=-1)
        return float(-(logp.exp() * logp).sum(-1).mean())

    before = entropy(1.0)
    lo, hi = -3.0, 6.0  # log10 of the scale
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if entropy(10**mid) > TARGET_ENTROPY else (lo, mid)
    scale = 10 ** ((lo + hi) / 2)
    with torch.no_grad():
        norm = model.get_decoder().norm if hasattr(model, "get_decoder") else model.model.norm
        norm.weight.mul_(scale)
    return {"scale": round(scale, 4), "entropy_before": round(before, 3), "entropy_after": round(entropy(scale), 3)}


def make_prompts(n: int, lengths: tuple[int, int], vocab_size: int, seed: int) -> list[Any]:
    """``n`` prompts of random words (ids 7..V-1), lengths drawn in ``lengths``; no system turn."""
    from collapselab.models.base import ChatPrompt

    rng = random.Random(seed)
    return [ChatPrompt(f"gpu-{i}", " ".join(f"t{rng.randrange(7, vocab_size)}" for _ in range(rng.randint(*lengths))))
            for i in range(n)]
