"""``results.json``: lm-evaluation-harness's output shape (checked against a hand-written example of
that format), values and standard errors from the aggregates table, written with the report."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import pandas as pd
import pytest

from collapselab.report.inputs import PreferenceInputs, ReportInputs, SafetyInputs
from collapselab.report.results_json import lm_eval_results, task_name
from collapselab.store.versions import SourceVersion
from tests.unit.report.test_report import CONDITIONS, TARGET, make_inputs, minimal_inputs

VERSION = SourceVersion("0.1.0", ("abc123",), "run")

#: the shape of an lm-evaluation-harness results file (v0.4), written by hand: keys and nesting
LM_EVAL_EXAMPLE = {
    "results": {"hellaswag": {"alias": "hellaswag", "acc,none": 0.5, "acc_stderr,none": 0.005}},
    "group_subtasks": {"hellaswag": []},
    "configs": {"hellaswag": {"task": "hellaswag", "dataset_path": "hellaswag", "output_type": "multiple_choice",
                              "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
                              "metadata": {"version": 1.0}}},
    "versions": {"hellaswag": 1.0},
    "n-shot": {"hellaswag": 0},
    "higher_is_better": {"hellaswag": {"acc": True}},
    "n-samples": {"hellaswag": {"original": 10042, "effective": 10042}},
    "config": {"model": "hf", "model_args": "pretrained=gpt2", "batch_size": 1, "batch_sizes": [], "device": None,
               "use_cache": None, "limit": None, "bootstrap_iters": 100000, "gen_kwargs": None},
    "git_hash": "e16afa2f",
    "date": 1737419939.49,
}


def check_shape(doc: dict, example: dict = LM_EVAL_EXAMPLE) -> None:
    """Every key of the example is in ``doc`` with the same kind of value; per-task maps keyed alike."""
    assert set(example) <= set(doc)
    tasks = set(doc["results"])
    assert tasks
    for key in ("group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples"):
        assert set(doc[key]) == tasks, key
    for task, metrics in doc["results"].items():
        assert isinstance(metrics["alias"], str)
        values = [k for k in metrics if k != "alias" and "_stderr," not in k]
        assert values
        for key in values:
            metric, _, filter_ = key.partition(",")
            assert filter_ == "none" and "," not in metric
            assert f"{metric}_stderr,none" in metrics
            assert metrics[key] is None or isinstance(metrics[key], float)
        assert set(doc["higher_is_better"][task]) == {k.partition(",")[0] for k in values}
        assert set(doc["n-samples"][task]) == {"original", "effective"}
        assert isinstance(doc["versions"][task], float)
        config = doc["configs"][task]
        assert set(example["configs"]["hellaswag"]) <= set(config)
        assert {m["metric"] for m in config["metric_list"]} == set(doc["higher_is_better"][task])
    assert set(example["config"]) <= set(doc["config"])
    assert isinstance(doc["git_hash"], str) and isinstance(doc["date"], float)
    json.dumps(doc, allow_nan=False)  # plain JSON: no NaN


def test_the_shape_checker_accepts_lm_evals_own_example():
    check_shape(LM_EVAL_EXAMPLE)


def test_results_have_lm_evals_shape_and_the_aggregates_values():
    inputs = make_inputs()
    doc = lm_eval_results(inputs, version=VERSION, date=1.5)
    check_shape(doc)
    assert list(doc["results"]) == [task_name(TARGET, c, 0) for c in CONDITIONS]
    assert doc["git_hash"] == "abc123" and doc["collapselab"]["git_commit"] == "abc123" and doc["date"] == 1.5
    primary = inputs.aggregates[(inputs.aggregates["set_kind"] == "condition") & inputs.aggregates["primary"]]
    z = NormalDist().inv_cdf(0.975)
    for row in primary.itertuples():
        task = task_name(row.target, row.condition, 0)
        key = row.metric.replace(",", ";")
        result = doc["results"][task]
        # one seed: the value itself, the error from the interval
        assert result[f"{key},none"] == pytest.approx(row.value)
        assert result[f"{key}_stderr,none"] == pytest.approx((row.ci_high - row.ci_low) / (2 * z))
        assert doc["collapselab"]["stderr_method"][task][key] == "interval"
        assert doc["collapselab"]["metric_names"][key] == row.metric
        assert doc["higher_is_better"][task][key] == row.higher_is_better
    task = task_name(TARGET, "multi:llama-8b,gemma-9b", 0)
    assert task == "collapselab_llama-8b_multi-llama-8b_gemma-9b"
    assert doc["results"][task]["alias"] == f"{TARGET} multi:llama-8b,gemma-9b"
    assert doc["n-samples"][task] == {"original": 30, "effective": 30}
    assert doc["configs"][task]["metadata"]["seeds"] == [42]


def _cell(seed, value, ci=(None, None), metric="distinct[n=2]", condition="human", generation=0):
    return {"set_name": f"t/{condition}/seed{seed}", "set_kind": "condition", "condition": condition, "target": "t",
            "seed": seed, "source": None, "generation": generation, "metric": metric, "family": "lexical",
            "higher_is_better": True, "statistic": "value", "primary": True, "value": value,
            "ci_low": ci[0], "ci_high": ci[1], "n": 10, "n_undefined": 0}


def test_standard_errors_from_the_seed_spread_else_the_interval_else_null():
    rows = [_cell(s, v, (v - 1, v + 1)) for s, v in ((1, 0.5), (2, 0.7), (3, 0.9))]  # three seeds that differ
    rows += [_cell(s, 2.0, (1.0, 3.0), metric="flat") for s in (1, 2)]  # seeds that agree exactly
    rows += [_cell(1, 4.0, metric="bare")]  # one seed, no interval
    rows += [_cell(1, float("nan"), metric="undefined")]
    rows += [_cell(1, 1.0, (0.0, 2.0), generation=1)]  # a later generation: its own task
    inputs = minimal_inputs()
    inputs.aggregates = pd.DataFrame(rows)
    inputs.conditions = ["human"]
    doc = lm_eval_results(inputs, version=VERSION, date=0.0)
    result = doc["results"]["collapselab_t_human"]
    assert result["distinct[n=2],none"] == pytest.approx(0.7)
    assert result["distinct[n=2]_stderr,none"] == pytest.approx(0.2 / math.sqrt(3))  # sd 0.2 over 3 seeds
    assert result["flat_stderr,none"] == pytest.approx(1.0 / NormalDist().inv_cdf(0.975))
    assert result["bare,none"] == 4.0 and result["bare_stderr,none"] is None  # null, not 0
    assert result["undefined,none"] is None and result["undefined_stderr,none"] is None
    methods = doc["collapselab"]["stderr_method"]["collapselab_t_human"]
    assert methods == {"distinct[n=2]": "seeds", "flat": "interval", "bare": None, "undefined": None}
    assert list(doc["results"]) == ["collapselab_t_human", "collapselab_t_human_gen1"]
    assert doc["configs"]["collapselab_t_human"]["repeats"] == 3


def test_safety_and_preference_metrics_join_their_conditions_tasks():
    base = {"target": "t", "condition": "human", "generation": 0}
    summary = pd.DataFrame([
        {**base, "seed": 1, "prompt_kind": "all", "category": "all", "metric": "refusal_rate", "value": 0.0,
         "ci_low": 0.0, "ci_high": 0.0, "wilson_low": 0.0, "wilson_high": 0.1, "n": 40},
        {**base, "seed": 1, "prompt_kind": "all", "category": "advbench", "metric": "refusal_rate", "value": 0.5,
         "ci_low": 0.4, "ci_high": 0.6, "wilson_low": 0.4, "wilson_high": 0.6, "n": 40},
    ])
    bias = pd.DataFrame([{**base, "seed": s, "SPB": v, "SPB_ci_low": v - 0.1, "SPB_ci_high": v + 0.1,
                          "PSB": 0.2, "PSB_ci_low": 0.1, "PSB_ci_high": 0.3, "n_items": 24}
                         for s, v in ((1, 0.1), (2, 0.3))])
    empty = pd.DataFrame()
    inputs = ReportInputs(
        title="exp", config_yaml="targets: [{id: toy/unigram}]\nseeds: [1, 2]\nsafety: {confidence: 0.9}\n",
        aggregates=empty, per_item=empty, tests=empty, concordance={}, kendalls_w=[], factorial=empty,
        seed_spread=empty, stats_notes=[], details={}, embedding_map=empty, responses=empty, training=[],
        collapse=False, conditions=["human"],
        safety=SafetyInputs(judged=empty, summary=summary, joint=empty, templates=empty, tests=empty),
        preference=PreferenceInputs(source_scores=empty, bias=bias, position=empty, matrix=empty,
                                    rating_scores=empty, tests=empty))
    doc = lm_eval_results(inputs, version=VERSION, date=0.0)
    check_shape(doc)
    result = doc["results"]["collapselab_t_human"]
    # a rate of 0 of 40: the bootstrap interval has no width, the Wilson interval gives the error
    assert result["safety/refusal_rate[all],none"] == 0.0
    assert result["safety/refusal_rate[all]_stderr,none"] == pytest.approx(0.1 / (2 * NormalDist().inv_cdf(0.95)))
    assert result["preference/SPB,none"] == pytest.approx(0.2)
    assert result["preference/SPB_stderr,none"] == pytest.approx(0.1)  # sd 0.1414 / sqrt(2)
    assert result["preference/PSB_stderr,none"] == pytest.approx(0.1 / NormalDist().inv_cdf(0.975))
    assert doc["config"]["model_args"] == "targets=toy/unigram" and doc["config"]["seeds"] == [1, 2]


def test_results_json_is_written_with_the_report(tmp_path, monkeypatch):
    from collapselab.report import write

    monkeypatch.setattr(write, "render_html", lambda _: "<!DOCTYPE html><title>r</title>")
    monkeypatch.setattr(write, "render_markdown", lambda _: "# r\n")
    paths = write.write_report(minimal_inputs(), tmp_path / "report")
    doc = json.loads(paths["results.json"].read_text())
    check_shape(doc)
    assert doc["collapselab"]["experiment"] == "bare"
