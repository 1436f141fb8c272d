"""``audit.html``: a classifier audit as a page, built from its ``audit.json`` alone.

Per audited attribute the page shows the overall values, the confusion matrix, the per-group
table, the between-group comparisons with their p- and q-values, and the reliability table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2

from t2ibias.store.audit_file import load_audit
from t2ibias.report.html import fmt_estimate
from t2ibias.core.files import atomic_write_text

TEMPLATE = Path(__file__).resolve().parent / "templates" / "audit.html.j2"
#: the per-attribute metrics shown, in this order (those the attribute has)
METRICS = ("accuracy", "accuracy_answered", "within_range", "abs_error", "abstain_rate", "ece")


def _est(v: dict[str, Any] | None, with_n: bool = True) -> str:
    v = v or {}
    return fmt_estimate(v.get("value"), v.get("ci_low"), v.get("ci_high"), v.get("n") if with_n else None)


def _test_text(c: dict[str, Any]) -> str:
    """"p = …, q = …" of a comparison (q < 0.05 marked significant); "" without a test."""
    p, q = c.get("p_value"), c.get("q_value")
    if not isinstance(p, (int, float)) or not math.isfinite(p):
        return ""
    text = f"p = {p:.3g}" + (f", q = {q:.3g}" if isinstance(q, (int, float)) and math.isfinite(q) else "")
    return text + (" (significant)" if isinstance(q, (int, float)) and q < 0.05 else "")


def _attribute_view(name: str, e: dict[str, Any]) -> dict[str, Any]:
    """What the template shows of one audited attribute, every number already formatted."""
    metrics = [m for m in METRICS if m in e]
    table: dict[tuple[str, str], dict[str, str]] = {}
    for r in e.get("by_group", []):
        table.setdefault((r["group_attribute"], r["group"]), {})[r["metric"]] = _est(r)
    return {
        "name": name,
        "overall": [{"metric": m, "text": _est(e[m])} for m in metrics],
        "confusion": e["confusion"],
        "confusion_rows": list(zip(e["confusion"]["true"], e["confusion"]["counts"])),
        "metrics": metrics,
        "group_rows": [{"group_attribute": ga, "group": g, "cells": cells} for (ga, g), cells in table.items()],
        "comparisons": [{"group_attribute": c["group_attribute"], "metric": c["metric"], "groups": c["groups"],
                         "difference": _est(c["difference"], False), "ratio": _est(c["ratio"], False),
                         "note": "; ".join(x for x in (c.get("note", ""), _test_text(c)) if x)}
                        for c in e.get("comparisons", [])],
        "bins": [{"range": f"{b['bin_low']:.1f}–{b['bin_high']:.1f}", "n": b["n"],
                  "conf": fmt_estimate(b["mean_confidence"]), "acc": fmt_estimate(b["accuracy"])}
                 for b in (e.get("calibration") or {}).get("bins", []) if b["n"]],
    }


def render_audit_html(audit: dict[str, Any]) -> str:
    """An HTML page of an audit (as :func:`t2ibias.store.audit_file.load_audit` returns it)."""
    attrs = [_attribute_view(name, e) for name, e in audit["attributes"].items()]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE.parent), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    page = env.get_template(TEMPLATE.name).render(audit=audit, attributes=attrs)
    if isinstance(audit.get("gate"), dict):
        page = page.replace("</body>", gate_section(audit["gate"]) + "</body>", 1)
    return page


def gate_section(gate: dict[str, Any]) -> str:
    """The face gate's detection rate among FACET's visible faces (``gate_recall``): overall and
    per group with n and interval, the tests of equal rates with q-values, and the warning when
    the rate differs across groups. Self-contained HTML (escaped), placed after the attributes."""
    from markupsafe import escape

    kind = escape((gate.get("face_gate") or {}).get("kind", "face gate"))
    out = [f'<section id="gate-recall"><h2>Face gate: {kind}, detection rate among visible faces</h2>',
           f"<p>{escape(gate.get('definition', ''))}.</p>"]
    if gate.get("not_audited"):
        out.append(f"<p>Not audited: {escape(gate['not_audited'])}.</p></section>")
        return "".join(out)
    ov = (gate.get("overall") or {}).get("gate_recall")
    out.append(f"<p>Overall: {escape(_est(ov))}; {int(gate.get('n_detected', 0))} of {int(gate.get('n', 0))} visible "
               f"faces found, on {int(gate.get('n_images', 0))} images (intervals resample images).</p>")
    if gate.get("warning"):
        out.append(f'<p class="warning" role="alert"><strong>Warning:</strong> {escape(gate["warning"])}.</p>')
    out.append("<table><caption>gate_recall by group</caption><thead><tr><th>grouping</th><th>group</th>"
               "<th>gate_recall [CI] (n)</th><th>note</th></tr></thead><tbody>")
    for r in gate.get("by_group") or []:
        out.append(f"<tr><td>{escape(r['group_attribute'])}</td><td>{escape(r['group'])}</td>"
                   f"<td>{escape(_est(r))}</td><td>{escape(r.get('note') or '')}</td></tr>")
    out.append("</tbody></table><table><caption>Equal detection rates across groups</caption><thead><tr>"
               "<th>grouping</th><th>groups</th><th>gap (max − min)</th><th>ratio (min / max)</th><th>test</th>"
               "</tr></thead><tbody>")
    for c in gate.get("comparisons") or []:
        note = "; ".join(x for x in (c.get("note", ""), _test_text(c)) if x)
        out.append(f"<tr><td>{escape(c['group_attribute'])}</td><td>{escape(', '.join(c['groups']))}</td>"
                   f"<td>{escape(_est(c['difference'], False))}</td><td>{escape(_est(c['ratio'], False))}</td>"
                   f"<td>{escape(note)}</td></tr>")
    out.append("</tbody></table></section>")
    return "".join(out)


def write_audit_html(audit_dir: str | Path) -> Path:
    """Write ``audit.html`` beside ``audit.json``, from that file only."""
    audit_dir = Path(audit_dir)
    audit = load_audit(audit_dir)
    path = (audit_dir if audit_dir.is_dir() else audit_dir.parent) / "audit.html"
    atomic_write_text(path, render_audit_html(audit))
    return path
