"""Curation between generate and mix: the rules against plain reimplementations, the scores against
hand computations (the mock model's documented log-probabilities, the judge's read-out, a tiny
random-init detector run directly with transformers), the stage on hand-made generate outputs,
and the mix's side (:func:`apply_curation`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from collapselab.config.spec import Condition, CurationSpec, ModelSpec
from collapselab.errors import ConfigError, DataError
from collapselab.pipeline.context import ModelPool
from collapselab.pipeline.sizing import CorpusFacts, PlanContext, Text
from collapselab.synth.curation import (
    P_CLIP,
    CurateParams,
    apply_curation,
    curation_seed,
    detector_max_length,
    human_label_index,
    plan_curate,
    run_curate,
    score_examples,
    select,
)
from collapselab.synth.mix import synthetic_examples

MOCK = ModelSpec(id="mock/echo")


def step(**kw) -> CurationSpec:
    return CurationSpec(**{"name": "c", "score": "perplexity", **kw})


def rows_of(answers: list[str], source: str = "a") -> list[dict]:
    return [{"prompt_id": f"p{i}", "prompt": f"Question {i}?", "response": a, "source": source, "shard": i % 2}
            for i, a in enumerate(answers)]


# -- selection -------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", ["low", "high"])
@pytest.mark.parametrize("rate", [0.3, 0.5, 1.0, 0.01])
def test_keep_rate_keeps_the_best_share(keep, rate):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=17)
    ids = [f"x{i}" for i in range(17)]
    got = select(step(score="length", keep=keep, keep_rate=rate), scores, ids, seed=0)
    k = max(1, math.ceil(rate * 17 - 1e-9))
    best = sorted(range(17), key=lambda i: scores[i] if keep == "low" else -scores[i])[:k]
    assert sorted(np.flatnonzero(got.kept)) == sorted(best)
    assert got.times.tolist() == got.kept.astype(int).tolist()
    assert got.cut == pytest.approx(scores[best[-1]])
    assert got.n == 17
    i_kept, i_dropped = best[0], next((i for i in range(17) if i not in best), None)
    assert got.reason[i_kept].startswith("kept: length") and "rank 1 of 17" in got.reason[i_kept]
    if i_dropped is not None:
        assert got.reason[i_dropped].startswith("dropped: length") and "cut" in got.reason[i_dropped]


def test_keep_rate_ties_follow_the_seed_not_the_row_order():
    ids = [f"x{i}" for i in range(20)]
    scores = np.ones(20)
    s = step(keep_rate=0.5)
    first = {ids[i] for i in np.flatnonzero(select(s, scores, ids, seed=3).kept)}
    perm = list(np.random.default_rng(0).permutation(20))
    shuffled = [ids[i] for i in perm]
    again = {shuffled[i] for i in np.flatnonzero(select(s, scores, shuffled, seed=3).kept)}
    assert len(first) == 10 and first == again
    others = [{ids[i] for i in np.flatnonzero(select(s, scores, ids, seed=seed).kept)} for seed in range(4, 8)]
    assert any(o != first for o in others)
    # a strictly better score always wins over the tie
    scores[7] = 0.5
    assert select(s, scores, ids, seed=3).kept[7]


@pytest.mark.parametrize("keep", ["low", "high"])
def test_threshold_both_ends(keep):
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 3.0])
    got = select(step(score="length", keep=keep, rule="threshold", threshold=3.0), scores, list("abcdef"), seed=0)
    want = scores <= 3.0 if keep == "low" else scores >= 3.0
    assert got.kept.tolist() == want.tolist()
    assert got.cut == 3.0
    sign = "≤" if keep == "low" else "≥"
    assert got.reason[2] == f"kept: length 3 {sign} 3 (threshold)"


def test_empty_and_unscored_answers_are_dropped_and_not_counted():
    scores = np.array([1.0, 2.0, np.nan, 0.5, 3.0])
    got = select(step(keep_rate=0.5), scores, list("abcde"), seed=0, empty=[False, False, False, True, False])
    assert got.n == 3 and got.kept.tolist() == [True, True, False, False, False]
    assert got.reason[2] == "dropped: no score" and got.reason[3] == "dropped: empty answer"


def test_selection_is_deterministic_and_checks_its_ids():
    scores = np.random.default_rng(2).uniform(0.01, 0.99, size=30)
    ids = [f"x{i}" for i in range(30)]
    s = CurationSpec(name="d", score="detector", model="hf/org/detector", rule="resample")
    a, b = select(s, scores, ids, seed=9), select(s, scores, ids, seed=9)
    assert a.times.tolist() == b.times.tolist() and a.reason == b.reason
    assert select(s, scores, ids, seed=10).times.tolist() != a.times.tolist()
    with pytest.raises(ValueError, match="unique"):
        select(s, scores, ["x"] * 30, seed=0)


def test_resample_draws_n_copies_with_frequencies_converging_to_the_weights():
    p_human = np.array([0.9, 0.5, 0.2, 0.05, 1.0, 0.0])
    ids = list("abcdef")
    s = CurationSpec(name="d", score="detector", model="hf/org/detector", rule="resample")
    clipped = np.clip(p_human, P_CLIP, 1 - P_CLIP)
    w = clipped / (1 - clipped)
    expected = len(ids) * w / w.sum()
    total = np.zeros(len(ids))
    seeds = 3000
    for seed in range(seeds):
        got = select(s, p_human, ids, seed=seed)
        assert got.times.sum() == len(ids)
        assert got.kept.tolist() == (got.times > 0).tolist()
        total += got.times
    np.testing.assert_allclose(got.weight, expected)
    np.testing.assert_allclose(total / seeds, expected, atol=0.05)
    assert got.reason[5].startswith("dropped: drawn 0 of 6 times")


def test_the_data_seed_changes_the_selection_seed():
    s = step()
    assert curation_seed(s, None) == 0
    assert curation_seed(s, 1) != curation_seed(s, 2) and curation_seed(s, 1) == curation_seed(s, 1)


# -- scores ----------------------------------------------------------------------------------------
def test_perplexity_is_the_mock_models_documented_value():
    rows = rows_of(["a bb ccc", "hello", ""])
    done = []
    got = score_examples(step(), rows, models=ModelPool(), system_prompt=None, default_model=MOCK,
                         progress=done.append)
    # mock: log p(word) = log(1 / (1 + len(word))), so PPL = exp(mean log(1 + len(word)))
    assert got[0] == pytest.approx(math.exp((math.log(2) + math.log(3) + math.log(4)) / 3))
    assert got[1] == pytest.approx(6.0)
    assert math.isnan(got[2])
    assert sum(done) == 3


def test_length_counts_whitespace_words():
    got = score_examples(step(score="length", keep="high"), rows_of(["one two  three\nfour", ""]), models=None,
                         system_prompt=None, default_model=MOCK)
    assert got.tolist() == [4.0, 0.0]


def test_judge_reads_the_expected_rating(tmp_path):
    rows = rows_of(["An answer.", "Another one."])
    fixed = score_examples(step(score="judge", model="mock/fixed:4"), rows, models=ModelPool(),
                           system_prompt=None, default_model=MOCK)
    assert fixed.tolist() == [4.0, 4.0]
    # hash weights: Σ r·p_r over the mock's own probabilities for the rendered template
    from collapselab.judges import JUDGES
    from collapselab.judges.templates import render
    from collapselab.models.base import ChatPrompt, load_model

    template = tmp_path / "t.txt"
    template.write_text("Rate {response} for {prompt}:")
    s = step(score="judge", model="mock/random", template=str(template))
    got = score_examples(s, rows, models=ModelPool(), system_prompt=None, default_model=MOCK)
    model = load_model(ModelSpec(id="mock/random"))
    for r, value in zip(rows, got, strict=True):
        text = render(template.read_text(), prompt=r["prompt"], response=r["response"])
        lp = model.choice_logprobs([ChatPrompt("x", text)], JUDGES.get("quality-rating").choices)[0]
        probs = {c: math.exp(v) for c, v in lp.items()}
        assert value == pytest.approx(sum(int(c) * p for c, p in probs.items()) / sum(probs.values()))
    template.write_text("Rate {answer}:")
    with pytest.raises(ConfigError, match=r"lacks the field\(s\) \{prompt\}, \{response\} \(from curation\.c\."):
        score_examples(s, rows, models=ModelPool(), system_prompt=None, default_model=MOCK)


def build_detector(path: Path, labels=("Fake", "Real"), positions: int = 24) -> Path:
    """A tiny random-init BERT sequence classifier and its WordPiece tokenizer, saved as safetensors."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = "the a of answer human machine text model written quick brown fox lazy dog is".split()
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    path.mkdir(parents=True, exist_ok=True)
    BertTokenizer(vocab=vocab).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=positions, initializer_range=0.5,
                        id2label=dict(enumerate(labels)), label2id={v: k for k, v in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    return path


def test_detector_matches_a_direct_forward_pass(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = build_detector(tmp_path / "det")
    texts = ["the quick brown fox", "a machine written text is the answer", "",
             " ".join(["lazy dog"] * 40)]  # longer than the 24 positions: cut, not a crash
    s = CurationSpec(name="d", score="detector", model={"id": f"hf/{folder}", "batch_size": 3}, rule="resample")
    done = []
    got = score_examples(s, rows_of(texts), models=ModelPool(), system_prompt=None, default_model=MOCK,
                         progress=done.append)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True).eval()
    want = []
    for t in texts:  # one at a time: no padding at all
        enc = tok([t], truncation=True, max_length=24, return_tensors="pt")
        with torch.inference_mode():
            want.append(torch.softmax(model(**enc).logits, -1)[0, 1].item())
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert len(set(np.round(got, 6))) > 1  # the random head separates the texts
    assert done == [3, 1]
    # the human class named explicitly, in another case: the other column
    s2 = s.model_copy(update={"human_label": "fake"})
    got2 = score_examples(s2, rows_of(texts[:2]), models=None, system_prompt=None, default_model=MOCK)
    np.testing.assert_allclose(got2, 1 - np.array(want[:2]), atol=1e-5)


def test_detector_without_a_human_label_is_a_clear_error(tmp_path):
    folder = build_detector(tmp_path / "det", labels=("LABEL_0", "LABEL_1"))
    s = CurationSpec(name="d", score="detector", model=f"hf/{folder}")
    with pytest.raises(ConfigError, match=r"curation\.d\.human_label.*'LABEL_0', 'LABEL_1'"):
        score_examples(s, rows_of(["the fox"]), models=None, system_prompt=None, default_model=MOCK)


def test_human_label_lookup():
    assert human_label_index({0: "ChatGPT", 1: "Human"}, None, "w") == 1
    assert human_label_index({"0": "Real", "1": "Fake"}, None, "w") == 0
    assert human_label_index({0: "machine", 1: "people"}, "people", "w") == 1
    with pytest.raises(ConfigError, match=r"w\.human_label: 'person' is not one of.*'machine', 'people'"):
        human_label_index({0: "machine", 1: "people"}, "person", "w")
    with pytest.raises(ConfigError, match="more than one"):
        human_label_index({0: "human", 1: "Real"}, None, "w")


def test_detector_max_length():
    huge = SimpleNamespace(model_max_length=int(1e30))
    assert detector_max_length(SimpleNamespace(model_max_length=512), None) == 512
    assert detector_max_length(huge, SimpleNamespace(max_position_embeddings=514, model_type="roberta")) == 512
    assert detector_max_length(huge, SimpleNamespace(max_position_embeddings=64, model_type="bert")) == 64


# -- the stage -------------------------------------------------------------------------------------
def fake_ctx(tmp_path: Path, params: CurateParams, generated: dict[str, list[dict]], train_ids: list[str]):
    """A StageContext stand-in: a prepare input and one generate input per entry of ``generated``."""
    dirs = {}
    prepare = SimpleNamespace(kind="prepare", name="prepare")
    dirs["prepare"] = tmp_path / "prepare"
    dirs["prepare"].mkdir()
    (dirs["prepare"] / "train.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in train_ids))
    inputs = [prepare]
    for name, rows in generated.items():
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "synthetic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        inputs.append(SimpleNamespace(kind="generate", name=name))
    out = tmp_path / "out"
    out.mkdir()
    stage = SimpleNamespace(params=params, inputs=inputs, settings={"system_prompt": None}, label="curate/x")
    spec = SimpleNamespace(targets=[MOCK], decoding=SimpleNamespace(system_prompt=None))
    total, advanced = [], []
    ctx = SimpleNamespace(stage=stage, out=out, spec=spec, models=ModelPool(), set_total=total.append,
                          advance=advanced.append, input_dir=lambda s: dirs[s.name])
    return ctx, total, advanced


def synthetic(prompt_id: str, source: str, response: str, shard: int = 0) -> dict:
    return {"prompt_id": prompt_id, "prompt": f"Q {prompt_id}", "category": "qa", "response": response,
            "source": source, "model": f"mock/{source}", "decoding": {}, "seed": 0, "shard": shard}


def test_run_curate_writes_rows_and_summary_that_the_mix_agrees_with(tmp_path):
    cond = Condition(kind="multi", sources=("a", "b"))
    owner = {"p0": "a", "p1": "b", "p2": "a", "p3": "b", "p4": "a"}
    generated = {  # every source answered every prompt; the owner filter keeps each prompt's own answer
        "gen-a": [synthetic(f"p{i}", "a", "w " * (i + 1), shard=i % 2) for i in range(5)],
        "gen-b": [synthetic(f"p{i}", "b", "" if i == 3 else "v " * (10 - i), shard=i % 2) for i in range(5)],
    }
    s = CurationSpec(name="short", score="length", keep="low", keep_rate=0.5)
    ctx, total, advanced = fake_ctx(tmp_path, CurateParams(cond, s, owner=owner), generated,
                                    ["p4", "p3", "p2", "p1", "p0"])
    run_curate(ctx)
    rows = [json.loads(line) for line in (ctx.out / "curation.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["source"]) for r in rows] == [("p4", "a"), ("p3", "b"), ("p2", "a"), ("p1", "b"),
                                                             ("p0", "a")]
    # lengths: p4 5, p3 empty, p2 3, p1 9, p0 1 → 4 eligible, keep ⌈0.5·4⌉ = 2 shortest: p0, p2
    assert {r["prompt_id"] for r in rows if r["kept"]} == {"p0", "p2"}
    assert next(r for r in rows if r["prompt_id"] == "p3")["reason"] == "dropped: empty answer"
    assert total == [5] and sum(advanced) == 5
    summary = json.loads((ctx.out / "summary.json").read_text())
    assert summary["n"] == 5 and summary["eligible"] == 4 and summary["kept"] == 2 and summary["dropped"] == 3
    assert summary["cut"] == 3 and summary["dropped_empty"] == 1 and summary["condition"] == cond.label
    assert summary["scores_kept"]["median"] == 2 and summary["scores_dropped"]["median"] == 7
    # the mix's side: the same generate rows, the owner's only, empty answers dropped
    examples, empties = synthetic_examples(r for g in generated.values() for r in g
                                           if owner[r["prompt_id"]] == r["source"])
    kept, dropped = apply_curation(examples, rows)
    assert [d["prompt_id"] for d in empties] == ["p3"] and sorted(e["id"] for e in kept) == ["p0", "p2"]
    # the curation drops: the eligible ones only (the mix lists the empty answer itself)
    assert [(d["prompt_id"], d["score"]) for d in dropped] == [("p4", 5), ("p1", 9)]
    assert all(d["reason"].startswith("dropped: length") for d in dropped)
    assert all(e["curation"] == "short" and e["curation_weight"] == 1.0 for e in kept)


def test_run_curate_scores_perplexity_under_the_first_target(tmp_path):
    cond = Condition(kind="single", sources=("a",))
    generated = {"gen": [synthetic("p0", "a", "aaaa"), synthetic("p1", "a", "b c")]}
    ctx, _, _ = fake_ctx(tmp_path, CurateParams(cond, step(keep_rate=0.5)), generated, ["p0", "p1"])
    run_curate(ctx)
    rows = [json.loads(line) for line in (ctx.out / "curation.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows] == pytest.approx([5.0, 2.0])
    assert [r["kept"] for r in rows] == [False, True]
    assert json.loads((ctx.out / "summary.json").read_text())["scoring_model"] == "mock/echo"


def test_a_prompt_answered_twice_by_one_source_is_an_error(tmp_path):
    cond = Condition(kind="single", sources=("a",))
    generated = {"g1": [synthetic("p0", "a", "x")], "g2": [synthetic("p0", "a", "y")]}
    ctx, _, _ = fake_ctx(tmp_path, CurateParams(cond, step(score="length", keep="low")), generated, ["p0"])
    with pytest.raises(DataError, match="'p0' is answered twice by source 'a'"):
        run_curate(ctx)


def test_apply_curation_repeats_with_unique_ids_and_provenance():
    examples = [{"id": "p0", "origin": "a", "response": "x"}, {"id": "p1", "origin": "a", "response": "y"}]
    rows = [{"prompt_id": "p0", "source": "a", "score": 0.9, "times": 3, "weight": 2.5, "reason": "kept ×3",
             "curation": "det"},
            {"prompt_id": "p1", "source": "a", "score": 0.1, "times": 0, "weight": 0.2, "reason": "dropped: drawn 0",
             "curation": "det"}]
    kept, dropped = apply_curation(examples, rows)
    assert [e["id"] for e in kept] == ["p0", "p0~1", "p0~2"]
    assert all(e["curation"] == "det" and e["curation_score"] == 0.9 and e["curation_weight"] == 2.5
               and e["response"] == "x" for e in kept)
    assert dropped == [{"prompt_id": "p1", "source": "a", "shard": None, "score": 0.1, "reason": "dropped: drawn 0"}]
    with pytest.raises(DataError, match="'p2' of source 'a' has no curation row"):
        apply_curation([{"id": "p2", "origin": "a"}], rows)


# -- plan ------------------------------------------------------------------------------------------
def test_plan_counts_the_generate_inputs_shards():
    def gen(shard):
        return SimpleNamespace(kind="generate", params=SimpleNamespace(shard=shard,
                                                                       decoding=SimpleNamespace(max_new_tokens=10)))

    corpus = CorpusFacts(shards=[2, 1, 5], train_rows=[Text(8, 0, 0), Text(4, 0, 0), Text(12, 0, 1),
                                                       *[Text(1, 0, 2)] * 5])
    spec = SimpleNamespace(targets=[MOCK], decoding=SimpleNamespace(system_prompt=None))
    ctx = PlanContext(spec, corpus, [])
    stage = SimpleNamespace(params=SimpleNamespace(step=step()), inputs=[gen(0), gen(1), gen(1)],
                            settings={"system_prompt": None})
    est = plan_curate(stage, ctx)
    assert est.n_items == 3 and est.model == "mock/echo"
    assert est.tokens_score == math.ceil((8 + 4 + 12 + 3 * 40) / 4)
    stage.params.step = step(score="length", keep="low")
    assert plan_curate(stage, ctx).tokens_score == 0


# -- end to end ------------------------------------------------------------------------------------
def test_a_curated_run_trains_on_what_curation_kept(tmp_path):
    """mock sources and the toy target: the curate stages' rows agree with their mixes (kept
    examples in, resampled ones repeated with ``~K`` ids, the rest in dropped.jsonl)."""
    from collapselab.store.atomic import read_jsonl
    from tests.unit.pipeline.test_loop_runs import run

    detector = build_detector(tmp_path / "det")
    steps = [{"name": "short", "score": "length", "keep": "low", "keep_rate": 0.5},
             {"name": "det", "score": "detector", "model": f"hf/{detector}", "rule": "resample"}]
    _, store, stages, _ = run(tmp_path, conditions=["vanilla", "single:a", "single:b", "single:a|curate=short",
                                                    "single:a|curate=det", "multi:a,b|curate=short"],
                              curation=steps, generations={"count": 1})
    # the multi-source condition: only each prompt's owner's answer is curated, as the mix reads it
    for name, slug in (("short", "multi-a_b_curateshort"), ("short", "single-a_curateshort"),
                       ("det", "single-a_curatedet")):
        rows = read_jsonl(store.final_dir(stages[f"curate/{slug}"].ref) / "curation.jsonl")
        mix = read_jsonl(store.final_dir(stages[f"mix/{slug}"].ref) / "train.jsonl")
        dropped = read_jsonl(store.final_dir(stages[f"mix/{slug}"].ref) / "dropped.jsonl")
        assert len(rows) == 16 and len(mix) == sum(r["times"] for r in rows)
        assert {e["id"].split("~")[0] for e in mix} == {r["prompt_id"] for r in rows if r["kept"]}
        assert {d["prompt_id"] for d in dropped} == {r["prompt_id"] for r in rows if not r["kept"]}
        assert all(e["curation"] == name for e in mix)
    assert len(mix) == 16 and any("~" in e["id"] for e in mix)  # resampling: n draws, with repeats
    multi = read_jsonl(store.final_dir(stages["curate/multi-a_b_curateshort"].ref) / "curation.jsonl")
    assert {r["source"] for r in multi} == {"a", "b"}
    short = read_jsonl(store.final_dir(stages["mix/single-a_curateshort"].ref) / "train.jsonl")
    assert len(short) == 8
