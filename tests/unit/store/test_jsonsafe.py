"""JSON-safe values: numpy types, non-finite floats and nesting, and the way back."""

from __future__ import annotations

import json
import math

import numpy as np

from collapselab.store.jsonsafe import floats_from_json, jsonable


def test_numpy_scalars_become_python_scalars():
    out = jsonable({"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "s": np.str_("x")})
    assert out == {"i": 3, "f": 0.5, "b": True, "s": "x"}
    assert [type(v) for v in out.values()] == [int, float, bool, str]


def test_arrays_tuples_and_nesting():
    value = {"a": np.arange(3), "b": (1, [np.float64(2.5), {"c": np.array([[1.0, np.nan]])}]), 4: None}
    assert jsonable(value) == {"a": [0, 1, 2], "b": [1, [2.5, {"c": [[1.0, None]]}]], "4": None}


def test_non_finite_floats_become_valid_json():
    value = [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("-inf"), 1.5]
    out = jsonable(value)
    assert out == [None, "inf", "-inf", None, "-inf", 1.5]
    text = json.dumps(out, allow_nan=False)  # no bare NaN / Infinity
    assert "NaN" not in text and "Infinity" not in text


def test_round_trip_of_floats():
    value = {"x": [1.0, math.nan, math.inf, -math.inf], "y": {"z": math.nan}, "n": 2, "s": "text"}
    back = floats_from_json(json.loads(json.dumps(jsonable(value))))
    assert back["x"][0] == 1.0 and math.isnan(back["x"][1]) and back["x"][2:] == [math.inf, -math.inf]
    assert math.isnan(back["y"]["z"])
    assert (back["n"], back["s"]) == (2, "text")


def test_numpy_round_trip():
    arr = np.array([0.25, np.nan, np.inf])
    back = np.asarray(floats_from_json(json.loads(json.dumps(jsonable(arr)))), dtype=float)
    np.testing.assert_array_equal(back, arr)


def test_other_objects_become_strings():
    class Thing:
        def __str__(self) -> str:
            return "thing"

    assert jsonable({"t": Thing()}) == {"t": "thing"}
