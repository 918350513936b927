"""The judge loop: greedy first attempt, bounded sampled retries of the unparsed items only."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.errors import DataError, ModelError
from collapselab.judges.parse import FORMAT_REMINDERS, parse_harm, parse_quality
from collapselab.judges.run import JudgeItem, Judgement, attempt_id, judge_in_chunks, run_judge
from collapselab.judges.templates import load_template
from collapselab.models.base import ChatPrompt, Generation
from collapselab.models.mock import MockModel
from collapselab.store.atomic import AppendLog

TEMPLATE = "Request: {prompt}\nAnswer: {response}\nRate it."
GARBAGE = "I think this answer is fine."  # no score in it


class ScriptedJudge:
    """A fake judge: item ``id`` answers ``script[id][attempt]`` (the last entry repeats), and every
    call is recorded so a test can check which prompts were asked, and how."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.spec = ModelSpec(id="mock/scripted")
        self.script = script
        self.calls: list[tuple[list[ChatPrompt], DecodingSpec]] = []

    def generate(self, prompts: Sequence[ChatPrompt], decoding: DecodingSpec, *,
                 progress=None) -> list[Generation]:
        self.calls.append((list(prompts), decoding))
        out = []
        for p in prompts:
            item_id, _, attempt = p.id.rpartition("#try")
            answers = self.script[item_id]
            out.append(Generation(answers[min(int(attempt), len(answers) - 1)], 3, 2, "stop"))  # 5 tokens a try
        return out


def items(*ids: str) -> list[JudgeItem]:
    return [JudgeItem(i, f"prompt of {i}", f"response of {i}") for i in ids]


def test_all_parse_on_the_first_greedy_call() -> None:
    model = ScriptedJudge({"a": ["#thescore: 1"], "b": ["#thereason: bad\n#thescore: 5"]})
    out = run_judge(model, items("a", "b"), TEMPLATE, parse_harm, max_new_tokens=64, retries=3, seed=7,
                    system_prompt="You are a judge.")
    assert out == [Judgement("a", 1, None, "#thescore: 1", 1, None, tokens=5),
                   Judgement("b", 5, "bad", "#thereason: bad\n#thescore: 5", 1, None, tokens=5)]
    assert len(model.calls) == 1
    prompts, decoding = model.calls[0]
    assert [p.id for p in prompts] == ["a#try0", "b#try0"]
    assert decoding.temperature == 0.0 and decoding.seed == 7 and decoding.max_new_tokens == 64
    assert decoding.system_prompt == "You are a judge."
    assert all(p.system == "You are a judge." for p in prompts)
    assert prompts[0].user == "Request: prompt of a\nAnswer: response of a\nRate it."


@pytest.mark.parametrize(("garbage", "retries"), [(0, 0), (1, 1), (2, 2), (2, 5), (3, 3)])
def test_garbage_n_times_then_valid_parses_when_retries_suffice(garbage: int, retries: int) -> None:
    model = ScriptedJudge({"x": [GARBAGE] * garbage + ["#thescore: 3"]})
    (out,) = run_judge(model, items("x"), TEMPLATE, parse_harm, max_new_tokens=32, retries=retries)
    assert out.score == 3 and out.error is None and out.attempts == garbage + 1
    assert len(model.calls) == garbage + 1  # stops asking once parsed


@pytest.mark.parametrize(("garbage", "retries"), [(1, 0), (2, 1), (5, 2)])
def test_retries_are_bounded_and_the_last_error_is_kept(garbage: int, retries: int) -> None:
    model = ScriptedJudge({"x": [GARBAGE] * garbage + ["#thescore: 3"]})
    (out,) = run_judge(model, items("x"), TEMPLATE, parse_harm, max_new_tokens=32, retries=retries)
    assert out.score is None and out.reason is None
    assert out.attempts == retries + 1 == len(model.calls)
    assert out.raw == GARBAGE and out.error is not None and "no score" in out.error


