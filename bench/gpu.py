"""GPU checks: generation and LoRA-training speed at the study's model shapes, batch invariance of
sampling on the GPU, and a tiny end-to-end pipeline run on CUDA — with nothing but the project's
source (random-init weights: speed does not depend on the weights' values).

    python bench/gpu.py --dry-run --out /tmp/gpu            # CPU, tiny shapes (the unit test)
    python bench/gpu.py --out DIR --record bench/RESULTS.md  # a GPU machine

On the GPU machine (torch, transformers, peft, accelerate, sentence-transformers; no pydantic, no
package index, no weights), first, here, where PyPI is reachable::

    bash scripts/gpu-carry.sh        # ~6 MB of cp312 wheels into .gpu-wheels/ (git-ignored)

then on the device, with ``carry: [".gpu-wheels"]``::

    python3 bench/gpu.py --out $OUT --record $OUT/RESULTS.md

then, here, append the rows to bench/RESULTS.md from the returned JSON (safer than copying
``$OUT/RESULTS.md`` back, which is bench/RESULTS.md as it was on the device plus the rows)::

    python bench/gpu.py --from-json FILES_AT/gpu.json --record bench/RESULTS.md

``$OUT/gpu.json`` holds every number, ``$OUT/gpu.md`` the rows alone (rewritten after every
section, so a killed run leaves its rows), ``$OUT/gpu.log`` the progress lines,
``$OUT/e2e-child.log`` the pipeline's output. The wheels are unpacked into /tmp/gpu-site (only
those whose distribution the machine lacks, and typing-extensions when the machine's is older),
which goes first on ``sys.path`` (and on ``PYTHONPATH`` for the end-to-end child process).

What runs, in order, each section guarded (an error or a timeout is recorded and the next section
runs; the JSON is rewritten after every measurement, so a killed run keeps what it measured):

* **matmul** — the measured bf16 dense matmul ceiling (8192³ products), the reference for MFU
  next to the spec sheet's peak.
* **generate** (SmolLM2-135M, then Llama-3.1-8B shapes, bf16) — ``HFModel.generate``, collapselab's
  own path (left-padded batches, per-prompt seeded Gumbel-max sampling), at batch 1, 32 and 128
  (one batch each, ~100-128-token prompts, 64 new tokens, T 0.7 top-p 0.9), against the naive
  baseline of bench/generate.py: transformers ``model.generate(do_sample=True, top_k=0)`` one
  prompt at a time, same model; plus the share of a decoding step spent in collapselab's sampler
  (its CPU noise draw is per row and per vocabulary entry), and whether prompts sampled alone give
  the text they got inside the batch of 32 and of 128 (GPU kernels are not batch-invariant).
* **lora** (both shapes) — the training step of ``collapselab.train.lora.train_lora`` (LoRA r 16,
  α 32, dropout 0.1 on q/k/v/o/gate/up/down from ``LoraSpec()``; float32 base weights with bf16
  autocast as the recipe loads them; AdamW, gradient clipping) on full 1,024-token sequences,
  warm-up step excluded: tokens/s, model-FLOPs utilization and peak memory; for the 8B shape also
  with bf16 base weights (half the weight memory; not what the recipe does today).
* **e2e** — the unit tests' small experiment (tests/helpers.py: mock sources, a tiny random-init
  hf target, vanilla / human / single:a, ``distinct`` and ``length``) run by the local executor
  in a child process; CUDA use is checked per stage (peak CUDA memory of each stage).

FLOPs (the model-FLOPs of Chowdhery et al. 2022, PaLM, appendix B, adapted to a frozen base):
per trained token, ``4·N + 6·N_lora + 12·L·s·d_attn``, where N counts the weights of every matrix
product of the base model (all linear layers and the LM head; not the embedding lookup): the
forward pass costs 2·N and the backward pass 2·N more for the activation gradients, while the
frozen weights get no weight gradients (full fine-tuning would add 2·N: the usual 6·N). The LoRA
matrices (N_lora) get both (6·N_lora). Attention scores and their use cost 4·s·d_attn per layer
forward and twice that backward (s: sequence length, d_attn: heads × head dim; no causal
discount, as in PaLM). ``tests/unit/test_bench_gpu.py`` checks the formula against torch's
``FlopCounterMode``. MFU = FLOPs per second / the H200's dense bf16 peak, 989 TFLOP/s (spec
sheet), and also against the matmul ceiling measured in the same run.

Tokenizer: no tokenizer of these models is available offline, so a synthetic word-level one with
the model's vocabulary size is built (``t7`` … ``t<V-1>``, ChatML specials, a ChatML template):
every id decodes to a distinct word, so equal texts mean equal tokens. Random-init logits are
nearly flat, which is not how a trained model samples (top-p would keep thousands of tokens and
any last-bit difference would hardly matter): the final norm is scaled so that the mean entropy of
the next-token distribution at T 0.7 is ~2 nats, the order of a trained chat model's; the scale
and the entropy reached are recorded.

``--budget-s`` (default 360) bounds the whole run: before each measurement its expected cost is
checked against the time left (minus a reserve for the end-to-end run), and measurements that do
not fit are skipped with the reason recorded. Progress lines go to stdout, flushed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a network timeout
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (str(REPO / "src"), str(REPO), str(BENCH)):  # the source tree, tests.helpers, _machine
    if _path not in sys.path:
        sys.path.append(_path)

from _gpu_models import (  # noqa: E402
    LLAMA_31_8B,
    MODELS,
    SMOLLM2_135M,
    build_model,
    calibrate_logit_scale,
    lora_flops_per_token,
    lora_model,
    make_prompts,
    synthetic_tokenizer,
    tiny_config,
)
from _gpu_table import markdown_rows, record, table_line  # noqa: E402
from _gpu_wheels import install_wheels  # noqa: E402

# Spec-sheet dense (no sparsity) bf16 peaks, TFLOP/s, by a substring of the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
E2E_RESERVE_S = 90.0  # kept back for the end-to-end run by every section before it
DRY_E2E_RESERVE_S = 30.0

# --------------------------------------------------------------------------------------------
# Settings: the GPU run and the dry run
# --------------------------------------------------------------------------------------------


def settings(dry_run: bool) -> dict[str, Any]:
    """Shapes and sizes of every measurement."""
    if dry_run:
        return {
            "device": "cpu",
            "models": {"smollm2-135m": tiny_config(SMOLLM2_135M, 48, 320),
                       "llama-3.1-8b": tiny_config(LLAMA_31_8B, 64, 512)},
            "matmul_n": 256, "batches": [1, 4, 8], "new_tokens": 6, "prompt_tokens": (6, 12),
            "naive_prompts": 2, "alone_prompts": 2, "lora_seq": 48, "lora_batch": 2, "lora_steps": 1,
            # expected seconds of each measurement on the target machine (for the budget)
            "cost": {"build": 1, "generate": 2, "naive": 2, "alone": 2, "lora": 3, "e2e": 60},
            "e2e_reserve": DRY_E2E_RESERVE_S,
        }
    return {
        "device": "cuda",
        "models": MODELS,
        "matmul_n": 8192, "batches": [1, 32, 128], "new_tokens": 64, "prompt_tokens": (96, 120),
        "naive_prompts": 4, "alone_prompts": 4, "lora_seq": 1024, "lora_batch": 8, "lora_steps": 5,
        "cost": {"build": 15, "generate": 25, "naive": 20, "alone": 15, "lora": 30, "e2e": 80},
        "e2e_reserve": E2E_RESERVE_S,
    }


# --------------------------------------------------------------------------------------------
# Bookkeeping: budget, progress, results
# --------------------------------------------------------------------------------------------


class Budget:
    """Wall-clock seconds left of ``seconds`` since construction."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def refuse(self, need: float, reserve: float = 0.0) -> str | None:
        """None if ``need`` seconds fit before ``reserve`` seconds are all that is left, else why not."""
        left = self.left() - reserve
        if left >= need:
            return None
        kept = f" (keeping {reserve:.0f} s for later sections)" if reserve else ""
        return f"budget: {max(left, 0):.0f} s left{kept}, needs ~{need:.0f} s"


