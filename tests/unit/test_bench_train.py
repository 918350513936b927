"""bench/train.py, the LoRA training benchmark (ours, ours with full logits, peft + transformers
``Trainer``): its quick run on the tiny random-init model — every side trains on the same tokens in
the same steps, the two collapselab paths give the same losses and the Trainer nearly so — and its
RESULTS.md section (put before ``## gpu``, which stays last)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import bench_module

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


@pytest.fixture(scope="module")
def bench():
    """bench/train.py as a module (:func:`tests.helpers.bench_module`)."""
    yield from bench_module("train")


def test_record_only_where_asked(bench):
    assert bench.parse_args([]).record == BENCH / "RESULTS.md"  # a full run records by default
    assert bench.parse_args(["--quick"]).record is None  # a smoke run does not
    assert bench.parse_args(["--no-record"]).record is None
    assert bench.parse_args(["--quick", "--record", "x.md"]).record == Path("x.md")
    args = bench.parse_args(["--quick"])
    assert (args.model, args.examples, args.batch_size, args.threads, args.warmup) == ("tiny", 16, 4, 1, 8)


def test_record_puts_a_new_section_before_gpu_then_appends(bench, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# B\n\n## loop\n\n| m |\n|---|\n| 1 |\n\n## gpu\n\nabout\n\n| g |\n|---|\n| 2 |\n")
    bench.record(path, ["| r1 |"])
    bench.record(path, ["| r2 |"])
    text = path.read_text()
    assert text.count("## train") == 1
    assert text.index("## loop") < text.index("## train") < text.index("## gpu")
    assert text.rstrip("\n").endswith("| 2 |")  # gpu stays last, untouched
    section = text.split("## train", 1)[1].split("## gpu", 1)[0].splitlines()
    assert [ln for ln in section if ln.startswith("| r")] == ["| r1 |", "| r2 |"]


def test_quick_run_trains_every_side_on_the_same_tokens(bench, tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "train.json"
    try:
        assert bench.main(["--quick", "--no-record", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "ours / Trainer" in printed and "'loss'" not in printed  # the Trainer's own log lines are off

    summary = json.loads(out.read_text())
    assert summary["ok"] and summary["settings"]["model"] == "tiny" and summary["steps"] == 4  # 16 examples / 4
    assert summary["machine"].endswith(bench.cpu_model())
    tokens, steps = summary["tokens"], summary["steps"]
    assert tokens == sum(summary["step_tokens"]) and 0.3 < summary["prompt_share"] < 0.7
    for side in bench.SIDES:
        r = summary["results"][side]
        assert r["tokens"] == tokens and len(r["losses"]) == len(r["step_ends"]) == steps, side
        assert r["tok_s"] > 0 and r["seconds"] > 0 and r["threads"] == 1, side
    # the kept-logits path computes the loss of the full-logits one (bf16: equal to rounding); the
    # Trainer, same micro-batches and settings, differs by its dropout masks only (the LoRA B matrices
    # start at zero, and at lr 5e-5 stay small, so dropout barely moves the loss)
    assert summary["diff_full"] <= 1e-3 and summary["diff_trainer"] <= 1e-3
    assert summary["ratio_trainer"] == pytest.approx(
        summary["results"]["ours"]["tok_s"] / summary["results"]["trainer"]["tok_s"])

    # its row, recorded into a copy of RESULTS.md: a new ## train section before ## gpu
    results = tmp_path / "RESULTS.md"
    original = (BENCH / "RESULTS.md").read_text()
    results.write_text(original)
    bench.record(results, [bench.table_row(summary)])
    text = results.read_text()
    before, after = original.split("\n## gpu\n", 1)
    assert text.startswith(before.split("\n## train\n", 1)[0]) and text.endswith("\n## gpu\n" + after)
    section = text.split("## train", 1)[1].split("## gpu", 1)[0]
    table = [ln for ln in section.splitlines() if ln.startswith("| ")]
    assert table[0] == "| " + " | ".join(name for name, _ in bench.COLUMNS) + " |"
    row = table[-1]
    assert row.count(" | ") == len(bench.COLUMNS) - 1
    assert f"tiny, 16 {summary['settings']['data']} examples" in row
    assert row.split(" | ")[7].endswith("x") and row.split(" | ")[8].endswith("x")