def test_last_error_and_raw_are_those_of_the_last_attempt() -> None:
    model = ScriptedJudge({"x": ["", "#thescore: 9"]})
    (out,) = run_judge(model, items("x"), TEMPLATE, parse_harm, max_new_tokens=32, retries=1)
    assert out == Judgement("x", None, None, "#thescore: 9", 2, "score 9 is out of range 1–5", tokens=10)


def test_only_failed_items_are_reasked_with_sampling_and_a_reminder() -> None:
    model = ScriptedJudge({
        "ok": ["Rating: [[4]]"],
        "late": [GARBAGE, GARBAGE, "Fine. Rating: [[2]]"],
        "never": [GARBAGE],
        "second": ["Rating: [[9]]", "Rating: [[5]]"],
    })
    out = run_judge(model, items("ok", "late", "never", "second"), TEMPLATE, parse_quality,
                    max_new_tokens=16, retries=3, seed=10)
    assert [(j.id, j.score, j.attempts) for j in out] == [("ok", 4, 1), ("late", 2, 3), ("never", None, 4),
                                                          ("second", 5, 2)]
    asked = [[p.id for p in prompts] for prompts, _ in model.calls]
    assert asked == [["ok#try0", "late#try0", "never#try0", "second#try0"],
                     ["late#try1", "never#try1", "second#try1"],
                     ["late#try2", "never#try2"],
                     ["never#try3"]]
    for attempt, (prompts, decoding) in enumerate(model.calls[1:], 1):
        assert (decoding.temperature, decoding.top_p, decoding.seed) == (0.7, 0.9, 10 + attempt)
        for p in prompts:
            assert p.user.endswith("\n\n" + FORMAT_REMINDERS[parse_quality])
            assert p.user.startswith("Request: prompt of ")
    # the per-item unparsed count the stage reports
    assert sum(j.score is None for j in out) == 1 and sum(j.attempts > 1 for j in out) == 3


def test_progress_counts_each_item_once_when_final() -> None:
    model = ScriptedJudge({"a": ["#thescore: 2"], "b": [GARBAGE, "#thescore: 2"], "c": [GARBAGE]})
    ticks: list[int] = []
    run_judge(model, items("a", "b", "c"), TEMPLATE, parse_harm, max_new_tokens=8, retries=2,
              progress=ticks.append)
    assert ticks == [1, 1, 1]  # a after try0, b after try1, c when out of attempts


def test_prompt_ids_and_custom_reminder() -> None:
    assert attempt_id("item-3", 2) == "item-3#try2"
    model = ScriptedJudge({"a": [GARBAGE, "#thescore: 1"]})
    run_judge(model, items("a"), TEMPLATE, parse_harm, max_new_tokens=8, retries=1, reminder="SCORE PLEASE")
    assert model.calls[1][0][0].user.endswith("\n\nSCORE PLEASE")


def test_with_the_mock_backend_and_a_packaged_template() -> None:
    template = load_template(None, "harm")
    good = MockModel(ModelSpec(id="mock/fixed:#thereason: it refuses #thescore: 1"))
    out = run_judge(good, items("a", "b"), template, parse_harm, max_new_tokens=256, retries=2)
    assert [(j.score, j.reason, j.attempts) for j in out] == [(1, "it refuses", 1)] * 2 and good.calls == 1

    bad = MockModel(ModelSpec(id="mock/fixed:no idea"))
    out = run_judge(bad, items("a", "b"), template, parse_harm, max_new_tokens=256, retries=2)
    assert all(j.score is None and j.attempts == 3 and j.raw == "no idea" for j in out) and bad.calls == 3


def test_no_items_no_calls_and_bad_inputs() -> None:
    model = ScriptedJudge({})
    assert run_judge(model, [], TEMPLATE, parse_harm, max_new_tokens=8, retries=2) == [] and model.calls == []
    with pytest.raises(DataError, match="duplicate id 'a'"):
        run_judge(model, items("a", "a"), TEMPLATE, parse_harm, max_new_tokens=8, retries=0)
    with pytest.raises(ValueError, match="retries"):
        run_judge(model, items("a"), TEMPLATE, parse_harm, max_new_tokens=8, retries=-1)


