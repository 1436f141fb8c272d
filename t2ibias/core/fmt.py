"""Numbers as people read them: one formatter family for reports, tables and terminal summaries.

:func:`fmt_estimate` writes an estimate as ``0.62 [0.41, 0.80] n=8``. A missing value (None,
NaN, ±inf, anything that is not a number) is shown as ``missing`` — an em dash by default, each
caller keeps its own. ``scale=100`` shows a fraction in percent points; ``small=True`` gives a
value below 0.05 in size two significant digits (distances and divergences would otherwise read
0.00), its interval with the same digits.
"""

from __future__ import annotations

import math
from typing import Any

#: What a missing value looks like unless the caller says otherwise.
MISSING = "—"


def as_float(x: Any) -> float:
    """``x`` as a float; NaN for None, NaN and anything unparseable."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _digits(v: float, digits: int, small: bool) -> int:
    if small and digits > 0 and 0 < abs(v) < 0.05:
        return max(digits, 1 - math.floor(math.log10(abs(v))))
    return digits


def fmt_value(value: Any, digits: int = 2, *, scale: float = 1.0, missing: str = MISSING, small: bool = False) -> str:
    """One number times ``scale`` with ``digits`` decimals (see the module docstring for ``small``);
    ``missing`` when it is not a finite number."""
    v = as_float(value) * scale
    if not math.isfinite(v):
        return missing
    return f"{v:.{_digits(v, digits, small)}f}"


def fmt_interval(low: Any, high: Any, digits: int = 2, *, scale: float = 1.0, missing: str = MISSING) -> str:
    """``[low, high]``, each end as :func:`fmt_value` writes it (a missing end as ``missing``)."""
    return f"[{fmt_value(low, digits, scale=scale, missing=missing)}, {fmt_value(high, digits, scale=scale, missing=missing)}]"


def fmt_estimate(value: Any, ci_low: Any = None, ci_high: Any = None, n: Any = None, digits: int = 2, *,
                 scale: float = 1.0, missing: str = MISSING, small: bool = True) -> str:
    """One estimate as ``0.62 [0.41, 0.80] n=8``; ``missing`` when the value is missing.

    The interval is shown only when both ends are finite, ``n`` only when it is a number.
    """
    v = as_float(value) * scale
    if not math.isfinite(v):
        return missing
    digits = _digits(v, digits, small)
    text = f"{v:.{digits}f}"
    lo, hi = as_float(ci_low) * scale, as_float(ci_high) * scale
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    k = as_float(n)
    if math.isfinite(k):
        text += f" n={int(k)}"
    return text


def fmt_cell(value: Any, digits: int = 3, *, missing: str = MISSING) -> str:
    """A table cell: an integer as it is, any other number as :func:`fmt_value` writes it."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return fmt_value(value, digits, missing=missing)
