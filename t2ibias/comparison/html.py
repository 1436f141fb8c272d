"""The compare page and the leaderboard page: self-contained HTML with inline SVG charts.

Each chart is a dot-and-interval plot drawn here as inline SVG (no script, no external file), so a
page opens offline and its numbers stay exact: ``role="img"`` with an ``aria-label`` and a
``<title>`` saying what it shows, and the same numbers in a table beside it. Models take the
Okabe–Ito colours (distinguishable with the common colour-vision deficiencies; Okabe & Ito 2008)
and are also named on every row, so colour is never the only cue. The layout fits a 390 px screen:
charts scale to the width (``viewBox``, ``max-width: 100%``) and wide tables scroll inside their
own box. A comparison of runs measured with different instruments carries its warning on every
figure.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from t2ibias.comparison.paired import DEFINITIONS, RANK, SHARE, TV
from t2ibias.core.fmt import fmt_estimate, fmt_value
from t2ibias.core.version import __version__

#: Okabe–Ito colours, black last (used for a ninth model onwards, with the name on the row).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")

CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:12px;max-width:1100px;color:#1a1a1a;background:#fff}
h1{font-size:1.45em}h2{font-size:1.2em;margin-top:1.6em}h3{font-size:1.05em}
figure{margin:1em 0;max-width:100%}figure svg{display:block;width:100%;max-width:720px;height:auto}
figcaption{font-size:.9em;color:#333}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.warning{background:#fff3cd;border-left:4px solid #D55E00;padding:6px 10px;margin:.5em 0}
.note{color:#444;font-size:.9em}
code{overflow-wrap:anywhere}
nav ul{padding-left:1.2em}
.key{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.3em;vertical-align:-.05em}
"""


def color(i: int) -> str:
    return PALETTE[min(i, len(PALETTE) - 1)]


def _f(x: Any, digits: int = 3) -> str:
    return fmt_value(x, digits)


def dot_interval_chart(rows: list[dict[str, Any]], *, title: str, domain: tuple[float, float], colors: dict[str, str],
                       label_key: str = "label", zero: float | None = None, warning: str | None = None) -> str:
    """An inline SVG of one dot (the value) and one line (its interval) per row, rows grouped by
    ``row["section"]`` when given. Each row: {label_key, value, ci_low, ci_high, n, model}."""
    width, left, right, step, top = 460, 150, 14, 20, 28
    sections = list(dict.fromkeys(r.get("section", "") for r in rows))
    height = top + step * len(rows) + 18 * sum(1 for s in sections if s) + 28
    lo_d, hi_d = domain
    span = (hi_d - lo_d) or 1.0
    x = lambda v: left + (width - left - right) * (min(max(v, lo_d), hi_d) - lo_d) / span
    parts = []
    summary = "; ".join(
        f"{r.get('section', '') + ' ' if r.get('section') else ''}{r[label_key]}: {fmt_estimate(r['value'], r['ci_low'], r['ci_high'], r.get('n'), 3)}"
        for r in rows)
    aria = f"{title}. {summary}" + (f". Warning: {warning}" if warning else "")
    parts.append(f'<svg role="img" viewBox="0 0 {width} {height}" '
                 f'aria-label="{escape(aria)}" preserveAspectRatio="xMinYMin meet">')
    parts.append(f"<title>{escape(aria)}</title>")
    # axis and ticks
    y_axis = height - 22
    parts.append(f'<line x1="{left}" y1="{top - 8}" x2="{left}" y2="{y_axis}" stroke="#999"/>')
    parts.append(f'<line x1="{left}" y1="{y_axis}" x2="{width - right}" y2="{y_axis}" stroke="#999"/>')
    for i in range(5):
        v = lo_d + span * i / 4
        parts.append(f'<line x1="{x(v):.1f}" y1="{y_axis}" x2="{x(v):.1f}" y2="{y_axis + 4}" stroke="#999"/>')
        parts.append(f'<text x="{x(v):.1f}" y="{y_axis + 16}" font-size="11" text-anchor="middle" fill="#333">{v:.2f}</text>')
    if zero is not None and lo_d < zero < hi_d:
        parts.append(f'<line x1="{x(zero):.1f}" y1="{top - 8}" x2="{x(zero):.1f}" y2="{y_axis}" stroke="#555" stroke-dasharray="3 3"/>')
    y = top
    current = None
    for r in rows:
        sec = r.get("section", "")
        if sec and sec != current:
            parts.append(f'<text x="4" y="{y + 4}" font-size="12" font-weight="bold" fill="#111">{escape(sec)}</text>')
            y += 18
            current = sec
        c = colors.get(r.get("model", ""), "#000000")
        parts.append(f'<text x="{left - 6}" y="{y + 4}" font-size="12" text-anchor="end" fill="#111">{escape(_short(str(r[label_key])))}</text>')
        lo, hi, v = r.get("ci_low"), r.get("ci_high"), r.get("value")
        if _finite(lo) and _finite(hi):
            parts.append(f'<line x1="{x(lo):.1f}" y1="{y}" x2="{x(hi):.1f}" y2="{y}" stroke="{c}" stroke-width="3"/>')
        if _finite(v):
            parts.append(f'<circle cx="{x(v):.1f}" cy="{y}" r="5" fill="{c}" stroke="#000" stroke-width=".6"/>')
        y += step
    parts.append("</svg>")
    body = "".join(parts)
    warn = f'<p class="warning">{escape(warning)}</p>' if warning else ""
    return f"<figure>{warn}{body}<figcaption>{escape(title)} (dot: estimate; line: its confidence interval; the numbers are in the table below)</figcaption></figure>"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th scope=\"col\">{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _est(r: dict[str, Any]) -> str:
    return escape(fmt_estimate(r.get("value"), r.get("ci_low"), r.get("ci_high"), None, 3))


