"""Peak GPU memory and GPU-hours of the stages that load a model: what ``collapselab plan`` shows
and what ``validate`` checks against ``run.gpu_memory_gb``.

Nothing is loaded or downloaded. A model's shape (layers, widths, heads, vocabulary) comes from its
``config.json`` when that file is on this machine (a local folder, a prepared packaged model, a
dequantized GGUF, the Hugging Face cache), else from :data:`KNOWN_SHAPES` (the published configs of
the models ``configs/paper.yaml`` names), else it is unknown — never guessed. Every estimate is a
breakdown in bytes (GB = 1e9 bytes, as ``run.gpu_memory_gb``) whose formula is in the docstring of
the function that makes it; ``docs/plan.md`` ("GPU memory and GPU-hours") collects them with their
sources and what they leave out.

Symbols: P parameters, L layers, h hidden width, I the MLP's intermediate width, a query heads,
q = a × head_dim (query width), kv = kv_heads × head_dim, V vocabulary, b micro-batch (sequences),
s tokens per sequence, r the LoRA rank.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collapselab.config.spec import ExperimentSpec, LoraSpec, ModelSpec

if TYPE_CHECKING:
    from collapselab.pipeline.sizing import Estimate
    from collapselab.pipeline.stage import Stage

GB = 1e9

#: GPU throughput for GPU-hours when ``run.gpu_tflops`` is not set: an H100 SXM's dense bf16 peak,
#: 989.4 TFLOP/s (NVIDIA H100 Tensor Core GPU datasheet; 1,979 is with 2:4 sparsity), at 40% model
#: FLOPs utilization (a usual sustained share for LoRA fine-tuning and batched prefill).
H100_BF16_TFLOPS = 989.4
DEFAULT_MFU = 0.40
DEFAULT_GPU_TFLOPS = H100_BF16_TFLOPS * DEFAULT_MFU
#: Memory bandwidth for the decoding floor of GPU-hours: an H100 SXM's 3.35 TB/s (same datasheet).
#: Every decoding step reads all the weights, so a step takes at least weights / bandwidth however
#: small the batch. Not configurable (there is no ``run`` field for it): for another GPU the floor
#: scales with its bandwidth.
DEFAULT_GPU_BANDWIDTH = 3.35e12

#: Memory a process holds beyond its tensors: the CUDA context and cuBLAS workspaces (about 0.5-1 GB
#: on a Hopper GPU, outside torch's allocator), plus this share of the tensors that come and go
#: (activations, KV cache, logits, gradients; not the weights, allocated once when the model loads)
#: for the caching allocator's fragmentation: reserved exceeds allocated by some 5-15% in a loop.
CUDA_CONTEXT_BYTES = 1.0e9
FRAGMENTATION = 0.10
#: the terms allocated once, when the model is loaded (no fragmentation counted on them)
STATIC_TERMS = ("weights", "base weights")

#: Bytes per parameter of a 4-bit NormalFloat weight with double quantization (Dettmers et al. 2023,
#: "QLoRA", section 3): 4 bits, plus one 8-bit quantization constant per block of 64 weights, plus one
#: float32 second-level constant per 256 such blocks: 0.5 + 1/64 + 4/(64 x 256) = 0.5159.
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)

#: vLLM: the most sequences it decodes at once (its ``max_num_seqs`` default, 256) and the tokens
#: of the forward pass it profiles at start (``max_num_batched_tokens``, 8,192 for offline use).
VLLM_MAX_NUM_SEQS = 256
VLLM_BATCHED_TOKENS = 8192

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

#: How the note of a stage that uses no GPU of the run begins (a hosted model, a CPU backend).
NO_GPU = "no GPU: "

#: ``model_type`` values whose layers are the Llama pattern collapselab models: RMSNorm, attention
#: with q/k/v/o projections (grouped-query), a gated MLP (gate, up, down). Other architectures are
#: not estimated (unknown, with the reason).
GATED_FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"}
#: families whose config.json may omit ``tie_word_embeddings`` and what the family's default is
_TIED_DEFAULT = {"gemma": True, "gemma2": True, "gemma3_text": True}
#: norms per decoder layer (Gemma 2 and 3 add a norm after attention and after the MLP)
_NORMS = {"gemma2": 4, "gemma3_text": 4}


# -- shapes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """What memory and FLOPs depend on: a decoder-only transformer with a gated MLP.

    ``params`` is computed from the widths: embeddings V·h, per layer the attention projections
    h·q + 2·h·kv + q·h (+ biases: Qwen2's on q, k, v; ``attention_bias`` on all four), the MLP
    3·h·I, the norms (``norms`` × h, + 2 × head_dim for q/k norms), then the final norm h and an
    output head V·h unless the embeddings are tied.
    """

    model_type: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    o_bias: bool = False
    norms: int = 2
    qk_norm: bool = False
    max_positions: int | None = None
    source: str = ""  # where the numbers come from

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """Each decoder layer's projections: name → (in features, out features)."""
        h, q, kv, i = self.hidden, self.q_width, self.kv_width, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        """Weights of one layer's projections (no biases): what the matrix products run through."""
        return sum(n_in * n_out for n_in, n_out in self.linears().values())

    @property
    def layer_params(self) -> int:
        bias = (self.q_width + 2 * self.kv_width if self.qkv_bias else 0) + (self.hidden if self.o_bias else 0)
        norms = self.norms * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        return self.linear_params + bias + norms

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        """The output head's own weights (0 when tied to the embeddings)."""
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.embedding_params + self.layers * self.layer_params + self.hidden + self.head_params

    @property
    def flop_params(self) -> int:
        """The weights every token's matrix products run through: the layers' projections and the
        output head V·h (tied or not); the embedding is a lookup, norms and biases are negligible."""
        return self.layers * self.linear_params + self.vocab * self.hidden

    def lora_params(self, r: int, modules: Sequence[str]) -> int:
        """LoRA parameters of rank ``r`` on ``modules``: r × (in + out) per targeted projection."""
        return self.layers * sum(r * (n_in + n_out) for name, (n_in, n_out) in self.linears().items()
                                 if name in modules)

    def kv_bytes_per_token(self, value_bytes: int) -> int:
        """KV cache of one token: 2 (keys and values) × L × kv_heads × head_dim × bytes."""
        return 2 * self.layers * self.kv_width * value_bytes


def shape_from_config(config: Mapping[str, Any], source: str) -> ModelShape | str:
    """A :class:`ModelShape` from a transformers ``config.json`` (its ``text_config`` for a
    multimodal one), or the reason it cannot be made."""
    if isinstance(config.get("text_config"), Mapping):
        config = config["text_config"]
    kind = config.get("model_type")
    if kind not in GATED_FAMILIES:
        return (f"architecture {kind!r} is not modelled (collapselab estimates the Llama-style families "
                f"{', '.join(sorted(GATED_FAMILIES))})")
    try:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return ModelShape(
            model_type=kind, layers=int(config["num_hidden_layers"]), hidden=hidden,
            intermediate=int(config["intermediate_size"]), heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads), vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", _TIED_DEFAULT.get(kind, False))),
            qkv_bias=kind == "qwen2" or bool(config.get("attention_bias")),
            o_bias=bool(config.get("attention_bias")), norms=_NORMS.get(kind, 2),
            qk_norm=kind in ("qwen3", "gemma3_text"),
            max_positions=config.get("max_position_embeddings"), source=source)
    except (KeyError, TypeError, ValueError) as exc:
        return f"{source} lacks a usable {exc} entry"


