"""Which collapselab computed a run: its version and git commit, for the cards and ``results.json``.

Every finished stage records the commit of the source it ran from (``provenance.json``, see
:func:`collapselab.store.run.provenance`); a run resumed after a ``git pull`` has several. Where
no stage recorded one, the installed source's own checkout is asked; failing that, the commit is
"unknown" — never guessed.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

UNKNOWN = "unknown"


@dataclass(frozen=True)
class SourceVersion:
    """collapselab's version and commit(s) behind a run; ``origin`` says where the commit came
    from: "run" (the stages' provenance), "checkout" (``git rev-parse HEAD`` of the installed
    source, the run recorded none) or "unknown"."""

    version: str
    commits: tuple[str, ...]
    origin: str

    @property
    def commit(self) -> str:
        """The commit most stages ran from (``"unknown"`` when none is known)."""
        return self.commits[0] if self.commits else UNKNOWN


def collapselab_version() -> str:
    """The installed collapselab's version (``"unknown"`` when it is not installed as a package)."""
    import importlib.metadata as md

    try:
        return md.version("collapselab")
    except md.PackageNotFoundError:
        return UNKNOWN


def source_commit() -> str | None:
    """``git rev-parse HEAD`` of the folder collapselab is imported from, or None when that is not
    a git checkout (an installed wheel) or git is missing."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def _ranked(counts: Counter[str]) -> list[str]:
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def run_provenance(run_dir: str | Path) -> tuple[list[str], list[str]]:
    """The commits and the collapselab versions the run's finished stages recorded, each list the
    most frequent first (ties by name)."""
    commits: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    for path in Path(run_dir).glob("stages/*/*/provenance.json"):
        if path.parent.name.startswith(".partial-"):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        commit = record.get("git_commit")
        version = (record.get("packages") or {}).get("collapselab")
        if isinstance(commit, str) and commit:
            commits[commit] += 1
        if isinstance(version, str) and version:
            versions[version] += 1
    return _ranked(commits), _ranked(versions)


def source_version(run_dir: str | Path | None) -> SourceVersion:
    """The version and commit(s) behind ``run_dir`` (None: only the installed source's)."""
    commits, versions = run_provenance(run_dir) if run_dir else ([], [])
    version = versions[0] if versions else collapselab_version()
    if commits:
        return SourceVersion(version, tuple(commits), "run")
    checkout = source_commit()
    if checkout:
        return SourceVersion(version, (checkout,), "checkout")
    return SourceVersion(version, (), UNKNOWN)