def _q(v: Any) -> str:
    return "–" if not _finite(v) else (f"{v:.2g}" + (" *" if v < 0.05 else ""))


def _page(title: str, body: str) -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{body}"
            f"<footer class=\"note\"><p>t2ibias {escape(__version__)}</p></footer></body></html>")


def _legend(names: list[str], colors: dict[str, str]) -> str:
    return "<p>" + " ".join(f'<span class="key" style="background:{colors[n]}" aria-hidden="true"></span>{escape(n)}&nbsp;'
                            for n in names) + "</p>"


def _groups(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["group_by"], r["group"]) for r in rows))


def _group_name(gb: str, g: str) -> str:
    return "all prompts" if gb == "all" else f"{gb} = {g}"


def render_compare(doc: dict[str, Any]) -> str:
    """The compare page from the compare document (:func:`t2ibias.comparison.report.compare_document`)."""
    names = [m["id"] for m in doc["models"]]
    colors = {n: color(i) for i, n in enumerate(names)}
    warning = doc["matching"].get("warning")
    axes = list(dict.fromkeys(r["axis"] for r in doc["rows"]["models"]))
    out = [f"<h1>Comparison of {len(names)} models</h1>"]
    if warning:
        out.append(f'<p class="warning">{escape(warning)}</p>')
    out.append(_random_note(doc["models"]))
    m = doc["matching"]
    out.append(f"<p>Matched on prompt text and seed index: {m['n_prompts']} shared prompts, {m['n_images']} images per model "
               f"(prompts per run: {', '.join(map(str, m['prompts_per_run']))}). Intervals at {doc['confidence']:.0%}; "
               "q: Benjamini–Hochberg q-value over each table (* below 0.05).</p>")
    if doc.get("skipped_axes"):
        out.append("<p class=\"note\">Not compared: " + escape("; ".join(f"{a} ({why})" for a, why in doc["skipped_axes"].items())) + "</p>")
    out.append(_legend(names, colors))
    out.append("<nav><h2>Contents</h2><ul><li><a href=\"#models\">Models</a></li>" + "".join(
        f'<li><a href="#axis-{escape(a)}">{escape(a)}</a></li>' for a in axes) + "</ul></nav>")
    out.append('<h2 id="models">Models</h2>' + _models_table(doc["models"]))
    for axis in axes:
        out.append(f'<h2 id="axis-{escape(axis)}">{escape(axis)}</h2>')
        out.append(_axis_section(doc, axis, names, colors, warning))
    return _page("t2ibias compare", "".join(out))


