"""The one number formatter family, and the strings each command prints through it."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from t2ibias.core.fmt import MISSING, fmt_cell, fmt_estimate, fmt_interval, fmt_value


def test_fmt_estimate_is_the_report_formatter():
    from t2ibias.report.html import fmt_estimate as report_fmt_estimate

    values = [None, math.nan, math.inf, -math.inf, "x", "0.25", 0, 1, -2, 0.62, 0.049, -0.0123, 1e-7, 12.345, np.float32(0.3),
              np.int64(7), True]
    ends = [None, math.nan, 0.41, -0.00071, 2]
    ns = [None, math.nan, 8, 8.9, "12"]
    for v, lo, hi, n, digits in itertools.product(values, ends, ends, ns, (0, 2, 3)):
        assert fmt_estimate(v, lo, hi, n, digits) == report_fmt_estimate(v, lo, hi, n, digits), (v, lo, hi, n, digits)


@pytest.mark.parametrize(("args", "kwargs", "text"), [
    ((0.62, 0.41, 0.80, 8), {}, "0.62 [0.41, 0.80] n=8"),
    ((0.0123, 0.004, 0.03), {}, "0.012 [0.004, 0.030]"),  # small values keep two significant digits
    ((0.0123, 0.004, 0.03), {"small": False, "digits": 3}, "0.012 [0.004, 0.030]"),
    ((0.0123,), {"small": False}, "0.01"),
    ((0.8125, 0.79, None), {"digits": 3, "small": False}, "0.812"),  # half an interval is none
    ((None, 0.1, 0.2), {}, MISSING),
    ((0.5, 0.25, 0.75, 40), {"scale": 100, "digits": 1}, "50.0 [25.0, 75.0] n=40"),
    ((math.nan,), {"missing": "-"}, "-"),
])
def test_fmt_estimate(args, kwargs, text):
    assert fmt_estimate(*args, **kwargs) == text


def test_fmt_value_and_interval_in_percent_points():
    assert fmt_value(0.8123, 1, scale=100) == "81.2"
    assert fmt_value(-0.0004, 1, scale=100) == "-0.0"
    assert fmt_value(None, 1, scale=100, missing="-") == "-"
    assert fmt_value(math.inf, 1, missing="-") == "-"
    assert fmt_value(0.004, 2, small=True) == "0.0040"
    assert fmt_interval(0.1, None, 1, scale=100, missing="-") == "[10.0, -]"
    assert fmt_interval(None, None) == "[—, —]"


def test_fmt_cell_keeps_counts_whole():
    assert [fmt_cell(x, 3, missing="–") for x in (None, 12, 0.5, 1.0, np.float64(0.25))] == ["–", "12", "0.500", "1.000", "0.250"]


def test_the_commands_print_what_they_always_printed():
    from facet_eval.classification import _pts, _pts_interval
    from facet_eval.disaggregate import _ci_text, _fmt
    from facet_eval.leaderboard import _fmt as board_fmt
    from t2ibias.cli.factuality import _cell

    assert [_fmt(v) for v in (None, math.nan, 0.5, 0.12345, 1, -0.0625)] == ["-", "-", "50.0", "12.3", "100.0", "-6.2"]
    assert _ci_text(0.1, None) == "[10.0, -]"
    assert [_pts(v) for v in (None, 0.25, -0.031)] == ["-", "25.0", "-3.1"]
    assert _pts_interval(-0.1, 0.05) == "[-10.0, 5.0]"
    assert [board_fmt(v) for v in (None, 3, 0.8123, 0.5)] == ["–", "3", "0.812", "0.500"]
    assert board_fmt(0.8123, 1) == "0.8"
    assert _cell(None) == "—" and _cell(math.nan, [0.1, 0.2]) == "—"
    assert _cell(0.81234, [0.7, 0.9]) == "0.812 [0.700, 0.900]"
    assert _cell(0.81234, [None, None]) == _cell(0.81234) == "0.812"
    assert _cell(0.004, [0.001, 0.01]) == "0.004 [0.001, 0.010]"  # no extra digits for small values here
