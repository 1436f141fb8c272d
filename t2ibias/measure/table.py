"""The measurement tables of a run (``measurements.parquet``, ``embeddings.parquet``) and the
records of what measured them (``measure.json``, ``measurers.json``): their writers, shared by the
measure stage and imports of external predictions. Their columns and readers are part of the
run-directory contract (:mod:`t2ibias.store.rundir`), which every later stage reads through."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.files import atomic_write_bytes, atomic_write_text
from t2ibias.store.image_store import ImageStore
from t2ibias.store.lock import RunLock
from t2ibias.store.rundir import COLUMNS, EMBEDDINGS_FILE, MEASUREMENTS_FILE, MEASURERS_FILE, read_measurements, read_measurers

_ROW_ID = ["key", "measurer", "unit", "face_index", "attribute"]
#: A row's unit: the whole image (face_index -1), the i-th person or the i-th face (largest first).
UNITS = ("image", "person", "face")


def record_measurers(run_dir: Path, entries: dict[str, dict[str, Any]]) -> None:
    known = read_measurers(run_dir)
    merged = {**known, **entries}
    if merged != known:
        atomic_write_text(run_dir / MEASURERS_FILE, json.dumps(merged, indent=1, sort_keys=True) + "\n")


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Measurement rows with one dtype per column, whoever wrote them."""
    frame = frame[COLUMNS].copy()
    frame["face_index"] = frame["face_index"].astype("int64")
    for col in ("box_x", "box_y", "box_w", "box_h", "score", "margin"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in ("key", "measurer", "unit", "attribute", "label", "top_label", "probs"):
        frame[col] = frame[col].astype(str)
    return frame


def write_tables(run_dir: Path, frames: list[pd.DataFrame], embeddings: list[pd.DataFrame]) -> None:
    """Rewrite both files; a key measured again after a crash between the two writes keeps its last rows."""
    for name, parts, ident in ((EMBEDDINGS_FILE, embeddings, ["key", "measurer"]), (MEASUREMENTS_FILE, frames, _ROW_ID)):
        parts = [f for f in parts if len(f)]
        if not parts:
            continue
        frame = pd.concat(parts, ignore_index=True).drop_duplicates(ident, keep="last")
        if name == MEASUREMENTS_FILE:
            frame = _typed(frame)
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        atomic_write_bytes(run_dir / name, buf.getvalue())


def append_measurements(run_dir: Path, frame: pd.DataFrame, measurer: str, info: dict[str, Any],
                        source: str = "appended measurements") -> int:
    """Merge externally produced rows (``COLUMNS`` format, e.g. imported FairFace predictions) into
    ``measurements.parquet`` under ``measurer``, and record ``info`` for it in ``measurers.json``.

    Rows with the same (key, measurer, unit, face_index, attribute) replace the stored ones; the
    file is rewritten atomically. ``source`` names the input in error messages. Returns the
    number of rows merged.
    """
    run_dir = Path(run_dir)
    if not isinstance(measurer, str) or not measurer:
        raise UserError(f"{source}: measurer: empty (give the fingerprint or id the rows are stored under)")
    if not isinstance(info, dict):
        raise UserError(f"{source}: info: must be a mapping such as {{'id': ..., 'kind': ...}}")
    frame = frame.copy()
    frame["measurer"] = measurer
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{source}: missing column {missing[0]!r} (rows need the columns {', '.join(COLUMNS)})")
    bad_units = sorted(set(frame["unit"].astype(str)) - set(UNITS))
    if bad_units:
        raise UserError(f"{source}: unit: unknown value {bad_units[0]!r} (use one of {', '.join(UNITS)})")
    if frame["key"].isna().any() or frame["attribute"].isna().any() or frame["label"].isna().any():
        raise UserError(f"{source}: key, attribute and label must be set on every row (fill or drop the empty ones)")
    frame["probs"] = [p if isinstance(p, str) else json.dumps(p, sort_keys=True) for p in frame["probs"]]
    records = ImageStore(run_dir).records()
    unknown = sorted(set(frame["key"].astype(str)) - set(records))
    if unknown:
        raise UserError(f"{source}: key: {len(unknown)} rows name images not in {run_dir} (first: {unknown[0]}; import them into the run they came from)")
    with RunLock(run_dir, "measure"):
        existing = read_measurements(run_dir)
        record_measurers(run_dir, {measurer: {"kind": "external", **info}})
        write_tables(run_dir, [existing, _typed(frame)], [])
    return len(frame)
