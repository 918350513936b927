"""Experiments 2 (safety) and 3 (self-preference) through the pipeline: local prompt files, mock
judges with scripted verdicts, the tiny random-init target as the pairwise judge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.pipeline.graph import build_graph
from collapselab.store.run import RunStore
from tests.helpers import tiny_config, write_corpus

DATA = Path(__file__).parents[2] / "data" / "safety"
HARM_VERDICT = "#thereason: the answer gives some help.\n#thescore: 4"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("exp23")
    cfg = tiny_config(
        tmp, tiny_model_dir, write_corpus(tmp / "corpus.jsonl"),
        conditions=["vanilla", "human", "single:a"],
        collapse={"enabled": False},
        safety={
            "enabled": True,
            "prompts": [{"kind": "csv", "path": str(DATA / "harmful_behaviors.csv"), "columns": {"text": "goal"},
                         "max_prompts": 3, "seed": 1}],
            "jailbreaks": {"kind": "csv", "path": str(DATA / "chatgpt_jailbreak_prompts.csv"),
                           "max_templates": 2, "prompts_per_template": 2},
            "judge": {"id": f"mock/fixed:{HARM_VERDICT}"},
            "quality_judge": {"id": "mock/fixed:I liked it, no number here."},
            # the study's way (generate, then parse): the probability read-out is tested below
            "harm_method": "harm", "quality_method": "quality",
            "overrefusal": {"max_prompts": 4, "seed": 2},
            "judge_retries": 1, "bootstrap": 50,
        },
        preference={"enabled": True, "items": 3, "bootstrap": 50},
    )
    spec = load_config(cfg, use_env=False)
    run_stages(spec, tmp / "out")
    return spec, tmp / "out"


@pytest.fixture(scope="module")
def read_out(tmp_path_factory, tiny_model_dir):
    """Experiment 2 with the default judges (probability read-outs) and one more harm judge whose
    threshold is chosen on the calibration set."""
    tmp = tmp_path_factory.mktemp("exp2-readout")
    cfg = tiny_config(
        tmp, tiny_model_dir, write_corpus(tmp / "corpus.jsonl"),
        conditions=["vanilla", "single:a"],
        collapse={"enabled": False},
        safety={
            "enabled": True,
            "prompts": [{"kind": "csv", "path": str(DATA / "harmful_behaviors.csv"), "columns": {"text": "goal"},
                         "max_prompts": 3, "seed": 1}],
            "jailbreaks": {"kind": "none"},
            "judge": {"id": "mock/random"}, "quality_judge": {"id": "mock/fixed:#thescore: 2"},
            "judges": [{"method": "harm-rating", "name": "second", "model": {"id": "mock/echo"},
                        "threshold": "calibrated"}],
            "overrefusal": {"max_prompts": 3}, "calibration_items": 12, "bootstrap": 50,
        },
    )
    spec = load_config(cfg, use_env=False)
    run_stages(spec, tmp / "out")
    return spec, tmp / "out"


@pytest.mark.slow
def test_probability_judges_give_every_answer_a_verdict_and_a_judge_report(read_out):
    spec, run_dir = read_out
    out = stage_dir(spec, run_dir, "safety/summary")
    judged = pd.read_parquet(out / "judged.parquet")
    assert judged["harm"].notna().all() and judged["quality"].notna().all()  # coverage 100%
    assert (judged["quality"] == 2.0).all() and judged["harm"].between(1, 5).all()
    assert not judged["harm"].isin([1.0, 2.0, 3.0, 4.0, 5.0]).all()  # expected ratings, not parsed digits
    cards = {c["name"]: c for c in json.loads((out / "summary.json").read_text())["judge_cards"]}
    assert set(cards) == {"harm", "quality", "second"}
    for card in cards.values():
        assert card["answers"]["coverage"] == 1.0 and card["kappa"]["n_resamples"] == 50
        assert card["smoke_test"] is True  # mock judges: F1 far under 0.85
        assert card["tokens_per_verdict"] is None or card["tokens_per_verdict"] > 0
    assert cards["second"]["threshold_chosen_on_calibration"] is True
    assert cards["harm"]["threshold"] == 3.5 and cards["harm"]["roc_auc"] is not None
    agreement = pd.read_parquet(out / "judge_agreement.parquet")
    assert list(agreement[["judge_a", "judge_b"]].iloc[0]) == ["harm", "second"]
    harmful = judged[judged["prompt_kind"] != "benign"]
    assert len(harmful) == 6 and agreement["n_common"].iloc[0] == 6  # every harmful-prompt answer, both judges
    corrected = pd.read_parquet(out / "corrected_asr.parquet")
    assert set(corrected["judge"]) == {"harm", "second"} and len(corrected) == 4
    assert corrected["corrected_asr"].dropna().between(0, 1).all()
    left_out = pd.read_parquet(out / "left_out.parquet")
    assert (left_out["n_left_out"] == 0).all()  # nothing to leave out: every item has a verdict
    judge_summary = json.loads((RunStore(run_dir).final_dir(next(
        s for s in build_graph(spec) if s.kind == "judge" and s.name.startswith("harm-")).ref)
        / "summary.json").read_text())
    assert judge_summary["method"] == "harm-rating" and judge_summary["coverage"] == 1.0
    assert judge_summary["seconds_per_verdict"] is not None


def stage_dir(spec, run_dir, label):
    stage = next(s for s in build_graph(spec) if s.label == label)
    return RunStore(run_dir).final_dir(stage.ref)


@pytest.mark.slow
def test_safety_prompts_plain_and_wrapped_with_the_target_name(finished):
    spec, run_dir = finished
    prompts_stage = next(s for s in build_graph(spec) if s.kind == "prompts")
    rows = pd.read_json(stage_dir(spec, run_dir, prompts_stage.label) / "prompts.jsonl", lines=True)
    assert (rows["kind"] == "plain").sum() == 3
    jb = rows[rows["kind"] == "jailbreak"]
    assert len(jb) == 2 * 2 and jb["template_id"].nunique() == 2
    tname = prompts_stage.params.target_name
    for _, r in jb.iterrows():
        assert "ChatGPT" not in r["user"] and "OpenAI" not in r["user"] and tname in r["user"]
        assert "[INSERT PROMPT HERE]" not in r["user"]


@pytest.mark.slow
def test_every_model_answers_every_safety_prompt(finished):
    spec, run_dir = finished
    responds = [s for s in build_graph(spec) if s.kind == "safety_respond"]
    harmful = [s for s in responds if not s.name.startswith("benign-")]
    assert {s.params.condition.label for s in harmful} == {"vanilla", "human", "single:a"}
    for s in harmful:
        rows = pd.read_json(RunStore(run_dir).final_dir(s.ref) / "responses.jsonl", lines=True)
        assert len(rows) == 7 and set(rows["kind"]) == {"plain", "jailbreak"}
    benign = [s for s in responds if s.name.startswith("benign-")]
    assert len(benign) == len(harmful)  # every model answers the over-refusal prompts too
    for s in benign:
        rows = pd.read_json(RunStore(run_dir).final_dir(s.ref) / "responses.jsonl", lines=True)
        assert len(rows) == 4 and set(rows["kind"]) == {"benign"}
    over = pd.read_parquet(stage_dir(spec, run_dir, "safety/summary") / "overrefusal.parquet")
    assert len(over) == 3 and (over["n"] == 4).all() and over["overrefusal_rate"].between(0, 1).all()


@pytest.mark.slow
def test_unparsed_judgements_are_retried_then_counted(finished):
    spec, run_dir = finished
    summary = pd.read_parquet(stage_dir(spec, run_dir, "safety/summary") / "summary.parquet")
    judged = pd.read_parquet(stage_dir(spec, run_dir, "safety/summary") / "judged.parquet")
    assert (judged["harm"] == 4).all() and judged["quality"].isna().all()
    # unparsed in every condition: left out of every condition's comparison (the study's rule)
    left_out = pd.read_parquet(stage_dir(spec, run_dir, "safety/summary") / "left_out.parquet")
    assert left_out.set_index("score").loc["quality", "n_left_out"] == 7
    assert left_out.set_index("score").loc["harm", "n_left_out"] == 0
    quality = summary[(summary.metric == "mean_quality") & (summary.prompt_kind == "all")
                      & (summary.category == "all")]
    assert (quality["n_undefined"] == 7).all() and quality["value"].isna().all()
    asr = summary[(summary.metric == "attack_success_rate") & (summary.prompt_kind == "all")
                  & (summary.category == "all")]
    assert (asr["value"] == 1.0).all()
    judge_dir = stage_dir(spec, run_dir, next(s.label for s in build_graph(spec)
                                               if s.kind == "judge" and s.params.role == "quality"))
    records = [json.loads(x) for x in (judge_dir / "judgements.jsonl").read_text().splitlines()]
    assert all(r["score"] is None and r["attempts"] == 2 and r["error"] for r in records)


@pytest.mark.slow
def test_calibration_agreement_is_recorded_for_both_judges_and_the_detector(finished):
    spec, run_dir = finished
    calibration = json.loads((stage_dir(spec, run_dir, "safety/summary") / "calibration.json").read_text())
    assert [c["role"] for c in calibration] == ["harm", "quality", "refusal"]
    harm, quality, refusal = calibration
    # a judge that always says 4 calls everything harmful: chance agreement at best
    assert harm["kappa"] is not None and harm["kappa"] <= 0.0 and not harm["trust"]
    assert not quality["trust"]
    assert refusal["trust"]


@pytest.mark.slow
def test_preference_counterbalanced_and_scored(finished):
    spec, run_dir = finished
    out = stage_dir(spec, run_dir, "preference/summary")
    comparisons = pd.read_parquet(out / "comparisons.parquet")
    judges = comparisons["judge"].unique()
    assert len(judges) == 3  # vanilla + two fine-tuned models
    per_judge = comparisons.groupby("judge").size()
    assert (per_judge == 3 * 3 * 2).all()  # 3 items × 3 sources (a, b, human) → 6 ordered pairs each
    assert comparisons["p_a"].between(0, 1).all()
    scores = pd.read_parquet(out / "source_scores.parquet")
    # S per source from the raw comparisons, by hand
    for judge, part in comparisons.groupby("judge"):
        for source in ("a", "b", "human"):
            got = [p for f, p in zip(part["first"], part["p_a"], strict=True) if f == source]
            got += [1 - p for s, p in zip(part["second"], part["p_a"], strict=True) if s == source]
            row = scores[(scores.judge == judge) & (scores.source == source)].iloc[0]
            assert row["S"] == pytest.approx(sum(got) / len(got))
    bias = pd.read_parquet(out / "bias.parquet")
    assert bias["PSB"].notna().all()
    assert bias["SPB"].isna().all()  # the tiny target is no source's model: no own family
    ratings = pd.read_parquet(out / "ratings.parquet")
    assert len(ratings) == 3 * 3 * 3 and ratings["rating"].between(1, 5).all()


@pytest.mark.slow
def test_items_come_from_the_test_split_not_training(finished):
    spec, run_dir = finished
    items = pd.read_json(stage_dir(spec, run_dir, "items/preference") / "items.jsonl", lines=True)
    train = pd.read_json(stage_dir(spec, run_dir, "prepare/corpus") / "train.jsonl", lines=True)
    assert len(items) == 3 and not set(items["id"]) & set(train["id"])


def test_choice_read_out_of_the_mock_judge():
    from collapselab.config.spec import ModelSpec
    from collapselab.judges.pairwise import renormalised
    from collapselab.models.base import ChatPrompt
    from collapselab.models.mock import MockModel

    always_a = MockModel(ModelSpec(id="mock/fixed:A"))
    [lp] = always_a.choice_logprobs([ChatPrompt("x", "which?")], ["A", "B"])
    assert lp == {"A": 0.0, "B": -math.inf}
    assert renormalised(lp, "A", "B") == (1.0, 1.0)
    assert math.isnan(renormalised({"A": -math.inf, "B": -math.inf}, "A", "B")[0])


def _spec(tmp_path, tiny_model_dir, **changes):
    cfg = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "corpus.jsonl"),
                      collapse={"enabled": False}, **changes)
    return load_config(cfg, use_env=False)


def test_calibration_sample_is_equal_per_kind_and_seeded(tmp_path, tiny_model_dir):
    from collapselab.pipeline.experiments.safety.run import calibration_items

    spec = _spec(tmp_path, tiny_model_dir, safety={"enabled": True, "calibration_items": 12})
    items = calibration_items(spec)
    assert len(items) == 12
    assert sorted(pd.Series([i.kind for i in items]).value_counts().tolist()) == [3, 3, 3, 3]
    assert [i.id for i in calibration_items(spec)] == [i.id for i in items]
    other = _spec(tmp_path, tiny_model_dir, safety={"enabled": True, "calibration_items": 12, "seed": 5})
    assert [i.id for i in calibration_items(other)] != [i.id for i in items]


@pytest.mark.parametrize("safety, message", [
    ({"prompts": [{"kind": "csv", "path": "/nonexistent/p.csv"}]}, "safety.prompts.0.path"),
    ({"prompts": [{"kind": "jsonl"}]}, "safety.prompts.0.path: a path is required"),
    ({"jailbreaks": {"kind": "hf"}}, "safety.jailbreaks.name"),
    ({"calibration": "/nonexistent/calibration.jsonl"}, "safety.calibration"),
])
def test_validate_names_the_bad_safety_field(tmp_path, tiny_model_dir, safety, message):
    from collapselab.errors import ConfigError
    from collapselab.pipeline.validate import validate_experiment

    spec = _spec(tmp_path, tiny_model_dir, safety={"enabled": True, **safety})
    with pytest.raises(ConfigError, match=message):
        validate_experiment(spec)


def test_validate_rejects_a_template_with_an_unknown_field(tmp_path, tiny_model_dir):
    from collapselab.errors import ConfigError
    from collapselab.pipeline.validate import validate_experiment

    bad = tmp_path / "pair.txt"
    bad.write_text("Which is better?\nA: {text_a}\nB: {text_b}\nTask: {instruction}\nAlso {oops}\n")
    spec = _spec(tmp_path, tiny_model_dir, preference={"enabled": True, "pair_template": str(bad)})
    with pytest.raises(ConfigError, match="oops"):
        validate_experiment(spec)


@pytest.mark.slow
def test_a_rejudged_run_shows_the_earlier_judges_agreement(read_out):
    """Re-judging with another judge reuses every answer; the report then shows how the new
    judge agrees with the earlier one, whose verdicts are still in the run folder."""
    from collapselab.report.inputs import collect

    spec, run_dir = read_out
    again = spec.model_copy(update={"safety": spec.safety.model_copy(update={
        "judge": spec.safety.judge.model_copy(update={"id": "mock/fixed:5"})})})
    report = run_stages(again, run_dir)
    redone = {s.split("/")[0] for s in report.ran} if hasattr(report, "ran") else None
    if redone is not None:
        assert redone <= {"judge", "calibrate", "safety", "report"}
    inputs = collect(again, run_dir)
    earlier = inputs.safety.agreement[inputs.safety.agreement["judge_b"].str.startswith("earlier: mock/random")]
    assert not earlier.empty
    row = earlier[earlier["judge_a"] == "harm"].iloc[0]
    assert row["n_common"] == 6  # every harmful-prompt answer, judged by both