class Results:
    """Every section's measurements; rewritten to ``out/gpu.json`` after each change."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.data: dict[str, Any] = {"meta": meta, "sections": {}}
        self.log_file = (out / "gpu.log").open("a")

    def log(self, message: str, budget: Budget | None = None) -> None:
        stamp = f"[{budget.elapsed():6.1f} s] " if budget else ""
        line = f"{stamp}{message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def section(self, name: str) -> dict[str, Any]:
        return self.data["sections"].setdefault(name, {"status": "ok", "measurements": []})

    def add(self, section: str, measurement: dict[str, Any]) -> None:
        self.section(section)["measurements"].append(measurement)
        self.save()

    def save(self) -> None:
        tmp = self.out / "gpu.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.out / "gpu.json")


def _gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 2)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> float | None:
    import torch

    return _gib(torch.cuda.max_memory_allocated()) if device == "cuda" else None


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# Wheels the device lacks
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def run_matmul(res: Results, budget: Budget, cfg: dict[str, Any]) -> None:
    """The measured bf16 matmul ceiling: n×n by n×n products, TFLOP/s after a warm-up."""
    import torch

    device, n = cfg["device"], cfg["matmul_n"]
    why = budget.refuse(3)
    if why:
        _skip(res, "matmul", why)
        return
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, started = 0, time.perf_counter()
    while reps < 20 or time.perf_counter() - started < 1.0:
        a @ b
        reps += 1
        if reps % 10 == 0:
            _sync(device)
    _sync(device)
    seconds = time.perf_counter() - started
    tflops = 2 * n**3 * reps / seconds / 1e12
    res.data["meta"]["matmul_tflops"] = tflops
    res.add("matmul", {"name": f"bf16 matmul {n}^3", "status": "ok", "tflops": tflops, "reps": reps,
                       "seconds": round(seconds, 3)})
    res.log(f"matmul {n}^3 bf16: {tflops:.1f} TFLOP/s", budget)


def _naive_generate(model: Any, tokenizer: Any, prompts: list[Any], decoding: Any, stop_ids: list[int],
                    pad_id: int, device: str) -> int:
    """The baseline of bench/generate.py: transformers' sampling, one prompt at a time; the
    number of generated tokens up to and including the end token."""
    import torch

    from collapselab.models.base import prompt_seed
    from collapselab.models.formatting import render_prompt_ids

    stops, total = set(stop_ids), 0
    for prompt in prompts:
        ids = torch.tensor([render_prompt_ids(tokenizer, prompt, True)], device=device)
        torch.manual_seed(prompt_seed(decoding.seed, prompt.id))
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=decoding.temperature, top_p=decoding.top_p, top_k=0,
                                 max_new_tokens=decoding.max_new_tokens, eos_token_id=stop_ids, pad_token_id=pad_id)
        new = out[0, ids.shape[1]:].tolist()
        total += next((j + 1 for j, t in enumerate(new) if t in stops), len(new))
    return total


def _sampler_ms(batch: int, vocab: int, decoding: Any, device: str) -> float:
    """Milliseconds per decoding step of collapselab's per-row sampler alone, on logits like the
    model's (batch × vocab, bf16, same device)."""
    import torch

    from collapselab.models.hf import _row_sampler

    scores = torch.randn(batch, vocab, device=device, dtype=torch.bfloat16) * 3
    sampler = _row_sampler(list(range(batch)), decoding.temperature, decoding.top_p)
    ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
    sampler(ids, scores)
    _sync(device)
    started = time.perf_counter()
    for _ in range(3):
        sampler(ids, scores)
    _sync(device)
    return (time.perf_counter() - started) / 3 * 1000


