"""The score stage's label join and metrics writer at scale: same answers as the definitions, by construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from t2ibias.core.errors import UserError
from t2ibias.metrics.score import join_labels, metrics_json


def _meas(rows):
    return pd.DataFrame(rows, columns=["key", "unit", "face_index", "attribute", "label", "score"])


IMAGES = pd.DataFrame({"key": ["f", "p", "c", "n", "b", "x"], "prompt_id": ["a", "a", "a", "b", "b", "b"],
                       "image_index": [0, 1, 2, 0, 1, 2], "status": ["ok", "ok", "ok", "ok", "blocked", "failed"]})
MEAS = _meas([
    # f: two faces (face 0 is the largest) and a person box: the face wins
    ("f", "face", 0, "gender", "fem", 0.9), ("f", "face", 0, "age", "young", 0.8),
    ("f", "face", 1, "gender", "masc", 0.7), ("f", "face", 1, "age", "older", 0.6),
    ("f", "person", 0, "gender", "masc", 0.5), ("f", "person", 0, "age", "older", 0.5),
    ("f", "image", 0, "person", "person", 0.9), ("f", "image", 0, "gender", "masc", 0.4), ("f", "image", 0, "age", "older", 0.4),
    # p: no face, two people: person 0's labels
    ("p", "person", 0, "gender", "masc", 0.65), ("p", "person", 0, "age", "middle", 0.55),
    ("p", "person", 1, "gender", "fem", 0.6), ("p", "person", 1, "age", "young", 0.6),
    ("p", "image", 0, "person", "person", 0.9), ("p", "image", 0, "gender", "fem", 0.3), ("p", "image", 0, "age", "young", 0.3),
    # c: nobody detected, the whole image says person
    ("c", "image", 0, "person", "person", 0.8), ("c", "image", 0, "gender", "fem", 0.45), ("c", "image", 0, "age", "older", 0.35),
    # n: nobody detected, the whole image says nobody
    ("n", "image", 0, "person", "no_person", 0.8), ("n", "image", 0, "gender", "fem", 0.5), ("n", "image", 0, "age", "older", 0.5),
])


def test_every_source_gets_the_label_its_definition_names():
    out = join_labels(IMAGES, MEAS, ["gender", "age"], person_gate=False)
    assert list(out.columns) == ["key", "prompt_id", "image_index", "attribute", "label", "score", "person_source", "n_faces", "n_people"]
    assert list(out["key"]) == ["f", "f", "p", "p", "c", "c", "n", "n", "b", "b", "x", "x"]
    assert list(out["attribute"]) == ["gender", "age"] * 6
    assert list(out["label"]) == ["fem", "young", "masc", "middle", "fem", "older", "no_person", "no_person",
                                  "blocked", "blocked", "failed", "failed"]
    assert list(out["person_source"]) == ["face"] * 2 + ["person"] * 2 + ["clip"] * 2 + ["none"] * 6
    assert out["score"].iloc[:6].tolist() == [0.9, 0.8, 0.65, 0.55, 0.45, 0.35]
    assert out["score"].iloc[6:].isna().all()
    assert out["n_faces"].tolist() == [2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert out["n_people"].tolist() == [1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0]
    assert out["image_index"].dtype == np.int64 and out["n_faces"].dtype == np.int64


def test_a_person_detector_turns_whole_image_labels_off():
    out = join_labels(IMAGES, MEAS, ["gender", "age"], person_gate=True)
    c = out[out["key"] == "c"]
    assert set(c["label"]) == {"no_person"} and set(c["person_source"]) == {"none"}


def test_a_missing_attribute_row_is_one_error_naming_the_image():
    meas = MEAS[~((MEAS["key"] == "p") & (MEAS["unit"] == "person") & (MEAS["attribute"] == "age"))]
    with pytest.raises(UserError, match=r"image p has no person row for attribute 'age'"):
        join_labels(IMAGES, meas, ["gender", "age"], person_gate=False)


@pytest.mark.parametrize("rows", [[], [{"a": 1}], [{"metric": "x", "value": 0.1, "n": 3, "label": None, "note": "a, b: \"c\" é"}, {}]])
def test_metrics_json_is_the_indented_standard_library_text(rows):
    doc = {"t2ibias_version": "0", "intervals": {"m": {"a": 1}}, "metrics": {"x": {"h": True}}, "rows": []}
    assert metrics_json(doc, rows) == json.dumps({**doc, "rows": rows}, indent=1, allow_nan=False) + "\n"
    with pytest.raises(ValueError):
        metrics_json(doc, [{"v": math.nan}])