def _random_note(models: list[dict[str, Any]]) -> str:
    random = [m["id"] for m in models if m.get("random_weights")]
    if not random:
        return ""
    return (f'<p class="warning">Random weights: {escape(", ".join(random))}. These runs exercise the pipeline; '
            "their numbers mean nothing by construction.</p>")


def _models_table(models: list[dict[str, Any]]) -> str:
    rows = []
    for mdl in models:
        meas = mdl["measurer"]
        audit = mdl.get("audit")
        acc = "none"
        if audit:
            acc = "; ".join(f"{a}: {fmt_estimate((v or {}).get('value'), (v or {}).get('ci_low'), (v or {}).get('ci_high'), (v or {}).get('n'), 2)}"
                            for a, v in (audit.get("accuracy") or {}).items()) or "attached"
        rows.append([escape(mdl["id"]), escape(mdl["model"]) + (" (random weights)" if mdl.get("random_weights") else ""),
                     f"<code>{escape(mdl['weights'])}</code>",
                     escape(f"{meas['classifier_id']} ({meas['classifier_fingerprint']}), gate {meas['gate_fingerprint']}"),
                     escape(acc), escape(", ".join(f"{s.get('id')} v{s.get('version')}" for s in mdl.get("prompt_sets") or []))])
    return _table(["name", "model", "weights", "measured with", "audit accuracy", "prompt sets"], rows)


def _axis_section(doc: dict[str, Any], axis: str, names: list[str], colors: dict[str, str], warning: str | None) -> str:
    rows = doc["rows"]
    tv = [r for r in rows["models"] if r["axis"] == axis and r["metric"] == TV]
    ranks = {(r["model"], r["group_by"], r["group"]): r for r in rows["ranks"] if r["axis"] == axis}
    out = []
    chart_rows = [{**r, "section": _group_name(r["group_by"], r["group"]), "label": r["model"]} for r in tv]
    top = max([r["ci_high"] for r in tv if _finite(r.get("ci_high"))] + [0.1])
    out.append(dot_interval_chart(chart_rows, title=f"{axis}: total variation to uniform per model (lower is less skewed)",
                                  domain=(0.0, min(1.0, math.ceil(top * 10) / 10)), colors=colors, warning=warning))
    table = []
    for r in tv:
        k = ranks.get((r["model"], r["group_by"], r["group"]))
        table.append([escape(_group_name(r["group_by"], r["group"])), escape(r["model"]), _est(r), str(r["n"]), str(r["n_prompts"]),
                      "–" if not k else f"{int(k['value'])} [{_f(k['ci_low'], 0)}, {_f(k['ci_high'], 0)}]"])
    out.append(f"<p class=\"note\">{escape(DEFINITIONS[TV])} {escape(DEFINITIONS[RANK])}</p>")
    out.append(_table(["prompts", "model", "TV to uniform [CI]", "n images", "n prompts", "rank [interval]"], table, {2, 3, 4, 5}))
    diffs = [r for r in rows["differences"] if r["axis"] == axis and r["metric"] == TV]
    if diffs:
        lim = max([abs(v) for r in diffs for v in (r["ci_low"], r["ci_high"], r["value"]) if _finite(v)] + [0.1])
        lim = min(1.0, math.ceil(lim * 10) / 10)
        drows = [{**r, "section": _group_name(r["group_by"], r["group"]), "label": f"{r['model_b']} − {r['model_a']}",
                  "model": r["model_b"]} for r in diffs]
        out.append(f"<h3>{escape(axis)}: paired differences</h3>")
        out.append(dot_interval_chart(drows, title=f"{axis}: paired difference of total variation to uniform (right of 0: the second model is more skewed)",
                                      domain=(-lim, lim), colors=colors, zero=0.0, warning=warning))
    all_diffs = [r for r in rows["differences"] if r["axis"] == axis]
    table = [[escape(_group_name(r["group_by"], r["group"])), escape(r["metric"] + (f" ({r['label']})" if r.get("label") else "")),
              escape(f"{r['model_b']} − {r['model_a']}"), _est(r), str(r["n_prompts"]), _q(r.get("q_value")),
              escape(r.get("method") or "")] for r in all_diffs]
    out.append(_table(["prompts", "figure", "difference", "mean [CI]", "n prompts", "q", "interval"], table, {3, 4, 5}))
    shares = [r for r in rows["models"] if r["axis"] == axis and r["metric"] == SHARE]
    if shares:
        out.append(f"<details><summary>{escape(axis)}: label shares per model</summary>")
        out.append(_table(["prompts", "label", "model", "share [CI]", "n images", "n prompts"],
                          [[escape(_group_name(r["group_by"], r["group"])), escape(str(r["label"])), escape(r["model"]), _est(r),
                            str(r["n"]), str(r["n_prompts"])] for r in shares], {3, 4, 5}))
        out.append("</details>")
    return "".join(out)


