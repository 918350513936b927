"""The ``## gpu`` section of bench/RESULTS.md: one table row per measurement of bench/gpu.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SECTION = "## gpu"


COLUMNS = ["date", "device", "versions", "model", "measurement", "settings", "result", "baseline",
           "ratio", "peak GiB", "notes"]


SECTION_HEADER = """## gpu

`python bench/gpu.py` — speed and batch invariance on a GPU at the study's model shapes, with
random-init weights built from the configurations of SmolLM2-135M and Llama-3.1-8B (bf16; no
weights needed to measure speed) and a synthetic word-level tokenizer of the model's vocabulary
size. **generate**: tokens/s of `HFModel.generate` (collapselab's batched, left-padded, per-prompt
seeded sampling) at batch 1, 32 and 128 (one batch, ~100-128-token prompts, 64 new tokens, T 0.7,
top-p 0.9) against transformers `model.generate(do_sample=True)` one prompt at a time, same model
(the baseline of `## generate`); "alone = batched" counts prompts whose text sampled alone equals
the text they got in the batch. The final norm is scaled so the next-token entropy is ~2 nats (a
trained model's order; flat random logits would hide batch effects). **lora**: tokens/s of the
`train_lora` step (r 16, α 32, dropout 0.1, 7 projections; float32 base weights under bf16
autocast as the recipe loads them, or bf16 base weights; AdamW, clipping) on full 1,024-token
sequences, warm-up excluded; MFU counts 4·N + 6·N_lora + 12·L·s·d_attn FLOPs per token (frozen
base: activation gradients only; N = weights in matrix products) against the spec sheet's dense
bf16 peak (H200: 989 TFLOP/s) and the matmul ceiling measured in the same run. **e2e**: the unit
tests' small experiment run by the local executor on CUDA. Peak GiB: `torch.cuda.max_memory_allocated`.
Device run: `bash scripts/gpu-carry.sh` here (the wheels the device lacks, ~6 MB), then on the
device with carry `[".gpu-wheels"]`: `python3 bench/gpu.py --out $OUT --record $OUT/RESULTS.md`,
then here `python bench/gpu.py --from-json <returned>/gpu.json --record bench/RESULTS.md`.
`--dry-run` runs the same code on CPU with tiny shapes (the unit test).

"""


SECTION_HEADER += "| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|\n"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _sig(value: float) -> str:
    """Three significant digits (the dry run's figures are tiny)."""
    return f"{value:.3g}"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def markdown_rows(data: dict[str, Any]) -> list[list[str]]:
    """One table row per measurement (and per skipped or failed section)."""
    meta = data["meta"]
    head = [meta["date"], meta["device_label"], meta["versions"]]
    rows = []
    for name, sec in data["sections"].items():
        model = sec.get("model", "-")
        if sec.get("status") == "skipped" and not sec["measurements"]:
            rows.append(head + [model, name, "-", f"skipped: {sec['reason']}", "-", "-", "-", ""])
            continue
        for m in sec["measurements"]:
            rows.append(head + [model, f"{name} {m['name']}"] + _row_cells(name, sec, m))
    return rows


def _row_cells(section: str, sec: dict[str, Any], m: dict[str, Any]) -> list[str]:
    """settings, result, baseline, ratio, peak GiB, notes of one measurement."""
    if m["status"] != "ok":
        reason = m.get("reason") or m.get("error", "")
        return ["-", f"{m['status']}: {reason[:300]}".replace("|", "/").replace("\n", " "), "-", "-", "-", ""]
    peak = _fmt(m.get("peak_gib"), 2)
    if section == "matmul":
        return [f"{m['reps']} products", f"{_sig(m['tflops'])} TFLOP/s", "-", "-", "-", "measured ceiling for MFU"]
    if section.startswith("generate:"):
        d = sec["decoding"]
        settings_ = (f"{sec['prompt_tokens'][0]}-{sec['prompt_tokens'][1]}-token prompts, {d['max_new_tokens']} new, "
                     f"T {d['temperature']} top-p {d['top_p']}")
        if m["name"].startswith("batch"):
            naive = sec.get("naive_tokens_per_s")
            ratio = f"{m['tokens_per_s'] / naive:.2f}x" if naive else "-"
            notes = (f"{m['ms_per_step']} ms/step, sampler {m['sampler_ms_per_step']} ms/step "
                     f"({m['sampler_share']:.0%}); {m['stopped']} stopped early")
            if "weight_read_gb_per_s" in m:
                notes += f"; weights read {m['weight_read_gb_per_s']} GB/s"
            if m["batch"] == 1:
                notes += "; logit scale " + str(sec["logit_calibration"]["scale"])
            return [f"batch {m['batch']}, {settings_}", f"{m['tokens_per_s']} tok/s",
                    f"naive {_fmt(naive)} tok/s", ratio, peak, notes]
        if m["name"] == "naive baseline":
            return [f"{m['prompts']} prompts one at a time, {settings_}", f"{m['tokens_per_s']} tok/s", "-", "-",
                    "-", "transformers generate(do_sample=True, top_k=0)"]
        result = "; ".join(f"{k}: {v['same']}/{v['of']}" for k, v in m["compare"].items())
        firsts = "; ".join(f"{k}: {v['first_difference_at_token']}" for k, v in m["compare"].items()
                           if v["same"] < v["of"])
        return [settings_, f"alone = batched: {result}", "-", "-", "-",
                f"first differing token: {firsts}" if firsts else "all equal"]
    if section.startswith("lora:"):
        mfu = f"MFU {m['mfu_spec']:.1%} of {m['spec_peak_tflops']:.0f}" if m.get("mfu_spec") else "MFU -"
        ceiling = f", {m['mfu_measured_ceiling']:.1%} of measured" if m.get("mfu_measured_ceiling") else ""
        base = "float32 base + bf16 autocast (train_lora)" if m["name"] == "recipe" else "bf16 base + autocast"
        oom = f"; out of memory at batch {m['out_of_memory_at_batch']}" if m.get("out_of_memory_at_batch") else ""
        return [f"{base}, batch {m['batch']} x {sec['seq']}, r 16",
                f"{m['tokens_per_s']} tok/s, {_sig(m['tflops'])} TFLOP/s", "-", f"{mfu}{ceiling}", peak,
                f"{_count(m['n_matmul'])} matmul weights, {_count(m['n_lora'])} LoRA; weights "
                f"{_fmt(m.get('weights_gib'), 2)} GiB; {sec['steps_timed']} steps timed{oom}"
                + (f"; plan's memory estimate {_fmt(m['estimate_gib'], 2)} GiB" if m.get("estimate_gib") else "")]
    if section == "e2e":
        return [f"small experiment, {m['device']}, target {m['target_dtype']}",
                f"{len(m['ran'])} stages in {m['run_s']} s", "-", "-", _fmt(m.get("cuda_peak_gib"), 3),
                f"stage kinds on CUDA: {', '.join(m['cuda_stage_kinds']) or 'none'}; wall {m['wall_s']} s"]
    return ["-", json.dumps({k: v for k, v in m.items() if k != "name"})[:200], "-", "-", peak, ""]


def table_line(row: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "/") for cell in row) + " |"


def record(rows: list[list[str]], path: Path) -> None:
    """Append ``rows`` at the end of the ``## gpu`` table of ``path`` (section made if missing)."""
    import importlib.util

    # by path: the tests import this module without bench/ on sys.path
    spec = importlib.util.spec_from_file_location("_bench_machine", Path(__file__).with_name("_machine.py"))
    machine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(machine)
    machine.append_table_rows(path, SECTION, SECTION_HEADER, [table_line(r) for r in rows])
