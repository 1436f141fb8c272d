"""Charts for the HTML pages: inline SVG, each with its numbers in a table one click away.

Why hand-written SVG rather than a plotting library: the pages must open offline from a single file
with no external URL and no script, stay small at thousands of points, and give every chart an
accessible name. matplotlib's SVG embeds each glyph and marker as separate paths (tens of kB per
chart, hundreds of kB at 2,000 points) and has no notion of ARIA roles; Vega-Lite, Plotly and Bokeh
need a JavaScript runtime that is either fetched from a CDN or inlined at several MB per page. Three
chart types (dots with intervals, a ranked strip of intervals, a scatter against the identity line)
are a few dozen lines each as SVG; every point of a many-point chart goes into one ``<path>``.

API (every function returns :class:`markupsafe.Markup` for a ``<figure>`` holding the ``<svg
role="img">``, a visible caption and a ``<details>`` table of the plotted numbers):

- :func:`dot_interval` — one labelled row per item, a dot and its interval, optional reference line.
- :func:`ranked_intervals` — many items sorted by value: rank on x, value and interval on y.
- :func:`scatter_identity` — reference (x) against observed (y) with y intervals and the line y = x.

A row is a dict: ``label``, ``value``, ``lo``, ``hi``, ``n`` (and ``x`` for the scatter; optional
``note`` and ``q`` shown in the table). Colours are the Okabe-Ito palette (safe for the common
colour-vision deficiencies); meaning is never carried by colour alone.
"""

from __future__ import annotations

import math
import hashlib
from typing import Any, Iterable

from markupsafe import Markup, escape

#: Okabe & Ito (2008), "Color Universal Design": black, orange, sky blue, bluish green, yellow, blue,
#: vermillion, reddish purple.
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
DOT, INTERVAL, REFERENCE, HIGHLIGHT = OKABE_ITO[5], OKABE_ITO[2], OKABE_ITO[6], OKABE_ITO[1]

WIDTH = 640
#: The width of charts with a text label per row (dot_interval).
NARROW = 440
FONT = 11


def _chart_id(given: str | None, title: str, alt: str) -> str:
    """The figure's id: ``given``, or one derived from its title and alt text (stable across renders)."""
    return given or "chart-" + hashlib.sha1(f"{title}\0{alt}".encode()).hexdigest()[:10]


