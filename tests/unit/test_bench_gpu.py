"""bench/gpu.py, the GPU checks, known to work before a GPU is available: ``--dry-run`` runs every
section on CPU with tiny shapes; the FLOPs formula is checked against torch's FlopCounterMode; the
model configurations against the published parameter counts; the wheel unpacking and the
RESULTS.md rows on their own."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
SECTIONS = ["matmul", "generate:smollm2-135m", "lora:smollm2-135m", "generate:llama-3.1-8b",
            "lora:llama-3.1-8b", "e2e"]


def _bench_module(name: str):
    """Import bench/<name>.py without putting bench/ on sys.path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


models = _bench_module("_gpu_models")
table = _bench_module("_gpu_table")
wheels = _bench_module("_gpu_wheels")


def _run_bench(tmp_path: Path, *args: str, timeout: int = 240) -> dict:
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu.py"), "--dry-run", "--out", str(out),
         "--wheels", str(tmp_path / "no-wheels"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu.json").read_text())


def _positive(value) -> bool:
    return isinstance(value, int | float) and value > 0


def _check_measured(data: dict, names: list[str]) -> None:
    """Every named section ran, and every one of its measurements has its numbers."""
    for name in names:
        sec = data["sections"][name]
        assert sec["status"] == "ok", (name, sec)
        assert sec["measurements"], name
        for m in sec["measurements"]:
            assert m["status"] == "ok", (name, m)
        if name.startswith("generate:"):
            batches = [m for m in sec["measurements"] if m["name"].startswith("batch")]
            assert [m["batch"] for m in batches] == [1, 4, 8]
            assert all(_positive(m["tokens_per_s"]) and _positive(m["sampler_ms_per_step"]) for m in batches)
            assert _positive(sec["naive_tokens_per_s"])
            assert abs(sec["logit_calibration"]["entropy_after"] - models.TARGET_ENTROPY) < 0.05
            alone = next(m for m in sec["measurements"] if m["name"] == "alone = batched")
            # on CPU collapselab's sampling is batch-invariant: every text must match
            assert all(v["same"] == v["of"] for v in alone["compare"].values()), alone
        if name.startswith("lora:"):
            for m in sec["measurements"]:
                assert _positive(m["tokens_per_s"]) and _positive(m["flops_per_token"])
                assert m["n_lora"] > 0 and m["n_matmul"] > m["n_lora"]
                assert _positive(m["mfu_measured_ceiling"])
                # the plan's memory estimate sits next to the measured peak (CPU: no peak to compare)
                assert _positive(m["estimate_gib"]) if m["name"] == "recipe" else m["estimate_gib"] is None


def test_dry_run_measures_generation_and_training(tmp_path):
    """The GPU script's measuring code runs on CPU: one model shape, no e2e child (the slow test
    below runs everything)."""
    data = _run_bench(tmp_path, "--only", "matmul,generate,lora", "--models", "smollm2-135m")
    assert list(data["sections"]) == SECTIONS[:3]
    _check_measured(data, SECTIONS[:3])
    assert (tmp_path / "out" / "gpu.md").read_text().count("\n") == sum(
        len(s["measurements"]) for s in data["sections"].values())


@pytest.mark.slow
def test_dry_run_every_section_and_record(tmp_path):
    """All sections, the pipeline child process included, and --record on a copy of RESULTS.md."""
    results = tmp_path / "RESULTS.md"
    original = (BENCH / "RESULTS.md").read_text()
    results.write_text(original)
    data = _run_bench(tmp_path, "--record", str(results))
    assert list(data["sections"]) == SECTIONS
    _check_measured(data, SECTIONS)
    assert [m["name"] for m in data["sections"]["lora:llama-3.1-8b"]["measurements"]] == ["recipe", "bf16-base"]
    e2e = data["sections"]["e2e"]["measurements"][0]
    assert len(e2e["ran"]) >= 20 and e2e["device"] == "cpu"
    assert len(e2e["train_summaries"]) == 2  # human and single:a trained a LoRA adapter
    assert {s["kind"] for s in e2e["stages"]} >= {"train", "generate"}
    text = results.read_text()
    assert text.startswith(original.rstrip("\n"))  # the other sections are untouched
    def section_rows(markdown: str) -> list[str]:
        parts = markdown.split(table.SECTION, 1)
        return [ln for ln in parts[1].splitlines() if ln.startswith("| 20")] if len(parts) == 2 else []

    rows = section_rows(text)[len(section_rows(original)):]  # rows recorded earlier (a GPU run) stay
    assert len(rows) == sum(len(s["measurements"]) for s in data["sections"].values())
    assert all(ln.count(" | ") == len(table.COLUMNS) - 1 for ln in rows)
    # the same rows again from the JSON alone (how the device's results come home)
    again = tmp_path / "again.md"
    again.write_text(original)
    subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--from-json", str(tmp_path / "out" / "gpu.json"),
                    "--record", str(again)], check=True, capture_output=True, timeout=60)
    assert again.read_text() == text


