"""What a completed stage wrote, recorded when it finished: every file's size and SHA-256.

The manifest lives in the stage's completion marker (``_DONE``), written last. Two checks read it:

* :func:`size_problems` — cheap (one ``stat`` per file), run on every completed stage before a run
  goes on, so a truncated or edited artifact fails the run instead of being read as if nothing had
  happened;
* :func:`checksum_problems` — reads every byte (``collapselab verify RUN_DIR``).

Stage folders written before manifests existed have a marker without ``files``; they keep working
and are reported as unverified.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

Manifest = dict[str, dict[str, Any]]


def _files(folder: Path, exclude: frozenset[str]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in exclude)


def sha256_file(path: Path) -> str:
    """The file's SHA-256 in hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(folder: Path, exclude: frozenset[str] = frozenset()) -> Manifest:
    """``{relative path: {"size": bytes, "sha256": hex}}`` for every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in _files(folder, exclude)}


def size_problems(folder: Path, manifest: Manifest) -> list[str]:
    """Files of ``manifest`` that are missing or whose size changed (one line each)."""
    problems = []
    for rel, entry in manifest.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: missing (it had {entry['size']} bytes)")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, but {entry['size']} when the stage finished")
    return problems


def checksum_problems(folder: Path, manifest: Manifest, exclude: frozenset[str] = frozenset()) -> list[str]:
    """:func:`size_problems`, files whose SHA-256 changed, and files added since the stage finished."""
    problems = size_problems(folder, manifest)
    reported = {p.split(":", 1)[0] for p in problems}
    for rel, entry in manifest.items():
        path = folder / rel
        if str(path) not in reported and sha256_file(path) != entry["sha256"]:
            problems.append(f"{path}: content changed since the stage finished (same size, different SHA-256)")
    for path in _files(folder, exclude):
        if path.relative_to(folder).as_posix() not in manifest:
            problems.append(f"{path}: added after the stage finished")
    return problems
