"""Optional experiment tracking (``tracking.backend``: ``mlflow``, ``trackio`` or ``wandb``; ``none``,
the default, logs nothing and imports no tracking package).

* :mod:`~collapselab.tracking.run` — :func:`track_run`: one tracked run per run folder, each stage
  logged from its committed folder as the executor reports it finished, the report's final metrics;
* :mod:`~collapselab.tracking.records` — what is read from the run folder;
* :mod:`~collapselab.tracking.base` — the :class:`~collapselab.tracking.base.Tracker` interface;
  one adapter module per backend imports its package only when opened.

docs/tracking.md describes what is logged where.
"""

from __future__ import annotations

from collapselab.tracking.run import RunTracking, track_run

__all__ = ["RunTracking", "track_run"]
