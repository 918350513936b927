"""configs/paper.yaml — the study's own grid: it validates offline, its graph has the study's shape,
and ``plan`` sizes it from the study's published numbers."""

from __future__ import annotations

import math
import socket
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from collapselab.config.load import load_config
from collapselab.corpora.base import Record
from collapselab.corpora.split import make_shards, split_records
from collapselab.errors import ConfigError
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.plan import plan_experiment, plan_totals
from collapselab.pipeline.validate import validate_experiment

ROOT = Path(__file__).resolve().parents[3]
PAPER = ROOT / "configs" / "paper.yaml"
KEY_VARS = ("OPENAI_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY", "MISTRAL_API_KEY", "COHERE_API_KEY")

# The study's sizes (PAPER.md): Dolly 13,509 train / 1,502 test prompts in 4 quarters, 12 sources
# in 3 tiers, 2 targets, 886 RefusalBench prompts + 28 templates x 40, 100 CNN/DM articles, 5 texts.
TRAIN, TEST, MAX_NEW = 13_509, 1_502, 1_024


@pytest.fixture()
def spec():
    return load_config(PAPER, use_env=False)


@pytest.fixture()
def keys(monkeypatch):
    for name in KEY_VARS:
        monkeypatch.setenv(name, "fake-key-for-tests")


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_validates_offline_with_the_key_variables_set(spec, keys, no_network):
    stages = validate_experiment(spec)
    assert len(stages) == len(build_graph(spec))


@pytest.mark.parametrize("missing", KEY_VARS)
def test_each_hosted_source_needs_its_key_variable(spec, keys, monkeypatch, missing):
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigError, match=missing):
        validate_experiment(spec)


def test_the_study_design(spec):
    assert spec.corpus.kind == "hf" and spec.corpus.name == "databricks/databricks-dolly-15k"
    assert spec.corpus.context_first and spec.split.seed == 42 and spec.n_shards == 4
    assert (spec.decoding.temperature, spec.decoding.top_p, spec.decoding.max_new_tokens) == (0.7, 0.9, 1024)
    assert spec.decoding.system_prompt == "You are a helpful assistant."
    assert [len(m) for m in spec.tiers.values()] == [4, 4, 4] and len(spec.sources) == 12
    # the first source of each tier is that tier's Llama and its single-source model
    singles = [c.sources[0] for c in spec.conditions if c.kind == "single"]
    llamas = ["llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b"]
    assert singles == [m[0] for m in spec.tiers.values()] == llamas
    multis = [c.sources for c in spec.conditions if c.kind == "multi"]
    assert multis == list(spec.tiers.values())
    assert [t.id for t in spec.targets] == ["hf/meta-llama/Llama-3.1-8B-Instruct",
                                            "hf/meta-llama/Llama-3.1-70B-Instruct"]
    hosted = {s.name: s.model for s in spec.sources if s.model.backend == "openai"}
    assert set(hosted) == {"mistral-large", "command-r-plus", "gemini-2.0-flash", "gpt-4o", "deepseek-v3"}
    assert {m.api_key_env for m in hosted.values()} == set(KEY_VARS)
    lora = spec.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.learning_rate) == (16, 32, 0.1, 5e-5)
    assert lora.scheduler == "cosine"
    assert (lora.warmup_ratio, lora.weight_decay, lora.epochs, lora.max_length) == (0.03, 0.01, 3, 1024)
    assert (lora.val_fraction, lora.eval_every, lora.patience, lora.dtype) == (0.05, 20, 5, "bfloat16")
    # the study's objective (the whole chat text) and batches: 8B 2 GPUs x 4 x 8 = 64, 70B 4 x 1 x 32 = 128
    assert lora.loss == "full"
    small, big = (spec.lora_for(name) for name in spec.target_names)
    assert (small.batch_size * small.grad_accum, big.batch_size * big.grad_accum) == (64, 128)
    # micro-batches sized to fit 80 GB GPUs (tests/unit/pipeline/test_memory.py): 2 x 32 on one GPU,
    # the 70B sharded over the node's 8 GPUs at 8 x 16; activations recomputed (no key holds that)
    assert small == lora and (lora.batch_size, lora.grad_accum, lora.strategy) == (8, 8, "single")
    assert big == lora.model_copy(update={"strategy": "fsdp", "grad_accum": 16}) and lora.activation_checkpointing
    assert spec.run.gpus_per_node == 8 and spec.run.gpu_memory_gb == 141
    j = spec.safety.jailbreaks
    assert (j.min_votes, j.max_templates, j.prompts_per_template) == (10, 28, 40)
    assert spec.safety.judge.id == "hf/meta-llama/Llama-3.1-70B-Instruct"
    assert spec.safety.prompts[0].max_prompts == 886
    p = spec.preference
    assert (p.corpus.name, p.corpus.hf_subset, p.corpus.hf_split) == ("abisee/cnn_dailymail", "3.0.0", "test")
    assert p.items == 100 and len(p.sources) == 4  # the small tier: 4 sources + human = 5 texts
    # the 8B judges compare the small tier's texts, the 70B judges the medium tier's (as the study)
    assert spec.preference_sources("llama-3.1-8b-instruct") == spec.tiers["small"]
    assert spec.preference_sources("llama-3.1-70b-instruct") == spec.tiers["medium"]
    assert not p.own  # each judge's own family is its own model's texts, found automatically
    assert (p.corpus.columns.prompt, p.corpus.columns.response) == ("article", "highlights")
    assert p.corpus.columns.context is None and p.corpus.columns.category is None


