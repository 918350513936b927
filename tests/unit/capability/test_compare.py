"""capability.compare on hand-made lm-eval outputs: the scores table, the paired differences from
vanilla (McNemar's exact test, Wilcoxon over seeds), groups pooled, what is not tested and why."""

from __future__ import annotations

import math

import numpy as np
import pytest

from collapselab.capability.compare import CapabilityRun, differences, mcnemar_exact, score_table, top_level

BOOT = {"n_resamples": 500, "confidence": 0.95, "seed": 0}


def run(condition: str, acc: list[float], *, seed: int = 1, task: str = "t", score: float | None = None,
        extra: dict | None = None) -> CapabilityRun:
    """One model's lm-eval output for one 0/1 metric over len(acc) items."""
    value = float(np.mean(acc)) if score is None else score
    results = {"results": {task: {"alias": task, "acc,none": value, "acc_stderr,none": 0.1}},
               "group_subtasks": {}, "higher_is_better": {task: {"acc": True}},
               "n-samples": {task: {"original": len(acc), "effective": len(acc)}}, **(extra or {})}
    samples = [{"task": task, "doc_id": i, "doc_hash": f"h{i}", "filter": "none", "acc": a} for i, a in enumerate(acc)]
    return CapabilityRun("tgt", condition, seed, 0, results, samples)


def test_mcnemar_exact_counts_the_discordant_items():
    a = np.array([1, 1, 1, 1, 1, 0, 1, 0])
    v = np.array([0, 0, 0, 0, 0, 0, 1, 0])
    b, c, p = mcnemar_exact(a, v)
    assert (b, c) == (5, 0) and p == pytest.approx(2 * 0.5 ** 5)  # both tails of Binomial(5, 1/2)
    assert mcnemar_exact(v, v)[2] == 1.0  # nothing discordant: no evidence


def test_one_seed_of_a_binary_metric_gets_mcnemar():
    vanilla = run("vanilla", [1, 1, 1, 1, 1, 1, 0, 0, 1, 1])
    tuned = run("single:a", [0, 0, 0, 0, 0, 1, 0, 0, 1, 1])
    row = differences([vanilla, tuned], **BOOT).iloc[0]
    assert row["test"] == "mcnemar_exact" and (row["only_condition"], row["only_vanilla"]) == (0, 5)
    assert row["difference"] == pytest.approx(-0.5) and row["vanilla"] == pytest.approx(0.8)
    assert row["p"] == pytest.approx(0.0625) and row["p_adj"] == pytest.approx(0.0625)
    assert row["ci_low"] <= -0.5 <= row["ci_high"] and row["ci_high"] < 0
    assert row["n_items"] == 10 and row["n_seeds"] == 1


def test_several_seeds_average_each_item_then_wilcoxon():
    vanilla = run("vanilla", [1] * 8)
    seeds = [run("human", [1, 1, 0, 0, 1, 1, 0, 1], seed=1), run("human", [1, 0, 0, 1, 1, 1, 0, 1], seed=2)]
    row = differences([vanilla, *seeds], **BOOT).iloc[0]
    assert row["test"] == "wilcoxon" and row["n_seeds"] == 2
    per_item = np.array([[1, 1, 0, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1, 0, 1]]).mean(axis=0)
    assert row["difference"] == pytest.approx(per_item.mean() - 1)
    assert "mean over 2 seeds" in row["note"]


def test_unpaired_comparison_when_stats_paired_is_off():
    rows = differences([run("vanilla", [1, 1, 1, 0]), run("human", [0, 0, 1, 0])], paired=False, **BOOT)
    assert rows.iloc[0]["test"] == "mann_whitney" and not rows.iloc[0]["paired"]


def test_items_whose_documents_differ_are_left_out():
    vanilla = run("vanilla", [1, 0, 1, 0])
    tuned = run("human", [1, 1, 1, 1])
    tuned.samples[0]["doc_hash"] = "another document"
    row = differences([vanilla, tuned], **BOOT).iloc[0]
    assert row["n_items"] == 3 and "documents differ" in row["note"]


def test_a_metric_without_numeric_items_is_shown_but_not_tested():
    vanilla = run("vanilla", [1, 0])
    tuned = run("human", [1, 1])
    for r in (vanilla, tuned):
        for s in r.samples:
            s["acc"] = ["ref", "pred"]  # a corpus metric's per-item tuple (BLEU)
    row = differences([vanilla, tuned], **BOOT).iloc[0]
    assert row["test"] is None and math.isnan(row["p"]) and "not numbers" in row["note"]
    assert row["difference"] == pytest.approx(0.5)


def test_a_score_that_is_not_the_item_mean_is_flagged():
    row = differences([run("vanilla", [1, 0], score=0.9), run("human", [1, 1])], **BOOT).iloc[0]
    assert "not the mean" in row["note"]


def test_groups_pool_their_tasks_items_and_only_top_level_names_are_compared():
    def grouped(condition: str, a: list[float], b: list[float]) -> CapabilityRun:
        results = {"results": {"g": {"acc,none": float(np.mean(a + b)), "acc_stderr,none": 0.1},
                               "g_a": {"acc,none": float(np.mean(a))}, "g_b": {"acc,none": float(np.mean(b))}},
                   "group_subtasks": {"g": ["g_a", "g_b"], "g_a": [], "g_b": []},
                   "higher_is_better": {"g": {"acc": True}},
                   "n-samples": {"g_a": {"effective": len(a)}, "g_b": {"effective": len(b)}}}
        samples = [{"task": t, "doc_id": i, "doc_hash": f"{t}{i}", "filter": "none", "acc": x}
                   for t, values in (("g_a", a), ("g_b", b)) for i, x in enumerate(values)]
        return CapabilityRun("tgt", condition, 1, 0, results, samples)

    vanilla, tuned = grouped("vanilla", [1, 1, 0], [1, 0]), grouped("human", [0, 1, 0], [0, 0])
    assert top_level(vanilla.results) == ["g"]
    rows = differences([vanilla, tuned], **BOOT)
    assert list(rows["task"]) == ["g"] and rows.iloc[0]["n_items"] == 5
    assert rows.iloc[0]["difference"] == pytest.approx(0.2 - 0.6)
    scores = score_table([vanilla])
    assert scores.set_index("task").loc["g", "n"] == 5 and scores.set_index("task").loc["g", "group"]
    assert not scores.set_index("task").loc["g_a", "top_level"]


def test_scores_keep_lm_evals_numbers_and_missing_errors_as_nan():
    r = run("vanilla", [1, 0, 1])
    r.results["results"]["t"]["acc_stderr,none"] = "N/A"
    row = score_table([r]).iloc[0]
    assert row["value"] == pytest.approx(2 / 3) and math.isnan(row["stderr"]) and row["n"] == 3
    assert bool(row["higher_is_better"]) and row["top_level"]


def test_the_family_is_adjusted_per_target():
    vanilla = run("vanilla", [1] * 6 + [0] * 4)
    conds = [run(c, [0] * 6 + [0] * 4) for c in ("a", "b")]
    rows = differences([vanilla, *conds], correction="holm", **BOOT)
    assert len(rows) == 2 and (rows["p_adj"] >= rows["p"]).all()
    assert rows["p_adj"].iloc[0] == pytest.approx(min(1, 2 * rows["p"].iloc[0]))