def _llama31(layers: int, hidden: int, intermediate: int, heads: int, source: str) -> ModelShape:
    return ModelShape("llama", layers, hidden, intermediate, heads, 8, 128, 128_256, False,
                      max_positions=131_072, source=source)


_HUB = "published config.json on the Hugging Face hub"
_CACHE = "config.json of the folder collapselab dequantizes it into"

#: Shapes of the models ``configs/paper.yaml`` names (by hub id) and of the packaged models (by
#: name), for when their config.json is not on this machine. The numbers are the models' published
#: config.json values (hub repositories' config.json; the packaged ones as collapselab writes them
#: when it dequantizes their GGUF); tests check the parameter counts against the published totals
#: (Llama-3.1 8.03B / 70.6B / 405.9B, Gemma-2-9B 9.24B, Qwen2.5 7.62B / 72.7B, Falcon3-10B 10.3B,
#: SmolLM2 134.5M).
KNOWN_SHAPES: dict[str, ModelShape] = {
    "meta-llama/Llama-3.1-8B-Instruct": _llama31(32, 4096, 14_336, 32, _HUB),
    "meta-llama/Llama-3.1-8B": _llama31(32, 4096, 14_336, 32, _HUB),
    "meta-llama/Llama-Guard-3-8B": _llama31(32, 4096, 14_336, 32, _HUB),
    "meta-llama/Llama-3.1-70B-Instruct": _llama31(80, 8192, 28_672, 64, _HUB),
    "meta-llama/Llama-3.1-70B": _llama31(80, 8192, 28_672, 64, _HUB),
    "meta-llama/Llama-3.1-405B-Instruct": _llama31(126, 16_384, 53_248, 128, _HUB),
    "meta-llama/Llama-3.1-405B": _llama31(126, 16_384, 53_248, 128, _HUB),
    "google/gemma-2-9b-it": ModelShape("gemma2", 42, 3584, 14_336, 16, 8, 256, 256_000, True, norms=4,
                                       max_positions=8192, source=_HUB),
    "Qwen/Qwen2.5-7B-Instruct": ModelShape("qwen2", 28, 3584, 18_944, 28, 4, 128, 152_064, False,
                                           qkv_bias=True, max_positions=32_768, source=_HUB),
    "Qwen/Qwen2.5-72B-Instruct": ModelShape("qwen2", 80, 8192, 29_568, 64, 8, 128, 152_064, False,
                                            qkv_bias=True, max_positions=32_768, source=_HUB),
    "tiiuae/Falcon3-10B-Instruct": ModelShape("llama", 40, 3072, 23_040, 12, 4, 256, 131_072, False,
                                              max_positions=32_768, source=_HUB),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ModelShape("llama", 30, 576, 1536, 9, 3, 64, 49_152, True,
                                                      max_positions=8192, source=_HUB),
    "smollm2-135m-instruct": ModelShape("llama", 30, 576, 1536, 9, 3, 64, 49_152, True,
                                        max_positions=8192, source=_CACHE),
    "gemma3-270m": ModelShape("gemma3_text", 18, 640, 2048, 4, 1, 256, 262_144, True, norms=4, qk_norm=True,
                              max_positions=32_768, source=_CACHE),
    "qwen2.5-coder-1.5b-instruct": ModelShape("qwen2", 28, 1536, 8960, 12, 2, 128, 151_936, False,
                                              qkv_bias=True, max_positions=32_768, source=_CACHE),
}


