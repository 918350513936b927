"""trackio: one trackio run per run folder in the project; a training stage's curve as metrics
``<stage label>/<metric>`` at each optimizer step (trackio has one open run at a time, so stages
are not runs of their own; the stage's params are not logged: its label names target, condition
and seed).

Offline by default: trackio's local SQLite store in ``RUN_DIR/tracking/trackio`` (``tracking.uri``:
another folder), set through ``TRACKIO_DIR`` before trackio is first imported (trackio reads it
once, so in one process the first run's folder holds). ``trackio show`` with that ``TRACKIO_DIR``
shows it. Logging to a Space happens only when trackio's own ``TRACKIO_SPACE_ID`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from collapselab.tracking.records import CURVE_AXIS


class TrackioTracker:
    """The trackio adapter (see the module docstring)."""

    backend = "trackio"

    def __init__(self, project: str, uri: str | None, run_dir: Path) -> None:
        self.where = uri or str(Path(run_dir).resolve() / "tracking" / "trackio")
        os.environ["TRACKIO_DIR"] = self.where  # read by trackio on import
        import trackio

        self.trackio = trackio
        self.project = project
        self.run: Any = None

    def start(self, name: str, params: Mapping[str, str], tags: Mapping[str, str], resume: str | None) -> str:
        """Open (``resume``: continue) the run ``name``; trackio names runs, so the name is the id."""
        self.run = self.trackio.init(project=self.project, name=resume or name, config={**params, **tags},
                                     resume="allow", embed=False, auto_log_gpu=False, auto_log_cpu=False)
        return resume or name

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Run-level scalars in one log call."""
        self.run.log(dict(metrics))

    def log_stage(self, name: str, params: Mapping[str, str], curve: Sequence[Mapping[str, float]],
                  summary: Mapping[str, float]) -> None:
        """The curve as ``<name>/<metric>`` at each optimizer step; the summary as ``<name>/summary/...``."""
        for row in curve:
            self.run.log({f"{name}/{k}": v for k, v in row.items() if k != CURVE_AXIS}, step=int(row[CURVE_AXIS]))
        if summary:
            last = int(curve[-1][CURVE_AXIS]) if curve else None
            self.run.log({f"{name}/summary/{k}": v for k, v in summary.items()}, step=last)

    def finish(self, status: str) -> None:
        """Close the run (trackio keeps no status)."""
        if self.run is not None:
            self.run.finish()
