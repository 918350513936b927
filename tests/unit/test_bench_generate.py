"""bench/generate.py, the generation benchmark: its token counting, where it records rows, and a
smoke run on the tiny model with both baselines (naive loop and transformers' batched sampling)."""

from __future__ import annotations

import math

import pytest
import torch

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.models.base import load_model
from tests.helpers import bench_module

OLD_SECTION = """# Benchmark results

## generate

Intro.

| date | machine | versions | settings | batched tok/s | naive tok/s | ratio | notes |
|---|---|---|---|---|---|---|---|
| 2026-11-25 | 2 cores | torch | smollm2 | 165.0 | 17.2 | 9.60x | alone = batched: 4/4 |

## metrics

| metric | fast s |
|---|---:|
| x | 1 |
"""


@pytest.fixture(scope="module")
def bench():
    """bench/generate.py as a module (:func:`tests.helpers.bench_module`)."""
    yield from bench_module("generate")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _section_rows(text: str) -> list[str]:
    section = text.split("## generate")[1].split("\n## ")[0]
    return [ln for ln in section.splitlines() if ln.startswith("|")]


def test_count_new_stops_after_the_first_end_token(bench):
    assert bench.count_new([5, 7, 2, 0, 0], {2}) == 3  # end token counted, padding after it not
    assert bench.count_new([5, 2, 2, 2], {2, 9}) == 2
    assert bench.count_new([5, 7, 8], {2}) == 3  # hit the length limit
    assert bench.count_new([], {2}) == 0


def test_baselines_option_parses_and_rejects(bench):
    assert bench._parse_baselines("batched") == ("batched",)
    assert bench._parse_baselines("naive, batched,naive") == ("naive", "batched")
    with pytest.raises(Exception, match="unknown baseline"):
        bench._parse_baselines("naive,vllm")


def test_record_opens_a_new_table_under_an_older_header_then_appends(bench, tmp_path, monkeypatch):
    results = tmp_path / "RESULTS.md"
    results.write_text(OLD_SECTION)
    monkeypatch.setattr(bench, "RESULTS", results)
    columns = bench.HEADER.count("|") - 1
    bench.record([f"a{i}" for i in range(columns)])
    bench.record([f"b{i}" for i in range(columns)])
    text = results.read_text()
    rows = _section_rows(text)
    assert rows[:3] == OLD_SECTION.split("Intro.\n\n")[1].split("\n\n")[0].splitlines()  # old table as it was
    assert rows[3] == bench.HEADER and rows[4].count("---") == columns
    assert rows[5].startswith("| a0 |") and rows[6].startswith("| b0 |") and len(rows) == 7
    assert all(r.count("|") == columns + 1 for r in rows[3:])
    assert "| 2026-11-25 |" in text.split("\n\n" + bench.HEADER)[0]  # a blank line between the tables
    assert text.index("| b0 |") < text.index("## metrics") and "| x | 1 |" in text


def test_batched_baseline_counts_like_the_model(bench, tiny_model_dir, one_thread, monkeypatch):
    model = load_model(ModelSpec(id=f"hf/{tiny_model_dir}", dtype="float32", batch_size=4))
    prompts = bench.bench_prompts(6)  # a batch of 4, then one of 2 (filled up to 4 rows)
    decoding = DecodingSpec(temperature=0.7, top_p=0.9, max_new_tokens=6, seed=3)
    tokens = bench.batched_generate(model, prompts, decoding, 4)
    assert 6 <= tokens <= 6 * 6
    assert tokens == bench.batched_generate(model, prompts, decoding, 4)  # seeded
    # The random model never writes its end token: make the third token greedy decoding gives the
    # first prompt an end token too, so some rows stop early and are padded after their end.
    ids = torch.tensor([bench.render_prompt_ids(model.tokenizer, prompts[0], model.is_chat)])
    with torch.inference_mode():
        out = model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=3, eos_token_id=model.stop_ids, pad_token_id=model.pad_id)
    monkeypatch.setattr(model, "stop_ids", [*model.stop_ids, int(out[0, -1])])
    # near-greedy decoding (a tiny temperature): the same tokens as HFModel.generate, so the same count
    cold = DecodingSpec(temperature=1e-4, top_p=1.0, max_new_tokens=6, seed=3)
    gens = model.generate(prompts, cold)
    assert gens[0].finish_reason == "stop" and gens[0].new_tokens <= 3
    assert bench.batched_generate(model, prompts, cold, 4) == sum(g.new_tokens for g in gens) < 6 * 6


def test_main_smoke_on_the_tiny_model_records_both_baselines(bench, tiny_model_dir, tmp_path, monkeypatch, capsys,
                                                             one_thread):
    results = tmp_path / "RESULTS.md"
    results.write_text(OLD_SECTION)
    monkeypatch.setattr(bench, "RESULTS", results)
    argv = ["--model", f"hf/{tiny_model_dir}", "--dtype", "float32", "--prompts", "6", "--batch-size", "4",
            "--max-new-tokens", "6", "--invariance-prompts", "2", "--threads", "1"]
    bench.main(argv)
    printed = capsys.readouterr().out
    assert "transformers batched model.generate (batch 4" in printed and "ours / batched" in printed
    assert "ours / naive" in printed and "prompts sampled alone" in printed
    row = _section_rows(results.read_text())[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = [c.strip() for c in bench.HEADER.strip("|").split("|")]
    assert len(cells) == len(header)
    got = dict(zip(header, cells, strict=True))
    for column in ("ours tok/s", "naive tok/s", "ours / naive", "transformers batched tok/s", "ours / batched"):
        value = float(got[column].removesuffix("x"))
        assert math.isfinite(value) and value > 0, (column, got[column])
    assert got["notes"].startswith("alone = batched: ") and "/2" in got["notes"]

    # --baselines batched leaves the naive columns empty; --no-record writes nothing
    bench.main([*argv, "--baselines", "batched", "--invariance-prompts", "0"])
    got = dict(zip(header, [c.strip() for c in _section_rows(results.read_text())[-1].strip("|").split("|")],
                   strict=True))
    assert got["naive tok/s"] == got["ours / naive"] == "-" and float(got["transformers batched tok/s"]) > 0
    before = results.read_text()
    bench.main([*argv, "--no-record"])
    assert results.read_text() == before