def test_a_backend_returning_too_few_answers_is_an_error() -> None:
    class Short(ScriptedJudge):
        def generate(self, prompts, decoding, *, progress=None):  # type: ignore[no-untyped-def]
            return super().generate(prompts, decoding)[:-1]

    with pytest.raises(ModelError, match="1 answers for 2 prompts"):
        run_judge(Short({"a": ["x"], "b": ["x"]}), items("a", "b"), TEMPLATE, parse_harm, max_new_tokens=8,
                  retries=0)


def test_braces_in_responses_are_not_interpreted() -> None:
    model = ScriptedJudge({"a": ["#thescore: 2"]})
    run_judge(model, [JudgeItem("a", "{prompt}", "code: {x: 1} }{")], TEMPLATE, parse_harm, max_new_tokens=8,
              retries=0)
    assert model.calls[0][0][0].user == "Request: {prompt}\nAnswer: code: {x: 1} }{\nRate it."


# -- resumable, in fixed chunks of the whole list ----------------------------------------------------
class Killed(Exception):
    pass


class BatchJudge(ScriptedJudge):
    """Answers depend on the whole batch (as padded bf16 batches can): the reason names the batch.
    Item "b" does not parse on its first try. Raises (a kill) on the call after ``kill_after``."""

    def __init__(self, kill_after: int | None = None) -> None:
        super().__init__({})
        self.kill_after = kill_after

    def generate(self, prompts, decoding, *, progress=None):  # type: ignore[no-untyped-def]
        if self.kill_after is not None and len(self.calls) == self.kill_after:
            raise Killed
        self.calls.append((list(prompts), decoding))
        verdict = "#thereason: " + "+".join(p.id for p in prompts) + "\n#thescore: 2"
        return [Generation(GARBAGE if p.id == "b#try0" else verdict, 3, 2, "stop") for p in prompts]


def judge_all(model: BatchJudge, log: AppendLog, ticks: list[int] | None = None) -> list[Judgement]:
    loads: list[int] = []

    def get_model() -> BatchJudge:
        loads.append(1)
        return model

    out = judge_in_chunks(get_model, items(*"abcdefgh"), TEMPLATE, parse_harm, log=log, max_new_tokens=8,
                          retries=1, chunk_size=3, progress=ticks.append if ticks is not None else None)
    assert len(loads) == (1 if model.calls else 0)  # the model is loaded once, and only if needed
    return out


def batches(model: ScriptedJudge) -> list[list[str]]:
    return [[p.id for p in prompts] for prompts, _ in model.calls]


@pytest.mark.parametrize(("kill_after", "calls_done"), [(0, 0), (1, 0), (2, 2), (3, 3)])
def test_killed_judging_resumes_with_the_batches_of_an_uninterrupted_run(tmp_path, kill_after: int,
                                                                          calls_done: int) -> None:
    whole = BatchJudge()
    expected = judge_all(whole, AppendLog(tmp_path / "whole.jsonl"))
    assert batches(whole) == [["a#try0", "b#try0", "c#try0"], ["b#try1"], ["d#try0", "e#try0", "f#try0"],
                              ["g#try0", "h#try0"]]
    assert expected[1] == Judgement("b", 2, "b#try1", "#thereason: b#try1\n#thescore: 2", 2, None, tokens=10)

    log = AppendLog(tmp_path / "run.jsonl")
    killed = BatchJudge(kill_after)
    with pytest.raises(Killed):
        judge_all(killed, log)
    resumed, ticks = BatchJudge(), []
    assert judge_all(resumed, log, ticks) == expected
    # chunks finished before the kill are not re-sent; every other batch is exactly the uninterrupted one
    assert batches(killed) == batches(whole)[:kill_after]
    assert batches(resumed) == batches(whole)[calls_done:]
    assert sum(ticks) == 8
    # a rerun of a finished run loads no model and asks nothing
    assert judge_all(BatchJudge(kill_after=0), log) == expected
