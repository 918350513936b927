"""Experiment 3's controls through the pipeline, with the scripted mock backend as the judge (its
token log-probabilities are log(1/(1 + len(word))), so familiarity can be recomputed by hand):
familiarity, recognition, the controls table, relations, plan sizes, toggles and resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.pipeline.graph import build_graph
from collapselab.store.atomic import read_jsonl
from collapselab.store.run import RunStore
from tests.helpers import tiny_config, write_corpus

ITEMS = 5
SOURCES = [{"name": "a", "model": {"id": "mock/random"}}, {"name": "b", "model": {"id": "mock/echo"}},
           {"name": "c", "model": {"id": "mock/fixed:The quick brown fox jumps over the lazy dog today."}}]


def mock_spec(tmp: Path, **preference):
    """The mock target judges a (its own model's texts), b, c and the human text; vanilla only."""
    cfg = tiny_config(tmp, Path("/unused"), write_corpus(tmp / "corpus.jsonl"), sources=SOURCES,
                      conditions=["vanilla"], targets=[{"id": "mock/random"}], collapse={"enabled": False},
                      preference={"enabled": True, "items": ITEMS, "bootstrap": 50, **preference})
    return load_config(cfg, use_env=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("controls")
    spec = mock_spec(tmp)
    run_stages(spec, tmp / "out")
    return spec, tmp / "out"


def folder(spec, run_dir, kind):
    stage = next(s for s in build_graph(spec) if s.kind == kind)
    return RunStore(run_dir).final_dir(stage.ref)


def mock_logprobs(text: str) -> list[float]:
    return [math.log(1.0 / (1 + len(w))) for w in text.split()]


def test_familiarity_is_the_judges_log_perplexity_by_hand(finished):
    spec, run_dir = finished
    items = read_jsonl(folder(spec, run_dir, "items") / "items.jsonl")
    texts = {"human": {r["id"]: r["human"] for r in items}}
    for stage in (s for s in build_graph(spec) if s.kind == "candidates"):
        rows = read_jsonl(RunStore(run_dir).final_dir(stage.ref) / "candidates.jsonl")
        texts[stage.name] = {r["prompt_id"]: r["response"] for r in rows}
    fam = pd.read_json(folder(spec, run_dir, "familiarity") / "familiarity.jsonl", lines=True)
    assert len(fam) == ITEMS * 4 and set(fam["source"]) == {"a", "b", "c", "human"}
    for r in fam.itertuples():
        lp = mock_logprobs(texts[r.source][r.item_id])
        assert r.n_tokens == len(lp) > 0
        assert r.sum_logprob == pytest.approx(sum(lp))
        assert r.log_ppl == pytest.approx(-sum(lp) / len(lp)) and r.mean_logprob == pytest.approx(-r.log_ppl)
    assert not list(folder(spec, run_dir, "familiarity").glob("partial-*"))


def test_recognition_shows_the_own_text_against_every_other_in_both_orders(finished):
    from collapselab.judges.pairwise import renormalised
    from collapselab.judges.recognition import RECOGNITION
    from collapselab.models.base import ChatPrompt
    from collapselab.models.mock import MockModel
    from collapselab.pipeline.experiments.preference.run import _cut

    spec, run_dir = finished
    rows = pd.DataFrame(read_jsonl(folder(spec, run_dir, "recognize") / "recognition.jsonl"))
    assert len(rows) == ITEMS * 2 * 3 and (rows["own"] == "a").all()
    assert ((rows["first"] == "a") ^ (rows["second"] == "a")).all()
    # the read-out of the very prompt the stage built, recomputed from the shown texts
    items = {r["id"]: r for r in read_jsonl(folder(spec, run_dir, "items") / "items.jsonl")}
    texts = {"human": {i: r["human"] for i, r in items.items()}}
    for stage in (s for s in build_graph(spec) if s.kind == "candidates"):
        texts[stage.name] = {r["prompt_id"]: r["response"]
                             for r in read_jsonl(RunStore(run_dir).final_dir(stage.ref) / "candidates.jsonl")}
    judge, template = MockModel(spec.targets[0]), RECOGNITION.template()
    for r in rows.head(8).itertuples():
        prompt = RECOGNITION.render(template, instruction=items[r.item_id]["user"],
                                    text_a=_cut(texts[r.first][r.item_id], 2000),
                                    text_b=_cut(texts[r.second][r.item_id], 2000))
        [lp] = judge.choice_logprobs([ChatPrompt("x", prompt)], RECOGNITION.choices)
        assert r.p_a == pytest.approx(renormalised(lp, "A", "B")[0])


def test_the_controls_table_agrees_with_its_parts(finished):
    spec, run_dir = finished
    out = folder(spec, run_dir, "preference_controls")
    controls = pd.read_parquet(out / "controls.parquet")
    assert len(controls) == 1
    row = controls.iloc[0]
    assert row["own_source"] == "a"
    # plain SPB is the preference stage's
    bias = pd.read_parquet(folder(spec, run_dir, "preference") / "bias.parquet").iloc[0]
    assert row["SPB"] == pytest.approx(bias["SPB"]) and row["SPB_ci_low"] == pytest.approx(bias["SPB_ci_low"])
    # the adjusted own effect is the statsmodels fit on the stage's own tables
    comparisons = pd.read_parquet(folder(spec, run_dir, "preference") / "comparisons.parquet")
    fam = pd.read_parquet(out / "familiarity.parquet").set_index(["item_id", "source"])["log_ppl"]
    d = comparisons.assign(
        own=(comparisons["first"] == "a").astype(float) - (comparisons["second"] == "a").astype(float),
        hum=(comparisons["first"] == "human").astype(float) - (comparisons["second"] == "human").astype(float),
        delta=[fam[i, x] - fam[i, y] for i, x, y in zip(comparisons["item_id"], comparisons["first"],
                                                        comparisons["second"], strict=True)])
    fit = smf.ols("p_a ~ own + delta + hum", d).fit(cov_type="cluster",
                                                    cov_kwds={"groups": pd.factorize(d["item_id"])[0]})
    assert row["own_adjusted"] == pytest.approx(fit.params["own"])
    assert row["familiarity"] == pytest.approx(fit.params["delta"])
    assert row["own_adjusted_ci_low"] == pytest.approx(fit.conf_int().loc["own", 0])
    # recognition accuracy is the mean P(picks own) of the read-outs
    rec = pd.read_parquet(out / "recognition.parquet")
    picks = np.where(rec["first"] == "a", rec["p_a"], 1 - rec["p_a"])
    assert row["recognition"] == pytest.approx(picks.mean())
    assert row["recognition_ci_low"] <= row["recognition"] <= row["recognition_ci_high"]
    strata = pd.read_parquet(out / "strata.parquet")
    assert strata["n_own"].sum() == ITEMS * 2  # own vs b and c on every item


def test_every_judge_source_pair_has_its_relation_with_s_and_familiarity(finished):
    spec, run_dir = finished
    out = folder(spec, run_dir, "preference_controls")
    rel = pd.read_parquet(out / "relations.parquet").set_index("source")
    assert rel["relation"].to_dict() == {"a": "same model", "b": "unrelated", "c": "unrelated", "human": "human text"}
    scores = pd.read_parquet(folder(spec, run_dir, "preference") / "source_scores.parquet").set_index("source")
    assert rel["S"].to_dict() == pytest.approx(scores["S"].to_dict())
    fam = pd.read_parquet(out / "familiarity_sources.parquet").set_index("source")
    assert rel["log_ppl"].to_dict() == pytest.approx(fam["log_ppl"].to_dict())
    assert math.isnan(rel.loc["a", "recognition"]) and rel.loc[["b", "c", "human"], "recognition"].notna().all()


def test_plan_sizes_the_control_stages(tmp_path):
    from collapselab.pipeline.plan import plan_experiment

    table = plan_experiment(mock_spec(tmp_path)).set_index("kind")
    fam, rec = table.loc["familiarity"], table.loc["recognize"]
    assert fam["n_items"] == ITEMS * 4 and fam["tokens_score"] > 0 and fam["tokens_prefill"] > 0
    assert rec["n_items"] == ITEMS * 2 * 3 and rec["tokens_prefill"] > 0 and rec["tokens_generate"] == 0
    assert table.loc["preference_controls", "n_items"] == 3  # prefer, familiarity, recognize


def test_the_controls_can_be_turned_off_without_touching_the_comparisons(tmp_path):
    base = {s.label: s.key for s in build_graph(mock_spec(tmp_path))}
    off = build_graph(mock_spec(tmp_path, familiarity=False, recognition=False))
    assert not {s.kind for s in off} & {"familiarity", "recognize"}
    assert all(base[s.label] == s.key for s in off if s.kind != "preference_controls")
    controls = next(s for s in off if s.kind == "preference_controls")
    assert [i.kind for i in controls.inputs] == ["prefer"] and controls.settings["relations"]
    # no own source (the judge's model writes none of the texts): no recognition probe
    spec = mock_spec(tmp_path)
    other = spec.model_copy(update={"targets": (spec.targets[0].model_copy(update={"id": "mock/empty"}),)})
    assert not [s for s in build_graph(other) if s.kind == "recognize"]
    assert [s for s in build_graph(other) if s.kind == "familiarity"]


def test_a_killed_familiarity_stage_resumes_by_fixed_chunks(tmp_path, monkeypatch):
    from collapselab.models.mock import MockModel
    from collapselab.pipeline.experiments.preference import run

    spec = mock_spec(tmp_path, recognition=False)
    stages = build_graph(spec)
    upto = [s for s in stages if s.kind not in ("familiarity", "preference_controls")]
    run_stages(spec, tmp_path / "out", stages=upto)
    monkeypatch.setattr(run, "CHUNK", 6)  # 20 texts: chunks of 6, 6, 6, 2
    calls: list[int] = []
    real = MockModel.continuation_logprobs

    def flaky(self, prompts, continuations, **kw):
        calls.append(len(prompts))
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(self, prompts, continuations, **kw)

    monkeypatch.setattr(MockModel, "continuation_logprobs", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        run_stages(spec, tmp_path / "out", stages=stages)
    assert calls == [6, 6, 6]
    calls.clear()
    run_stages(spec, tmp_path / "out", stages=stages)
    assert calls == [6, 2]  # the two logged chunks are not redone
    resumed = pd.read_json(folder(spec, tmp_path / "out", "familiarity") / "familiarity.jsonl", lines=True)
    monkeypatch.undo()  # an uninterrupted run, for comparison
    run_stages(spec, tmp_path / "fresh", stages=stages)
    fresh = pd.read_json(folder(spec, tmp_path / "fresh", "familiarity") / "familiarity.jsonl", lines=True)
    pd.testing.assert_frame_equal(resumed, fresh)


def test_a_bad_recognition_template_fails_validation(tmp_path):
    from collapselab.errors import ConfigError
    from collapselab.pipeline.validate import validate_experiment

    bad = tmp_path / "recognition.txt"
    bad.write_text("Which did you write?\nA: {text_a}\nB: {text_b}\nTask: {instruction}\n{oops}\n")
    with pytest.raises(ConfigError, match=r"oops.*preference.recognition_template"):
        validate_experiment(mock_spec(tmp_path, recognition_template=str(bad)))
    validate_experiment(mock_spec(tmp_path, recognition_template=str(bad), recognition=False))  # not read
