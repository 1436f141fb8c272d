"""The faces input of DoFaiR scoring: one row per detected face, with its image and its labels.

Read through the project's one faces-CSV reader (:mod:`t2ibias.core.fairface_csv`), with
labels in DoFaiR's vocabulary (:func:`t2ibias.core.vocab.dofair_label`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.core.errors import UserError, decode_error_message
from t2ibias.core.fairface_csv import MALFORMED, NOT_UTF8, CsvReadError, csv_records, face_image_stem, image_stem
from t2ibias.core.vocab import DOFAIR_LABELS, dofair_label

#: DoFaiR's axes, in the order a faces file's label columns are read.
AXES = tuple(DOFAIR_LABELS)


def load_faces(path: str | Path) -> pd.DataFrame:
    """One row per detected face: columns ``image`` (image stem), ``face``, ``race`` and/or
    ``gender`` (DoFaiR labels) and ``line`` (CSV line, header = 1); ``attrs["source"]`` = path.

    Accepted files:

    (a) FairFace ``predict.py`` output: ``face_name_align`` (``<dir>/<image stem>_face<N>.jpg``),
        ``race`` (7 classes), ``gender`` (``Male``/``Female``); other columns (``race4``, ``age``,
        ``*_scores_fair*``) are ignored.
    (b) A table with ``image`` (an image file name, path or stem; matched by stem) and ``race``
        and/or ``gender``, one row per face; an optional ``face`` column names the face.

    Race labels may be spelled as FairFace does (``Latino_Hispanic``, ``East Asian``) or with
    ``_``/``-`` for spaces, any case; ``Latino`` reads as ``Latino_Hispanic``. Gender: male/female,
    any case. A missing column, an empty cell or an unknown label is a :class:`UserError`
    ``file:line: column X: what (fix)``; so is a file that is not UTF-8 or not valid CSV.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file (pass FairFace predict.py output or a table with image and race/gender columns)")
    rows: list[dict[str, Any]] = []
    records = csv_records(path)
    try:
        first = next(records, None)
        if first is None or not first.fields:
            raise UserError(f"{path}:1: empty file (expected a header: face_name_align,race,gender,... or image,race,gender)")
        header = [h.strip() for h in first.fields]
        col = {name: i for i, name in enumerate(header)}
        fairface = "face_name_align" in col
        key = "face_name_align" if fairface else "image"
        if key not in col:
            raise UserError(
                f"{path}:1: column image: missing (a faces file is FairFace predict.py output with "
                f"face_name_align, race, gender, or a table with image and race and/or gender; found {', '.join(header)})"
            )
        axes = [axis for axis in AXES if axis in col]
        if not axes:
            raise UserError(f"{path}:1: column race: missing, and no gender column either (add race and/or gender)")
        for record in records:
            if record.blank:
                continue
            rows.append(_face(path, record.line, record.fields, header, col, key, fairface, axes))
    except CsvReadError as exc:
        if exc.reason == NOT_UTF8:
            raise UserError(decode_error_message(path)) from None
        if exc.reason == MALFORMED:
            raise UserError(f"{path}:{exc.lines_read}: malformed CSV ({exc.detail}) (fix the quoting)") from None
        raise UserError(f"{path}: cannot read ({exc.detail}; pass FairFace predict.py output or a table with image and "
                        "race/gender columns)") from None
    finally:
        records.close()
    df = pd.DataFrame(rows, columns=["image", "face", *axes, "line"])
    df.attrs["source"] = str(path)
    return df


def _face(path: Path, line: int, row: list[str], header: list[str], col: dict[str, int], key: str, fairface: bool,
          axes: list[str]) -> dict[str, Any]:
    """One face of a faces file's record, its labels checked."""
    if len(row) != len(header):
        raise UserError(f"{path}:{line}: row: {len(row)} fields where the header has {len(header)} (quote fields that contain commas)")
    raw = row[col[key]].strip()
    if not raw or raw.lower() == "nan":
        raise UserError(f"{path}:{line}: column {key}: empty (name the image or face file)")
    record: dict[str, Any] = {
        "image": face_image_stem(raw) if fairface else image_stem(raw),
        "face": raw if fairface else (row[col["face"]].strip() if "face" in col else ""),
    }
    for axis in axes:
        value = row[col[axis]].strip()
        if not value or value.lower() in ("nan", "none", "null"):
            raise UserError(f"{path}:{line}: column {axis}: empty (give a label for every face, or drop the row)")
        label = dofair_label(value, axis)
        if label is None:
            raise UserError(
                f"{path}:{line}: column {axis}: unknown label {value!r} (use one of {', '.join(DOFAIR_LABELS[axis])}"
                + ("; the 7-class race column, not race4)" if axis == "race" else ")")
            )
        record[axis] = label
    record["line"] = line
    return record
