"""CSV cells that spreadsheets show as text, never run as formulas.

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (or their
full-width forms, which some spreadsheets also accept) is read by Excel, LibreOffice and Google
Sheets as a formula: a prompt subject ``=HYPERLINK(...)`` would become a live link in
``metrics.csv``. Following the OWASP guidance on CSV injection, such cells get a leading single
quote. Numbers are left as numbers, and so is text that is a plain number (``-0.5``). A cell that
already starts with a quote before such a character gets one more, so :func:`unescape_cell`
gives back exactly what was written.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

#: First characters that make a spreadsheet evaluate a cell.
FORMULA_START = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
QUOTE = "'"
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _needs_quote(text: str) -> bool:
    if not text:
        return False
    if text[0] == QUOTE:
        return _needs_quote(text[1:])
    return text[0] in FORMULA_START and _PLAIN_NUMBER.fullmatch(text) is None


def escape_cell(value: Any) -> Any:
    """``value`` safe for a spreadsheet: text that would start a formula gets a leading ``'``."""
    if isinstance(value, str) and _needs_quote(value):
        return QUOTE + value
    return value


def unescape_cell(value: Any) -> Any:
    """The text :func:`escape_cell` was given, for reading back a CSV this project wrote."""
    if isinstance(value, str) and value.startswith(QUOTE) and _needs_quote(value[1:]):
        return value[1:]
    return value


def escape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell (and text header) passed through :func:`escape_cell`."""
    out = frame.copy()
    for column in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[column]) or pd.api.types.is_bool_dtype(out[column])):
            out[column] = out[column].map(escape_cell)
    out.columns = [escape_cell(c) for c in out.columns]
    return out


def frame_to_csv(frame: pd.DataFrame, **kwargs: Any) -> str:
    """``frame.to_csv(index=False, **kwargs)`` with formula-safe text cells."""
    kwargs.setdefault("index", False)
    return escape_frame(frame).to_csv(**kwargs)


def rows_to_csv(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    """CSV text of a header and rows (``\\n`` line ends) with formula-safe text cells."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([escape_cell(c) for c in header])
    for row in rows:
        w.writerow([escape_cell(v) for v in row])
    return buf.getvalue()
