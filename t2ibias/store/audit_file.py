"""The audit's files: ``audit.json`` (schema, writing, checked reading) and its CSV companions.

``audit.json`` holds NaN as null (strict JSON) and is written last, so its presence means a
complete audit. ``audit.csv`` has one row per metric, group attribute and group
(:data:`ROW_COLUMNS`), ``confusion_<attribute>.csv`` one row per true class and
``predictions.csv`` one row per person and attribute.

An audit that ran a face gate also holds ``gate`` (optional within schema 1, so older audits still
load): the gate's detection rate among FACET's visible faces, ``overall`` and ``by_group`` rows of
metric ``gate_recall`` (``group_attribute``, ``group``, ``value``, ``n``, ``ci_low``, ``ci_high``,
``note``, ``method``), ``comparisons`` (tests of equal rates, ``p_value`` and ``q_value``),
``differs_across_groups`` and ``warning`` (see :mod:`t2ibias.audit.gate_recall`); its rows are in
``audit.csv`` with attribute ``face_gate``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from t2ibias.core.csvsafe import escape_cell
from t2ibias.core.errors import UserError
from t2ibias.core.files import atomic_write_text, dumps_strict
from t2ibias.core.rows import AUDIT, MetricRow

SCHEMA = "t2ibias-audit/1"
#: ``audit.csv`` columns: :data:`t2ibias.core.rows.AUDIT`'s keys (``attribute`` = the audited attribute,
#: ``group_attribute`` = what the rows are grouped by)
ROW_COLUMNS = AUDIT.keys
PREDICTION_COLUMNS = ("person_id", "attribute", "true", "pred", "top_label", "score")


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    """CSV of ``rows`` under ``header``, formula-like cells escaped and non-finite floats empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([escape_cell(h) for h in header])
    for r in rows:
        w.writerow(["" if isinstance(v, float) and not math.isfinite(v) else escape_cell(v) for v in r])
    return buf.getvalue()


def write_audit_files(out_dir: Path, result: dict[str, Any], long_rows: list[MetricRow],
                      pred_rows: list[dict[str, Any]]) -> None:
    """Write the confusion CSVs, ``audit.csv`` (``long_rows`` in the :data:`t2ibias.core.rows.AUDIT`
    layout), ``predictions.csv`` and last ``audit.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for attr, entry in result["attributes"].items():
        conf = entry["confusion"]
        atomic_write_text(out_dir / f"confusion_{attr}.csv",
                          _csv_text(["true"] + conf["pred"], [[t] + row for t, row in zip(conf["true"], conf["counts"])]))
    atomic_write_text(out_dir / "audit.csv", _csv_text(list(ROW_COLUMNS), [list(AUDIT.publish(r).values()) for r in long_rows]))
    pcols = list(PREDICTION_COLUMNS)
    atomic_write_text(out_dir / "predictions.csv", _csv_text(pcols, [[r[c] for c in pcols] for r in pred_rows]))
    atomic_write_text(out_dir / "audit.json", dumps_strict(result, indent=2) + "\n")


def load_audit(path: str | Path) -> dict[str, Any]:
    """Read and check an ``audit.json`` (or the folder holding it); NaN values come back as None."""
    path = Path(path)
    if path.is_dir():
        path = path / "audit.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run `t2ibias audit` first, or pass its --out folder)") from None
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON: {exc} (re-run `t2ibias audit`)") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: schema: not an audit object (pass an audit.json written by `t2ibias audit`)")
    if data.get("schema") != SCHEMA:
        raise UserError(f"{path}: schema: {data.get('schema')!r}, expected {SCHEMA!r} (re-run `t2ibias audit` with this version)")
    for key in ("classifier", "facet", "attributes"):
        if not isinstance(data.get(key), dict):
            raise UserError(f"{path}: {key}: missing or not an object (re-run `t2ibias audit`)")
    gate = data.get("gate")
    if gate is not None and (not isinstance(gate, dict) or not all(isinstance(gate.get(k, []), list)
                                                                   for k in ("by_group", "comparisons"))):
        raise UserError(f"{path}: gate: not an object with lists by_group and comparisons (re-run `t2ibias audit`)")
    for attr, entry in data["attributes"].items():
        _check_confusion(f"{path}: attributes.{attr}.confusion", entry.get("confusion") if isinstance(entry, dict) else None)
    return data


def _check_confusion(where: str, conf: Any) -> None:
    """Refuse a confusion entry that is not lists true, pred and a true × pred table of counts."""
    if not isinstance(conf, dict) or not all(isinstance(conf.get(k), list) for k in ("true", "pred", "counts")):
        raise UserError(f"{where}: needs lists true, pred and counts (re-run `t2ibias audit`)")
    counts = conf["counts"]
    if len(counts) != len(conf["true"]) or any(not isinstance(r, list) or len(r) != len(conf["pred"]) for r in counts):
        raise UserError(f"{where}: counts must be {len(conf['true'])} rows of {len(conf['pred'])} numbers (re-run `t2ibias audit`)")
    if any(not isinstance(v, int) or v < 0 for r in counts for v in r):
        raise UserError(f"{where}: counts must be non-negative integers (re-run `t2ibias audit`)")
