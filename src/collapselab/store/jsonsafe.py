"""JSON-safe values: numpy scalars and arrays become Python values; NaN and ±inf (which JSON
cannot hold) become null and the strings "-inf" / "inf", and are read back by :func:`floats_from_json`."""

from __future__ import annotations

import math
from typing import Any


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values, recursively (numpy arrays → lists, numpy scalars → Python
    scalars, non-finite floats → null / "-inf" / "inf", tuples → lists, anything else → ``str``)."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "-inf" if obj < 0 else "inf"
        return obj
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return str(obj)


def floats_from_json(value: Any) -> Any:
    """The inverse of :func:`jsonable` for floats: null → NaN, "-inf"/"inf" → ±inf, recursively
    in dicts and lists; other values unchanged."""
    if value is None:
        return math.nan
    if value == "-inf":
        return -math.inf
    if value == "inf":
        return math.inf
    if isinstance(value, dict):
        return {k: floats_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [floats_from_json(v) for v in value]
    return value