def _first_difference(a: str, b: str) -> int | None:
    """Index of the first generated token where two word-level texts differ (None: equal)."""
    if a == b:
        return None
    x, y = a.split(), b.split()
    return next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))


def run_generate(res: Results, budget: Budget, cfg: dict[str, Any], name: str, later_reserve: float) -> None:
    """Tokens/s of HFModel.generate at each batch size, the naive baseline, the sampler's share
    and alone-vs-batched texts, for one model shape (see the module docstring)."""
    import torch

    from collapselab.config.spec import DecodingSpec, ModelSpec
    from collapselab.models.hf import HFModel

    section, device, cost = f"generate:{name}", cfg["device"], cfg["cost"]
    config = cfg["models"][name]
    why = budget.refuse(cost["build"] + cost["generate"], later_reserve)
    if why:
        _skip(res, section, why)
        return
    res.log(f"{section}: building random-init {name} (bf16, {device})", budget)
    started = time.perf_counter()
    model = build_model(config, torch.bfloat16, device)
    model.eval()
    tokenizer = synthetic_tokenizer(config["vocab_size"])
    build_s = time.perf_counter() - started
    n_params = sum(p.numel() for p in model.parameters())
    decoding = DecodingSpec(temperature=0.7, top_p=0.9, max_new_tokens=cfg["new_tokens"], seed=42)
    prompts = make_prompts(max(cfg["batches"]), cfg["prompt_tokens"], config["vocab_size"], seed=1)
    hf = HFModel(ModelSpec(id=f"hf/random-{name}", dtype="bfloat16", batch_size=1), model, tokenizer)
    from collapselab.models.formatting import render_prompt_ids

    calibration = calibrate_logit_scale(model, [render_prompt_ids(tokenizer, p, True) for p in prompts[:8]],
                                        decoding.temperature, device)
    sec = res.section(section)
    sec.update({"model": name, "parameters": n_params, "build_s": round(build_s, 2),
                "weights_gib": _gib(n_params * 2), "logit_calibration": calibration,
                "decoding": {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": cfg["new_tokens"]},
                "prompt_tokens": list(cfg["prompt_tokens"])})
    res.log(f"{section}: {n_params / 1e6:.1f}M parameters built in {build_s:.1f} s; logit scale "
            f"{calibration['scale']} (entropy {calibration['entropy_before']} -> {calibration['entropy_after']} nats)",
            budget)

    texts: dict[int, dict[str, str]] = {}
    rates: dict[int, float] = {}
    for batch in cfg["batches"]:
        why = budget.refuse(cost["generate"], later_reserve)
        if why:
            res.add(section, {"name": f"batch {batch}", "status": "skipped", "reason": why})
            res.log(f"{section}: batch {batch} skipped: {why}", budget)
            continue
        try:
            hf.spec = hf.spec.model_copy(update={"batch_size": batch})
            chunk = prompts[:batch]
            hf.generate(chunk, decoding.model_copy(update={"max_new_tokens": 2}))  # warm-up
            _reset_peak(device)
            started = time.perf_counter()
            gens = hf.generate(chunk, decoding)
            _sync(device)
            seconds = time.perf_counter() - started
            tokens = sum(g.new_tokens for g in gens)
            rates[batch] = tokens / seconds
            texts[batch] = {p.id: g.text for p, g in zip(chunk, gens, strict=True)}
            sampler = _sampler_ms(batch, config["vocab_size"], decoding, device)
            steps = max(g.new_tokens for g in gens)
            entry = {"name": f"batch {batch}", "status": "ok", "batch": batch, "prompts": len(chunk),
                     "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(rates[batch], 1),
                     "ms_per_step": round(seconds / max(steps, 1) * 1000, 2),
                     "sampler_ms_per_step": round(sampler, 2),
                     "sampler_share": round(min(1.0, sampler * steps / 1000 / seconds), 3),
                     "stopped": sum(g.finish_reason == "stop" for g in gens), "peak_gib": _peak(device)}
            if batch == 1:  # memory-bound decoding: weights read per step
                entry["weight_read_gb_per_s"] = round(n_params * 2 * steps / seconds / 1e9, 1)
            res.add(section, entry)
            res.log(f"{section}: batch {batch}: {tokens} tokens in {seconds:.2f} s = {rates[batch]:.1f} tok/s "
                    f"(sampler {sampler:.1f} ms/step, {entry['ms_per_step']} ms/step in all), "
                    f"peak {entry['peak_gib']} GiB", budget)
        except Exception as exc:  # noqa: BLE001  one batch size failing must not lose the others
            _error(res, section, f"batch {batch}", exc)
            _free(device)

    why = budget.refuse(cost["naive"], later_reserve)
    naive_rate = None
    if why:
        res.add(section, {"name": "naive baseline", "status": "skipped", "reason": why})
    else:
        try:
            chunk = prompts[: cfg["naive_prompts"]]
            _naive_generate(model, tokenizer, chunk[:1], decoding.model_copy(update={"max_new_tokens": 2}),
                            hf.stop_ids, hf.pad_id, device)
            started = time.perf_counter()
            tokens = _naive_generate(model, tokenizer, chunk, decoding, hf.stop_ids, hf.pad_id, device)
            _sync(device)
            seconds = time.perf_counter() - started
            naive_rate = tokens / seconds
            res.add(section, {"name": "naive baseline", "status": "ok", "prompts": len(chunk), "tokens": tokens,
                              "seconds": round(seconds, 3), "tokens_per_s": round(naive_rate, 1),
                              "ratios": {str(b): round(r / naive_rate, 2) for b, r in rates.items()}})
            res.log(f"{section}: naive model.generate one prompt at a time: {naive_rate:.1f} tok/s; "
                    + ", ".join(f"batch {b}: {r / naive_rate:.2f}x" for b, r in rates.items()), budget)
        except Exception as exc:  # noqa: BLE001
            _error(res, section, "naive baseline", exc)
    sec["naive_tokens_per_s"] = naive_rate

    why = budget.refuse(cost["alone"], later_reserve)
    batched = [b for b in texts if b > 1]
    if why or not batched:
        res.add(section, {"name": "alone = batched", "status": "skipped",
                          "reason": why or "no batched run to compare with"})
    else:
        try:
            hf.spec = hf.spec.model_copy(update={"batch_size": 1})
            picks = prompts[: cfg["alone_prompts"]]
            alone = {p.id: hf.generate([p], decoding)[0].text for p in picks}
            compare: dict[str, Any] = {}
            for b in batched:
                diffs = [_first_difference(alone[p.id], texts[b][p.id]) for p in picks]
                compare[f"batch {b}"] = {"same": sum(d is None for d in diffs), "of": len(picks),
                                         "first_difference_at_token": diffs}
            if len(batched) > 1:
                small, large = batched[0], batched[-1]
                diffs = [_first_difference(texts[small][pid], texts[large][pid]) for pid in texts[small]]
                compare[f"batch {small} vs {large}"] = {
                    "same": sum(d is None for d in diffs), "of": len(diffs),
                    "first_difference_at_token": [d for d in diffs if d is not None]}
            res.add(section, {"name": "alone = batched", "status": "ok", "compare": compare})
            res.log(f"{section}: alone = batched: " + "; ".join(
                f"{k}: {v['same']}/{v['of']}" for k, v in compare.items()), budget)
        except Exception as exc:  # noqa: BLE001
            _error(res, section, "alone = batched", exc)
    del hf, model
    _free(device)


def lora_steps(model: Any, batch: int, seq: int, vocab: int, steps: int, device: str) -> float:
    """Seconds of ``steps`` optimizer steps of train_lora's loop (after one warm-up step):
    autocast bf16 forward, summed answer-token NLL in float32 over the answer positions (the
    last three quarters of each sequence), backward, clipping, AdamW (LoraSpec's lr and decay)."""
    import torch

    from collapselab.config.spec import LoraSpec
    from collapselab.train.lora import IGNORE_INDEX, MAX_GRAD_NORM

    spec = LoraSpec()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(7, vocab, (batch, seq), generator=generator).to(device)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : seq // 4] = IGNORE_INDEX
    model.train()

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        next_tokens = labels[:, 1:]
        keep = next_tokens != IGNORE_INDEX
        loss = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), next_tokens[keep], reduction="sum")
        (loss / int(keep.sum())).backward()
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocation, kernel selection, optimizer state
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - started


