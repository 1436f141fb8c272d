"""Reference tables: real-world shares that a prompt subject is compared against.

A table is ``annotations/<name>.csv`` with one row per key. Today there is one,
``bls_cpsaat11_2025`` (BLS CPS Table 11, 2025 annual averages; see ``annotations/PROVENANCE.md``),
keyed by its ``occupation`` column. A prompt-set family names its table (``reference_table:``) and
each subject its row (``reference:``).
"""

from __future__ import annotations

import difflib
import math
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.paths import annotations_dir
from t2ibias.core.yamlio import load_located_yaml

#: Column holding a table's row key, for the tables that ship with t2ibias.
KEY_COLUMNS = {"bls_cpsaat11_2025": "occupation"}
_DEFAULT_KEY = "occupation"


def _table_path(name: str) -> Path:
    return annotations_dir() / f"{name}.csv"


def _known_tables() -> list[str]:
    folder = annotations_dir()
    return sorted(p.stem for p in folder.glob("*.csv")) if folder.is_dir() else []


@cache
def _read(name: str) -> pd.DataFrame:
    path = _table_path(name)
    if not path.is_file():
        known = _known_tables()
        hint = f"known tables: {', '.join(known)}" if known else "the annotations/ folder has no tables"
        raise UserError(f"{path}: no such reference table {name!r} (add annotations/{name}.csv or fix reference_table; {hint})")
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read reference table ({exc}); fix or restore the file") from None
    key = KEY_COLUMNS.get(name, _DEFAULT_KEY)
    if key not in table.columns:
        raise UserError(f"{path}: reference table has no {key!r} column (the row key); fix its header")
    return table


def load_reference_table(name: str) -> pd.DataFrame:
    """The table ``annotations/<name>.csv`` as a DataFrame (a fresh copy; the file is read once)."""
    return _read(name).copy()


def _keys(name: str) -> list[str]:
    return [str(k) for k in _read(name)[KEY_COLUMNS.get(name, _DEFAULT_KEY)]]


def _share(value: Any) -> float:
    """A percentage cell as a fraction; NaN where the cell is empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    return float(value) / 100.0


def reference_distribution(table_name: str, key: str) -> dict[str, Any]:
    """Reference shares of one row, as fractions.

    Returns ``{"gender": {"fem", "masc"}, "race": {"white", "black", "asian"}, "hispanic": float,
    "suppressed": bool}`` (for ``bls_cpsaat11_2025``; ``key`` is an exact ``occupation`` string).

    - ``masc`` is ``1 - fem``: the table reports women and men only.
    - The race shares are White, Black and Asian as published. Other races are not in the table,
      so the three **do not sum to 1** and are **not renormalised**: a caller comparing them with
      an observed distribution must decide how to treat the remainder.
    - ``hispanic`` is an ethnicity that overlaps every race; it is not a fourth race share.
    - Where BLS does not publish shares (``suppressed`` True), every share is NaN.
    """
    table = _read(table_name)
    key_col = KEY_COLUMNS.get(table_name, _DEFAULT_KEY)
    rows = table[table[key_col] == key]
    if rows.empty:
        close = difflib.get_close_matches(key, _keys(table_name), n=1, cutoff=0.0)
        hint = f"closest: {close[0]!r}" if close else "the table is empty"
        raise UserError(f"{_table_path(table_name)}: no row {key!r} in reference table {table_name} (fix the key; {hint})")
    row = rows.iloc[0]
    suppressed = bool(row.get("estimate_suppressed", False)) or pd.isna(row.get("women_pct"))

    def share(column: str) -> float:
        return math.nan if suppressed else _share(row[column])

    fem = share("women_pct")
    return {
        "gender": {"fem": fem, "masc": 1.0 - fem},
        "race": {race: share(f"{race}_pct") for race in ("white", "black", "asian")},
        "hispanic": share("hispanic_pct"),
        "suppressed": suppressed,
    }


def check_references(pset: Any) -> list[str]:
    """Problems with the ``reference:`` keys of a loaded prompt set, one ``file:line: ...`` each.

    Reported: a key that is not a row of the family's table (with the closest row), a key that
    names an aggregate row where the table marks detailed rows, a key in a family without a
    ``reference_table``, and a ``reference_table`` with no file. An empty list means all resolve.
    """
    doc = load_located_yaml(pset.path)
    problems: list[str] = []
    for family, fam in pset.families.items():
        subjects = fam["subjects"]
        with_ref = [(i, s) for i, s in enumerate(subjects) if s.reference is not None]
        if not with_ref:
            continue
        table_name = fam.get("reference_table")
        if not table_name:
            i, subj = with_ref[0]
            problems.append(
                f"{doc.where('families', family, 'subjects', i, 'reference')}: subject {subj.subject!r} has a reference "
                f"but family {family!r} names no reference_table (add `reference_table: <name>` to the family)"
            )
            continue
        try:
            table = _read(str(table_name))
        except UserError as exc:
            problems.append(f"{doc.where('families', family, 'reference_table')}: reference_table {table_name!r}: {exc}")
            continue
        keys = _keys(str(table_name))
        key_set = set(keys)
        detailed = None
        if "is_detailed_occupation" in table.columns:
            key_col = KEY_COLUMNS.get(str(table_name), _DEFAULT_KEY)
            detailed = set(table.loc[table["is_detailed_occupation"].astype(bool), key_col].astype(str))
        for i, subj in with_ref:
            where = doc.where("families", family, "subjects", i, "reference")
            if subj.reference not in key_set:
                close = difflib.get_close_matches(subj.reference, keys, n=1, cutoff=0.0)
                hint = f"closest: {close[0]!r}" if close else "the table is empty"
                problems.append(f"{where}: reference {subj.reference!r} is not a row of {table_name} (fix the key; {hint})")
            elif detailed is not None and subj.reference not in detailed:
                problems.append(
                    f"{where}: reference {subj.reference!r} is an aggregate row of {table_name}, not a detailed occupation "
                    "(use one of its detailed rows)"
                )
    return problems
