"""``plan`` (sizing a job from its config) and ``lineage`` (the chain of stages of a run)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from collapselab.config.load import load_config
from collapselab.executors import run_stages, stage_status
from collapselab.judges.templates import load_template as load_judge_template
from collapselab.judges.templates import load_template as load_preference_template
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.plan import lora_schedule, plan_experiment, plan_totals
from collapselab.store.atomic import read_jsonl
from collapselab.store.run import RunStore
from tests.helpers import tiny_config, write_corpus

ROOT = Path(__file__).resolve().parents[3]
SAFETY_DATA = ROOT / "tests" / "data" / "safety"
CALIBRATION = ROOT / "src" / "collapselab" / "judges" / "calibration.jsonl"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "collapselab", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "250"}, check=False)


# -- a config whose every count can be worked out by hand -----------------------------------------
SYSTEM = "sys:"  # 4 characters
USER, ANSWER = 36, 60  # characters of every instruction and every human answer


def hand_config(tmp_path: Path) -> Path:
    """20 records (2 categories) with equal lengths: prompt = 4 + 36 = 40 chars = 10 tokens,
    human answer 60 chars = 15 tokens. Source a writes at most 8 tokens, source b at most 4."""
    rows = [{"id": f"r{i:02d}", "instruction": f"{i:02d}" + "q" * (USER - 2), "context": "",
             "response": "a" * ANSWER, "category": "ab"[i % 2]} for i in range(20)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {
        "name": "hand",
        "corpus": {"kind": "jsonl", "path": str(corpus), "columns": {"id": "id"}},
        "split": {"test_fraction": 0.2, "seed": 1},
        "decoding": {"max_new_tokens": 8, "system_prompt": SYSTEM, "seed": 3},
        "sources": [{"name": "a", "model": {"id": "mock/random"}},
                    {"name": "b", "model": {"id": "mock/echo"},
                     "decoding": {"max_new_tokens": 4, "system_prompt": SYSTEM}}],
        "conditions": ["vanilla", "human", "single:a", "multi:a,b"],
        "targets": [{"id": "hf/some-org/some-model"}],
        "lora": {"epochs": 2, "batch_size": 4, "max_length": 20, "val_fraction": 0.25, "eval_every": 3},
        "collapse": {"metrics": ["output_perplexity", "human_perplexity"], "training_data": False},
        "safety": {
            "enabled": True,
            "prompts": [{"kind": "csv", "path": str(SAFETY_DATA / "harmful_behaviors.csv"),
                         "columns": {"text": "goal"}}],
            "jailbreaks": {"kind": "csv", "path": str(SAFETY_DATA / "chatgpt_jailbreak_prompts.csv"),
                           "prompts_per_template": 3},
            "judge_max_new_tokens": 16,
            "harm_method": "harm", "quality_method": "quality",  # generate and parse: tokens to count
        },
        "preference": {"enabled": True, "items": 10, "instruction": "Sum:"},
    }
    path = tmp_path / "hand.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    spec = load_config(hand_config(tmp_path_factory.mktemp("hand")), use_env=False)
    return spec, plan_experiment(spec).set_index("label")


def counts(table, label):
    row = table.loc[label]
    return tuple(None if pd.isna(row[c]) else int(row[c]) for c in
                 ("n_items", "tokens_generate", "tokens_prefill", "tokens_score", "tokens_train"))


def test_spine_counts_by_hand(hand):
    _, t = hand
    assert counts(t, "prepare/corpus") == (20, 0, 0, 0, 0)
    # test = round(20 x 0.2) = 4, train 16 in 2 shards of 8 (multi:a,b has two sources)
    assert counts(t, "generate/a-shard0") == (8, 8 * 8, 8 * 10, 0, 0)
    assert counts(t, "generate/a-shard1") == (8, 8 * 8, 8 * 10, 0, 0)
    assert counts(t, "generate/b-shard1") == (8, 8 * 4, 8 * 10, 0, 0)
    assert [counts(t, f"mix/{m}")[0] for m in ("human", "single-a", "multi-a_b")] == [16, 16, 16]
    # LoRA: 16 examples, 4 validation (ceil 0.25 x 16), 12 to fit: 3 steps an epoch, 6 steps,
    # 2 x 12 = 24 examples processed, evaluations at steps 3 and 6
    # human: (40 + 60) / 4 = 25 tokens, cut to max_length 20
    assert counts(t, "train/some-model-human-seed42")[3:] == (2 * 4 * 20, 24 * 20)
    # single:a: (40 + 8 x 4) / 4 = 18
    assert counts(t, "train/some-model-single-a-seed42")[3:] == (2 * 4 * 18, 24 * 18)
    # multi:a,b: shard 0 by a (18 tokens), shard 1 by b ((40 + 16) / 4 = 14): mean 16
    assert counts(t, "train/some-model-multi-a_b-seed42")[3:] == (2 * 4 * 16, 24 * 16)
    for cond in ("vanilla", "human", "single-a", "multi-a_b"):
        assert counts(t, f"respond/some-model-{cond}-seed42") == (4, 4 * 8, 4 * 10, 0, 0)


def test_collapse_counts_by_hand(hand):
    _, t = hand
    # the vanilla target scores each answer set (4 answers of <= 8 tokens, prompts of 10)
    assert counts(t, "score/some-model--vanilla--seed42-by-vanilla-some-model") == (4, 0, 40, 32, 0)
    # ... and each model scores the human test answers (4 x 15 tokens)
    assert counts(t, "score/human-test-by-vanilla-some-model") == (4, 0, 40, 60, 0)
    assert counts(t, "score/human-test-by-some-model--human--seed42") == (4, 0, 40, 60, 0)
    assert counts(t, "evaluate/human-test")[0] == 4 and counts(t, "stats/collapse")[0] == 5


def _jailbreak_texts(target: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Plain prompts and (filled template, underlying prompt), recomputed from the CSV files."""
    with open(SAFETY_DATA / "harmful_behaviors.csv", newline="") as handle:
        goals = [row["goal"] for row in csv.DictReader(handle)]
    with open(SAFETY_DATA / "chatgpt_jailbreak_prompts.csv", newline="") as handle:
        kept = [row["Prompt"] for row in csv.DictReader(handle)
                if int(row["Votes"]) > 10 and "[INSERT PROMPT HERE]" in row["Prompt"]]
    filled = [(t.replace("ChatGPT", target).replace("OpenAI", target).replace("[INSERT PROMPT HERE]", g), g)
              for t in kept for g in goals]
    return goals, filled