def _f(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _fin(*xs: Any) -> bool:
    return all(math.isfinite(_f(x)) for x in xs)


def _num(x: Any, digits: int = 2) -> str:
    v = _f(x)
    return f"{v:.{digits}f}" if math.isfinite(v) else "—"


def estimate_text(row: dict, digits: int = 2) -> str:
    """``0.42 [0.30, 0.55] n=40`` for a chart row (``—`` where a value is missing)."""
    text = _num(row.get("value"), digits)
    if _fin(row.get("lo"), row.get("hi")):
        text += f" [{_num(row['lo'], digits)}, {_num(row['hi'], digits)}]"
    if row.get("n") is not None:
        text += f" n={row['n']}"
    return text


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], start
    while t <= hi + 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _domain(rows: list[dict], keys: tuple[str, ...], domain: tuple[float, float] | None,
            include: Iterable[float] = ()) -> tuple[float, float]:
    if domain is not None:
        return domain
    vals = [_f(r.get(k)) for r in rows for k in keys] + [_f(x) for x in include]
    vals = [v for v in vals if math.isfinite(v)]
    if not vals:
        return (0.0, 1.0)
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.04
    return (lo - pad, hi + pad)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _svg_open(cid: str, title: str, alt: str, height: float, width: float = WIDTH) -> str:
    return (f'<svg role="img" aria-label="{escape(title)}" aria-describedby="{cid}-d" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="100%" style="max-width:{width:.0f}px" preserveAspectRatio="xMinYMin meet" '
            f'font-size="{FONT}" font-family="system-ui, sans-serif">'
            f'<title id="{cid}-t">{escape(title)}</title><desc id="{cid}-d">{escape(alt)}</desc>')


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h, _ in columns)
    body = []
    for r in rows:
        cells = []
        for _, key in columns:
            v = estimate_text(r) if key == "_estimate" else r.get(key)
            if isinstance(v, float):
                v = _num(v, 3)
            cells.append(f"<td>{escape('' if v is None else v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="chart-data"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _figure(cid: str, svg: str, alt: str, rows: list[dict], columns: list[tuple[str, str]]) -> Markup:
    return Markup(
        f'<figure class="chart" id="{cid}">{svg}<figcaption>{escape(alt)}</figcaption>'
        f'<details><summary>Numbers ({len(rows)} rows)</summary><div class="scroll">{_table(rows, columns)}</div></details></figure>')


def _columns(rows: list[dict], first: tuple[str, str]) -> list[tuple[str, str]]:
    cols = [first, ("estimate [CI] n", "_estimate")]
    if any(r.get("q") is not None for r in rows):
        cols.append(("q (BH)", "q"))
    if any(r.get("note") for r in rows):
        cols.append(("note", "note"))
    return cols


def _x_axis(scale, ticks: list[float], y: float, y_top: float, label: str, digits: int = 2) -> str:
    parts = [f'<line x1="{scale(ticks[0]):.1f}" x2="{scale(ticks[-1]):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#888"/>'] if ticks else []
    for t in ticks:
        x = scale(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y_top:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{x:.1f}" y="{y + 13:.1f}" text-anchor="middle" fill="#444">{t:.{digits}g}</text>')
    mid = (scale(ticks[0]) + scale(ticks[-1])) / 2 if ticks else WIDTH / 2
    parts.append(f'<text x="{mid:.1f}" y="{y + 27:.1f}" text-anchor="middle" fill="#222">{escape(label)}</text>')
    return "".join(parts)


def dot_interval(rows: list[dict], *, title: str, alt: str, x_label: str, reference: float | None = None,
                 reference_label: str = "", domain: tuple[float, float] | None = None, sort: bool = False,
                 highlight_min: bool = False, label_header: str = "item", chart_id: str | None = None) -> Markup:
    """One row per item: its label, a dot at ``value`` and a line from ``lo`` to ``hi``.

    ``reference`` draws a dashed vertical line (0 for differences); ``highlight_min`` marks the
    smallest value in orange with a ring (for "which is closest")."""
    rows = sorted(rows, key=lambda r: (_f(r.get("value")) if _fin(r.get("value")) else math.inf)) if sort else list(rows)
    cid = _chart_id(chart_id, title, alt)
    # each row's label sits above its interval, so the plot spans the width and stays legible when a
    # phone scales the chart down
    width, left, right, top, row_h = NARROW, 10, 14, 6, 30
    height = top + row_h * max(len(rows), 1) + 40
    lo, hi = _domain(rows, ("value", "lo", "hi"), domain, [] if reference is None else [reference])
    plot_l, plot_r = left, width - right
    scale = lambda v: plot_l + (v - lo) / (hi - lo) * (plot_r - plot_l)
    y_axis = top + row_h * max(len(rows), 1) + 4
    parts = [_svg_open(cid, title, alt, height, width), _x_axis(scale, nice_ticks(lo, hi), y_axis, top, x_label)]
    if reference is not None and lo <= reference <= hi:
        x = scale(reference)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{y_axis:.1f}" stroke="{REFERENCE}" stroke-dasharray="4 3"/>')
    finite = [r for r in rows if _fin(r.get("value"))]
    best = min(finite, key=lambda r: _f(r["value"])) if highlight_min and finite else None
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h - 8
        label = str(r.get("label"))
        parts.append(f'<text x="{plot_l}" y="{y - 7:.1f}" fill="#222">{escape(_short(label, 70))}</text>')
        if _fin(r.get("lo"), r.get("hi")):
            parts.append(f'<line x1="{scale(max(_f(r["lo"]), lo)):.1f}" x2="{scale(min(_f(r["hi"]), hi)):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                         f'stroke="{INTERVAL}" stroke-width="3" stroke-linecap="round"/>')
        if _fin(r.get("value")):
            colour = HIGHLIGHT if r is best else DOT
            ring = ' stroke="#000" stroke-width="1.5"' if r is best else ""
            parts.append(f'<circle cx="{scale(_f(r["value"])):.1f}" cy="{y:.1f}" r="4" fill="{colour}"{ring}/>')
        else:
            parts.append(f'<text x="{plot_r}" y="{y - 7:.1f}" text-anchor="end" fill="#888">no value</text>')
    if reference is not None and reference_label:
        x = scale(reference) if lo <= reference <= hi else plot_l
        anchor, dx = ("end", -4) if x > (plot_l + plot_r) / 2 else ("start", 4)
        parts.append(f'<text x="{x + dx:.1f}" y="{y_axis - 4:.1f}" text-anchor="{anchor}" fill="{REFERENCE}">{escape(reference_label)}</text>')
    parts.append("</svg>")
    return _figure(cid, "".join(parts), alt, rows, _columns(rows, (label_header, "label")))


def ranked_intervals(rows: list[dict], *, title: str, alt: str, y_label: str,
                     domain: tuple[float, float] | None = None, label_header: str = "item", chart_id: str | None = None) -> Markup:
    """Many items sorted by value: rank on the x axis, each item's interval as a vertical stroke
    and its value as a dot; all strokes share one path, so 2,000 items cost ~40 kB."""
    rows = sorted((r for r in rows if _fin(r.get("value"))), key=lambda r: _f(r["value"]))
    cid = _chart_id(chart_id, title, alt)
    left, right, top, bottom, height = 46, 12, 10, 40, 240
    lo, hi = _domain(rows, ("value", "lo", "hi"), domain)
    n = max(len(rows), 1)
    xs = lambda i: left + (i + 0.5) / n * (WIDTH - left - right)
    ys = lambda v: top + (1 - (min(max(v, lo), hi) - lo) / (hi - lo)) * (height - top - bottom)
    parts = [_svg_open(cid, title, alt, height)]
    for t in nice_ticks(lo, hi):
        y = ys(t)
        parts.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{t:.3g}</text>')
    bars = "".join(f"M{xs(i):.1f} {ys(_f(r['lo'])):.1f}V{ys(_f(r['hi'])):.1f}" for i, r in enumerate(rows) if _fin(r.get("lo"), r.get("hi")))
    dots = "".join(f"M{xs(i):.1f} {ys(_f(r['value'])):.1f}h0" for i, r in enumerate(rows))
    stroke = max(0.6, min(3.0, (WIDTH - left - right) / n * 0.6))
    parts.append(f'<path d="{bars}" stroke="{INTERVAL}" stroke-width="{stroke:.2f}" fill="none"/>')
    parts.append(f'<path d="{dots}" stroke="{DOT}" stroke-width="{min(7.0, max(stroke * 2, 2.5)):.2f}" stroke-linecap="round" fill="none"/>')
    parts.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{height - bottom}" y2="{height - bottom}" stroke="#888"/>'
                 f'<text x="{(left + WIDTH - right) / 2:.0f}" y="{height - bottom + 16}" text-anchor="middle" fill="#222">'
                 f'{len(rows)} {escape(label_header)}s, sorted by value</text>'
                 f'<text x="12" y="{(top + height - bottom) / 2:.0f}" transform="rotate(-90 12 {(top + height - bottom) / 2:.0f})" '
                 f'text-anchor="middle" fill="#222">{escape(y_label)}</text></svg>')
    return _figure(cid, "".join(parts), alt, rows, _columns(rows, (label_header, "label")))


def scatter_identity(rows: list[dict], *, title: str, alt: str, x_label: str, y_label: str,
                     domain: tuple[float, float] = (0.0, 1.0), label_header: str = "item", chart_id: str | None = None) -> Markup:
    """``x`` (a reference) against ``value`` (observed) with the ``lo``–``hi`` interval of each
    point and the identity line: points above it are over-represented against the reference."""
    cid = _chart_id(chart_id, title, alt)
    size, left, bottom, top, right = 420, 48, 42, 10, 12
    lo, hi = domain
    plot = size - left - right
    xs = lambda v: left + (min(max(v, lo), hi) - lo) / (hi - lo) * plot
    ys = lambda v: top + (1 - (min(max(v, lo), hi) - lo) / (hi - lo)) * (size - top - bottom)
    parts = [_svg_open(cid, title, alt, size, size)]
    for t in nice_ticks(lo, hi):
        parts.append(f'<line x1="{xs(t):.1f}" x2="{xs(t):.1f}" y1="{top}" y2="{size - bottom}" stroke="#eee"/>'
                     f'<line x1="{left}" x2="{left + plot}" y1="{ys(t):.1f}" y2="{ys(t):.1f}" stroke="#eee"/>'
                     f'<text x="{xs(t):.1f}" y="{size - bottom + 13}" text-anchor="middle" fill="#444">{t:.2g}</text>'
                     f'<text x="{left - 4}" y="{ys(t) + 4:.1f}" text-anchor="end" fill="#444">{t:.2g}</text>')
    parts.append(f'<line x1="{xs(lo):.1f}" y1="{ys(lo):.1f}" x2="{xs(hi):.1f}" y2="{ys(hi):.1f}" stroke="{REFERENCE}" stroke-dasharray="5 4"/>'
                 f'<text x="{xs(hi) - 4:.1f}" y="{ys(hi) + 14:.1f}" text-anchor="end" fill="{REFERENCE}">y = x</text>')
    ok = [r for r in rows if _fin(r.get("x"), r.get("value"))]
    bars = "".join(f"M{xs(_f(r['x'])):.1f} {ys(_f(r['lo'])):.1f}V{ys(_f(r['hi'])):.1f}" for r in ok if _fin(r.get("lo"), r.get("hi")))
    parts.append(f'<path d="{bars}" stroke="{INTERVAL}" stroke-width="2" fill="none"/>')
    for r in ok:
        parts.append(f'<circle cx="{xs(_f(r["x"])):.1f}" cy="{ys(_f(r["value"])):.1f}" r="3.5" fill="{DOT}">'
                     f'<title>{escape(str(r.get("label")))}: {escape(estimate_text(r))} vs {_num(r["x"], 3)}</title></circle>')
    parts.append(f'<text x="{left + plot / 2:.0f}" y="{size - 8}" text-anchor="middle" fill="#222">{escape(x_label)}</text>'
                 f'<text x="12" y="{(size - bottom) / 2:.0f}" transform="rotate(-90 12 {(size - bottom) / 2:.0f})" '
                 f'text-anchor="middle" fill="#222">{escape(y_label)}</text></svg>')
    cols = [(label_header, "label"), ("reference", "x")] + _columns(rows, (label_header, "label"))[1:]
    return _figure(cid, "".join(parts), alt, rows, cols)
