"""What tracking reads from a run folder: a completed stage's seconds, a training stage's loss curve
and summary, and the report's final metrics. Everything comes from files the stages and the report
wrote, so the driver logs the same numbers whichever executor (or worker process) computed them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collapselab.store.atomic import read_jsonl
from collapselab.tracking.base import clean_name, flatten, numeric

#: curve fields that are not metrics (``step`` is the x axis)
CURVE_AXIS = "step"
#: params of a stage's runtime parameters worth a column in a tracker's run table
STAGE_PARAMS = ("target_name", "seed", "generation")


@dataclass
class StageRecord:
    """One completed stage as tracking sees it."""

    label: str
    seconds: float | None
    params: dict[str, str] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)  # empty: not a training stage
    summary: dict[str, float] = field(default_factory=dict)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def curve_rows(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    """``loss_curve.jsonl``'s rows as ``{"step": int, metric: float}`` (rows without a step, and
    fields that are not numbers, left out; a row's missing ``val_loss`` stays missing)."""
    out = []
    for row in rows:
        step = row.get(CURVE_AXIS)
        if isinstance(step, bool) or not isinstance(step, int):
            continue
        metrics = {k: v for k, v in numeric(row).items() if k != CURVE_AXIS and math.isfinite(v)}
        out.append({CURVE_AXIS: step, **metrics})
    return out


def stage_record(stage: Any, folder: Path) -> StageRecord:
    """The record of ``stage`` (a :class:`~collapselab.pipeline.stage.Stage`) completed in ``folder``:
    its seconds (``provenance.json``), and for a stage that wrote ``loss_curve.jsonl`` its curve,
    ``train_summary.json``'s numbers and its settings as params."""
    seconds = _json(folder / "provenance.json").get("seconds")
    record = StageRecord(stage.label, float(seconds) if isinstance(seconds, (int, float)) else None)
    if not (folder / "loss_curve.jsonl").is_file():
        return record
    record.curve = curve_rows(read_jsonl(folder / "loss_curve.jsonl"))
    record.summary = {k: v for k, v in numeric(_json(folder / "train_summary.json")).items() if math.isfinite(v)}
    params = {"stage": stage.label, "key": stage.key, **flatten(stage.settings or {}, "settings.")}
    condition = getattr(getattr(stage, "params", None), "condition", None)
    if condition is not None:
        params["condition"] = str(getattr(condition, "label", condition))
    for name in STAGE_PARAMS:
        value = getattr(getattr(stage, "params", None), name, None)
        if value is not None:
            params[name] = str(value)
    record.params = params
    return record


def final_metrics(results_json: Path) -> dict[str, float]:
    """The report's final metrics from ``results.json`` (lm-eval's shape): ``final/<task>/<metric>``
    for every finite value (standard errors left out: the tracker shows values)."""
    results = _json(results_json).get("results") or {}
    out = {}
    for task, metrics in results.items():
        if not isinstance(metrics, dict):
            continue
        for key, value in metrics.items():
            name, _, _filter = str(key).partition(",")
            if name == "alias" or name.endswith("_stderr"):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[clean_name(f"final/{task}/{name}")] = float(value)
    return out