def test_safety_counts_by_hand(hand):
    _, t = hand
    goals, filled = _jailbreak_texts("some-model")
    assert (len(goals), len(filled)) == (3, 2 * 3)  # 2 templates have > 10 votes and a placeholder
    assert counts(t, "prompts/safety-some-model")[0] == 9
    prefill = math.ceil(sum(len(SYSTEM) + len(x) for x in goals + [f for f, _ in filled]) / 4)
    assert counts(t, "safety_respond/some-model-human-seed42") == (9, 9 * 8, prefill, 0, 0)
    # a judge reads its template, the underlying request and an answer of <= 8 tokens (32 chars)
    harm = load_judge_template(None, "harm")
    judged = goals + [g for _, g in filled]
    judge_prefill = math.ceil(sum(len(SYSTEM) + len(harm) + len(g) + 32 for g in judged) / 4)
    assert counts(t, "judge/harm-some-model-human-seed42") == (9, 9 * 16, judge_prefill, 0, 0)
    items = [json.loads(line) for line in CALIBRATION.read_text().splitlines() if line.strip()]
    calib = math.ceil(sum(len(SYSTEM) + len(harm) + len(i["prompt"]) + len(i["response"]) for i in items) / 4)
    assert counts(t, "calibrate/harm-judge") == (len(items), len(items) * 16, calib, 0, 0)
    assert not t.loc["prompts/safety-some-model", "items_upper_bound"]


def test_preference_counts_by_hand(hand):
    _, t = hand
    # all 4 test records are items (10 asked); user turn = "Sum:\n\n" + 36 chars = 42
    user = 6 + USER
    assert counts(t, "items/preference")[0] == 4
    assert counts(t, "candidates/a") == (4, 4 * 8, math.ceil(4 * (4 + user) / 4), 0, 0)
    # the preference texts all get the experiment's max_new_tokens (8), whatever a source's own decoding
    assert counts(t, "candidates/b") == (4, 4 * 8, math.ceil(4 * (4 + user) / 4), 0, 0)
    # every ordered pair of the 3 texts (a and b: 8 tokens = 32 chars, human: 60 chars)
    # per item, then a rating of each text: a plain loop over all the judge's prompts
    pair = load_preference_template(None, "pairwise")
    rating = load_preference_template(None, "rating")
    text = {"a": 32, "b": 32, "human": ANSWER}
    chars = 0
    for _item in range(4):
        for first, second in itertools.permutations(text, 2):
            chars += len(SYSTEM) + len(pair) + user + text[first] + text[second]
        for length in text.values():
            chars += len(SYSTEM) + len(rating) + user + length
    expected = (4 * (6 + 3), 0, math.ceil(chars / 4), 0, 0)
    assert counts(t, "prefer/some-model-vanilla") == expected
    assert counts(t, "prefer/some-model-multi-a_b-seed42") == expected


