"""Sizing an experiment before launching it: every stage of :func:`build_graph` with the items it
processes and the tokens it generates, reads, scores and trains on.

Nothing is run, no model is loaded and nothing is downloaded. Counts come from what is knowable
offline: local data files are read and split exactly as ``prepare`` splits them; a Hugging Face
corpus is not read, so its size comes from the study's published sizes where collapselab knows
them (:data:`KNOWN_RECORDS`), and its text lengths stay unknown. Where a count cannot be known
offline it is reported as unknown (``<NA>``) with the reason in the ``basis`` column — never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from collapselab.config.spec import ExperimentSpec
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.kinds import stage_kind
from collapselab.pipeline.memory import GB, NO_GPU, fits, stage_memory
from collapselab.pipeline.sizing import (  # noqa: F401  (re-exported: the sizing rules plan documents)
    CHARS_PER_TOKEN,
    KNOWN_RECORDS,
    PlanContext,
    corpus_facts,
    lora_schedule,
)
from collapselab.pipeline.stage import Stage

TOKEN_COLUMNS = ("tokens_generate", "tokens_prefill", "tokens_score", "tokens_train")
COUNT_COLUMNS = ("n_items", *TOKEN_COLUMNS)
#: the GPU columns (:mod:`collapselab.pipeline.memory`): peak GB per GPU (a lower bound when
#: ``gpu_gb_lower``), GPU-hours (likewise), whether it fits ``run.gpu_memory_gb`` (<NA>: not
#: checked) and ``gpu_memory``: the main terms of the estimate, or why there is none
GPU_COLUMNS = ("gpu_gb", "gpu_gb_lower", "gpu_hours", "gpu_hours_lower", "fits", "gpu_memory")
COLUMNS = ("label", "kind", "name", "model", "unit", *COUNT_COLUMNS, "items_upper_bound", "cpus", "gpus",
           *GPU_COLUMNS, "basis")


def plan_experiment(spec: ExperimentSpec, stages: Sequence[Stage] | None = None) -> pd.DataFrame:
    """One row per stage of ``build_graph(spec)``: what it processes and how many tokens.

    Columns: ``label``, ``kind``, ``name``, ``model`` (the model the stage runs, None for data
    stages; a fine-tuned model is its target's id), ``unit`` and ``n_items`` (prompts, texts,
    examples, comparisons + ratings, ...), the token counts below, ``items_upper_bound`` (the
    count comes from a cap such as ``max_prompts`` because the data is not read offline), the
    stage's ``cpus``/``gpus`` and ``basis`` (how the row was computed and why a count is
    unknown). Counts are nullable integers: ``<NA>`` = unknown offline.

    Token counts (text → tokens by ``ceil(characters / 4)``, :data:`CHARS_PER_TOKEN`; chat-template
    tokens are not counted):

    * ``tokens_generate`` — an upper bound: items × ``max_new_tokens`` (answers stop earlier at
      end-of-sequence). Judges: one attempt per judgement (re-asks of unparsed ones are extra).
    * ``tokens_prefill`` — prompt tokens read before generating or scoring: system prompt + user
      turn (+ judge template, + the texts a judge reads; answers counted at ``max_new_tokens``,
      preference texts at most ``max_text_chars``).
    * ``tokens_score`` — teacher-forced tokens: answers scored for perplexity (model answers at
      ``max_new_tokens``, human answers by their length) and, for ``train`` stages, the validation
      passes: evaluations × validation examples × mean example length.
    * ``tokens_train`` — examples processed (epochs × training examples, by the recipe's step
      count) × mean example length, each example ``min(max_length, (prompt + answer) / 4)``,
      synthetic answers at their source's ``max_new_tokens``; an upper bound since early stopping
      may end training sooner. Unknown lengths count ``max_length`` per example.

    Where the counts come from: a local corpus (``jsonl``/``csv``/``parquet``/``txt``, or
    ``austen`` once fetched) is loaded and split exactly as ``prepare`` does; an ``hf`` corpus is
    not downloaded: its record count comes from :data:`KNOWN_RECORDS` (Dolly: 15,011; CNN/DailyMail
    3.0.0 test: 11,490) with the split computed by the same rule (round(n × test_fraction) test
    records, the size caps, round-robin shards), and its prompt lengths stay unknown. Safety
    prompt sets and jailbreak collections are read when they are local files or cached wheels;
    otherwise their counts are the caps ``max_prompts`` / ``max_templates`` (upper bounds).
    Preference items sampled from a larger pool are counted at the pool's mean lengths. Empty
    synthetic answers (dropped by ``mix``) are not foreseen.

    GPU columns (stages that load a model; :func:`collapselab.pipeline.memory.stage_memory` has
    the formulas): ``gpu_gb`` the peak memory per GPU in GB (1e9 bytes), ``gpu_hours`` the GPU-hours
    at ``run.gpu_tflops`` (default: an H100's dense bf16 peak at 40% utilization), each with a
    ``_lower`` flag when a term is unknown offline (the prompt lengths of an unread corpus);
    ``fits`` whether the stage fits ``run.gpu_memory_gb`` (<NA>: not declared, or not checked);
    ``gpu_memory`` the estimate's main terms — or why there is none (a hosted model, a CPU backend,
    an unknown model shape, also in ``basis``).
    """
    stages = list(build_graph(spec) if stages is None else stages)
    ctx = PlanContext(spec, corpus_facts(spec), stages)
    rows = []
    for stage in stages:
        kind = stage_kind(stage.kind)
        est = kind.plan(stage, ctx)
        mem = stage_memory(stage, est, spec)
        gpu: dict[str, Any] = {"gpu_gb": None, "gpu_gb_lower": False, "gpu_hours": None, "gpu_hours_lower": False,
                               "fits": None, "gpu_memory": ""}
        if mem is not None:
            gpu.update(gpu_gb=None if mem.peak is None else mem.peak / GB, gpu_gb_lower=mem.lower_bound,
                       gpu_hours=mem.gpu_hours, gpu_hours_lower=mem.seconds_lower_bound, fits=fits(mem, spec),
                       gpu_memory=(("" if mem.gpus == 1 else f"per GPU of {mem.gpus}: ") + mem.main_terms())
                       if mem.known else "; ".join(mem.notes))
            if mem.gpu and not mem.known:
                est.notes.extend(mem.notes)
        rows.append({
            "label": stage.label, "kind": stage.kind, "name": stage.name, "model": est.model,
            "unit": kind.unit, "n_items": est.n_items, "tokens_generate": est.tokens_generate,
            "tokens_prefill": est.tokens_prefill, "tokens_score": est.tokens_score,
            "tokens_train": est.tokens_train, "items_upper_bound": est.bound,
            "cpus": stage.resources.get("cpus", 1), "gpus": stage.resources.get("gpus", 0),
            **gpu, "basis": "; ".join(n for n in est.notes if n),
        })
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["model"] = table["model"].astype(object).where(table["model"].notna(), None)
    for column in COUNT_COLUMNS:
        table[column] = table[column].astype("Int64")
    for column in ("gpu_gb", "gpu_hours"):
        table[column] = table[column].astype("Float64")
    table["fits"] = table["fits"].astype("boolean")
    return table


def plan_totals(table: pd.DataFrame, by: str = "kind") -> pd.DataFrame:
    """Sums of the counts of :func:`plan_experiment`'s table per ``by`` (``kind`` or ``model``),
    in order of first appearance, then an ``all`` row.

    Unknown counts are left out of a sum; ``incomplete`` lists the columns whose sum therefore
    is a lower bound (empty when every stage's count is known). A sum over stages that are all
    unknown is unknown (``<NA>``). Stages without a model are grouped under ``-``.

    GPU columns: ``gpu_gb`` is the largest peak per GPU of the group's stages (not a sum: stages
    run one after another or on other GPUs), ``gpu_hours`` the sum of their GPU-hours; each is in
    ``incomplete`` when a stage's value is unknown or a lower bound (stages that use no GPU do not
    count). ``refused``: how many of the group's stages do not fit ``run.gpu_memory_gb``.
    """
    if by not in ("kind", "model"):
        raise ValueError(f"plan_totals: by must be 'kind' or 'model', not {by!r}")
    keys = table[by].fillna("-")
    out = []
    groups = [(key, table[keys == key]) for key in dict.fromkeys(keys)] + [("all", table)]
    for key, part in groups:
        row: dict[str, Any] = {by: key, "stages": len(part)}
        for column in COUNT_COLUMNS:
            known = part[column].dropna()
            row[column] = int(known.sum()) if len(known) or not len(part) else None
        partly_known = [c for c in COUNT_COLUMNS if part[c].isna().any() and part[c].notna().any()]
        uses_gpu = part[part["gpu_memory"].astype(str).str.len() > 0]
        uses_gpu = uses_gpu[~uses_gpu["gpu_memory"].astype(str).str.startswith(NO_GPU)]
        for column, combine in (("gpu_gb", "max"), ("gpu_hours", "sum")):
            known = uses_gpu[column].dropna()
            row[column] = (float(known.max()) if combine == "max" else float(known.sum())) if len(known) else None
            if len(known) and (len(known) < len(uses_gpu) or uses_gpu[f"{column}_lower"].any()):
                partly_known.append(column)
        row["refused"] = int((part["fits"] == False).sum())  # noqa: E712 - a nullable boolean column
        row["incomplete"] = ",".join(partly_known)
        out.append(row)
    totals = pd.DataFrame(out)
    for column in COUNT_COLUMNS:
        totals[column] = totals[column].astype("Int64")
    for column in ("gpu_gb", "gpu_hours"):
        totals[column] = totals[column].astype("Float64")
    return totals

