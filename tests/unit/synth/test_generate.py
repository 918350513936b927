"""Generation resumes chunk by chunk and batches exactly as an uninterrupted run."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.models.base import ChatPrompt, Generation
from collapselab.synth.generate import answer_prompts


class Killed(Exception):
    pass


class BatchRecorder:
    """A fake model whose answers depend on the whole batch (as padded, bf16 batches can); it records
    every batch and raises (a kill) on the call after ``kill_after`` successful ones."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.spec = ModelSpec(id="mock/recorder")
        self.kill_after = kill_after
        self.batches: list[list[str]] = []

    def generate(self, prompts: Sequence[ChatPrompt], decoding: DecodingSpec, *,
                 progress=None) -> list[Generation]:
        if self.kill_after is not None and len(self.batches) == self.kill_after:
            raise Killed
        ids = [p.id for p in prompts]
        self.batches.append(ids)
        if progress:
            progress(len(ids))
        return [Generation(f"{p.user} [{'+'.join(ids)}]", 3, 2, "stop") for p in prompts]


def answer(model, tmp_path, n: int = 11, chunk_size: int = 4, ticks: list[int] | None = None):
    items = [{"id": f"p{k}", "user": f"question {k}"} for k in range(n)]
    prompts = [ChatPrompt(i["id"], i["user"]) for i in items]
    tmp_path.mkdir(exist_ok=True)  # the stage's work folder
    return answer_prompts(model, items, prompts, DecodingSpec(), tmp_path, chunk_size=chunk_size,
                          make_record=lambda item, g: {"prompt_id": item["id"], "response": g.text,
                                                       "finish_reason": g.finish_reason},
                          progress=ticks.append if ticks is not None else None)


@pytest.mark.parametrize("kill_after", [0, 1, 2])
def test_killed_generation_resumes_with_the_same_batches_and_answers(tmp_path, kill_after: int) -> None:
    whole = BatchRecorder()
    expected, summary = answer(whole, tmp_path / "whole")
    assert whole.batches == [[f"p{k}" for k in range(s, min(s + 4, 11))] for s in (0, 4, 8)]
    assert summary["resumed"] == 0 and summary["generated_this_attempt"] == 11

    killed = BatchRecorder(kill_after)
    with pytest.raises(Killed):
        answer(killed, tmp_path / "run")
    resumed, ticks = BatchRecorder(), []
    records, summary = answer(resumed, tmp_path / "run", ticks=ticks)
    assert killed.batches + resumed.batches == whole.batches
    assert records == expected
    assert summary["resumed"] == 4 * kill_after and summary["generated_this_attempt"] == 11 - 4 * kill_after
    assert summary["new_tokens_this_attempt"] == 2 * (11 - 4 * kill_after) and summary["n"] == 11
    assert sum(ticks) == 11  # the resumed prompts once, then the model's own per-batch progress
