"""Local corpus files: JSON lines, CSV, Parquet (one record per row) and folders of ``.txt`` prose.

Tabular rows are mapped to :class:`Record` by :func:`rows_to_records` (also used for Hugging Face
datasets), with ``spec.columns`` naming the columns. Every problem is a :class:`DataError` that
names the file and, where there is one, the line or row.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from collapselab.config.spec import ColumnMap, CorpusSpec
from collapselab.corpora.base import Record
from collapselab.corpora.continuation import continuation_records, split_paragraphs
from collapselab.errors import ConfigError, DataError
from collapselab.naming import id_slug
from collapselab.store.atomic import json_lines

#: A row with where it came from, e.g. ``("line 12", {...})`` or ``("row 3", {...})``.
LocatedRow = tuple[str, Mapping[str, Any]]


def check_columns(columns: ColumnMap, available: Collection[str], source: str) -> None:
    """Raise :class:`DataError` when a required column (prompt, response, and id when named) is not
    among ``available``; context and category are optional (missing means ``""`` / ``"default"``)."""
    for field, name in _required(columns):
        if name not in available:
            raise DataError(f"{source}: missing {field} column {name!r} (available columns: "
                            f"{', '.join(map(str, available)) or 'none'}); set corpus.columns.{field}")


def mapped_columns(columns: ColumnMap, available: Collection[str]) -> list[str]:
    """The columns ``columns`` names that exist in ``available``, without repeats: the ones to read."""
    names = (columns.id, columns.prompt, columns.response, columns.context, columns.category)
    return list(dict.fromkeys(name for name in names if name is not None and name in available))


def _required(columns: ColumnMap) -> list[tuple[str, str]]:
    required = [("prompt", columns.prompt), ("response", columns.response)]
    if columns.id is not None:
        required.append(("id", columns.id))
    return required


def _text(value: Any, where: str, column: str) -> str:
    # Tabular formats hand back numbers and nulls as well as strings; ids are often integers.
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: column {column!r} holds a {type(value).__name__}, expected text")


def rows_to_records(rows: Iterable[LocatedRow], columns: ColumnMap, source: str) -> list[Record]:
    """Map rows to records (shared by the file loaders and :func:`collapselab.corpora.hf.load_hf`).

    Text is stripped of surrounding whitespace. Without an id column the id is ``row-<i>`` (``i``
    counts rows from 0, as a dataset index does). A row without a required column, an empty
    prompt or response, a duplicate id, or no rows at all raise :class:`DataError` naming
    ``source`` and the row's location.
    """
    records: list[Record] = []
    first_seen: dict[str, str] = {}
    for index, (location, row) in enumerate(rows):
        where = f"{source} {location}"
        for field, name in _required(columns):
            if name not in row:
                raise DataError(f"{where}: missing {field} column {name!r} (this row has: "
                                f"{', '.join(map(str, row)) or 'nothing'}); set corpus.columns.{field}")
        prompt = _text(row[columns.prompt], where, columns.prompt)
        response = _text(row[columns.response], where, columns.response)
        if not prompt:
            raise DataError(f"{where}: empty prompt (column {columns.prompt!r})")
        if not response:
            raise DataError(f"{where}: empty response (column {columns.response!r})")
        record_id = _text(row[columns.id], where, columns.id) if columns.id is not None else f"row-{index}"
        if not record_id:
            raise DataError(f"{where}: empty id (column {columns.id!r})")
        if record_id in first_seen:
            raise DataError(f"{where}: duplicate id {record_id!r} (first at {first_seen[record_id]})")
        first_seen[record_id] = location
        context = _text(row.get(columns.context), where, columns.context) if columns.context else ""
        category = _text(row.get(columns.category), where, columns.category) if columns.category else ""
        records.append(Record(id=record_id, prompt=prompt, response=response,
                              category=category or "default", context=context))
    if not records:
        raise DataError(f"{source}: no records")
    return records


def _existing(spec: CorpusSpec, *, folder: bool = False) -> Path:
    if not spec.path:
        raise ConfigError(f"corpus.path is required for corpus kind {spec.kind!r}")
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: not found (corpus.path)")
    if folder != path.is_dir():
        raise DataError(f"{path}: expected a {'folder' if folder else 'file'} (corpus.path)")
    return path


def jsonl_rows(lines: str | Iterable[str | bytes], where: str | Path) -> Iterator[LocatedRow]:
    """The objects of JSON-lines text as located rows (``("line 3", {...})``); parsed by
    :func:`collapselab.store.atomic.json_lines`, whose errors name ``where`` and the line."""
    return ((f"line {number}", row) for number, row in json_lines(lines, where))


def _jsonl_rows(path: Path) -> Iterator[LocatedRow]:
    with path.open("rb") as handle:
        yield from jsonl_rows(handle, path)


def load_jsonl(spec: CorpusSpec) -> list[Record]:
    """Records from a JSON-lines file (``corpus.kind: jsonl``): one object per line, blank lines
    skipped; the fields are named by ``spec.columns``."""
    path = _existing(spec)
    return rows_to_records(_jsonl_rows(path), spec.columns, str(path))


def read_csv_rows(path: Path) -> tuple[list[str], list[LocatedRow]]:
    """The header and located rows of a CSV file with a header row; quoted fields may span lines,
    and errors name the line a row ends on."""
    rows: list[LocatedRow] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames
            if not header:
                raise DataError(f"{path}: empty file (expected a header row)")
            for row in reader:
                # DictReader files surplus cells under None and fills missing ones with None
                if None in row or None in row.values():
                    problem = "more" if None in row else "fewer"
                    raise DataError(f"{path} line {reader.line_num}: {problem} fields than the header's "
                                    f"{len(header)}")
                rows.append((f"line {reader.line_num}", row))
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc})") from exc
    return list(header), rows


def read_parquet_rows(path: Path, columns: Iterable[str] | None = None) -> tuple[list[str], list[LocatedRow]]:
    """The column names (all of the file's) and located rows (only ``columns``, when given) of a
    Parquet file."""
    import pyarrow.parquet as pq

    try:
        available = pq.read_schema(path).names
        table = pq.read_table(path, columns=None if columns is None else list(columns))
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: cannot read as Parquet ({exc})") from exc
    return available, [(f"row {i}", row) for i, row in enumerate(table.to_pylist())]


def read_table(path: Path, fmt: str) -> tuple[list[str], list[LocatedRow]]:
    """The column names and located rows of a ``jsonl`` / ``csv`` / ``parquet`` file.

    Errors name the file and the line (JSONL, CSV) or row (Parquet). For JSONL the columns are
    the union of the objects' keys, in order of appearance.
    """
    if not path.is_file():
        raise DataError(f"{path}: not found (or not a file)")
    if fmt == "jsonl":
        rows = list(_jsonl_rows(path))
        return list(dict.fromkeys(key for _, row in rows for key in row)), rows
    if fmt == "csv":
        return read_csv_rows(path)
    if fmt == "parquet":
        return read_parquet_rows(path)
    raise ConfigError(f"{path}: unsupported table format {fmt!r} (expected jsonl, csv or parquet)")


def load_csv(spec: CorpusSpec) -> list[Record]:
    """Records from a CSV file with a header row (``corpus.kind: csv``); quoted fields may span
    lines, and errors name the line a row ends on."""
    path = _existing(spec)
    header, rows = read_csv_rows(path)
    check_columns(spec.columns, header, str(path))
    return rows_to_records(rows, spec.columns, str(path))


def load_parquet(spec: CorpusSpec) -> list[Record]:
    """Records from a Parquet file (``corpus.kind: parquet``); only the mapped columns are read."""
    import pyarrow.parquet as pq

    path = _existing(spec)
    try:
        available = pq.read_schema(path).names
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: cannot read as Parquet ({exc})") from exc
    check_columns(spec.columns, available, str(path))
    _, rows = read_parquet_rows(path, mapped_columns(spec.columns, available))
    return rows_to_records(rows, spec.columns, str(path))


def load_txt_folder(spec: CorpusSpec) -> list[Record]:
    """Continuation records from the ``.txt`` files of a folder (``corpus.kind: txt``).

    Each file is split into blank-line paragraphs; paragraphs of ``spec.min_chars``..
    ``spec.max_chars`` characters become records shaped like the Austen ones, with category = the
    file's stem and id = ``txt-<stem slug>-<paragraph index>``. Subfolders are not searched.
    """
    folder = _existing(spec, folder=True)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataError(f"{folder}: no .txt files (corpus.path)")
    records: list[Record] = []
    owner: dict[str, Path] = {}
    for file in files:
        slug = id_slug(file.stem) or "text"
        if slug in owner:  # ids would collide
            raise DataError(f"{file}: its name gives the same id prefix {slug!r} as {owner[slug].name}; "
                            "rename one")
        owner[slug] = file
        try:
            lines = file.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{file}: not valid UTF-8 ({exc})") from exc
        records.extend(continuation_records(split_paragraphs(lines), id_prefix=f"txt-{slug}",
                                            category=file.stem, spec=spec))
    if not records:
        raise DataError(f"{folder}: no paragraph of {spec.min_chars}-{spec.max_chars} characters in "
                        f"{len(files)} .txt file(s); adjust corpus.min_chars/max_chars")
    return records
