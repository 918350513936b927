"""The self-recognition probe: its plan, its judge and template, and accuracy by hand (with the
cluster-bootstrap interval against the bootstrap of per-item means)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from collapselab.errors import ConfigError, DataError
from collapselab.judges.recognition import RECOGNITION
from collapselab.preference.recognition import picks_own, recognition_plan, recognition_scores
from collapselab.stats.bootstrap import bootstrap_ci


def test_plan_pairs_the_own_text_with_every_other_in_both_orders():
    plan = recognition_plan(["i1", "i2"], "a", ["a", "b", "human"])
    assert [(c.item_id, c.first, c.second) for c in plan[:4]] == [
        ("i1", "a", "b"), ("i1", "b", "a"), ("i1", "a", "human"), ("i1", "human", "a")]
    assert len(plan) == 2 * 2 * 2 and plan[0].id == "i1|a>b"
    with pytest.raises(ConfigError, match="not among"):
        recognition_plan(["i1"], "z", ["a", "b"])
    with pytest.raises(ConfigError, match="at least one other"):
        recognition_plan(["i1"], "a", ["a"])


def test_the_recognition_judge_reads_p_a_from_its_template():
    template = RECOGNITION.template()
    assert "One of these two texts was written by you. Which one?" in template
    assert RECOGNITION.readout == "choice" and RECOGNITION.choices == ("A", "B")
    prompt = RECOGNITION.render(template, instruction="Summarise {this}.", text_a="first {x}", text_b="second")
    assert "Summarise {this}." in prompt and "Text A:\nfirst {x}" in prompt and "Text B:\nsecond" in prompt
    assert RECOGNITION.read({"A": math.log(0.3), "B": math.log(0.1)}) == pytest.approx(0.75)


def readouts(p_values: dict[tuple[str, str, str], float], judge: str = "j") -> pd.DataFrame:
    return pd.DataFrame([{"judge": judge, "target": "t", "condition": "vanilla", "item_id": i, "first": a,
                          "second": b, "own": "a", "p_a": p, "choice_mass": 0.9}
                         for (i, a, b), p in p_values.items()])


def test_accuracy_by_hand():
    rows = readouts({("i1", "a", "b"): 0.9, ("i1", "b", "a"): 0.3, ("i1", "a", "h"): 0.6, ("i1", "h", "a"): 0.2,
                     ("i2", "a", "b"): 0.5, ("i2", "b", "a"): 0.5, ("i2", "a", "h"): 0.7, ("i2", "h", "a"): np.nan})
    assert picks_own(rows.iloc[:2]).tolist() == pytest.approx([0.9, 0.7])
    scores, by_source = recognition_scores(rows, n_resamples=0)
    s = scores.iloc[0]
    picks = [0.9, 0.7, 0.6, 0.8, 0.5, 0.5, 0.7]  # the undefined read-out is left out, counted
    assert s["accuracy"] == pytest.approx(np.mean(picks))
    assert (s["n"], s["n_undefined"], s["n_items"], s["own_source"]) == (7, 1, 2, "a")
    assert s["mean_p_first"] == pytest.approx(np.nanmean(rows["p_a"])) and s["mean_choice_mass"] == pytest.approx(0.9)
    by = by_source.set_index("source")
    assert by.loc["b", "accuracy"] == pytest.approx(np.mean([0.9, 0.7, 0.5, 0.5]))
    assert by.loc["h", "accuracy"] == pytest.approx(np.mean([0.6, 0.8, 0.7])) and by.loc["h", "n_undefined"] == 1


def test_the_interval_is_the_bootstrap_over_items():
    rng = np.random.default_rng(3)
    values = {(f"i{k:02d}", a, b): rng.uniform() for k in range(30) for a, b in (("a", "b"), ("b", "a"))}
    rows = readouts(values)
    scores, _ = recognition_scores(rows, n_resamples=400, confidence=0.9, seed=7)
    # every item has two read-outs: the pooled mean is the mean of per-item means, resampled alike
    per_item = pd.Series(picks_own(rows), index=rows["item_id"]).groupby(level=0).mean().sort_index()
    est, low, high = bootstrap_ci(per_item.to_numpy(), np.mean, n_resamples=400, confidence=0.9, seed=7)
    assert (scores.iloc[0]["accuracy"], scores.iloc[0]["ci_low"], scores.iloc[0]["ci_high"]) == pytest.approx(
        (est, low, high))


def test_a_judge_that_always_answers_a_is_at_chance():
    from collapselab.config.spec import ModelSpec
    from collapselab.judges.pairwise import renormalised
    from collapselab.models.base import ChatPrompt
    from collapselab.models.mock import MockModel

    judge = MockModel(ModelSpec(id="mock/fixed:A"))
    plan = recognition_plan(["i1", "i2"], "a", ["a", "b", "human"])
    prompts = [ChatPrompt(c.id, RECOGNITION.render(RECOGNITION.template(), instruction="x", text_a="1", text_b="2"))
               for c in plan]
    p = [renormalised(lp, "A", "B")[0] for lp in judge.choice_logprobs(prompts, RECOGNITION.choices)]
    rows = pd.DataFrame({"judge": "j", "item_id": [c.item_id for c in plan], "first": [c.first for c in plan],
                         "second": [c.second for c in plan], "own": "a", "p_a": p})
    scores, _ = recognition_scores(rows, n_resamples=0)
    assert scores.iloc[0]["accuracy"] == 0.5 and scores.iloc[0]["mean_p_first"] == 1.0


def test_bad_tables_are_clear_errors():
    rows = readouts({("i1", "b", "c"): 0.5})
    with pytest.raises(DataError, match="neither text is the own source"):
        recognition_scores(rows)
    rows = readouts({("i1", "a", "b"): 1.5})
    with pytest.raises(DataError, match="p_a"):
        recognition_scores(rows)
