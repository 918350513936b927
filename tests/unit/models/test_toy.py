"""The toy unigram backend and its trainer: ids, sampling (determinism, independence, temperature,
top-p), log-probabilities by hand, errors."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.errors import ModelError, TrainingError
from collapselab.models.base import ChatPrompt, check_model, load_model
from collapselab.models.toy import LOGPROB_FLOOR, ToyModel, parse_toy_name
from collapselab.train.lora import TrainExample
from collapselab.train.toy import read_counts, train_toy

PLAIN = DecodingSpec(temperature=1.0, top_p=1.0, max_new_tokens=64, seed=7)


def _prompts(n: int, prefix: str = "p") -> list[ChatPrompt]:
    return [ChatPrompt(f"{prefix}{i}", f"question {i}") for i in range(n)]


def _fit(tmp_path, answers: list[str], seed: int = 0, name: str = "fit") -> ModelSpec:
    target = ModelSpec(id="toy/unigram")
    examples = [TrainExample(ChatPrompt(f"e{i}", "q"), a, f"e{i}") for i, a in enumerate(answers)]
    train_toy(target, examples, out_dir=tmp_path / name, seed=seed)
    return target.model_copy(update={"adapter": str(tmp_path / name / "adapter")})


def test_ids_parse_with_defaults_and_bad_ones_name_the_field() -> None:
    assert parse_toy_name("unigram") == parse_toy_name("unigram:types=100,zipf=1.0,length=10")
    assert parse_toy_name("unigram:types=5,zipf=0,length=3").types == 5
    for name, words in (("bigram", "unknown toy model"), ("unigram:size=3", "size=3"),
                        ("unigram:types=x", "types must be an integer"), ("unigram:zipf=-1", "zipf must be"),
                        ("unigram:length=0", "length must be at least 1"), ("unigram:types=3,types=4", "twice")):
        with pytest.raises(ModelError, match=words):
            parse_toy_name(name)
    check_model(ModelSpec(id="toy/unigram:types=3"))  # registered with the backend checks
    with pytest.raises(ModelError, match="zipf"):
        check_model(ModelSpec(id="toy/unigram:zipf=nan"))
    assert isinstance(load_model(ModelSpec(id="toy/unigram")), ToyModel)


def test_answers_have_the_length_and_vocabulary_and_follow_the_zipf_law() -> None:
    model = ToyModel(ModelSpec(id="toy/unigram:types=3,zipf=1,length=5"))
    out = model.generate(_prompts(2000), PLAIN)
    assert all(len(g.text.split()) == 5 and g.finish_reason == "stop" and g.new_tokens == 5 for g in out)
    counts = Counter(t for g in out for t in g.text.split())
    assert set(counts) == {"w0", "w1", "w2"}
    p = np.array([1, 1 / 2, 1 / 3]) / (1 + 1 / 2 + 1 / 3)
    freq = np.array([counts[f"w{i}"] for i in range(3)]) / 10_000
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 10_000))  # binomial standard errors


def test_sampling_is_deterministic_per_prompt_and_independent_across_models(tmp_path) -> None:
    base = ToyModel(ModelSpec(id="toy/unigram:types=50,length=8"))
    prompts = _prompts(20)
    first = [g.text for g in base.generate(prompts, PLAIN)]
    # a resumed or re-batched run samples the same text: per prompt, not per batch position
    assert [g.text for g in base.generate(prompts[::-1], PLAIN)][::-1] == first
    assert [base.generate([p], PLAIN)[0].text for p in prompts] == first
    assert len(set(first)) == 20
    assert [g.text for g in base.generate(prompts, PLAIN.model_copy(update={"seed": 8}))] != first
    # the same fit trained with two seeds: different fingerprints, so independent samples under one decoding seed
    answers = [" ".join(f"w{(i * j) % 9}" for j in range(6)) for i in range(30)]
    a, b = ToyModel(_fit(tmp_path, answers, seed=1, name="a")), ToyModel(_fit(tmp_path, answers, seed=2, name="b"))
    np.testing.assert_array_equal(a.probs, b.probs)
    texts_a, texts_b = [g.text for g in a.generate(prompts, PLAIN)], [g.text for g in b.generate(prompts, PLAIN)]
    assert sum(x == y for x, y in zip(texts_a, texts_b, strict=True)) <= 1
    again = ToyModel(_fit(tmp_path, answers, seed=1, name="a2"))
    assert [g.text for g in again.generate(prompts, PLAIN)] == texts_a  # a refit of the same data: same text


def test_temperature_top_p_and_greedy_by_hand() -> None:
    model = ToyModel(ModelSpec(id="toy/unigram:types=3,zipf=1,length=4"))
    p = np.array([6, 3, 2]) / 11
    np.testing.assert_allclose(model.sampling_probabilities(PLAIN), p)
    hot = model.sampling_probabilities(PLAIN.model_copy(update={"temperature": 2.0}))
    np.testing.assert_allclose(hot, np.sqrt(p) / np.sqrt(p).sum())
    # nucleus: w0 holds 6/11 ≈ 0.545 — top_p 0.5 keeps it alone, 0.6 adds w1 (renormalised), 1.0 all
    np.testing.assert_allclose(model.sampling_probabilities(PLAIN.model_copy(update={"top_p": 0.5})), [1, 0, 0])
    np.testing.assert_allclose(model.sampling_probabilities(PLAIN.model_copy(update={"top_p": 0.6})),
                               [2 / 3, 1 / 3, 0])
    greedy = PLAIN.model_copy(update={"temperature": 0.0})
    assert {g.text for g in model.generate(_prompts(5), greedy)} == {"w0 w0 w0 w0"}
    nucleus = model.generate(_prompts(200), PLAIN.model_copy(update={"top_p": 0.6}))
    assert {t for g in nucleus for t in g.text.split()} == {"w0", "w1"}


def test_max_new_tokens_cuts_the_same_answer_and_beams_are_refused() -> None:
    model = ToyModel(ModelSpec(id="toy/unigram:types=20,length=6"))
    full = model.generate(_prompts(3), PLAIN)
    cut = model.generate(_prompts(3), PLAIN.model_copy(update={"max_new_tokens": 2}))
    for f, c in zip(full, cut, strict=True):
        assert c.text.split() == f.text.split()[:2] and c.finish_reason == "length" and c.new_tokens == 2
    with pytest.raises(ModelError, match="beam search"):
        model.generate(_prompts(1), PLAIN.model_copy(update={"num_beams": 2}))


def test_logprobs_by_hand_with_the_floor_and_no_judging(tmp_path) -> None:
    model = ToyModel(ModelSpec(id="toy/unigram:types=3,zipf=1"))
    [scores] = model.continuation_logprobs(_prompts(1), ["w0 w2 zz"])
    assert scores == pytest.approx([math.log(6 / 11), math.log(2 / 11), math.log(1e-9)])
    fitted = ToyModel(_fit(tmp_path, ["a b a", "a c"]))
    [scores] = fitted.continuation_logprobs(_prompts(1), ["a c w0"])
    assert scores == pytest.approx([math.log(3 / 5), math.log(1 / 5), LOGPROB_FLOOR])
    assert fitted.length == 3  # (3 + 2) / 2 = 2.5 rounds half up
    with pytest.raises(ModelError, match="toy models cannot judge"):
        model.choice_logprobs(_prompts(1), ["A", "B"])


def test_adapter_problems_name_the_file(tmp_path) -> None:
    with pytest.raises(ModelError, match="no toy_unigram.json"):
        ToyModel(ModelSpec(id="toy/unigram", adapter=str(tmp_path)))
    (tmp_path / "toy_unigram.json").write_text(json.dumps({"format": "collapselab-toy-unigram", "tokens": ["a"],
                                                            "counts": [0], "length": 2}))
    with pytest.raises(ModelError, match="'counts' must be positive"):
        check_model(ModelSpec(id="toy/unigram", adapter=str(tmp_path)))


def test_trainer_writes_the_fit_curve_and_summary(tmp_path) -> None:
    calls = []
    spec = _fit(tmp_path, ["a b a b", "a c a c"], seed=5)
    target = ModelSpec(id="toy/unigram")
    examples = [TrainExample(ChatPrompt("x", "q"), "a b a b", "x"), TrainExample(ChatPrompt("y", "q"), "a c a c", "y")]
    train_toy(target, examples, out_dir=tmp_path / "run", seed=5, progress=lambda *a: calls.append(a))
    assert read_counts(tmp_path / "run" / "adapter") == {"a": 4, "b": 2, "c": 2}
    nll = -(4 * math.log(0.5) + 2 * 2 * math.log(0.25)) / 8
    curve = [json.loads(line) for line in (tmp_path / "run" / "loss_curve.jsonl").read_text().splitlines()]
    assert curve == [{"step": 1, "epoch": 1.0, "train_loss": pytest.approx(nll), "lr": 0.0}]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["best_val_loss"] == pytest.approx(nll) and summary["val_loss_in_sample"] is True
    assert summary["stopped_early"] is False and summary["types"] == 3 and summary["tokens"] == 8
    assert calls == [(1, 1, pytest.approx(nll))]
    assert ToyModel(spec).length == 4
    with pytest.raises(TrainingError, match="no tokens"):
        train_toy(target, [TrainExample(ChatPrompt("z", "q"), "  ", "z")], out_dir=tmp_path / "empty", seed=0)
