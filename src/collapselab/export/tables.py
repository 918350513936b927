"""What an export holds, read from a run folder's finished stages (nothing is recomputed).

:func:`gather` returns the dataset's tables and the adapters to copy, and lists the stages of the
exported kinds that are not finished (a partly finished run exports what is done):

* ``train-<mix>`` — one per ``mix`` stage: its ``train.jsonl`` rows unchanged (``id``, ``prompt``,
  ``response``, ``category``, ``origin`` — the source or "human" —, ``model``, ``decoding``,
  ``seed``, ``shard``, and ``generation`` on examples of later generations) plus ``prompt_id``
  (the train prompt the example answers), ``condition``, ``training_generation`` (the generation
  the set trains) and ``data_seed`` (its seed with ``seed_scope: data``);
* ``responses`` — every ``respond`` stage's ``responses.jsonl`` (target, condition, seed, the
  prompt, the answer, the human reference, decoding, token counts) plus ``generation``;
* ``safety_judgements`` / ``safety_verdicts`` — the ``safety`` stage's ``judged.parquet`` (one
  row per answer to a safety prompt: harm, quality, refusal, the prompt and the answer) and
  ``verdicts.parquet`` (one row per judge and answer);
* ``preference_candidates`` — the texts the judges compare (one per source and item);
  ``preference_comparisons``, ``preference_ratings``, ``preference_per_item`` — the ``preference``
  stage's read-outs, when not empty.

Nested values (``decoding``, a judge's per-score probabilities) become JSON text, so every
table has one type per column whatever a row holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collapselab.store.atomic import read_jsonl

#: the kinds whose stages an export reads; a missing (unfinished) one is listed, never an error
EXPORTED_KINDS = ("mix", "train", "respond", "safety", "candidates", "preference")

#: the preference stage's read-outs, by file stem
PREFERENCE_READOUTS = ("comparisons", "ratings", "per_item")


@dataclass
class Table:
    """One config of the exported dataset: either ``rows`` (JSON records) or ``parquet`` (a
    finished stage's Parquet file, copied as it is); ``stages`` the labels it was read from."""

    name: str
    description: str
    rows: list[dict[str, Any]] | None = None
    parquet: Path | None = None
    stages: list[str] = field(default_factory=list)


@dataclass
class AdapterSource:
    """A finished train stage whose ``adapter/`` folder is exported (``name``: the stage's name,
    ``<target>-<condition>-seed<k>[-gen<g>]``)."""

    name: str
    folder: Path
    stage: Any  # collapselab.pipeline.stage.Stage
    train_summary: dict[str, Any]
    dataset_config: str | None


@dataclass
class RunContents:
    """Everything :func:`gather` found: tables by config name, adapters, and the stages of the
    exported kinds that are not finished (labels)."""

    tables: dict[str, Table]
    adapters: list[AdapterSource]
    missing: list[str]


def train_config_name(mix_stage_name: str) -> str:
    """The dataset config of a ``mix`` stage's training set."""
    return f"train-{mix_stage_name}"


def _prompt_of(example_id: str) -> str:
    from collapselab.pipeline.experiments.spine.run import prompt_of

    return prompt_of(example_id)


def _training_rows(stage, folder: Path) -> list[dict[str, Any]]:
    p = stage.params
    rows = read_jsonl(folder / "train.jsonl")
    added = {"condition": p.condition.label, "training_generation": p.generation, "data_seed": p.data_seed}
    # the file's own columns win: an added column never overwrites provenance the mix wrote
    return [{**r, "prompt_id": r.get("prompt_id", _prompt_of(str(r["id"]))),
             **{k: v for k, v in added.items() if k not in r}} for r in rows]


def _response_rows(stage, folder: Path) -> list[dict[str, Any]]:
    generation = stage.params.generation
    return [{**r, "generation": r.get("generation", generation)} for r in read_jsonl(folder / "responses.jsonl")]


def _has_rows(path: Path) -> bool:
    import pyarrow.parquet as pq

    if not path.is_file():
        return False
    meta = pq.read_metadata(path)
    return meta.num_rows > 0 and meta.num_columns > 0


def gather(stages: list, store) -> RunContents:
    """The tables and adapters of the finished stages among ``stages`` (the run's graph), each
    checked against its completion manifest first (a changed file is a :class:`DataError`)."""
    seen: set[str] = set()
    done: list = []
    missing: list[str] = []
    for s in stages:
        if s.kind not in EXPORTED_KINDS or s.label in seen:
            continue
        seen.add(s.label)
        if store.is_done(s.ref):
            store.require_intact(s.ref)
            done.append(s)
        else:
            missing.append(s.label)

    tables: dict[str, Table] = {}
    for s in (x for x in done if x.kind == "mix"):
        name = train_config_name(s.name)
        tables[name] = Table(name, f"training set of condition {s.params.condition.label}"
                             + (f", generation {s.params.generation}" if s.params.generation else "")
                             + (f", data seed {s.params.data_seed}" if s.params.data_seed is not None else ""),
                             rows=_training_rows(s, store.final_dir(s.ref)), stages=[s.label])

    responds = [s for s in done if s.kind == "respond"]
    if responds:
        tables["responses"] = Table(
            "responses", "every condition's answers to the held-out test prompts (target × condition × seed)",
            rows=[r for s in responds for r in _response_rows(s, store.final_dir(s.ref))],
            stages=[s.label for s in responds])

    safety = next((s for s in done if s.kind == "safety"), None)
    if safety is not None:
        folder = store.final_dir(safety.ref)
        for stem, name, what in (("judged", "safety_judgements", "one row per answer to a safety prompt: harm, "
                                  "quality, refusal, the prompt and the answer"),
                                 ("verdicts", "safety_verdicts", "one row per judge and answer: the judge's score")):
            if _has_rows(folder / f"{stem}.parquet"):
                tables[name] = Table(name, what, parquet=folder / f"{stem}.parquet", stages=[safety.label])

    candidates = [s for s in done if s.kind == "candidates"]
    if candidates:
        tables["preference_candidates"] = Table(
            "preference_candidates", "the texts the preference judges compare (one per source and item)",
            rows=[r for s in candidates for r in read_jsonl(store.final_dir(s.ref) / "candidates.jsonl")],
            stages=[s.label for s in candidates])
    preference = next((s for s in done if s.kind == "preference"), None)
    if preference is not None:
        folder = store.final_dir(preference.ref)
        for stem in PREFERENCE_READOUTS:
            if _has_rows(folder / f"{stem}.parquet"):
                name = f"preference_{stem}"
                tables[name] = Table(name, f"the preference judges' {stem.replace('_', ' ')}",
                                     parquet=folder / f"{stem}.parquet", stages=[preference.label])

    adapters = []
    for s in (x for x in done if x.kind == "train"):
        folder = store.final_dir(s.ref)
        summary_path = folder / "train_summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        mix = next((i for i in s.inputs if i.kind == "mix"), None)
        adapters.append(AdapterSource(s.name, folder / "adapter", s, summary,
                                      train_config_name(mix.name) if mix is not None else None))
    tables = {k: v for k, v in tables.items() if v.parquet is not None or v.rows}
    return RunContents(tables, adapters, missing)