def test_totals_per_kind_and_model(hand):
    _, t = hand
    table = t.reset_index()
    kinds = plan_totals(table, "kind").set_index("kind")
    assert kinds.loc["generate", "tokens_generate"] == 64 + 64 + 32
    assert kinds.loc["generate", "stages"] == 3 and kinds.loc["all", "stages"] == len(table)
    models = plan_totals(table, "model").set_index("model")
    assert models.loc["mock/echo", "tokens_generate"] == 32 + 32  # generate b-shard1 + candidates b
    assert models.loc["all", "tokens_train"] == (480 + 432 + 384)
    assert (kinds["incomplete"] == "").all()


def test_unknown_counts_are_marked_not_guessed(tmp_path):
    cfg = hand_config(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data["corpus"] = {"kind": "hf", "name": "some-org/unknown-dataset"}
    cfg.write_text(yaml.safe_dump(data))
    table = plan_experiment(load_config(cfg, use_env=False))
    gen = table[table["kind"] == "generate"]
    assert gen["n_items"].isna().all() and gen["tokens_generate"].isna().all()
    assert gen["basis"].str.contains("not read offline").all()
    prepare = table[table["kind"] == "prepare"].iloc[0]
    assert pd.isna(prepare["n_items"]) and "unknown" in prepare["basis"]
    kinds = plan_totals(table, "kind").set_index("kind")
    assert pd.isna(kinds.loc["generate", "tokens_generate"])
    # safety prompts do not depend on the corpus: still known
    harmful = (table["kind"] == "safety_respond") & ~table["label"].str.contains("/benign-")
    assert (table.loc[harmful, "n_items"] == 9).all()
    assert "tokens_generate" in kinds.loc["all", "incomplete"]


@pytest.mark.parametrize("n,epochs,batch,accum,val,every", [
    (16, 1, 4, 1, 0.2, 2), (37, 2.5, 4, 3, 0.1, 3), (10, 1.3, 3, 2, 0.0, 1), (9, 3, 8, 1, 0.5, 20)])
def test_lora_schedule_matches_the_recipes_step_loop(n, epochs, batch, accum, val, every):
    import torch

    from collapselab.config.spec import LoraSpec
    from collapselab.train.lora import _optimizer_steps, split_validation

    lora = LoraSpec(epochs=epochs, batch_size=batch, grad_accum=accum, val_fraction=val, eval_every=every)
    plan = lora_schedule(n, lora)
    examples = [type("E", (), {"id": f"e{i}"})() for i in range(n)]
    fit, held = split_validation(examples, val, seed=0)
    assert (plan["n_fit"], plan["n_val"]) == (len(fit), len(held))
    steps = list(itertools.islice(_optimizer_steps(len(fit), batch, accum, torch.Generator().manual_seed(0)),
                                  plan["steps"]))
    assert len(steps) == plan["steps"]
    assert plan["processed"] == sum(len(micro) for _, group in steps for micro in group)
    last = plan["steps"]
    evaluations = [s for s in range(1, last + 1) if s % every == 0 or s == last] if held else []
    assert plan["evals"] == len(evaluations)


# -- a real run: plan against what the stages wrote, and lineage -----------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("lineage")
    cfg = tiny_config(tmp, tiny_model_dir, write_corpus(tmp / "corpus.jsonl"),
                      conditions=["vanilla", "human", "single:a"], collapse={"enabled": False})
    spec = load_config(cfg, use_env=False)
    run_stages(spec, tmp / "run")
    return spec, tmp / "run", cfg


def stage_dir(run_dir, stage):
    return RunStore(run_dir).final_dir(stage.ref)


@pytest.mark.slow
def test_plan_predicts_what_the_run_did(finished):
    spec, run_dir, _ = finished
    stages = build_graph(spec)
    table = plan_experiment(spec, stages).set_index("label")
    system = spec.decoding.system_prompt or ""
    for stage in stages:
        row = table.loc[stage.label]
        if stage.kind in ("generate", "respond"):
            out = read_jsonl(stage_dir(run_dir, stage) / ("synthetic.jsonl" if stage.kind == "generate"
                                                          else "responses.jsonl"))
            assert row["n_items"] == len(out)
            assert row["tokens_prefill"] == math.ceil(sum(len(system) + len(r["prompt"]) for r in out) / 4)
            assert row["tokens_generate"] >= sum(r["new_tokens"] for r in out)
        if stage.kind == "train":
            summary = json.loads((stage_dir(run_dir, stage) / "train_summary.json").read_text())
            assert row["n_items"] == summary["n_train"] + summary["n_val"]
            plan = lora_schedule(int(row["n_items"]), spec.lora)
            assert plan["steps"] == summary["total_steps"] and plan["n_val"] == summary["n_val"]
            curve = read_jsonl(stage_dir(run_dir, stage) / "loss_curve.jsonl")
            if not summary["stopped_early"]:
                assert plan["evals"] == sum("val_loss" in c for c in curve)
    prepared = json.loads((stage_dir(run_dir, stages[0]) / "summary.json").read_text())
    assert table.loc["prepare/corpus", "n_items"] == prepared["corpus_records"]


@pytest.mark.slow
def test_lineage_chains_from_final_stages_back_to_prepare(finished):
    from collapselab.cli.lineage import final_stages, lineage_nodes

    spec, run_dir, _ = finished
    rows = stage_status(spec, run_dir)
    stages = [s for s, _ in rows]
    states = {s.label: st for s, st in rows}
    roots = lineage_nodes(stages, states)
    assert [r.stage.kind for r in roots] == ["respond"] * 3 == [s.kind for s in final_stages(stages)]
    human = next(r for r in roots if "human" in r.stage.name)
    chain, node = [], human
    while node.children:
        chain.append(node.stage.kind)
        node = node.children[0]
    assert [*chain, node.stage.kind] == ["respond", "train", "mix", "prepare"]
    assert node.repeated  # prepare was first expanded under the vanilla answers
    assert all(n == "done" for n in states.values())


@pytest.mark.slow
def test_lineage_command_prints_the_tree_and_one_stages_ancestry(finished):
    spec, run_dir, _ = finished
    stages = build_graph(spec)
    res = cli("lineage", run_dir)
    assert res.returncode == 0, res.stderr
    for stage in stages:
        assert stage.label in res.stdout and stage.key in res.stdout
    assert "missing" not in res.stdout
    train = next(s for s in stages if s.kind == "train" and s.params.condition.kind == "single")
    res = cli("lineage", run_dir, train.label)
    assert res.returncode == 0, res.stderr
    shown = {s.label for s in stages if s.label in res.stdout}
    # no multi-source condition: one shard, answered by source a
    assert shown == {train.label, "mix/single-a", "generate/a-shard0", "prepare/corpus"}
    res = cli("lineage", run_dir, "train/no-such-stage")
    assert res.returncode == 2 and "no stage 'train/no-such-stage'" in res.stderr


@pytest.mark.slow
def test_lineage_marks_missing_stages_of_a_partial_run(finished, tmp_path):
    spec, _, _ = finished
    run_dir = tmp_path / "partial"
    run_stages(spec, run_dir, stop_after=lambda s: s.kind == "generate")
    res = cli("lineage", run_dir)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    prepare = next(line for line in lines if "prepare/corpus" in line)
    assert "done" in prepare
    respond = next(line for line in lines if "respond/" in line and "human" in line)
    assert "missing" in respond
    assert "missing" in res.stdout.splitlines()[-1] and "done" in res.stdout.splitlines()[-1]


def test_plan_command_table_totals_and_csv(hand, tmp_path):
    _, t = hand
    cfg = hand_config(tmp_path)
    res = cli("plan", cfg, "--csv", tmp_path / "plan.csv")
    assert res.returncode == 0, res.stderr
    assert "generate/a-shard0" in res.stdout and "totals per stage kind" in res.stdout
    written = pd.read_csv(tmp_path / "plan.csv").set_index("label")
    assert written["tokens_train"].sum() == t["tokens_train"].sum() == 480 + 432 + 384
    # overrides work as in run/validate; --totals prints only the totals
    res = cli("plan", cfg, "decoding.max_new_tokens=16", "--totals", "--csv", tmp_path / "totals.csv")
    assert res.returncode == 0, res.stderr
    assert "generate/a-shard0" not in res.stdout and "totals per model" in res.stdout
    totals = pd.read_csv(tmp_path / "totals.csv")
    kinds = totals[totals["by"] == "kind"].set_index("group")
    assert kinds.loc["generate", "tokens_generate"] == 8 * 16 * 2 + 8 * 4  # b keeps its own decoding


def test_plan_command_reports_a_bad_config(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("targets: [hf/x/y]\nlora:\n  rank: 3\n")
    res = cli("plan", cfg)
    assert res.returncode == 2 and "lora.rank: unknown key" in res.stderr and "Traceback" not in res.stderr


def test_plan_command_on_the_paper_config_needs_no_keys():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    res = subprocess.run([sys.executable, "-m", "collapselab", "plan", ROOT / "configs" / "paper.yaml",
                          "--totals"], capture_output=True, text=True, timeout=600,
                         env={**env, "COLUMNS": "250"}, check=False)
    assert res.returncode == 0, res.stderr
    assert "72,622,080" in res.stdout  # the generate total of the study's grid
