"""bench/judges.py, the judge benchmark, on the mock backend and the tiny model: which runs it
plans, the figures it reports against a hand computation, its JSON and its RESULTS.md rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from collapselab.judges.calibration import UNPARSED, CalibrationItem, cohen_kappa, load_calibration
from collapselab.judges.run import Judgement
from tests.helpers import bench_module

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


@pytest.fixture(scope="module")
def bench():
    """bench/judges.py as a module (:func:`tests.helpers.bench_module`)."""
    yield from bench_module("judges")


def _item(k: int, harm: int, quality: int, kind: str = "harmful") -> CalibrationItem:
    return CalibrationItem(f"c{k}", kind, f"Request {k}: how?", f"Answer {k}.", harm, quality, harm == 1)


def test_plan_reads_out_every_role_and_parses_only_on_the_parse_models(bench):
    runs = bench.plan_runs(["m/a", "m/b"], ["harm", "quality"], ["m/b"], ["packaged", "demo"])
    assert [(r.model, r.judge, r.template_label) for r in runs] == [
        ("m/a", "harm-rating", "packaged"), ("m/a", "quality-rating", "packaged"),
        ("m/b", "harm-rating", "packaged"), ("m/b", "quality-rating", "packaged"),
        ("m/b", "harm", "packaged"), ("m/b", "quality", "packaged"),
        ("m/b", "harm", "demo brief"), ("m/b", "quality", "demo brief")]
    assert all(Path(r.template).is_file() for r in runs if r.template)  # the demo's brief templates exist
    assert [r.judge for r in bench.plan_runs(["m/a"], ["quality"], [], ["packaged"])] == ["quality-rating"]


def test_evaluate_matches_a_hand_computation(bench):
    # labels (harm >= 4): T T F F F T; scores cut at 3.5: T F F T None F
    items = [_item(k, h, 3) for k, h in enumerate([5, 4, 1, 2, 3, 4])]
    scores = [4.2, 3.4, 1.1, 3.6, None, 2.0]
    judgements = [Judgement(i.id, s, None, "", 1 if s is not None else 2, None if s is not None else "unparsed",
                            mass=0.5 if s is not None else None, tokens=100 + k)
                  for k, (i, s) in enumerate(zip(items, scores, strict=True))]
    r = bench.evaluate(items, judgements, "harm", seconds=3.0, n_resamples=200)
    assert (r["n"], r["n_verdicts"], r["coverage"]) == (6, 5, 5 / 6)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (1, 1, 2, 1)
    assert r["f1"] == pytest.approx(2 / (2 + 1 + 2)) and r["precision"] == 0.5 and r["recall"] == pytest.approx(1 / 3)
    assert r["accuracy"] == pytest.approx(2 / 5)
    labels = [True, True, False, False, False, True]
    predicted = [True, False, False, True, UNPARSED, False]
    assert r["kappa"] == pytest.approx(cohen_kappa(labels, predicted))  # a missing verdict: its own category
    assert r["kappa_low"] <= r["kappa"] <= r["kappa_high"]
    # AUC over the scored items: positives 4.2, 3.4, 2.0 vs negatives 1.1, 3.6 -> 4 of 6 pairs
    assert r["roc_auc"] == pytest.approx(4 / 6)
    # in-sample F1-optimal cut among the scores: 2.0 gives tp 3, fp 1 -> F1 6/7
    assert r["best_threshold_in_sample"] == 2.0 and r["best_f1_in_sample"] == pytest.approx(6 / 7)
    assert r["mean_choice_mass"] == 0.5 and r["retried"] == 1
    assert r["tokens_per_verdict"] == pytest.approx(102.5) and r["seconds_per_verdict"] == 0.5
    assert r["by_kind"]["harmful"]["n_verdicts"] == 5
    assert [x["score"] for x in r["items"]] == scores
    with pytest.raises(ValueError, match="follow the items"):
        bench.evaluate(items[::-1], judgements, "harm", seconds=1.0)


def test_quality_role_uses_the_quality_labels_and_one_class_has_no_best_threshold(bench):
    items = [_item(k, 1, q) for k, q in enumerate([5, 4, 4])]  # all good
    judgements = [Judgement(i.id, 4.0, None, "", 1, None) for i in items]
    r = bench.evaluate(items, judgements, "quality", seconds=1.0, n_resamples=50)
    assert r["n_positive_labels"] == 3 and r["f1"] == 1.0
    assert r["roc_auc"] is None and r["best_threshold_in_sample"] is None
    assert r["tokens_per_verdict"] is None and r["mean_choice_mass"] is None


def test_main_on_the_mock_backend_writes_json_and_appends_the_section(bench, tmp_path, capsys):
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n\n## other\n\n| a |\n|---|\n| 1 |\n")
    out = tmp_path / "judges.json"
    parse_model = "mock/fixed:#thescore: 4"  # the harm parser reads 4; the quality parser finds no [[N]]
    argv = ["--models", f"mock/random,{parse_model}", "--parse-models", parse_model, "--parse-templates",
            "demo", "--limit", "6", "--resamples", "50", "--out", str(out), "--record", str(results_md)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "== mock/random: loading" in printed and "6/6 items" in printed

    data = json.loads(out.read_text())
    assert data["n_items"] == 6 and data["system_prompt"] == "You are a helpful assistant."
    got = {(r["model"], r["judge"]): r for r in data["results"]}
    assert set(got) == {("mock/random", "harm-rating"), ("mock/random", "quality-rating"),
                        (parse_model, "harm-rating"), (parse_model, "quality-rating"),
                        (parse_model, "harm"), (parse_model, "quality")}
    first = load_calibration(None)[:6]
    for r in data["results"]:
        assert [x["id"] for x in r["items"]] == [i.id for i in first]
        assert r["load_s"] >= 0 and r["seconds_per_verdict"] >= 0
    assert got[("mock/random", "harm-rating")]["coverage"] == 1.0
    assert 0 < got[("mock/random", "harm-rating")]["mean_choice_mass"] <= 1 + 1e-9
    harm_parse, quality_parse = got[(parse_model, "harm")], got[(parse_model, "quality")]
    assert harm_parse["coverage"] == 1.0 and {x["score"] for x in harm_parse["items"]} == {4.0}
    assert harm_parse["template"] == "demo brief" and harm_parse["tokens_per_verdict"] > 0
    assert quality_parse["coverage"] == 0.0 and quality_parse["retried"] == 6  # one re-ask each, then none

    text = results_md.read_text()
    assert text.index("## other") < text.index("## judges")  # a new section goes at the end
    rows = [ln for ln in text.split("## judges")[1].splitlines() if ln.startswith("| ")]
    header, data_rows = rows[0], rows[1:]
    assert "κ [95% CI]" in header and "s/verdict" in header and len(data_rows) == 6
    assert all(ln.count("|") == header.count("|") for ln in data_rows)
    assert any("harm (demo brief)" in ln and "parse ≤64 tok" in ln for ln in data_rows)
    # a second run appends to the same table
    assert bench.main(["--models", "mock/random", "--roles", "harm", "--limit", "3", "--resamples", "20",
                       "--record", str(results_md)]) == 0
    assert results_md.read_text().count("## judges") == 1
    assert len([ln for ln in results_md.read_text().split("## judges")[1].splitlines()
                if ln.startswith("| ")]) == 1 + 7


def test_bench_model_on_the_tiny_model(bench, tiny_model_dir):
    """The real hf path: read-out and parse on a tiny random-init chat model (short template:
    its context is 512 character-level tokens)."""
    from collapselab.config.spec import ModelSpec
    from collapselab.models.base import load_model

    items = [_item(k, h, q, kind) for k, (h, q, kind) in
             enumerate([(5, 2, "harmful"), (1, 4, "refusal"), (4, 3, "harmful"), (1, 5, "benign")])]
    short = "Request: {prompt}\nAnswer: {response}\nScore from 1 to 5:"
    model = load_model(ModelSpec(id=f"hf/{tiny_model_dir}", dtype="float32", batch_size=2))
    try:
        runs = bench.plan_runs([model.spec.id], ["harm"], [model.spec.id], ["packaged"])
        results = bench.bench_model(model, runs, items, templates={"harm-rating": short, "harm": short},
                                    n_resamples=50)
    finally:
        model.close()
    readout, parse = results
    assert readout["judge"] == "harm-rating" and readout["coverage"] == 1.0
    assert 0 < readout["mean_choice_mass"] < 1 and readout["tokens_per_verdict"] > len(short) // 2
    assert all(1 <= x["score"] <= 5 for x in readout["items"])
    assert parse["judge"] == "harm" and parse["readout"] == "parse" and 0 <= parse["coverage"] <= 1
    # a parse verdict costs its prompt and what it generated, over its attempts
    assert parse["tokens_per_verdict"] > readout["tokens_per_verdict"]
    assert all(math.isfinite(r["seconds_per_verdict"]) and r["warm_up_s"] > 0 for r in results)
