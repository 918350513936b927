"""Weights & Biases: one wandb run per run folder, and one run per training stage in the same
group (wandb's steps must increase within a run, so several curves that each start at step 1
cannot share one; a group overlays them). Runs are created with ``reinit="create_new"``
(wandb 0.19.10 or later), so the stage runs open beside the main one.

Offline by default: ``mode="offline"`` under ``RUN_DIR/tracking/wandb`` (``tracking.uri``: another
folder); ``wandb sync`` uploads it later. ``WANDB_MODE=online`` in the environment logs online.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from collapselab.tracking.records import CURVE_AXIS

EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 130}


class WandbTracker:
    """The wandb adapter (see the module docstring)."""

    backend = "wandb"

    def __init__(self, project: str, uri: str | None, run_dir: Path) -> None:
        import wandb

        self.wandb = wandb
        self.where = uri or str(Path(run_dir).resolve() / "tracking")
        self.mode = os.environ.get("WANDB_MODE") or "offline"
        self.project = project
        self.name = ""
        self.run: Any = None

    def _init(self, **kwargs: Any) -> Any:
        Path(self.where).mkdir(parents=True, exist_ok=True)
        return self.wandb.init(project=self.project, dir=self.where, mode=self.mode, reinit="create_new", **kwargs)

    def start(self, name: str, params: Mapping[str, str], tags: Mapping[str, str], resume: str | None) -> str:
        """Open (``resume``: continue) the main run; return its id."""
        self.name = name
        self.run = self._init(name=name, group=name, job_type="run", config={**params, **tags},
                              **({"id": resume, "resume": "allow"} if resume else {}))
        return str(self.run.id)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Run-level scalars into the main run's summary (they have no step)."""
        self.run.summary.update(dict(metrics))

    def log_stage(self, name: str, params: Mapping[str, str], curve: Sequence[Mapping[str, float]],
                  summary: Mapping[str, float]) -> None:
        """A run ``name`` in the main run's group: the curve by optimizer step, the summary."""
        child = self._init(name=name, group=self.name, job_type="train", config=dict(params))
        try:
            for row in curve:
                child.log({k: v for k, v in row.items() if k != CURVE_AXIS}, step=int(row[CURVE_AXIS]))
            child.summary.update({f"summary/{k}": v for k, v in summary.items()})
        finally:
            child.finish()

    def finish(self, status: str) -> None:
        """Close the main run (a failed collapselab run exits non-zero)."""
        if self.run is not None:
            self.run.finish(exit_code=EXIT_CODES.get(status, 1))
