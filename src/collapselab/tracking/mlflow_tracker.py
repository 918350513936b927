"""MLflow: one MLflow run per run folder, one nested run per training stage (its curve as metrics
``train_loss``, ``val_loss``, ``lr``, ``epoch`` at each optimizer step, so MLflow's run comparison
overlays the conditions' curves under the same metric names).

Offline by default: MLflow's SQLite store ``RUN_DIR/tracking/mlflow.db`` (``mlflow ui
--backend-store-uri sqlite:///RUN_DIR/tracking/mlflow.db`` shows it), artifacts (none are logged)
under ``RUN_DIR/tracking/artifacts``. MLflow 3's file store (``./mlruns``) is in maintenance mode
and refuses to open unless ``MLFLOW_ALLOW_FILE_STORE`` is set, so it is not the default; the SQL
store needs ``sqlalchemy`` and ``alembic`` beside mlflow-skinny (collapselab[tracking] has them).
Creating the database runs MLflow's migrations once (seconds). ``tracking.uri`` may name any MLflow
tracking URI (a server: ``http://...``). MLflow's usage telemetry is switched off unless
``MLFLOW_DISABLE_TELEMETRY`` says otherwise. Uses :class:`mlflow.MlflowClient` only, never the
fluent API: no process-wide active run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from collapselab.tracking.records import CURVE_AXIS


def default_uri(run_dir: Path) -> str:
    """The offline store: MLflow's SQLite store ``RUN_DIR/tracking/mlflow.db``."""
    folder = Path(run_dir).resolve() / "tracking"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


class MlflowTracker:
    """The MLflow adapter (see the module docstring)."""

    backend = "mlflow"

    def __init__(self, project: str, uri: str | None, run_dir: Path) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline-first: no usage pings
        from mlflow import MlflowClient

        # creating the SQLite store logs its migrations at INFO, over the progress display
        for name in ("mlflow.store.db.utils", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.where = uri or default_uri(run_dir)
        # the default artifact root of a SQL store is ./mlruns in the working directory: keep it in the run
        self.artifacts = None if uri else (Path(run_dir).resolve() / "tracking" / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=self.where)
        self.project = project
        self.experiment_id: str | None = None
        self.run_id: str | None = None

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.project)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.project, artifact_location=self.artifacts)

    def start(self, name: str, params: Mapping[str, str], tags: Mapping[str, str], resume: str | None) -> str:
        """Continue run ``resume`` when it still exists, else create ``name`` in the project's experiment."""
        from mlflow.exceptions import MlflowException

        self.experiment_id = self._experiment()
        if resume:
            try:
                run = self.client.get_run(resume)
            except MlflowException:
                run = None
            if run is not None and run.info.lifecycle_stage == "active":
                self.run_id = resume
                self.client.update_run(resume, status="RUNNING")
                return resume
        self.run_id = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags)).info.run_id
        self._log(self.run_id, params=params)
        return self.run_id

    def _log(self, run_id: str, params: Mapping[str, str] | None = None,
             metrics: Sequence[tuple[str, float, int]] = ()) -> None:
        """Params and ``(name, value, step)`` metrics in batches within MLflow's limits."""
        from mlflow.entities import Metric, Param

        params = list((params or {}).items())
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in params[i:i + 100]])
        now = int(time.time() * 1000)
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=[Metric(k, v, now, s) for k, v, s in metrics[i:i + 1000]])

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Run-level scalars at step 0."""
        self._log(self.run_id, metrics=[(k, v, 0) for k, v in metrics.items()])

    def log_stage(self, name: str, params: Mapping[str, str], curve: Sequence[Mapping[str, float]],
                  summary: Mapping[str, float]) -> None:
        """A nested run ``name``: params, the curve by optimizer step, the summary at the last step."""
        child = self.client.create_run(self.experiment_id, run_name=name,
                                       tags={"mlflow.parentRunId": self.run_id, "collapselab.stage": name})
        run_id = child.info.run_id
        metrics = [(k, v, int(row[CURVE_AXIS])) for row in curve for k, v in row.items() if k != CURVE_AXIS]
        last = int(curve[-1][CURVE_AXIS]) if curve else 0
        metrics += [(f"summary/{k}", v, last) for k, v in summary.items()]
        self._log(run_id, params=params, metrics=metrics)
        self.client.set_terminated(run_id, "FINISHED")

    def finish(self, status: str) -> None:
        """End the run with ``status``."""
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)