def _config_file(name: str) -> tuple[Path | None, str]:
    """Where an hf/vllm model name's config.json is on this machine (None: not here), and what the
    name is ("packaged model", "folder", ...). Nothing is downloaded."""
    from collapselab.errors import ModelError
    from collapselab.models.hf import _locate
    from collapselab.models.packaged import gguf_cache_dir, is_prepared, packaged_dir

    try:
        kind, value = _locate(name)
    except ModelError as exc:
        return None, str(exc)
    if kind == "packaged":
        folder = packaged_dir(str(value))
        return (folder / "config.json" if is_prepared(folder) else None), "packaged model (not prepared yet)"
    if kind == "folder":
        return Path(value) / "config.json", "folder"
    if kind == "gguf":
        folder = gguf_cache_dir(Path(value))
        return (folder / "config.json" if is_prepared(folder) else None), "GGUF file (not dequantized yet)"
    try:  # a hub id: the cache only (try_to_load_from_cache never opens a connection)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(value), "config.json")
    except Exception:  # noqa: BLE001 - no hub library, a malformed id: simply not cached
        cached = None
    return (Path(cached) if isinstance(cached, str) else None), "hub id (config.json not in the cache)"


def model_shape(model: ModelSpec) -> tuple[ModelShape | None, str]:
    """The shape of an ``hf/`` or ``vllm/`` model and where it comes from; (None, the reason)
    when it is not known offline."""
    if model.backend not in ("hf", "vllm"):
        return None, f"backend {model.backend!r} loads no transformers model here"
    path, what = _config_file(model.name)
    if path is not None and path.is_file():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return None, f"{path} is unreadable: {exc}"
        shape = shape_from_config(config, str(path))
        return (shape, str(path)) if isinstance(shape, ModelShape) else (None, shape)
    known = KNOWN_SHAPES.get(model.name)
    if known is not None:
        return known, known.source
    return None, f"shape unknown: {model.name!r} is a {what} and not among the known shapes"


# -- estimates: bytes per GPU ----------------------------------------------------------------------
def activation_bytes_per_token_layer(shape: ModelShape, lora: LoraSpec, seq: int, mask_bytes: int = 1) -> float:
    """Bytes autograd keeps per token per decoder layer for the backward pass of the LoRA recipe
    (no activation checkpointing), with c = 2 under bf16 autocast (4 in float32)::

        8h             the two RMSNorms keep a float32 copy of their input (4h each)
        + 4c·q         SDPA keeps Q, K, V and its output; K and V repeated to the query heads
                       (transformers' repeat_kv, used whenever a padding mask is passed)
        + 4a           SDPA's float32 log-sum-exp per head (memory-efficient kernel: no s² term)
        + c·s          the attention-mask row of the token
        + 3c·I         the MLP: SiLU's input and both factors of the gate product
        + Σ (m + c)·d_in + c·r   per LoRA module with input width d_in: dropout's mask (m =
                       ``mask_bytes``: 1 for CUDA's fused dropout, 4 for the CPU's float mask; 0
                       when lora.dropout is 0), lora_A's input and lora_A's output

    Frozen projections keep no input (autograd saves a matmul's input only for its weight's
    gradient). This is Korthikanti et al. (2022), "Reducing Activation Recomputation in Large
    Transformer Models", eq. (1) — 34·s·b·h + 5·a·s²·b bytes per layer for GPT in 16 bits —
    re-derived for a Llama layer (gated MLP, RMSNorm, grouped-query attention) under autocast with
    a flash-style attention kernel and frozen base weights plus LoRA. The terms were checked by
    listing the tensors autograd saves (``grad_fn._saved_*``) in a tiny Llama with peft
    (tests/unit/pipeline/test_memory.py): they match exactly but for the first layer, whose q/k/v
    dropout keeps no mask (its input needs no gradient) — so this is an upper bound by that much.
    """
    c = 2 if lora.dtype == "bfloat16" else 4
    h, q, i = shape.hidden, shape.q_width, shape.intermediate
    base = 8 * h + 4 * c * q + 4 * shape.heads + c * seq + 3 * c * i
    mask = mask_bytes if lora.dropout > 0 else 0
    adapters = sum((mask + c) * n_in + c * lora.r for name, (n_in, _) in shape.linears().items()
                   if name in lora.target_modules)
    return base + adapters