def test_the_split_rule_gives_the_studys_sizes_on_15011_records(spec):
    # Dolly's 8 categories with their sizes (they sum to 15,011), split by the real function
    categories = {"open_qa": 3742, "general_qa": 2191, "classification": 2136, "closed_qa": 1773,
                  "brainstorming": 1766, "information_extraction": 1506, "summarization": 1188,
                  "creative_writing": 709}
    records = [Record(f"{c}-{i}", "p", "r", c) for c, n in categories.items() for i in range(n)]
    assert len(records) == 15_011
    train, test = split_records(records, spec.split)
    assert (len(train), len(test)) == (TRAIN, TEST)
    shards = make_shards(train, spec.n_shards, spec.split.seed)
    assert sorted(len(s) for s in shards) == [3377, 3377, 3377, 3378]


def test_graph_has_the_grids_stage_counts(spec):
    counts = Counter(s.kind for s in build_graph(spec))
    # each tier's Llama answers all 4 quarters (single-source), the other 3 sources one quarter each
    assert counts["generate"] == 3 * (4 + 3)
    assert counts["mix"] == 7  # human + 3 single + 3 multi
    assert counts["train"] == 2 * 7 * 1  # targets x trained conditions x seeds
    assert counts["respond"] == 2 * 8
    # every model answers the harmful prompts and the over-refusal prompts
    assert counts["prompts"] == 2 and counts["benign_prompts"] == 1 and counts["safety_respond"] == 2 * 8 * 2
    # harm + quality + Llama Guard on every answer set, each calibrated
    assert counts["calibrate"] == 3 and counts["judge"] == 3 * 2 * 8 * 2
    assert counts["candidates"] == 4 + 4 and counts["prefer"] == 2 * 8  # the small and the medium tier
    # Experiment 1: the human test set, 16 answer sets, the human train answers and 12 sources
    assert counts["embed"] == counts["evaluate"] == 1 + 16 + 1 + 12
    # every answer set scored by its vanilla target (16), human answers by each fine-tuned
    # model (14), by each vanilla target (2)
    assert counts["score"] == 16 + 14 + 2


