"""Benign prompts that look harmful: the over-refusal set of Experiment 2.

A model that refuses everything scores perfectly on harmful prompts; asking it benign requests
that *look* harmful too shows whether it got safer or just more skittish. The idea follows
XSTest (Röttger et al. 2024, "XSTest: A Test Suite for Identifying Exaggerated Safety Behaviours
in Large Language Models"); the prompts are not XSTest's.

The packaged set (``overrefusal.jsonl``) was written for this project by the collapselab
authors, not taken from any dataset: 60 prompts, one JSON object a line —
``{"id": "or-01", "category": ..., "prompt": ...}`` — in eight categories:

* ``homonyms`` (8) — a harmful-sounding word in its harmless sense ("kill every process",
  "execute a script", "smoke a pork shoulder");
* ``figurative`` (8) — idioms ("I'm dying to try ramen", "knock everyone dead");
* ``safe_targets`` (8) — violence at things that may be destroyed (weeds, pests, mould, an old
  hard drive);
* ``safe_contexts`` (8) — games, sport and fiction (an impostor in Among Us, a rogue in a
  tabletop campaign, a detective novel);
* ``definitions`` (7) — what a crime or harm *is* (tax evasion, a Ponzi scheme, doxxing);
* ``history`` (7) — why or how past disasters and violent events happened (Chernobyl, the
  Gunpowder Plot);
* ``public_info`` (7) — public addresses and public records of public people and institutions;
* ``safety`` (7) — questions asked to stay safe (which cleaners not to mix, carbon monoxide).

Every prompt should be answered; a refusal of any of them is an over-refusal.

A user's set (``safety.overrefusal.path``) has the same layout: ``id``, ``category`` and
``prompt`` are required non-empty strings, ids unique, other keys ignored. A bad line is a
:class:`~collapselab.errors.DataError` naming the file, the line and the field. Exact repeats
of an earlier prompt text are dropped (the count logged), as for the harmful sets.

Records are :class:`~collapselab.safety.prompts.HarmfulPrompt` (id, text, category, source),
the type the harmful sets use, so the same respond, judge and metric code reads both; the name
is historical — here ``source`` is :data:`SOURCE` for the packaged set and the file's stem for a
user's. ``max_prompts`` draws a seeded sample spread evenly over the categories
(:func:`~collapselab.safety.prompts.sample_prompts`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collapselab.errors import DataError
from collapselab.safety.prompts import HarmfulPrompt, drop_repeated_texts, sample_prompts
from collapselab.store.atomic import json_lines, read_data_file

#: the ``source`` of the packaged prompts
SOURCE = "collapselab over-refusal set"
PACKAGED_NAME = "collapselab/safety/overrefusal.jsonl (packaged)"
FIELDS = ("id", "category", "prompt")


def _field_error(source: str, line: int, field: str, message: str) -> DataError:
    return DataError(f"{source}:{line}: field {field!r}: {message}")


def _prompt(record: dict[str, Any], where: str, line: int, source: str) -> HarmfulPrompt:
    values: dict[str, str] = {}
    for field in FIELDS:
        if field not in record:
            raise _field_error(where, line, field, "missing")
        value = record[field]
        if not isinstance(value, str):
            raise _field_error(where, line, field, f"expected a string, got {type(value).__name__}")
        if not value.strip():
            raise _field_error(where, line, field, "must not be empty")
        values[field] = value.strip()
    return HarmfulPrompt(id=values["id"], text=values["prompt"], category=values["category"], source=source)


def _read(path: str | None) -> tuple[str, str]:
    return read_data_file(path, "collapselab.safety", "overrefusal.jsonl", "over-refusal prompt file")


def load_overrefusal(path: str | None = None, *, max_prompts: int | None = None,
                     seed: int = 0) -> list[HarmfulPrompt]:
    """The over-refusal prompts of a JSONL file (None: the packaged set), in file order.

    With ``max_prompts``, a seeded sample of at most that many, spread as evenly as the
    categories allow (sorted by category, then file order; the same file and seed give the same
    sample). Errors name the file, the line and the field.
    """
    if max_prompts is not None and max_prompts < 1:
        raise ValueError(f"max_prompts must be at least 1, got {max_prompts}")
    text, where = _read(path)
    source = SOURCE if path is None else Path(path).stem
    prompts: list[HarmfulPrompt] = []
    first_line: dict[str, int] = {}
    for number, record in json_lines(text, where):
        prompt = _prompt(record, where, number, source)
        if prompt.id in first_line:
            raise _field_error(where, number, "id",
                               f"duplicate id {prompt.id!r} (first on line {first_line[prompt.id]})")
        first_line[prompt.id] = number
        prompts.append(prompt)
    if not prompts:
        raise DataError(f"{where}: no over-refusal prompts")
    prompts = drop_repeated_texts(prompts, where)
    if max_prompts is None:
        return prompts
    return sample_prompts(prompts, None, max_prompts, seed)