def test_exhausted_budget_records_a_reason_for_every_section(tmp_path):
    data = _run_bench(tmp_path, "--budget-s", "0")
    assert list(data["sections"]) == SECTIONS
    for name, sec in data["sections"].items():
        reasons = [sec.get("reason")] + [m.get("reason") for m in sec["measurements"]]
        assert sec["status"] == "skipped" or all(m["status"] == "skipped" for m in sec["measurements"]), name
        assert any(r and r.startswith("budget:") for r in reasons), name
    md = (tmp_path / "out" / "gpu.md").read_text()
    assert md.count("skipped: budget") >= len(SECTIONS)


def test_configs_have_the_published_parameter_counts():
    """SmolLM2-135M: 134,515,008 parameters; Llama-3.1-8B: 8,030,261,248 (their hub model cards'
    safetensors totals), built on the meta device (no memory)."""
    import torch

    small = models.build_model(models.SMOLLM2_135M, torch.bfloat16, "meta")
    large = models.build_model(models.LLAMA_31_8B, torch.bfloat16, "meta")
    assert sum(p.numel() for p in small.parameters()) == 134_515_008
    assert sum(p.numel() for p in large.parameters()) == 8_030_261_248
    assert large.config.rope_parameters["rope_type"] == "llama3"
    assert large.config.rope_parameters["rope_theta"] == 500000.0
    # the LM head is a matrix product; the untied 8B's embedding lookup is not
    assert models.matmul_weights(large) == 8_030_261_248 - 128256 * 4096 - 4096 * 65


