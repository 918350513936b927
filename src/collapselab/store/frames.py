"""DataFrames as Parquet files: one rule for columns of mixed types, one atomic write."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd

from collapselab.store.atomic import write_bytes


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def parquet_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Arrow needs one type per column; a tests table's ``seed`` column mixes seeds (int) with
    "pooled" / "seed-level" (str). Such mixed columns are written as text (missing stays missing)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        types = {type(v) for v in out[column] if not _missing(v)}
        if len(types) > 1:
            out[column] = out[column].map(lambda v: v if _missing(v) else str(v))
    return out


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` (see :func:`parquet_ready`) to ``path`` atomically; returns the path."""
    buffer = io.BytesIO()
    parquet_ready(frame).to_parquet(buffer, index=False)
    return write_bytes(path, buffer.getvalue())
