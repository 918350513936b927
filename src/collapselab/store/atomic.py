"""Atomic file writes: write to a temporary name in the same folder, fsync, then ``os.replace``.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a
half-written file, even if the process is SIGKILLed mid-write.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from collapselab.errors import DataError


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; artifacts are ordinary files (shareable like any output)
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def dumps_jsonl(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """Write records as JSON lines (readable by ``pandas.read_json(lines=True)`` and ``datasets``)."""
    return write_text(path, dumps_jsonl(records))


def json_lines(lines: str | Iterable[str | bytes], where: str | Path) -> Iterator[tuple[int, dict]]:
    """The JSON objects of JSON-lines text with their line numbers (from 1); blank lines skipped.

    ``lines`` is the whole text, or its lines: a file opened in binary mode (each line is decoded
    as UTF-8, a byte-order mark dropped, so a bad byte names its line) or in text mode. Text is
    split on ``"\n"`` only (``str.splitlines`` would also split inside a JSON string holding a raw
    U+2028 or U+0085). Bad UTF-8, bad JSON and a line that is not a JSON object raise
    :class:`DataError` naming ``where`` and the line number.
    """
    if isinstance(lines, str):
        lines = lines.split("\n")
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise DataError(f"{where} line {number}: not valid UTF-8 ({exc})") from None
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} line {number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise DataError(f"{where} line {number}: expected a JSON object, got {type(value).__name__}")
        yield number, value


def read_data_file(path: str | Path | None, package: str, name: str, what: str) -> tuple[str, str]:
    """The text of a user's data file at ``path`` (a BOM is dropped), or of the packaged file
    ``name`` of ``package`` when None, with the name errors should use; a :class:`DataError`
    naming the file when it is missing, a folder or not UTF-8 (``what`` says what it should be,
    e.g. "calibration file")."""
    if path is None:
        packaged = resources.files(package).joinpath(name)
        return packaged.read_text("utf-8"), f"{package.replace('.', '/')}/{name} (packaged)"
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read(), str(path)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: expected a JSONL file, got a folder") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """The objects of a JSON-lines file (see :func:`json_lines`: a corrupt line names the file
    and the line)."""
    with open(path, "rb") as handle:
        return [value for _, value in json_lines(handle, path)]


class AppendLog:
    """An append-only JSONL checkpoint for work done inside a stage.

    Each record is one line, flushed and fsynced, so after a SIGKILL every complete line is
    kept; a torn last line (the write the kill interrupted) is dropped on reading.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        raw = self.path.read_bytes()
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # torn write at the end: everything before it is intact
        # rewrite without the torn tail so later appends start on a clean line
        clean = dumps_jsonl(records)
        if clean.encode("utf-8") != raw:
            write_text(self.path, clean)
        return records

    def append(self, records: Iterable[dict]) -> None:
        data = dumps_jsonl(records)
        if not data:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