def training_memory(shape: ModelShape, lora: LoraSpec, *, gpus: int = 1) -> dict[str, float]:
    """Peak bytes on one GPU while :func:`collapselab.train.lora.train_lora` trains, by term, for
    ``lora.strategy`` (``gpus``: the fsdp processes; 1 otherwise), at b = ``lora.batch_size``
    sequences of s = ``lora.max_length`` tokens (an upper bound: a micro-batch is padded to its
    longest example):

    * ``base weights`` — single: 4·P (the recipe loads float32); fsdp: w·P / N with w = 2 under
      bf16 (frozen weights kept in bf16), 4 otherwise; qlora: NF4 bytes × the layers' projections
      (:data:`NF4_BYTES_PER_PARAM`) + 4 × the rest (embeddings, head, norms stay float32);
    * ``bf16 weight copies`` — single under bf16 autocast: 2 × (L × projections + V·h): a frozen
      float32 weight is cast for every product and autograd keeps the bf16 copy for the input's
      gradient until the layer's backward (all but the first layer's q/k/v, whose input needs no
      gradient: an upper bound by that much); qlora: the float32 head's copy 2·V·h (bitsandbytes'
      4-bit layers keep nothing); fsdp: none (weights are bf16 already);
    * ``fsdp gathered`` — fsdp: w × (2 layers, the running one and the prefetched one, + the root
      unit: embeddings, head, final norm) unsharded;
    * ``LoRA + AdamW`` — 20 bytes per LoRA parameter (float32 weight, gradient, AdamW's two moments,
      the best-validation copy the recipe keeps), / N under fsdp, + 2 under bf16 autocast (the bf16
      copy of each weight autocast caches and autograd keeps);
    * ``activations`` — b·s·L × :func:`activation_bytes_per_token_layer`; each fsdp process runs
      whole micro-batches of ``lora.batch_size`` (it computes micro-batches r, r + N, ...). With
      ``lora.activation_checkpointing``: b·s × (L·4h + :func:`activation_bytes_per_token_layer`) —
      each layer keeps only its input (the residual stream, float32 under autocast; bf16 under fsdp
      with bf16 weights, so an upper bound there) and the layer being recomputed keeps its own;
    * ``logits`` — b·s × (c + 8)·V: the head's output at the label positions (at most every token),
      its float32 copy and log-softmax's float32 output;
    * ``overhead`` — :data:`CUDA_CONTEXT_BYTES` + :data:`FRAGMENTATION` × the terms but the base
      weights (:func:`with_overhead`).
    """
    n = max(1, gpus) if lora.strategy == "fsdp" else 1
    b, s = lora.batch_size, lora.max_length
    c = 2 if lora.dtype == "bfloat16" else 4
    projections = shape.layers * shape.linear_params
    out: dict[str, float] = {}
    if lora.strategy == "qlora":
        out["base weights"] = NF4_BYTES_PER_PARAM * projections + 4 * (shape.params - projections)
        out["bf16 weight copies"] = (2 * shape.vocab * shape.hidden) if c == 2 else 0
    elif lora.strategy == "fsdp":
        w = 2 if c == 2 else 4
        out["base weights"] = w * shape.params / n
        root = shape.embedding_params + shape.head_params + shape.hidden
        out["fsdp gathered"] = w * (2 * shape.layer_params + root)
    else:
        out["base weights"] = 4 * shape.params
        out["bf16 weight copies"] = (2 * (projections + shape.vocab * shape.hidden)) if c == 2 else 0
    out["LoRA + AdamW"] = (20 / n + (2 if c == 2 else 0)) * shape.lora_params(lora.r, lora.target_modules)
    per_layer = activation_bytes_per_token_layer(shape, lora, s)
    if lora.activation_checkpointing:  # every layer's float32 input, and one layer's own while it is recomputed
        out["activations"] = b * s * (shape.layers * 4 * shape.hidden + per_layer)
    else:
        out["activations"] = b * s * shape.layers * per_layer
    out["logits"] = b * s * (c + 8) * shape.vocab
    return with_overhead(out)


def generation_memory(shape: ModelShape, dtype: str, batch: int, prompt: float, new: int,
                      gpus: int = 1) -> dict[str, float]:
    """Peak bytes per GPU of the hf backend's ``generate`` (an adapter is merged into the weights),
    the model spread over ``gpus`` GPUs (its ``gpus``: accelerate places whole layers in turn, so
    weights and KV cache divide by the GPUs; the rest is on whichever GPU runs):

    * ``weights`` — w·P / gpus, w the bytes of ``dtype``;
    * ``KV cache`` — b × (prompt + new) × 2·L·kv_heads·head_dim·w / gpus;
    * ``prefill`` — the prompt's pass through one layer: b × prompt × (2h + 3I)·w (residual, norm
      output, the MLP's gate, up and product);
    * ``sampling`` — 8·b·V: float32 scores and the per-row uniforms of the sampler;
    * ``overhead`` — as in :func:`training_memory`.
    """
    w = DTYPE_BYTES[dtype]
    return with_overhead({
        "weights": w * shape.params / gpus,
        "KV cache": batch * (prompt + new) * shape.kv_bytes_per_token(w) / gpus,
        "prefill": batch * prompt * (2 * shape.hidden + 3 * shape.intermediate) * w,
        "sampling": 8 * batch * shape.vocab,
    })


def forward_memory(shape: ModelShape, dtype: str, batch: int, seq: float, logit_rows: float,
                   gpus: int = 1) -> dict[str, float]:
    """Peak bytes per GPU of a scoring pass of the hf backend (``continuation_logprobs`` or
    ``choice_logprobs``, no gradients, no cache), the model spread over ``gpus`` GPUs:

    * ``weights`` — w·P / gpus;
    * ``activations`` — one layer's working set: b × s × (2h + 3I)·w;
    * ``logits`` — b × rows × V × w at the kept positions (the scored tokens + 1, or 4 for a
      choice), plus one row's float32 log-softmax rows × V × 4;
    * ``overhead`` — as in :func:`training_memory`.
    """
    w = DTYPE_BYTES[dtype]
    return with_overhead({
        "weights": w * shape.params / gpus,
        "activations": batch * seq * (2 * shape.hidden + 3 * shape.intermediate) * w,
        "logits": batch * logit_rows * shape.vocab * w + logit_rows * shape.vocab * 4,
    })


