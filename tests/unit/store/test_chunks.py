"""The one resumable chunked loop: fixed slices of the whole list, resumed exactly."""

from __future__ import annotations

import pytest

from collapselab.errors import DataError
from collapselab.store.atomic import AppendLog
from collapselab.store.chunks import fixed_chunks, run_in_chunks


class Killed(Exception):
    pass


def batch_dependent(calls: list[list[str]], kill_after: int | None = None):
    """A work function whose records depend on the whole batch (like padded bf16 numerics), which
    records every batch it is sent and raises on the call after ``kill_after`` successful ones."""
    def work(chunk: list[str]) -> list[dict]:
        if kill_after is not None and len(calls) == kill_after:
            raise Killed
        calls.append(list(chunk))
        return [{"id": i, "value": f"{i} with {'+'.join(chunk)}"} for i in chunk]
    return work


def test_fixed_chunks() -> None:
    chunks = fixed_chunks("abcde", 2)
    assert [(c.start, c.items) for c in chunks] == [(0, ["a", "b"]), (2, ["c", "d"]), (4, ["e"])]
    assert fixed_chunks([], 3) == []
    with pytest.raises(ValueError, match="chunk_size"):
        fixed_chunks("ab", 0)


@pytest.mark.parametrize("kill_after", [0, 1, 2, 3])
def test_a_killed_run_resumes_with_the_batches_of_an_uninterrupted_one(tmp_path, kill_after: int) -> None:
    items = [f"i{k}" for k in range(10)]
    whole: list[list[str]] = []
    expected = run_in_chunks(items, batch_dependent(whole), log=AppendLog(tmp_path / "a.jsonl"),
                             item_id=str, chunk_size=3)
    assert whole == [items[0:3], items[3:6], items[6:9], items[9:10]]
    assert (expected.resumed, expected.computed) == (0, 10)

    log = AppendLog(tmp_path / "b.jsonl")
    first: list[list[str]] = []
    with pytest.raises(Killed):
        run_in_chunks(items, batch_dependent(first, kill_after), log=log, item_id=str, chunk_size=3)
    second: list[list[str]] = []
    ticks: list[int] = []
    resumed = run_in_chunks(items, batch_dependent(second), log=log, item_id=str, chunk_size=3,
                            progress=ticks.append)
    assert first + second == whole  # the resumed run sends exactly the remaining batches
    assert resumed.records == expected.records and [r["id"] for r in resumed.records] == items
    done = sum(len(b) for b in first)
    assert (resumed.resumed, resumed.computed) == (done, 10 - done)
    assert sum(ticks) == 10 and ticks == ([done] if done else []) + [len(b) for b in second]


def test_a_half_logged_chunk_is_redone_whole(tmp_path) -> None:
    items = list("abcdef")
    log = AppendLog(tmp_path / "log.jsonl")
    # chunk 0 complete; chunk 1 torn after its first record (d); "x" is a stray id
    log.append([{"id": "a", "value": "old"}, {"id": "b", "value": "old"}, {"id": "c", "value": "old"},
                {"id": "d", "value": "old"}, {"id": "x", "value": "old"}])
    calls: list[list[str]] = []
    run = run_in_chunks(items, batch_dependent(calls), log=log, item_id=str, chunk_size=3)
    assert calls == [["d", "e", "f"]]
    assert [r["value"] for r in run.records] == ["old"] * 3 + [f"{i} with d+e+f" for i in "def"]
    # a rerun of a finished list computes nothing
    again: list[list[str]] = []
    rerun = run_in_chunks(items, batch_dependent(again), log=log, item_id=str, chunk_size=3)
    assert rerun.records == run.records
    assert again == []


def test_progress_per_chunk_can_be_left_to_the_work(tmp_path) -> None:
    ticks: list[int] = []
    run_in_chunks(list("abcde"), batch_dependent([]), log=AppendLog(tmp_path / "l.jsonl"), item_id=str,
                  chunk_size=2, progress=ticks.append, progress_per_chunk=False)
    assert ticks == []


def test_bad_input_and_bad_work(tmp_path) -> None:
    log = AppendLog(tmp_path / "l.jsonl")
    with pytest.raises(DataError, match="duplicate item id 'a'"):
        run_in_chunks(["a", "b", "a"], batch_dependent([]), log=log, item_id=str, chunk_size=2)
    with pytest.raises(DataError, match="expected"):
        run_in_chunks(["a", "b"], lambda chunk: [{"id": "a"}], log=log, item_id=str, chunk_size=2)
    with pytest.raises(DataError, match="in order"):
        run_in_chunks(["a", "b"], lambda chunk: [{"id": "b"}, {"id": "a"}], log=log, item_id=str,
                      chunk_size=2)
    assert log.read() == []  # nothing wrong was checkpointed
    # records keyed by another field
    run = run_in_chunks(["a"], lambda chunk: [{"prompt_id": i} for i in chunk],
                        log=AppendLog(tmp_path / "p.jsonl"), item_id=str, chunk_size=2, record_id="prompt_id")
    assert run.records == [{"prompt_id": "a"}]