def test_lora_flops_formula_matches_flop_counter():
    """4·N + 6·N_lora + 12·L·s·d_attn per token against torch's FlopCounterMode on a real LoRA step
    (eager attention, so every product is a counted matmul). The formula counts the input
    gradients of layer 0's q/k/v (base and LoRA A), which autograd skips (their input is the
    frozen embedding): the difference must be exactly those."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    config = models.tiny_config(models.LLAMA_31_8B, 64, 256)
    model, counts = models.lora_model(config, torch.float32, "cpu")
    model.train()
    batch, seq = 2, 40
    ids = torch.randint(7, 256, (batch, seq), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=ids, use_cache=False).logits
        torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1)).backward()
    measured = counter.get_total_flops()
    d_attn = config["num_attention_heads"] * config["head_dim"]
    formula = models.lora_flops_per_token(counts["n_matmul"], counts["n_lora"], config["num_hidden_layers"],
                                          seq, d_attn) * batch * seq
    attn = model.base_model.model.model.layers[0].self_attn
    skipped = batch * seq * sum(2 * getattr(attn, p).base_layer.weight.numel()
                                + 2 * getattr(attn, p).lora_A["default"].weight.numel()
                                for p in ("q_proj", "k_proj", "v_proj"))
    assert formula - skipped == measured


def test_synthetic_tokenizer_round_trips_every_id():
    from collapselab.models.base import ChatPrompt
    from collapselab.models.formatting import render_prompt_ids, stop_token_ids

    tok = models.synthetic_tokenizer(300)
    assert len(tok) == 300
    ids = list(range(7, 300))
    assert tok.decode(ids).split() == [f"t{i}" for i in ids]
    assert render_prompt_ids(tok, ChatPrompt("p", "t10 t11"), True) == [1, 5, 10, 11, 2, 1, 6]
    assert stop_token_ids(tok, True, None) == [2]


def test_calibration_sets_the_next_token_entropy():
    """After scaling the final norm, a fresh forward pass has the target entropy at T 0.7."""
    import torch

    config = models.tiny_config(models.SMOLLM2_135M, 48, 320)
    model = models.build_model(config, torch.float32, "cpu")
    rows = [[1, 5, *range(10 + i, 30 + i), 2, 1, 6] for i in range(4)]
    found = models.calibrate_logit_scale(model, rows, 0.7, "cpu")
    assert found["entropy_before"] > 4 and found["scale"] > 1
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(rows)).logits[:, -1] / 0.7
    logp = torch.log_softmax(logits, dim=-1)
    entropy = float(-(logp.exp() * logp).sum(-1).mean())
    assert entropy == pytest.approx(models.TARGET_ENTROPY, abs=1e-3)


def _wheel(folder: Path, filename: str, module: str) -> Path:
    path = folder / filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{module}/__init__.py", "VALUE = 1\n")
        dist, version = filename.split("-")[:2]
        archive.writestr(f"{dist}-{version}.dist-info/METADATA", f"Name: {dist}\nVersion: {version}\n")
    return path


def test_install_wheels_unpacks_only_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder, "cl_absent_dist-1.0-py3-none-any.whl", "cl_absent_dist")
    _wheel(folder, "PyYAML-0.1-py3-none-any.whl", "yaml_stub")  # installed here: left alone
    _wheel(folder, "typing_extensions-999.0-py3-none-any.whl", "te_stub")  # newer: unpacked over
    this = f"cp{sys.version_info.major}{sys.version_info.minor}"
    _wheel(folder, "cl_compiled-1.0-cp27-cp27-manylinux2014_x86_64.whl", "cl_compiled")
    site = tmp_path / "site"
    notes = wheels.install_wheels(folder, site)
    assert (site / "cl_absent_dist" / "__init__.py").is_file()
    assert (site / "te_stub").is_dir()
    assert not (site / "yaml_stub").exists() and not (site / "cl_compiled").exists()
    assert sys.path[0] == str(site) and os.environ["PYTHONPATH"] == str(site)
    assert any("built for cp27, this is " + this in n for n in notes)
    assert "cl_absent_dist 1.0" in notes[-1] and "typing_extensions 999.0 (over " in notes[-1]


def test_install_wheels_without_a_folder_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = list(sys.path)
    notes = wheels.install_wheels(tmp_path / "missing", tmp_path / "site")
    assert notes == [f"no {tmp_path / 'missing'}: nothing unpacked"]
    assert sys.path == before


def test_record_makes_the_section_once_then_appends(tmp_path):
    path = tmp_path / "RESULTS.md"
    original = "# Benchmark results\n\n## generate\n\ntext\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    path.write_text(original)
    row = ["2026-01-01", "dev", "v", "m", "x", "s", "r", "-", "-", "-", "n"]
    table.record([row], path)
    table.record([[c.replace("r", "r2") for c in row], row], path)
    text = path.read_text()
    assert text.startswith(original.rstrip("\n") + "\n\n## gpu\n")
    assert text.count("## gpu") == 1
    gpu = text.split("## gpu", 1)[1].splitlines()
    header = "| " + " | ".join(table.COLUMNS) + " |"
    assert gpu[gpu.index(header) + 1] == "|---" * len(table.COLUMNS) + "|"
    rows = gpu[gpu.index(header) + 2:]
    assert rows == [table.table_line(row), table.table_line([c.replace("r", "r2") for c in row]),
                    table.table_line(row)]


def test_record_inserts_before_the_next_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    header = "| " + " | ".join(table.COLUMNS) + " |\n" + "|---" * len(table.COLUMNS) + "|\n"
    path.write_text(f"# B\n\n## gpu\n\nabout\n\n{header}| old |\n\n## ray\n\n| r |\n")
    table.record([["new|cell"] + ["x"] * (len(table.COLUMNS) - 1)], path)
    lines = path.read_text().splitlines()
    assert lines[lines.index("| old |") + 1].startswith("| new/cell | x")  # a '|' in a cell is escaped
    assert lines[-1] == "| r |"
