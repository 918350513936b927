"""Atomic file writes: write to a temporary name in the same folder, fsync, then ``os.replace``.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a
half-written file, even if the process is SIGKILLed mid-write.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL artifact written by collapselab (a corrupt line is a clear error)."""
    from collapselab.errors import DataError

    out = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
    return out


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