def memory_estimate(config: dict[str, Any], batch: int, seq: int) -> float | None:
    """``collapselab plan``'s estimate of the recipe's peak memory (GiB, as torch reports it) for
    this shape at ``batch`` × ``seq`` (pipeline/memory.training_memory, LoraSpec defaults): set
    next to the measured peak, so a GPU run checks the plan's formulas. None when the shape is not
    modelled."""
    from collapselab.config.spec import LoraSpec
    from collapselab.pipeline.memory import shape_from_config, training_memory

    shape = shape_from_config(config, "bench config")
    if isinstance(shape, str):
        return None
    return _gib(sum(training_memory(shape, LoraSpec(batch_size=batch, max_length=seq)).values()))


def run_lora(res: Results, budget: Budget, cfg: dict[str, Any], name: str, variants: list[str],
             later_reserve: float) -> None:
    """LoRA training tokens/s, MFU and peak memory for one shape; ``variants``: "recipe" (float32
    base under bf16 autocast, as train_lora loads it) and/or "bf16-base"."""
    import torch

    section, device, cost = f"lora:{name}", cfg["device"], cfg["cost"]
    config = cfg["models"][name]
    seq, steps = cfg["lora_seq"], cfg["lora_steps"]
    sec = res.section(section)
    sec.update({"model": name, "seq": seq, "steps_timed": steps, "warmup_steps": 1,
                "flops_formula": "4*N_matmul + 6*N_lora + 12*layers*seq*d_attn per token"})
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in res.data["meta"].get("device_name", "")), None)
    for variant in variants:
        why = budget.refuse(cost["build"] + cost["lora"], later_reserve)
        if why:
            res.add(section, {"name": variant, "status": "skipped", "reason": why})
            res.log(f"{section}: {variant} skipped: {why}", budget)
            continue
        batch = cfg["lora_batch"]
        out_of_memory: list[int] = []
        model = None
        try:
            res.log(f"{section}: building {variant} model", budget)
            model, counts = lora_model(config, torch.float32 if variant == "recipe" else torch.bfloat16, device)
            _sync(device)
            weights = _gib(torch.cuda.memory_allocated()) if device == "cuda" else None
            seconds = None
            while seconds is None:
                _reset_peak(device)
                try:
                    seconds = lora_steps(model, batch, seq, config["vocab_size"], steps, device)
                except torch.cuda.OutOfMemoryError:
                    if batch == 1:
                        raise
                    out_of_memory.append(batch)
                # outside the except block: its traceback would keep the failed step's tensors alive
                if seconds is None:
                    batch //= 2
                    model.zero_grad(set_to_none=True)
                    _free(device)
                    res.log(f"{section}: {variant}: out of memory at batch {out_of_memory[-1]}, "
                            f"retrying at batch {batch}", budget)
            tokens = batch * seq * steps
            d_attn = config["num_attention_heads"] * config["head_dim"]
            per_token = lora_flops_per_token(counts["n_matmul"], counts["n_lora"], config["num_hidden_layers"],
                                             seq, d_attn)
            achieved = per_token * tokens / seconds / 1e12
            ceiling = res.data["meta"].get("matmul_tflops")
            entry = {"name": variant, "status": "ok", "batch": batch, "tokens_per_step": batch * seq,
                     "tokens_per_s": round(tokens / seconds, 1), "seconds_per_step": round(seconds / steps, 3),
                     "tflops": achieved, **counts, "flops_per_token": per_token,
                     "mfu_spec": round(achieved / peak, 4) if peak else None, "spec_peak_tflops": peak,
                     "mfu_measured_ceiling": round(achieved / ceiling, 4) if ceiling else None,
                     "weights_gib": weights, "peak_gib": _peak(device), "out_of_memory_at_batch": out_of_memory,
                     "estimate_gib": memory_estimate(config, batch, seq) if variant == "recipe" else None}
            res.add(section, entry)
            mfu = f"MFU {entry['mfu_spec']:.1%} of {peak:.0f}" if peak else "no spec peak for this device"
            estimate = f" (plan's estimate {entry['estimate_gib']} GiB)" if entry["estimate_gib"] else ""
            res.log(f"{section}: {variant} batch {batch} x {seq}: {entry['tokens_per_s']} tok/s, "
                    f"{achieved:.1f} TFLOP/s ({mfu}), peak {entry['peak_gib']} GiB{estimate}", budget)
        except Exception as exc:  # noqa: BLE001
            _error(res, section, variant, exc)
        finally:
            del model
            _free(device)


