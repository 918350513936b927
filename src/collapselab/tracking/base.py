"""The interface every tracking backend implements, the names it may use, and how a backend is
opened (each adapter module imports its package itself, so nothing is imported for ``none``)."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

#: backend name -> the adapter module (in this package) and its class
ADAPTERS = {
    "mlflow": ("collapselab.tracking.mlflow_tracker", "MlflowTracker"),
    "trackio": ("collapselab.tracking.trackio_tracker", "TrackioTracker"),
    "wandb": ("collapselab.tracking.wandb_tracker", "WandbTracker"),
}
#: how to install each backend (said when it is missing)
INSTALL = {"mlflow": "pip install 'collapselab[tracking]'", "trackio": "pip install trackio",
           "wandb": "pip install wandb"}
MAX_PARAM_CHARS = 500


class Tracker(Protocol):
    """One tracked run of a backend. Any call may raise: :class:`~collapselab.tracking.run.RunTracking`
    guards every call, so a failing tracker never fails the experiment."""

    backend: str
    #: where the backend writes, for people (a URI or a folder)
    where: str

    def start(self, name: str, params: Mapping[str, str], tags: Mapping[str, str], resume: str | None) -> str:
        """Open the tracked run ``name`` (``resume``: the id an earlier attempt on the same run folder
        returned, to continue that run); return its id."""

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Run-level scalars (stage timings, counts, the report's final metrics)."""

    def log_stage(self, name: str, params: Mapping[str, str], curve: Sequence[Mapping[str, float]],
                  summary: Mapping[str, float]) -> None:
        """One training stage's own record: its params, its curve (rows with an int ``step``, the
        optimizer step, and float metrics) and its final scalars."""

    def finish(self, status: str) -> None:
        """Close the run with ``FINISHED``, ``FAILED`` or ``KILLED``."""


class BackendMissing(ImportError):
    """The backend's package is not installed."""


def open_tracker(backend: str, project: str, uri: str | None, run_dir: Path) -> Tracker:
    """The adapter of ``backend`` (its package imported now, not before); ``uri`` None: an offline
    store under ``run_dir/tracking``."""
    module, cls = ADAPTERS[backend]
    try:
        adapter = getattr(importlib.import_module(module), cls)
        return adapter(project=project, uri=uri, run_dir=Path(run_dir))
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == backend:
            raise BackendMissing(f"tracking.backend {backend}: {err.name} is not installed ({INSTALL[backend]})") \
                from err
        raise


_BAD = re.compile(r"[^\w.\- /]")


def clean_name(name: str) -> str:
    """A metric or param name every backend accepts (MLflow's rules are the strictest: letters,
    digits, ``_ - . /`` and spaces, a normalised path, at most 250 characters)."""
    parts = [p for p in _BAD.sub("_", str(name)).split("/") if p not in ("", ".", "..")]
    return "/".join(parts)[:250] or "_"


def param_value(value: Any) -> str:
    """A param as a short string (lists and mappings as JSON)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS - 1] + "…"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings as dotted keys (``lora.learning_rate``); other values via :func:`param_value`."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        elif value is not None:
            out[clean_name(name)] = param_value(value)
    return out


def numeric(data: Mapping[str, Any]) -> dict[str, float]:
    """The finite-or-not numbers of a mapping as floats (booleans as 0/1; None, text and lists left out)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float)):
            out[key] = float(value)
    return out
