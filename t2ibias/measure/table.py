"""The measurement tables of a run (``measurements.parquet``, ``embeddings.parquet``) and the
records of what measured them (``measure.json``, ``measurers.json``): their writers, shared by the
measure stage and imports of external predictions. Their columns and readers are part of the
run-directory contract (:mod:`t2ibias.store.rundir`), which every later stage reads through.

The measure stage appends: each checkpoint of a worker writes only its new rows, as one part file
per table (:class:`PartWriter`), and :func:`compact_tables` folds the parts into the two tables
once, at the end. What is written stays linear in the number of images (rewriting the whole table
at every checkpoint was quadratic), and the readers see the parts of an interrupted stage.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.files import atomic_write_bytes, atomic_write_text
from t2ibias.store.image_store import ImageStore
from t2ibias.store.lock import RunLock
from t2ibias.store.rundir import (
    COLUMNS,
    EMBEDDING_COLUMNS,
    EMBEDDING_ID,
    EMBEDDINGS_FILE,
    MEASUREMENTS_FILE,
    MEASURERS_FILE,
    ROW_ID,
    parse_part_name,
    part_files,
    part_name,
    parts_dir,
    read_measurements,
    read_measurers,
)

_ROW_ID = ROW_ID
_TEMP_NAME = re.compile(r"^\..+\.tmp$")  # atomic_write_bytes's temp files
_WORKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
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


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _merged(parts: list[pd.DataFrame], name: str) -> pd.DataFrame | None:
    """Rows of ``parts`` in order, a row identity met twice keeping its last rows; None when empty."""
    parts = [f for f in parts if len(f)]
    if not parts:
        return None
    frame = pd.concat(parts, ignore_index=True).drop_duplicates(EMBEDDING_ID if name == EMBEDDINGS_FILE else ROW_ID, keep="last")
    return _typed(frame) if name == MEASUREMENTS_FILE else frame


def write_tables(run_dir: Path, frames: list[pd.DataFrame], embeddings: list[pd.DataFrame]) -> int:
    """Rewrite both files from whole frames (embeddings first; a key measured again after a crash
    between the two writes keeps its last rows). Returns the bytes written."""
    written = 0
    for name, parts in ((EMBEDDINGS_FILE, embeddings), (MEASUREMENTS_FILE, frames)):
        frame = _merged(parts, name)
        if frame is None:
            continue
        data = _parquet_bytes(frame)
        atomic_write_bytes(run_dir / name, data)
        written += len(data)
    return written


class PartWriter:
    """Appends one worker's checkpoints to a run: each :meth:`write` makes
    ``embeddings.parts/<worker>-<seq>.parquet``, then ``measurements.parts/<worker>-<seq>.parquet``
    (each atomically, numbered after the worker's parts already there), holding only the rows given.

    Workers with distinct names never touch each other's files, so several may append to one run at
    once; nothing here takes the run lock (the caller, or the driver it works for, holds it).
    ``bytes_written`` counts what was written.
    """

    def __init__(self, run_dir: Path, worker: str) -> None:
        if not isinstance(worker, str) or not _WORKER_NAME.match(worker):
            raise UserError(f"worker name {worker!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        self.run_dir, self.worker = Path(run_dir), worker
        seqs = [parsed[1] for name in (EMBEDDINGS_FILE, MEASUREMENTS_FILE) for p in part_files(self.run_dir, name)
                if (parsed := parse_part_name(p.name)) is not None and parsed[0] == worker]
        self.seq = max(seqs, default=-1) + 1
        self.bytes_written = 0
        self.written: list[str] = []  # the part file names this writer made

    def write(self, rows: pd.DataFrame, embeddings: pd.DataFrame) -> None:
        if not len(rows) and not len(embeddings):
            return
        file_name = part_name(self.worker, self.seq)
        for name, frame in ((EMBEDDINGS_FILE, embeddings), (MEASUREMENTS_FILE, rows)):
            if not len(frame):
                continue
            data = _parquet_bytes(_typed(frame) if name == MEASUREMENTS_FILE else frame[EMBEDDING_COLUMNS])
            atomic_write_bytes(parts_dir(self.run_dir, name) / file_name, data)
            self.bytes_written += len(data)
        self.written.append(file_name)
        self.seq += 1


def _in_order(frame: pd.DataFrame, name: str, order: Sequence[str] | None) -> pd.DataFrame:
    """Part rows (identities met twice keeping their last rows), stably sorted by the position of
    their key in ``order`` (keys not in it last): the same table whichever worker measured which
    image. One worker's parts, made in ``order`` already, stay as they are."""
    frame = frame.drop_duplicates(EMBEDDING_ID if name == EMBEDDINGS_FILE else ROW_ID, keep="last")
    if order is None or not len(frame):
        return frame
    position = {k: i for i, k in enumerate(order)}
    rank = frame["key"].map(position).fillna(len(position)).to_numpy()
    if (rank[1:] >= rank[:-1]).all():
        return frame
    return frame.iloc[rank.argsort(kind="stable")]


def compact_tables(run_dir: Path, order: Sequence[str] | None = None) -> int:
    """Fold the part files into ``embeddings.parquet`` and ``measurements.parquet`` (rewritten once,
    atomically, embeddings first), then delete the parts (and temp files left in their folders).

    The table's rows come first, then the parts' rows (see :func:`_in_order`); a row identity met
    twice keeps its last rows. A crash at any point leaves the same rows readable: the parts are
    deleted only after the table holding them is in place, and folding one again changes nothing
    in the rows. Returns the bytes written (0 when there were no parts).
    """
    run_dir = Path(run_dir)
    written = 0
    for name in (EMBEDDINGS_FILE, MEASUREMENTS_FILE):
        files = part_files(run_dir, name)
        if not files:
            continue
        main = read_measurements(run_dir, name, parts=False)
        new = [f for f in (read_measurements_part(p, run_dir) for p in files) if len(f)]
        if new:
            frame = _merged([main, _in_order(pd.concat(new, ignore_index=True), name, order)], name)
            if frame is not None:
                data = _parquet_bytes(frame)
                atomic_write_bytes(run_dir / name, data)
                written += len(data)
        for p in files:
            p.unlink(missing_ok=True)
        folder = parts_dir(run_dir, name)
        for p in folder.iterdir():
            if _TEMP_NAME.match(p.name):
                p.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:  # something else is in there: left alone
            pass
    return written


def read_measurements_part(path: Path, run_dir: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:
        raise UserError(f"{path}: unreadable ({exc}); delete it and re-run `t2ibias measure {run_dir}`") from None


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
        compact_tables(run_dir)  # rows of an interrupted measure first, so the table alone holds every row
        existing = read_measurements(run_dir)
        record_measurers(run_dir, {measurer: {"kind": "external", **info}})
        write_tables(run_dir, [existing, _typed(frame)], [])
    return len(frame)
