"""A run folder: ``stages/<kind>/<name>-<key>/`` folders, each done once its marker exists.

Layout::

    RUN_DIR/
      experiment.yaml          the resolved config of the latest run (for ``status``)
      .lock / .active.json     the run lock and what the lock holder is doing
      stages/<kind>/<name>-<key>/            a completed stage (``_DONE`` written last)
      stages/<kind>/.partial-<name>-<key>/   work in progress, kept across kills to resume

A stage writes into its partial folder; on success that folder is renamed to the final name and
then the marker is written. A completed folder is never modified again. The marker records every
file's size and SHA-256 (:mod:`collapselab.store.manifest`): :meth:`RunStore.check` compares the
sizes before a run reads a completed stage, ``collapselab verify`` the checksums.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collapselab.errors import DataError, RunLockedError
from collapselab.store.atomic import fsync_dir, write_json
from collapselab.store.manifest import Manifest, checksum_problems, file_manifest, size_problems

MARKER = "_DONE"


@dataclass(frozen=True)
class StageRef:
    """What the store needs to know of a stage: its kind, readable name and key."""

    kind: str
    name: str
    key: str

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.key}"


class RunStore:
    """Content-addressed stage folders under one run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- locations -------------------------------------------------------------------------------
    def final_dir(self, ref: StageRef) -> Path:
        return self.root / "stages" / ref.kind / ref.dirname

    def partial_dir(self, ref: StageRef) -> Path:
        return self.root / "stages" / ref.kind / f".partial-{ref.dirname}"

    def is_done(self, ref: StageRef) -> bool:
        return (self.final_dir(ref) / MARKER).is_file()

    def has_partial(self, ref: StageRef) -> bool:
        return self.partial_dir(ref).is_dir() or (
            self.final_dir(ref).is_dir() and not self.is_done(ref)
        )

    # -- writing a stage -------------------------------------------------------------------------
    def begin(self, ref: StageRef) -> Path:
        """The partial folder to work in (created, or kept from an interrupted attempt)."""
        final, partial = self.final_dir(ref), self.partial_dir(ref)
        if final.is_dir() and not self.is_done(ref):
            # killed between the rename and the marker: the content is complete, adopt it back
            if partial.exists():
                shutil.rmtree(partial)
            os.replace(final, partial)
        partial.mkdir(parents=True, exist_ok=True)
        return partial

    def commit(self, ref: StageRef, settings: dict[str, Any], inputs: list[StageRef], seconds: float) -> Path:
        """Record the stage's spec and provenance, rename partial → final, write the marker last."""
        partial, final = self.partial_dir(ref), self.final_dir(ref)
        write_json(partial / "stage.json", {
            "kind": ref.kind, "name": ref.name, "key": ref.key, "settings": settings,
            "inputs": [{"kind": i.kind, "name": i.name, "key": i.key} for i in inputs],
        })
        write_json(partial / "provenance.json", provenance(seconds))
        files = file_manifest(partial, frozenset({MARKER}))
        os.replace(partial, final)
        fsync_dir(final.parent)
        write_json(final / MARKER, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files})
        return final

    # -- checking a completed stage --------------------------------------------------------------
    def manifest(self, ref: StageRef) -> Manifest | None:
        """The files a completed stage recorded, or None for a folder written before manifests."""
        try:
            marker = json.loads((self.final_dir(ref) / MARKER).read_text() or "{}")
        except (OSError, ValueError):
            return None
        files = marker.get("files") if isinstance(marker, dict) else None
        return files if isinstance(files, dict) else None

    def check(self, ref: StageRef, *, checksums: bool = False) -> list[str] | None:
        """Problems with a completed stage's files (sizes; with ``checksums`` also contents and
        added files), ``[]`` when it is intact, None when it has no manifest to check against."""
        files = self.manifest(ref)
        if files is None:
            return None
        folder = self.final_dir(ref)
        return checksum_problems(folder, files, frozenset({MARKER})) if checksums else size_problems(folder, files)

    def completed(self) -> list[StageRef]:
        """Every completed stage folder of the run (also those of stages the current config no
        longer has), as refs."""
        refs = []
        for marker in sorted((self.root / "stages").glob(f"*/*/{MARKER}")):
            folder = marker.parent
            if folder.name.startswith(".partial-"):
                continue
            name, _, key = folder.name.rpartition("-")
            refs.append(StageRef(folder.parent.name, name, key))
        return refs

    def require_intact(self, ref: StageRef) -> None:
        """Raise a :class:`DataError` naming the changed files of a completed stage and how to
        recompute it (sizes only: cheap enough to run before every read)."""
        problems = self.check(ref)
        if problems:
            raise DataError(
                f"stage {ref.kind}/{ref.name}: its files changed after it finished:\n  "
                + "\n  ".join(problems)
                + f"\nTo recompute it, delete the folder {self.final_dir(ref)} and run again."
            )

    # -- locking ---------------------------------------------------------------------------------
    @contextmanager
    def lock(self):
        """Hold the run folder's lock; a second concurrent ``run`` fails at once instead of
        interleaving writes."""
        from filelock import FileLock, Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = self.active()
            who = f" by pid {holder.get('pid')} (stage {holder.get('stage')})" if holder else ""
            raise RunLockedError(f"{self.root} is in use{who}; wait for it to finish or use another run "
                                 "folder") from None
        try:
            self.set_active(None)
            yield self
        finally:
            (self.root / ".active.json").unlink(missing_ok=True)
            lock.release()

    def is_locked(self) -> bool:
        from filelock import FileLock, Timeout

        if not (self.root / ".lock").exists():
            return False
        lock = FileLock(str(self.root / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False

    def set_active(self, stage: str | None) -> None:
        write_json(self.root / ".active.json", {"pid": os.getpid(), "stage": stage, "since": time.time()})

    def active(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / ".active.json").read_text())
        except (OSError, ValueError):
            return None


def provenance(seconds: float) -> dict[str, Any]:
    """Where and with what a stage was computed (not part of its key)."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("collapselab", "torch", "transformers", "peft", "datasets", "sentence-transformers"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    from collapselab.store.versions import source_commit

    commit = source_commit()
    return {
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "git_commit": commit,
        "packages": versions,
    }
