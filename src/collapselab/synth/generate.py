"""Answer a list of prompts with a model, checkpointing each chunk so a killed run resumes.

Sampling is seeded per prompt (see :func:`collapselab.models.base.prompt_seed`), so the answers a
resumed run produces for the remaining prompts are the ones an uninterrupted run would have.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from collapselab.config.spec import DecodingSpec
from collapselab.models.base import ChatPrompt, LanguageModel
from collapselab.store.atomic import AppendLog
from collapselab.store.chunks import run_in_chunks


def answer_prompts(
    model: LanguageModel,
    items: Sequence[dict[str, Any]],
    prompts: Sequence[ChatPrompt],
    decoding: DecodingSpec,
    workdir: Path,
    make_record: Callable[[dict[str, Any], Any], dict[str, Any]],
    *,
    chunk_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Generate an answer for every prompt; returns the records in input order and a summary.

    ``items[i]`` is the metadata of ``prompts[i]``; ``make_record(item, generation)`` builds the
    output record (it must keep ``prompt_id``). The prompts are answered in fixed chunks of
    ``chunk_size`` (:func:`~collapselab.store.chunks.run_in_chunks`); finished chunks are appended
    to ``workdir/partial.jsonl`` and skipped on a rerun, which batches exactly as an uninterrupted
    run.
    """
    pairs = list(zip(items, prompts, strict=True))
    started, new_tokens = time.perf_counter(), 0

    def work(chunk: list[tuple[dict[str, Any], ChatPrompt]]) -> list[dict[str, Any]]:
        nonlocal new_tokens
        gens = model.generate([p for _, p in chunk], decoding, progress=progress)
        new_tokens += sum(g.new_tokens for g in gens)
        return [make_record(item, g) for (item, _), g in zip(chunk, gens, strict=True)]

    run = run_in_chunks(pairs, work, log=AppendLog(workdir / "partial.jsonl"),
                        item_id=lambda pair: pair[1].id, chunk_size=chunk_size, record_id="prompt_id",
                        progress=progress,
                        progress_per_chunk=False)  # the model reports progress per prompt
    seconds = time.perf_counter() - started
    ordered = run.records
    finish: dict[str, int] = {}
    for r in ordered:
        finish[r.get("finish_reason", "?")] = finish.get(r.get("finish_reason", "?"), 0) + 1
    summary = {
        "n": len(ordered),
        "generated_this_attempt": run.computed,
        "resumed": run.resumed,
        "new_tokens_this_attempt": new_tokens,
        "seconds_this_attempt": round(seconds, 3),
        "tokens_per_second": round(new_tokens / seconds, 2) if seconds > 0 and new_tokens else None,
        "finish_reasons": finish,
        "empty_responses": sum(1 for r in ordered if not r["response"].strip()),
    }
    return ordered, summary