def vllm_memory(shape: ModelShape, dtype: str, max_model_len: int, gpus: int = 1) -> dict[str, float]:
    """The memory per GPU a vLLM engine needs, sharded over ``gpus`` GPUs (the model's ``gpus``:
    ``tensor_parallel_size``, which splits every layer's weights and attention heads). vLLM takes
    ``GPU_MEMORY_UTILIZATION`` (0.85) of each GPU whatever the model; it starts only if the
    weights, its profiling pass and the KV cache of one ``max_model_len`` sequence fit in that share:

    * ``weights`` — w·P / gpus; ``KV of one sequence`` — max_model_len × 2·L·kv_heads·head_dim·w
      / gpus; ``profiling`` — :data:`VLLM_BATCHED_TOKENS` × (2h + 3I)·w / gpus;
    * ``vLLM's reserve`` — the rest of its share: (the three above) × (1/0.85 − 1);
    * ``overhead`` — :data:`CUDA_CONTEXT_BYTES` (outside vLLM's share).

    The total is the smallest GPU the engine starts on; on a larger one vLLM fills its share with
    KV cache.
    """
    from collapselab.models.vllm_backend import GPU_MEMORY_UTILIZATION

    w = DTYPE_BYTES[dtype]
    out: dict[str, float] = {
        "weights": w * shape.params / gpus,
        "KV of one sequence": max_model_len * shape.kv_bytes_per_token(w) / gpus,
        "profiling": VLLM_BATCHED_TOKENS * (2 * shape.hidden + 3 * shape.intermediate) * w / gpus,
    }
    out["vLLM's reserve"] = sum(out.values()) * (1 / GPU_MEMORY_UTILIZATION - 1)
    out["overhead"] = CUDA_CONTEXT_BYTES
    return out


def with_overhead(terms: dict[str, float]) -> dict[str, float]:
    """``terms`` plus ``overhead`` = :data:`CUDA_CONTEXT_BYTES` + :data:`FRAGMENTATION` × the sum of
    the terms that are not :data:`STATIC_TERMS`."""
    dynamic = sum(v for k, v in terms.items() if k not in STATIC_TERMS)
    return {**terms, "overhead": CUDA_CONTEXT_BYTES + FRAGMENTATION * dynamic}


