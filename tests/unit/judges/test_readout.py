"""The probability read-out of the harm and quality judges: the expected rating against a hand
computation on the tiny model, a verdict for every item, the HTTP path through top-logprobs, and
clear errors."""

import math

import numpy as np
import pytest

from collapselab.config.spec import ModelSpec
from collapselab.errors import ModelError
from collapselab.judges import JUDGES
from collapselab.judges.readout import judge_prompt, read_in_chunks, read_items, verdict
from collapselab.judges.run import JudgeItem
from collapselab.models.base import load_model
from collapselab.store.atomic import AppendLog

ITEMS = [JudgeItem(f"i{k}", f"Request number {k}: tell me a fact.", "An answer " * (k + 1)) for k in range(5)]
#: a template short enough for the tiny model's 512-token context (its tokenizer is character-level)
SHORT = "Request: {prompt}\nAnswer: {response}\nScore from 1 to 5:"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = load_model(ModelSpec(id=f"hf/{tiny_model_dir}", dtype="float32", batch_size=2))
    yield model
    model.close()


def hand_expected_rating(model, prompt) -> tuple[float, dict[str, float]]:
    """Σ r·p_r over "1".."5" from the model's own logits at the end of the rendered prompt, each
    digit's probability summed over its single-token spellings."""
    import torch

    from collapselab.models.formatting import render_prompt_ids

    ids = render_prompt_ids(model.tokenizer, prompt, model.is_chat)
    with torch.inference_mode():
        logits = model.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    probs = torch.softmax(logits, -1)
    mass = {}
    for digit in "12345":
        spellings = {tuple(model.tokenizer(v, add_special_tokens=False)["input_ids"]) for v in (digit, " " + digit)}
        mass[digit] = sum(float(probs[s[0]]) for s in spellings if len(s) == 1)
    total = sum(mass.values())
    return sum(int(d) * m for d, m in mass.items()) / total, {d: m / total for d, m in mass.items()}


@pytest.mark.parametrize("name", ["harm-rating", "quality-rating"])
def test_expected_rating_matches_a_hand_computation_on_the_tiny_model(tiny, name):
    judge = JUDGES.get(name)
    template = SHORT
    got = read_items(tiny, judge, ITEMS, template, system_prompt="Be fair.")
    assert [j.id for j in got] == [i.id for i in ITEMS]
    for item, j in zip(ITEMS, got, strict=True):
        expected, probs = hand_expected_rating(tiny, judge_prompt(judge, template, item, "Be fair."))
        assert j.score == pytest.approx(expected, rel=1e-4)
        assert j.probs == pytest.approx(probs, rel=1e-4)
        assert 0 < j.mass < 1 and 1 <= j.score <= 5
        assert j.error is None and j.attempts == 1 and j.tokens > len(template) // 4


def test_the_prompt_ends_where_the_score_goes():
    text = JUDGES.get("harm-rating").template().rstrip()
    assert text.endswith("a single digit from 1 to 5.")
    assert "{prompt}" in text and "{response}" in text
    quality = JUDGES.get("quality-rating").template()
    assert "as if harm did not matter" in quality and "appropriate answer" not in quality


@pytest.mark.parametrize("model_id", ["mock/random", "mock/echo", "mock/fixed:#thescore: 4", "mock/empty"])
def test_every_item_gets_a_verdict(model_id):
    judge = JUDGES.get("harm-rating")
    got = read_items(load_model(ModelSpec(id=model_id)), judge, ITEMS, judge.template())
    assert all(j.score is not None and 1 <= j.score <= 5 for j in got)  # coverage 100%
    if model_id.startswith("mock/fixed"):
        assert {j.score for j in got} == {4.0}


def test_a_resumed_read_gives_the_same_verdicts(tmp_path):
    judge = JUDGES.get("quality-rating")
    model = load_model(ModelSpec(id="mock/random"))
    calls = []

    def get():
        calls.append(1)
        return model

    log = AppendLog(tmp_path / "partial.jsonl")
    first = read_in_chunks(get, judge, ITEMS, judge.template(), log=log, chunk_size=2)
    again = read_in_chunks(get, judge, ITEMS, judge.template(), log=AppendLog(tmp_path / "partial.jsonl"),
                           chunk_size=2)
    assert first == again and len(calls) == 1  # the second run read everything from the log


def test_no_mass_on_any_choice_is_an_error_not_a_score():
    judge = JUDGES.get("harm-rating")
    j = verdict("x", judge, dict.fromkeys("12345", -math.inf), tokens=None)
    assert j.score is None and "outside" in j.error and j.mass == 0.0
    partial = verdict("y", judge, {"1": math.log(0.2), "5": math.log(0.2)}, tokens=7)  # others missing
    assert partial.score == pytest.approx(3.0) and partial.probs["3"] == 0.0 and partial.mass == pytest.approx(0.4)


def test_the_http_backend_reads_the_top_logprobs(tmp_path, monkeypatch):
    from tests.unit.models.test_openai_http import KEY, KEY_ENV, FakeServer, make_model

    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("COLLAPSELAB_CACHE", str(tmp_path / "cache"))
    server = FakeServer()
    try:
        server.top = [("4", math.log(0.5)), (" 4", math.log(0.1)), ("2", math.log(0.2)), ("Sure", math.log(0.1))]
        judge = JUDGES.get("harm-rating")
        got = read_items(make_model(server, tmp_path / "c"), judge, ITEMS[:2], judge.template())
        assert got[0].score == pytest.approx((4 * 0.6 + 2 * 0.2) / 0.8)
        assert got[0].mass == pytest.approx(0.8) and got[0].tokens is None
        sent = server.requests[-1].body
        assert sent["max_tokens"] == 1 and sent["top_logprobs"] >= 5 and sent["logprobs"] is True
        server.top = [("Sure", math.log(0.9))]  # no rating token in the top list: no verdict, said so
        missed = read_items(make_model(server, tmp_path / "d"), judge, ITEMS[2:3], judge.template())
        assert missed[0].score is None and "top log-probabilities" in missed[0].error
    finally:
        server.close()


def test_a_judge_without_single_token_digits_fails_naming_it(tiny, monkeypatch):
    from collapselab.models import hf

    # a vocabulary that spells every digit with two tokens
    monkeypatch.setattr(hf, "text_token_ids", lambda tokenizer, text: [1, 2])
    with pytest.raises(ModelError, match=r"judge 'harm-rating': model .*'1' is not a single token"):
        read_items(tiny, JUDGES.get("harm-rating"), ITEMS[:1], SHORT)


def test_a_prompt_longer_than_the_judges_context_fails_naming_the_judge(tiny_model_dir):
    model = load_model(ModelSpec(id=f"hf/{tiny_model_dir}", dtype="float32", max_context=64))
    judge = JUDGES.get("harm-rating")
    with pytest.raises(ModelError, match=r"judge 'harm-rating'.*item 'i0'.*context of 64"):
        read_items(model, judge, ITEMS[:1], judge.template())


def test_the_hf_vocabulary_check_names_the_model(tiny):
    with pytest.raises(ModelError, match="not a single token"):
        tiny.choice_logprobs([judge_prompt(JUDGES.get("harm-rating"), "{prompt} {response}", ITEMS[0], None)],
                             ["12345678-not-a-token"])
    prompt = judge_prompt(JUDGES.get("harm-rating"), "{prompt} {response}", ITEMS[0], None)
    assert np.isfinite(list(tiny.choice_logprobs([prompt], ["1", "2"])[0].values())).all()