def run_e2e(res: Results, budget: Budget, cfg: dict[str, Any], dry_run: bool) -> None:
    """The small experiment in a child process (its own CUDA context, registries and a timeout)."""
    section = "e2e"
    why = budget.refuse(cfg["cost"]["e2e"] * 0.5)
    if why:
        _skip(res, section, why)
        return
    timeout = max(10.0, budget.left() - 5)
    res.log(f"{section}: running the small experiment in a child process (timeout {timeout:.0f} s)", budget)
    with tempfile.TemporaryDirectory(prefix="gpu-e2e-") as work:
        out = Path(work) / "e2e.json"
        # -S passed on (a test hides site-packages that way to play a machine without them)
        cmd = [sys.executable, *(["-S"] if sys.flags.no_site else []), str(BENCH / "_gpu_e2e.py"), work]
        if dry_run:
            cmd.append("--dry-run")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (os.environ.get("PYTHONPATH"), str(REPO / "src"), str(REPO)) if p)}
        if dry_run:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU check, also on a GPU machine
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            _error(res, section, "run", RuntimeError(f"timed out after {timeout:.0f} s"))
            return
        seconds = time.perf_counter() - started
        (res.out / "e2e-child.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stdout + proc.stderr)[-2000:]
            _error(res, section, "run", RuntimeError(f"child exited {proc.returncode}: {tail}"))
            return
        data = json.loads(out.read_text())
    data.update({"name": "pipeline", "status": "ok", "wall_s": round(seconds, 2)})
    res.add(section, data)
    res.log(f"{section}: {len(data['ran'])} stages in {data['run_s']} s ({seconds:.0f} s with start-up); "
            f"CUDA peak {data['cuda_peak_gib']} GiB; stages that used CUDA: {data['cuda_stage_kinds']}", budget)


def _skip(res: Results, section: str, reason: str) -> None:
    sec = res.section(section)
    sec.update({"status": "skipped", "reason": reason})
    res.save()
    res.log(f"{section}: skipped: {reason}")


def _error(res: Results, section: str, what: str, exc: BaseException) -> None:
    message = f"{type(exc).__name__}: {exc}"
    res.add(section, {"name": what, "status": "error", "error": message[:2000],
                      "traceback": traceback.format_exc()[-4000:]})
    res.log(f"{section}: {what} FAILED: {message[:500]}")


# --------------------------------------------------------------------------------------------
# Markdown rows and RESULTS.md
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def write_rows(data: dict[str, Any], out: Path) -> list[list[str]]:
    """The table rows of every measurement so far, also written to ``out/gpu.md``."""
    rows = markdown_rows(data)
    (out / "gpu.md").write_text("\n".join(table_line(r) for r in rows) + "\n")
    return rows


def machine_meta(device: str, wheel_notes: list[str]) -> dict[str, Any]:
    import torch
    import transformers
    from _machine import cpu_model

    meta: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "device": device, "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "cpu": cpu_model(),
        "cores": os.cpu_count(), "wheels": wheel_notes,
    }
    try:
        import peft

        meta["peft"] = peft.__version__
    except ImportError:
        meta["peft"] = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        meta.update({"device_name": props.name, "device_memory_gib": _gib(props.total_memory),
                     "cuda": torch.version.cuda})
        meta["device_label"] = f"{props.name} ({meta['device_memory_gib']:.0f} GiB), {os.cpu_count()} cores"
    else:
        meta["device_name"] = "cpu"
        meta["device_label"] = f"CPU dry run: {os.cpu_count()} cores, {meta['cpu']}"
    meta["versions"] = f"torch {torch.__version__}, transformers {transformers.__version__}, peft {meta['peft']}"
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes (the unit test)")
    parser.add_argument("--budget-s", type=float, default=360.0, help="wall-clock budget of the whole run")
    parser.add_argument("--out", type=Path, default=Path("gpu-out"), help="folder for gpu.json, gpu.md, gpu.log")
    parser.add_argument("--record", type=Path, default=None,
                        help="append the rows to this RESULTS.md under '## gpu' (e.g. bench/RESULTS.md)")
    parser.add_argument("--wheels", type=Path, default=REPO / ".gpu-wheels",
                        help="wheels to unpack when missing here (scripts/gpu-carry.sh)")
    parser.add_argument("--site", type=Path, default=Path("/tmp/gpu-site"))
    parser.add_argument("--only", default=None,
                        help="comma-separated sections to run: matmul,generate,lora,e2e (default: all)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated model shapes for generate and lora (default: {','.join(MODELS)})")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="measure nothing: append the rows of a gpu.json from an earlier run to --record")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        if args.record is None:
            parser.error("--from-json needs --record")
        rows = markdown_rows(json.loads(args.from_json.read_text()))
        record(rows, args.record)
        print(f"recorded {len(rows)} rows of {args.from_json} in {args.record}")
        return 0

    wheel_notes = install_wheels(args.wheels, args.site)  # before torch: typing_extensions

    import torch

    budget = Budget(args.budget_s)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: use --dry-run for the CPU check")
    cfg = settings(args.dry_run)
    args.out.mkdir(parents=True, exist_ok=True)
    res = Results(args.out, machine_meta(cfg["device"], wheel_notes))
    res.data["meta"].update({"dry_run": args.dry_run, "budget_s": args.budget_s})
    res.log(f"gpu bench on {res.data['meta']['device_label']}; {res.data['meta']['versions']}; "
            f"budget {args.budget_s:.0f} s; wheels: {'; '.join(wheel_notes)}", budget)
    if args.dry_run:
        torch.set_num_threads(min(2, os.cpu_count() or 1))

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    only = set(args.only.split(",")) if args.only else {"matmul", "generate", "lora", "e2e"}
    reserve = cfg["e2e_reserve"] if "e2e" in only else 0.0
    plan: list[tuple[str, str, Callable[[], None]]] = [
        ("matmul", "matmul", lambda: run_matmul(res, budget, cfg)),
        ("generate", "generate:smollm2-135m", lambda: run_generate(res, budget, cfg, "smollm2-135m", reserve)),
        ("lora", "lora:smollm2-135m", lambda: run_lora(res, budget, cfg, "smollm2-135m", ["recipe"], reserve)),
        ("generate", "generate:llama-3.1-8b", lambda: run_generate(res, budget, cfg, "llama-3.1-8b", reserve)),
        ("lora", "lora:llama-3.1-8b",
         lambda: run_lora(res, budget, cfg, "llama-3.1-8b", ["recipe", "bf16-base"], reserve)),
        ("e2e", "e2e", lambda: run_e2e(res, budget, cfg, args.dry_run)),
    ]
    try:
        models = set(args.models.split(","))
        for kind, section, run in plan:
            if kind not in only or (":" in section and section.split(":", 1)[1] not in models):
                continue
            started = time.perf_counter()
            try:
                run()
            except Exception as exc:  # noqa: BLE001  a failed section must not lose the others
                _error(res, section, "section", exc)
                res.section(section)["status"] = "error"
            _free(cfg["device"])  # after the except block, whose traceback holds the section's tensors
            res.section(section)["seconds"] = round(time.perf_counter() - started, 2)
            res.save()
            write_rows(res.data, args.out)  # kept current: a run killed later still leaves its rows
    except KeyboardInterrupt as exc:
        res.log(f"interrupted ({exc}): writing what was measured", budget)
        res.data["meta"]["interrupted"] = str(exc)
    finally:
        res.data["meta"]["total_s"] = round(budget.elapsed(), 1)
        res.save()
        rows = write_rows(res.data, args.out)
        if args.record is not None:
            if args.record.resolve() != (BENCH / "RESULTS.md").resolve() and not args.record.exists():
                source = BENCH / "RESULTS.md"  # start from the repository's file: copy it back whole
                if source.exists():
                    args.record.write_text(source.read_text())
            record(rows, args.record)
            res.log(f"recorded {len(rows)} rows in {args.record}", budget)
        res.log(f"done in {budget.elapsed():.0f} s; results in {args.out}/gpu.json", budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