# -- per stage -------------------------------------------------------------------------------------
@dataclass
class StageMemory:
    """One stage's GPU needs. ``gpu`` False: it uses no GPU here (a hosted model, a CPU backend);
    ``shape`` None with ``gpu`` True: unknown (the reason in ``notes``). ``breakdown``: bytes per
    GPU by term; ``gpus``: GPUs the work is spread over; ``lower_bound``: a term (a prompt length)
    is unknown offline, so the peak is at least this; the same for ``gpu_seconds`` (summed over
    the GPUs)."""

    model: str
    workload: str  # "train", "generate", "forward"
    backend: str
    gpu: bool = True
    shape: ModelShape | None = None
    breakdown: dict[str, float] = field(default_factory=dict)
    gpus: int = 1
    lower_bound: bool = False
    gpu_seconds: float | None = None
    seconds_lower_bound: bool = False
    notes: list[str] = field(default_factory=list)
    lora: LoraSpec | None = None
    dtype: str = "bfloat16"
    batch: int = 1
    seq: tuple[float, int] = (0.0, 0)  # (prompt tokens, new or scored tokens) per item
    max_model_len: int | None = None

    @property
    def known(self) -> bool:
        return self.gpu and self.shape is not None

    @property
    def peak(self) -> float | None:
        """Peak bytes per GPU (None: unknown or no GPU)."""
        return sum(self.breakdown.values()) if self.known else None

    @property
    def gpu_hours(self) -> float | None:
        return None if self.gpu_seconds is None else self.gpu_seconds / 3600

    def main_terms(self, n: int = 4) -> str:
        """The largest terms of the breakdown, e.g. ``base weights 282.2 GB, activations 70.1 GB``."""
        terms = sorted(((k, v) for k, v in self.breakdown.items() if v >= 0.05 * GB), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {v / GB:,.1f} GB" for k, v in terms[:n])


def _model_of(stage: Stage, model_id: str) -> ModelSpec:
    """The stage's ModelSpec called ``model_id`` (a target, a source's model, a judge, a curation
    step's model), for its dtype and batch size."""
    params = stage.params
    for candidate in (getattr(params, "model", None), getattr(params, "target", None),
                      getattr(getattr(params, "step", None), "model", None)):
        if isinstance(candidate, ModelSpec) and candidate.id == model_id:
            return candidate
    return ModelSpec(id=model_id)


def _per_item(tokens: int | None, items: int | None) -> float | None:
    if tokens is None or not items:
        return None
    return tokens / items


def _new_tokens(stage: Stage, est: Estimate, spec: ExperimentSpec) -> int:
    """New tokens per generated item: the estimate's ratio, else the stage's decoding."""
    per = _per_item(est.tokens_generate, est.n_items)
    if per is not None:
        return round(per)
    decoding = getattr(stage.params, "decoding", None)
    if decoding is not None:
        return decoding.max_new_tokens
    return int(stage.settings.get("max_new_tokens") or spec.decoding.max_new_tokens)


def tflops(spec: ExperimentSpec) -> float:
    """Sustained dense bf16 TFLOP/s per GPU: ``run.gpu_tflops``, else :data:`DEFAULT_GPU_TFLOPS`."""
    return spec.run.gpu_tflops or DEFAULT_GPU_TFLOPS


def stage_memory(stage: Stage, est: Estimate, spec: ExperimentSpec) -> StageMemory | None:
    """The GPU memory and GPU-hours of one stage from its plan row ``est``; None for a stage that
    loads no model (``StageKind.loads_model``) or names none.

    Workloads: ``train`` (:func:`training_memory`); ``generate`` for a stage whose row generates
    tokens (:func:`generation_memory`; :func:`vllm_memory` on the vllm backend); ``forward``
    otherwise (:func:`forward_memory`: scoring, choice read-outs). Prompt lengths are the row's
    mean (tokens_prefill / items); when they are unknown offline the estimate counts the prompt as
    0 tokens and is a lower bound.

    GPU-seconds, with F = TFLOP/s × 1e12 (:func:`tflops`) and N = :attr:`ModelShape.flop_params`:

    * train: (4·N·tokens_train + 2·N·tokens_score) / F. The usual 6·N per trained token (Kaplan et
      al. 2020) counts 2N forward, 2N for the activations' gradients and 2N for the weights'
      gradients; the frozen base weights need no gradient (LoRA's own are ~0.5% of N), so 4·N;
      validation passes are forward only (2·N);
    * generate: prefill 2·N·tokens_prefill / F plus decoding max(2·N·tokens_generate / F,
      steps × weight bytes / :data:`DEFAULT_GPU_BANDWIDTH`) with steps = ceil(items / batch) ×
      new tokens (the hf backend's batches run until their longest answer ends; vLLM's batch is
      :data:`VLLM_MAX_NUM_SEQS`): decoding small batches is bound by reading the weights;
    * forward: 2·N·(tokens_prefill + tokens_score) / F.

    Attention's own FLOPs (2·L·s·q per token, ~s / 6h of the total: 4% at s = 1,024, h = 4,096) are
    left out, as are FSDP's communication and QLoRA's dequantization.
    """
    from collapselab.pipeline.kinds import stage_kind

    if not stage_kind(stage.kind).loads_model or est.model is None:
        return None
    model = _model_of(stage, est.model)
    workload = "train" if stage.kind == "train" else (
        "generate" if est.tokens_generate is None or est.tokens_generate > 0 else "forward")
    mem = StageMemory(est.model, workload, model.backend, dtype=model.dtype)
    if model.backend == "openai":
        mem.gpu = False
        mem.notes.append(NO_GPU + "served by its endpoint")
        return mem
    if model.backend in ("mock", "toy", "llamacpp"):
        mem.gpu = False
        mem.notes.append(f"{NO_GPU}the {model.backend} backend runs on the CPU")
        return mem
    shape, where = model_shape(model)
    if shape is None:
        mem.notes.append(f"GPU memory unknown: {where}")
        return mem
    mem.shape = shape
    rate = tflops(spec) * 1e12
    n_flop = shape.flop_params
    if workload == "train":
        lora = spec.lora_for(stage.params.target_name)
        mem.lora, mem.batch = lora, lora.batch_size
        mem.gpus = (spec.run.gpus_per_node or 1) * spec.run.nodes if lora.strategy == "fsdp" else 1
        mem.breakdown = training_memory(shape, lora, gpus=mem.gpus)
        if est.tokens_train is not None:
            # activation checkpointing runs each layer's forward a second time in the backward pass
            per_token = 4 + (2 if lora.activation_checkpointing else 0)
            mem.gpu_seconds = (per_token * n_flop * est.tokens_train + 2 * n_flop * (est.tokens_score or 0)) / rate
        return mem
    mem.batch = int(getattr(stage.params, "batch_size", None) or model.batch_size)
    mem.gpus = model.gpus
    if model.gpus > 1 and model.backend == "hf":
        # accelerate runs the placed layers one after another: every GPU is held the whole time
        mem.notes.append(f"spread over {model.gpus} GPUs (layers in turn): GPU-hours count all {model.gpus}")
    prompt = _per_item(est.tokens_prefill, est.n_items)
    if prompt is None:
        mem.lower_bound = True
        mem.notes.append("prompt lengths unknown offline: memory counted without the prompts (a lower bound)")
    p = prompt or 0.0
    if workload == "generate":
        new = _new_tokens(stage, est, spec)
        mem.seq = (p, new)
        if model.backend == "vllm":
            mem.max_model_len = model.max_context or shape.max_positions
            if mem.max_model_len is None:
                mem.lower_bound = True
                mem.notes.append("max_model_len unknown: no max_context and no max_position_embeddings")
            mem.breakdown = vllm_memory(shape, model.dtype, mem.max_model_len or 0, model.gpus)
            mem.notes.append("vLLM takes 85% of the GPU: the peak is the smallest GPU the engine starts on")
            batch = VLLM_MAX_NUM_SEQS
        else:
            mem.breakdown = generation_memory(shape, model.dtype, mem.batch, p, new, model.gpus)
            batch = mem.batch
        items = est.n_items
        prefill_s = 2 * n_flop * (est.tokens_prefill or 0) / rate
        if items is None or est.tokens_generate is None:
            mem.gpu_seconds = prefill_s if est.tokens_prefill else None
            mem.seconds_lower_bound = True
        else:
            compute = 2 * n_flop * est.tokens_generate / rate
            weights = DTYPE_BYTES[model.dtype] * shape.params
            stream = math.ceil(items / batch) * new * weights / DEFAULT_GPU_BANDWIDTH
            mem.gpu_seconds = prefill_s + max(compute, stream)
            mem.seconds_lower_bound = est.tokens_prefill is None
        return _held(mem, model)
    scored = _per_item(est.tokens_score, est.n_items) or 0.0
    rows = scored + 1 if scored else 4.0  # the scored tokens + 1, or a choice read-out's 4 positions
    mem.seq = (p, round(scored))
    mem.breakdown = forward_memory(shape, model.dtype, mem.batch, p + scored, rows, model.gpus)
    if est.tokens_score is None and stage.kind in ("score", "familiarity"):
        mem.lower_bound = True
    tokens = sum(t for t in (est.tokens_prefill, est.tokens_score) if t is not None)
    mem.gpu_seconds = 2 * n_flop * tokens / rate if tokens else None
    mem.seconds_lower_bound = est.tokens_prefill is None or est.tokens_score is None
    return _held(mem, model)


def _held(mem: StageMemory, model: ModelSpec) -> StageMemory:
    """GPU-seconds of a model spread over several GPUs by the hf backend: its layers run in turn,
    so the work takes as long as on one GPU while all of them are held (vLLM's tensor parallelism
    splits the work: its GPU-seconds stay the same, ideally)."""
    if model.backend == "hf" and model.gpus > 1 and mem.gpu_seconds is not None:
        mem.gpu_seconds *= model.gpus
    return mem


# -- fitting ---------------------------------------------------------------------------------------
def gpu_bytes(spec: ExperimentSpec) -> float | None:
    """The memory of one GPU in bytes (``run.gpu_memory_gb``; None: not declared)."""
    return None if spec.run.gpu_memory_gb is None else spec.run.gpu_memory_gb * GB


def fits(mem: StageMemory, spec: ExperimentSpec) -> bool | None:
    """Whether a stage fits its GPUs (None: not checked — no declared GPU, no GPU used, unknown
    shape, or a lower bound that fits)."""
    limit, peak = gpu_bytes(spec), mem.peak
    if limit is None or peak is None:
        return None
    if peak > limit:
        return False
    return None if mem.lower_bound else True


def _gb(value: float) -> str:
    return f"{value / GB:,.1f} GB"


def _fsdp_candidates(spec: ExperimentSpec) -> list[int]:
    declared = spec.run.gpus_per_node if spec.run.gpus_per_node and spec.run.gpus_per_node > 1 else None
    return sorted({n for n in (declared, 2, 4, 8) if n})


def alternatives(mem: StageMemory, spec: ExperimentSpec) -> list[str]:
    """What would fit the declared GPUs instead, each with its computed estimate: for training,
    fsdp over a node's GPUs, qlora and smaller micro-batches (with grad_accum raised to keep the
    step's examples); for inference, a smaller batch or a GPU of the size needed. Empty when
    nothing collapselab offers fits (the caller says so with the closest numbers)."""
    limit = gpu_bytes(spec)
    if limit is None or mem.shape is None:
        return []
    out: list[str] = []
    shape = mem.shape
    if mem.workload == "train" and mem.lora is not None:
        lora = mem.lora
        effective = lora.batch_size * lora.grad_accum

        def variant(strategy: str, batch: int) -> LoraSpec:
            accum = max(1, math.ceil(effective / batch))
            return lora.model_copy(update={"strategy": strategy, "batch_size": batch, "grad_accum": accum})

        def batch_note(batch: int) -> str:
            return "" if batch == lora.batch_size else \
                f", batch_size {batch} x grad_accum {max(1, math.ceil(effective / batch))}"

        if not lora.activation_checkpointing:  # the same numbers, a third more compute
            recomputed = lora.model_copy(update={"activation_checkpointing": True})
            peak = sum(training_memory(shape, recomputed, gpus=mem.gpus).values())
            if peak <= limit:
                out.append(f"lora.activation_checkpointing true: {_gb(peak)}")
        batches = sorted({1, 2, 4, 8, lora.batch_size}, reverse=True)
        batches = [b for b in batches if b <= lora.batch_size]
        for strategy in ("single", "fsdp", "qlora"):
            for batch in batches:  # the largest micro-batch that fits, per strategy (and GPU count)
                if strategy == "fsdp":
                    found = [(n, sum(training_memory(shape, variant("fsdp", batch), gpus=n).values()))
                             for n in _fsdp_candidates(spec)]
                    found = [(n, peak) for n, peak in found if peak <= limit]
                    if found:
                        n, peak = found[0]
                        out.append(f"lora.strategy fsdp over {n} GPUs (run.gpus_per_node {n}){batch_note(batch)}: "
                                   f"{_gb(peak)} each")
                        break
                    continue
                if strategy == lora.strategy and batch == lora.batch_size:
                    continue
                peak = sum(training_memory(shape, variant(strategy, batch)).values())
                if peak <= limit:
                    name = "the same strategy" if strategy == lora.strategy else f"lora.strategy {strategy}"
                    out.append(f"{name}{batch_note(batch)}: {_gb(peak)}")
                    break
        return out
    prompt, new = mem.seq

    def inference_peak(batch: int, gpus: int) -> float:
        if mem.backend == "vllm":
            return sum(vllm_memory(shape, mem.dtype, mem.max_model_len or 0, gpus).values())
        if mem.workload == "generate":
            return sum(generation_memory(shape, mem.dtype, batch, prompt, new, gpus).values())
        return sum(forward_memory(shape, mem.dtype, batch, prompt + new, new + 1 if new else 4.0, gpus).values())

    node = spec.run.gpus_per_node or 8
    for gpus in (2, 4, 8, 16):  # the fewest GPUs one instance fits on, within a node
        if mem.gpus < gpus <= node and (peak := inference_peak(mem.batch, gpus)) <= limit:
            how = "tensor-parallel" if mem.backend == "vllm" else "layers placed in turn"
            out.append(f"the model's gpus: {gpus} ({how}): {_gb(peak)} each")
            break
    for batch in sorted({1, 2, 4, 8, 16}, reverse=True):
        if mem.backend == "vllm" or batch >= mem.batch:
            continue
        if (peak := inference_peak(batch, mem.gpus)) <= limit:
            out.append(f"the model's batch_size {batch}: {_gb(peak)}")
            break
    if not out:
        weights = DTYPE_BYTES[mem.dtype] * shape.params
        if weights < limit:
            out.append(f"a GPU of at least {_gb(mem.peak or 0)}")
        else:
            out.append(f"a GPU of at least {_gb(mem.peak or 0)} (the weights alone are {_gb(weights)}, more than "
                       f"{node} GPUs of a node hold), or serve the model with a multi-node server (e.g. vLLM with "
                       "pipeline parallelism) and name it as openai/NAME with its base_url")
    return out


@dataclass
class MemoryCheck:
    """What :func:`check_memory` found: ``refused`` (label, StageMemory) pairs that do not fit,
    ``unchecked`` ones (unknown shape or a lower bound that fits), and the largest that fits."""

    refused: list[tuple[str, StageMemory]] = field(default_factory=list)
    unchecked: list[tuple[str, StageMemory]] = field(default_factory=list)
    checked: int = 0
    largest: tuple[str, StageMemory] | None = None


def check_memory(spec: ExperimentSpec, stages: Sequence[Stage]) -> MemoryCheck:
    """Every model stage's estimate against ``run.gpu_memory_gb`` (nothing is checked without it)."""
    from collapselab.pipeline.kinds import stage_kind
    from collapselab.pipeline.sizing import PlanContext, corpus_facts

    out = MemoryCheck()
    if spec.run.gpu_memory_gb is None:
        return out
    ctx = PlanContext(spec, corpus_facts(spec), list(stages))
    for stage in stages:
        kind = stage_kind(stage.kind)
        if not kind.loads_model:
            continue
        mem = stage_memory(stage, kind.plan(stage, ctx), spec)
        if mem is None or not mem.gpu:
            continue
        verdict = fits(mem, spec)
        if verdict is False:
            out.refused.append((stage.label, mem))
        elif verdict is None:
            out.unchecked.append((stage.label, mem))
        else:
            out.checked += 1
            if out.largest is None or (mem.peak or 0) > (out.largest[1].peak or 0):
                out.largest = (stage.label, mem)
    return out


def refusal_message(check: MemoryCheck, spec: ExperimentSpec, limit_groups: int = 6) -> str:
    """The ``validate`` error for the stages that do not fit: grouped by model and stage kind, each
    group naming its largest stage, the estimate and its main terms, the GPU memory and what would
    fit."""
    groups: dict[tuple[str, str], list[tuple[str, StageMemory]]] = {}
    for label, mem in check.refused:
        groups.setdefault((mem.model, label.split("/", 1)[0]), []).append((label, mem))
    gpu = spec.run.gpu_memory_gb
    lines = [f"run.gpu_memory_gb: {len(check.refused)} stage(s) do not fit GPUs of {gpu:g} GB:"]
    for (_, kind), members in list(groups.items())[:limit_groups]:
        label, mem = max(members, key=lambda m: m[1].peak or 0)
        more = f" (the largest of {len(members)} {kind} stages)" if len(members) > 1 else ""
        if mem.workload == "train" and mem.lora is not None:
            how = (f"lora.strategy {mem.lora.strategy}"
                   + (f" over {mem.gpus} GPUs" if mem.lora.strategy == "fsdp" else " on one GPU")
                   + f", batch_size {mem.lora.batch_size} x max_length {mem.lora.max_length}")
        else:
            what = "generation" if mem.workload == "generate" else "scoring"
            where = "one GPU" if mem.gpus == 1 else f"{mem.gpus} GPUs"
            how = f"{mem.backend} backend, {what} on {where}, {mem.dtype}, batch_size {mem.batch}"
        fixes = alternatives(mem, spec)
        fix = ("; what would fit: " + "; ".join(fixes)) if fixes else \
            "; nothing collapselab offers fits (see docs/plan.md, 'GPU memory and GPU-hours')"
        lines.append(f"* {label}{more}: needs ≈ {_gb(mem.peak or 0)} per GPU ({how}; {mem.main_terms()}) "
                     f"> {gpu:g} GB{fix}")
    if len(groups) > limit_groups:
        lines.append(f"* ... and {len(groups) - limit_groups} more group(s); `collapselab plan` lists every stage")
    return "\n".join(lines)