def render_leaderboard(doc: dict[str, Any]) -> str:
    """The leaderboard page from a validated ``leaderboard.json`` document."""
    names = [m["id"] for m in doc["models"]]
    colors = {n: color(i) for i, n in enumerate(names)}
    warning = doc["matching"].get("warning")
    out = [f"<h1>Text-to-image leaderboard: {len(names)} models</h1>"]
    if warning:
        out.append(f'<p class="warning">{escape(warning)}</p>')
    out.append(_random_note(doc["models"]))
    m = doc["matching"]
    out.append(f"<p>Ranked by total variation to uniform of the perceived labels (rank 1 = least skewed), on {m['n_prompts']} "
               f"prompts every model was run on (matched on prompt text and seed index, {m['n_images']} images per model). "
               f"Intervals at {doc['confidence']:.0%}; rank intervals from resampling prompts.</p>")
    out.append(_legend(names, colors))
    rows = [r for r in doc["rows"] if r["metric"] == TV]
    for axis in dict.fromkeys(r["axis"] for r in rows):
        sub = [r for r in rows if r["axis"] == axis and r["group_by"] == "all"]
        sub.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["model"]))
        out.append(f'<h2 id="axis-{escape(axis)}">{escape(axis)}</h2>')
        out.append(dot_interval_chart([{**r, "label": r["model"]} for r in sub], title=f"{axis}: total variation to uniform, all shared prompts",
                                      domain=(0.0, 1.0), colors=colors, warning=warning))
        out.append(_table(["rank [interval]", "model", "TV to uniform [CI]", "n images", "n prompts"],
                          [[f"{r['rank']} [{r['rank_ci_low']}, {r['rank_ci_high']}]" if r["rank"] is not None else "–",
                            escape(r["model"]), _est(r), str(r["n"]), str(r["n_prompts"])] for r in sub], {0, 2, 3, 4}))
        others = [r for r in rows if r["axis"] == axis and r["group_by"] != "all"]
        if others:
            out.append(f"<details><summary>{escape(axis)} per family and intervention</summary>")
            out.append(_table(["prompts", "rank [interval]", "model", "TV to uniform [CI]", "n images", "n prompts"],
                              [[escape(_group_name(r["group_by"], r["group"])),
                                f"{r['rank']} [{r['rank_ci_low']}, {r['rank_ci_high']}]" if r["rank"] is not None else "–",
                                escape(r["model"]), _est(r), str(r["n"]), str(r["n_prompts"])] for r in others], {1, 3, 4, 5}))
            out.append("</details>")
    out.append('<h2 id="models">Models and instruments</h2>' + _models_table(doc["models"]))
    return _page("t2ibias leaderboard", "".join(out))


def _short(text: str, limit: int = 24) -> str:
    """A row label that fits the chart's margin (the table beside the chart has it in full)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
