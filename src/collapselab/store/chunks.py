"""The one resumable chunked loop: work through a whole ordered item list in fixed slices,
checkpointing each slice's records in an append-only log (:class:`~collapselab.store.atomic.AppendLog`)
so a killed run resumes where it stopped.

Chunks are fixed slices of the *whole* list — ``items[0:n]``, ``items[n:2n]``, ... — and a chunk is
done only when every one of its ids is in the log. A resumed run therefore sends exactly the
batches an uninterrupted run sends (a half-logged chunk is redone whole), so even batch-dependent
numerics (padding, bf16 kernels) give the same outputs. Generation (:mod:`collapselab.synth.generate`),
judging (:func:`collapselab.judges.run.judge_in_chunks`) and the preference read-outs use it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from collapselab.errors import DataError
from collapselab.store.atomic import AppendLog

T = TypeVar("T")
Record = dict[str, Any]


@dataclass(frozen=True)
class ChunkedRun:
    """What :func:`run_in_chunks` did: ``records`` (one per item, in item order), how many items
    came from the log (``resumed``) and how many were computed now (``computed``)."""

    records: list[Record]
    resumed: int
    computed: int


@dataclass(frozen=True)
class Chunk(Generic[T]):
    """One fixed slice of the item list: ``items[start:start + len(items)]``."""

    start: int
    items: list[T]


def fixed_chunks(items: Sequence[T], chunk_size: int) -> list[Chunk[T]]:
    """The fixed slices of ``items`` of ``chunk_size`` (the last one may be shorter)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [Chunk(s, list(items[s:s + chunk_size])) for s in range(0, len(items), chunk_size)]


def run_in_chunks(
    items: Sequence[T],
    work: Callable[[list[T]], Sequence[Record]],
    *,
    log: AppendLog,
    item_id: Callable[[T], str],
    chunk_size: int,
    record_id: str = "id",
    progress: Callable[[int], None] | None = None,
    progress_per_chunk: bool = True,
) -> ChunkedRun:
    """Compute a record per item, chunk by chunk, resuming from ``log``.

    ``work(chunk)`` gets the items of one fixed slice (see the module docstring) and returns one
    record per item, in order, each holding the item's id under ``record_id``; the chunk's records
    are appended to ``log`` in one write. Chunks whose ids are all in the log are skipped.

    ``progress`` is called once with the number of items resumed from the log (when there are
    any) and, when ``progress_per_chunk``, with the size of each chunk once it is done (pass False
    when ``work`` reports its own, finer progress).
    """
    ids = [item_id(it) for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise DataError(f"{log.path.name}: duplicate item id {dup!r} (ids must be unique within a run)")
    done: dict[str, Record] = {r[record_id]: r for r in log.read() if record_id in r}
    chunks = fixed_chunks(items, chunk_size)
    todo = [c for c in chunks if not all(i in done for i in ids[c.start:c.start + len(c.items)])]
    computed = sum(len(c.items) for c in todo)
    resumed = len(items) - computed
    if progress and resumed:
        progress(resumed)
    for chunk in todo:
        records = list(work(chunk.items))
        expected = ids[chunk.start:chunk.start + len(chunk.items)]
        got = [r.get(record_id) for r in records]
        if got != expected:
            raise DataError(f"{log.path.name}: the chunk at item {chunk.start} gave records for "
                            f"{got[:3]}{'...' if len(got) > 3 else ''} ({len(got)}), expected "
                            f"{expected[:3]}{'...' if len(expected) > 3 else ''} ({len(expected)}), in order")
        log.append(records)
        done.update(zip(expected, records, strict=True))
        if progress and progress_per_chunk:
            progress(len(records))
    return ChunkedRun([done[i] for i in ids], resumed=resumed, computed=computed)
