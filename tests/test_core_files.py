"""Strict JSON: NaN and infinities as null, numpy scalars as numbers."""

from __future__ import annotations

import json
import math

import numpy as np

from t2ibias.core.files import dumps_strict, json_safe


def test_json_safe_cleans_nested_values():
    value = {"a": math.nan, "b": [1.5, math.inf, (np.float32(0.5), np.int64(3))], "c": {"d": np.float64(-math.inf)},
             "e": "nan", "f": None, "g": True}
    assert json_safe(value) == {"a": None, "b": [1.5, None, [0.5, 3]], "c": {"d": None}, "e": "nan", "f": None, "g": True}
    assert type(json_safe(np.int64(3))) is int


def test_dumps_strict_writes_null_never_nan():
    text = dumps_strict({"rows": [{"value": math.nan, "n": np.int32(2)}]}, indent=1)
    assert "NaN" not in text and json.loads(text) == {"rows": [{"value": None, "n": 2}]}
    assert dumps_strict({"x": 1.0}, indent=2) == json.dumps({"x": 1.0}, indent=2)
