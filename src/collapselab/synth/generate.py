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
    output record (it must keep ``prompt_id``). Finished chunks are appended to
    ``workdir/partial.jsonl`` and skipped on a rerun.
    """
    log = AppendLog(workdir / "partial.jsonl")
    done = {r["prompt_id"]: r for r in log.read()}
    # Chunks are fixed slices of the full prompt list, and a chunk counts as done only when all
    # of its prompts are in the log: a resumed run then batches exactly as an uninterrupted one,
    # so even batch-dependent numerics (padding, bf16) give the same text.
    chunks = [list(range(s, min(s + chunk_size, len(prompts)))) for s in range(0, len(prompts), chunk_size)]
    todo_chunks = [c for c in chunks if not all(prompts[i].id in done for i in c)]
    resumed = len(prompts) - sum(len(c) for c in todo_chunks)
    if progress and resumed:
        progress(resumed)
    started, new_tokens = time.perf_counter(), 0
    for idx in todo_chunks:
        gens = model.generate([prompts[i] for i in idx], decoding, progress=progress)
        records = [make_record(items[i], g) for i, g in zip(idx, gens, strict=True)]
        new_tokens += sum(g.new_tokens for g in gens)
        log.append(records)
        done.update({r["prompt_id"]: r for r in records})
    seconds = time.perf_counter() - started
    ordered = [done[p.id] for p in prompts]
    finish: dict[str, int] = {}
    for r in ordered:
        finish[r.get("finish_reason", "?")] = finish.get(r.get("finish_reason", "?"), 0) + 1
    summary = {
        "n": len(ordered),
        "generated_this_attempt": len(prompts) - resumed,
        "resumed": resumed,
        "new_tokens_this_attempt": new_tokens,
        "seconds_this_attempt": round(seconds, 3),
        "tokens_per_second": round(new_tokens / seconds, 2) if seconds > 0 and new_tokens else None,
        "finish_reasons": finish,
        "empty_responses": sum(1 for r in ordered if not r["response"].strip()),
    }
    return ordered, summary
