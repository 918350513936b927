"""bench/loop.py, the collapse-loop metrics benchmark: its naive baselines against hand
computations, and the whole bench at its tiny size — every fast answer equal to the baseline's,
the expected rows, its JSON and its RESULTS.md section (put before ``## gpu``, which stays last)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import bench_module

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
METRICS = ["verbatim_ngrams[n=8]", "verbatim_ngrams[n=13]", "longest_copy[min_words=40]",
           "nearest_neighbor_distance[threshold=0.1]", "distinct_at_k[threshold=0.9]", "within_prompt_distance",
           "expected_distinct[mode=replace]", "expected_distinct[mode=accumulate]", "signed_rank_test (stats stage)"]


@pytest.fixture(scope="module")
def bench():
    """bench/loop.py as a module (:func:`tests.helpers.bench_module`)."""
    yield from bench_module("loop")


def test_naive_baselines_match_hand_computations(bench):
    training = [" a b c d e ", " x y z "]
    # 2-grams of "a b x y q": ab (hit), bx (no), xy (hit), yq (no); a text shorter than n: NaN
    shares = bench.naive_verbatim_shares([["a", "b", "x", "y", "q"], ["a"]], training, 2)
    assert shares[0] == 0.5 and np.isnan(shares[1])
    assert bench.naive_verbatim_shares([["b", "c", "d"]], [" ab c d "], 3) == [0.0]  # whole words only
    assert bench.longest_common_substring("x a b c y".split(), "a b c z a b".split()) == 3
    assert bench.longest_common_substring([], ["a"]) == 0
    assert bench.naive_longest_copy([["a", "b", "z"]], [["q", "a"], ["a", "b"]]) == [2]
    e = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 2.0]])  # rows 0 and 1 alike, row 2 orthogonal
    assert bench.naive_distinct_at_k([e], 0.9) == [2.0]
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = unit @ unit.T
    expected = float(np.sum(1 - sim[~np.eye(3, dtype=bool)]) / 6)
    assert bench.naive_within_prompt_distance([e]) == [pytest.approx(expected, abs=1e-15)]
    sim = bench.simulate_distinct(np.array([1.0]), 4, 3, "replace", 5, seed=0)
    assert sim.shape == (5, 3) and np.all(sim == 1)


def test_record_puts_a_new_section_before_gpu_then_appends(bench, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# B\n\n## metrics\n\n| m |\n|---|\n| 1 |\n\n## gpu\n\nabout\n\n| g |\n|---|\n| 2 |\n")
    bench.record(path, ["| r1 |"])
    bench.record(path, ["| r2 |", "| r3 |"])
    text = path.read_text()
    assert text.count("## loop") == 1
    assert text.index("## metrics") < text.index("## loop") < text.index("## gpu")
    assert text.rstrip("\n").endswith("| 2 |")  # gpu stays last, untouched
    loop = text.split("## loop", 1)[1].split("## gpu", 1)[0].splitlines()
    assert [ln for ln in loop if ln.startswith("| r")] == ["| r1 |", "| r2 |", "| r3 |"]


def test_tiny_run_agrees_with_the_baselines_and_records_its_rows(bench, tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    original = (BENCH / "RESULTS.md").read_text()
    results.write_text(original)
    out = tmp_path / "loop.json"
    assert bench.main(["--tiny", "--out", str(out), "--record", str(results)]) == 0
    printed = capsys.readouterr().out
    assert "DISAGREE" not in printed and "total" in printed

    data = json.loads(out.read_text())
    assert data["settings"]["tiny"] is True and data["machine"].endswith(bench.cpu_model())
    rows = {r["metric"]: r for r in data["results"]}
    assert list(rows) == METRICS
    for name, r in rows.items():
        assert r["ok"], f"{name}: {r['agreement']}"
        assert r["fast_s"] > 0 and r["baseline_s"] > 0, name
    for name in METRICS[:3]:  # memorization: exact agreement, naive side scaled up from a subset
        assert rows[name]["max_abs_diff"] == 0 and rows[name]["extrapolated"]
        assert rows[name]["baseline_s"] > rows[name]["measured_s"]
    assert rows[METRICS[3]]["max_abs_diff"] <= bench.NN_ATOL and not rows[METRICS[3]]["extrapolated"]
    assert rows[METRICS[4]]["max_abs_diff"] == 0 and rows[METRICS[5]]["max_abs_diff"] <= bench.WP_ATOL
    for name in METRICS[6:8]:  # 4 ground-truth seeds / 0.1² replicates, agreement within 4 se
        assert rows[name]["replicates"] == 400 and rows[name]["max_z"] <= bench.AGREE_Z
        assert "400 replicates" in rows[name]["baseline"]

    text = results.read_text()
    before, after = original.split("\n## gpu\n", 1)
    head = before.split("\n## loop\n", 1)[0]
    assert text.startswith(head.rstrip("\n")) and text.endswith("\n## gpu\n" + after)  # other sections untouched
    section = text.split("\n## loop\n", 1)[1].split("\n## ", 1)[0]  # up to the next section
    table = [ln for ln in section.splitlines() if ln.startswith("| ")]
    header, new_rows = table[0], table[-len(METRICS):]
    assert header == "| " + " | ".join(name for name, _ in bench.COLUMNS) + " |"
    if "\n## loop\n" in original:  # recorded rows stay; the new ones follow them
        assert [ln for ln in text.splitlines() if ln not in new_rows] == original.splitlines()
    else:
        assert len(table) == 1 + len(METRICS)
    assert [ln.split(" | ")[3] for ln in new_rows] == METRICS
    assert all(ln.count(" | ") == len(bench.COLUMNS) - 1 for ln in new_rows)
    assert all(ln.split(" | ")[8].endswith("x") for ln in new_rows)  # the ratio column
    assert sum("(extrapolated)" in ln for ln in new_rows) == 3
    assert not any("DISAGREE" in ln for ln in new_rows)