def test_plan_runs_offline_and_matches_the_studys_sizes(spec, no_network, monkeypatch):
    for name in KEY_VARS:  # plan needs no API key
        monkeypatch.delenv(name, raising=False)
    table = plan_experiment(spec)
    kinds = plan_totals(table, "kind").set_index("kind")
    # generate: each tier's Llama answers all 13,509 train prompts, the other three one quarter
    # each; quarters are dealt round-robin: 3,378 + 3 x 3,377
    quarters = [math.ceil(TRAIN / 4)] + [TRAIN // 4] * 3
    assert sum(quarters) == TRAIN
    prompts = 3 * (TRAIN + quarters[1] + quarters[2] + quarters[3])
    assert kinds.loc["generate", "n_items"] == prompts == 70_920
    assert kinds.loc["generate", "tokens_generate"] == prompts * MAX_NEW == 72_622_080
    assert kinds.loc["respond", "tokens_generate"] == 2 * 8 * TEST * MAX_NEW
    # prompt lengths are unknown without Dolly: said, not guessed
    generate = table[table["kind"] == "generate"]
    assert generate["tokens_prefill"].isna().all() and pd.isna(kinds.loc["generate", "tokens_prefill"])
    assert generate["basis"].str.contains("not read offline").all()
    # the LoRA recipe by hand: 5% validation = ceil(675.45) = 676, 12,833 to fit; 8B: ceil(12,833 / 2)
    # = 6,417 micro-batches an epoch, 32 accumulated -> 201 steps an epoch, 603 steps (the study's
    # log: 603), an evaluation every 20 steps and at the end: 31; 70B: 12,833 micro-batches of 1,
    # 128 accumulated -> 101 steps an epoch, 303 steps, 16 evaluations; lengths unknown ->
    # max_length 1,024 per example
    trains = table[table["kind"] == "train"]
    assert len(trains) == 14 and (trains["tokens_train"] == 3 * 12_833 * 1024).all()
    for target, steps, evals in (("8B", 603, 31), ("70B", 303, 16)):
        rows = trains[trains["model"] == f"hf/meta-llama/Llama-3.1-{target}-Instruct"]
        assert len(rows) == 7 and (rows["tokens_score"] == evals * 676 * 1024).all()
        assert rows["basis"].str.contains(f"{steps} steps of {64 if target == '8B' else 128} examples").all()
        assert rows["basis"].str.contains("loss on every token").all()
    # safety: 886 plain + 28 x 40 jailbreak prompts per answering model, upper bounds from the caps
    safety = table[(table["kind"] == "safety_respond") & ~table["label"].str.contains("/benign-")]
    assert (safety["n_items"] == 886 + 28 * 40).all() and safety["items_upper_bound"].all()
    assert (safety["tokens_generate"] == 2006 * MAX_NEW).all()
    # preference: 100 articles, 5 texts: 20 ordered pairs + 5 ratings per article and judge
    prefer = table[table["kind"] == "prefer"]
    assert (prefer["n_items"] == 100 * (20 + 5)).all() and len(prefer) == 16
    assert (table.loc[table["kind"] == "candidates", "tokens_generate"] == 100 * MAX_NEW).all()



def test_the_studys_exact_grid_is_two_runs_sharing_their_common_stages():
    # as the YAML's comment says: 70B on every condition, 8B on the small tier only
    big = build_graph(load_config(PAPER, ["targets=[hf/meta-llama/Llama-3.1-70B-Instruct]"], use_env=False))
    eight_b = ["targets=[hf/meta-llama/Llama-3.1-8B-Instruct]",
               "conditions=[vanilla, human, single:llama-3.1-8b, multi:tier=small]"]
    with pytest.raises(ConfigError, match="lora_overrides: 'llama-3.1-70b-instruct' is not a target name"):
        load_config(PAPER, eight_b, use_env=False)  # the YAML's comment says to drop the 70B settings
    small = build_graph(load_config(PAPER, [*eight_b, "lora_overrides={}", "preference.sources_by_target={}"],
                                    use_env=False))
    trains = [sum(s.kind == "train" for s in g) for g in (big, small)]
    assert trains == [7, 3] and sum(trains) == 10
    small_generate = {s.key for s in small if s.kind == "generate"}
    assert len(small_generate) == 4 + 3 and small_generate <= {s.key for s in big}
    # each run's training is the one the joint grid would run (the 70B keeps its batch of 128)
    joint = {s.label: s.key for s in build_graph(load_config(PAPER, use_env=False)) if s.kind == "train"}
    assert all(joint[s.label] == s.key for g in (big, small) for s in g if s.kind == "train")
    assert {s.name for s in big if s.kind == "candidates"} == set(load_config(PAPER, use_env=False).tiers["medium"])


def test_each_judge_compares_its_own_tier_and_finds_its_own_family(spec):
    stages = build_graph(spec)
    for s in (s for s in stages if s.kind == "prefer"):
        compared = [i.params.source for i in s.inputs if i.kind == "candidates"]
        assert compared == list(spec.tiers["medium" if "70b" in s.params.target_name else "small"])
    summary = next(s for s in stages if s.kind == "preference")
    assert summary.settings["own"] == {"llama-3.1-8b-instruct": "llama-3.1-8b",
                                       "llama-3.1-70b-instruct": "llama-3.1-70b"}
