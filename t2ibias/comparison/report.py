"""``t2ibias compare``: match the runs, compute the figures, write the pages and files.

Writes ``--out`` (the compare page), ``leaderboard.json`` and ``leaderboard.html`` beside it, and
with ``--json`` the compare document (every per-model, paired and rank row). Output paths are
checked before any work, and every file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t2ibias.comparison.html import render_compare, render_leaderboard
from t2ibias.comparison.leaderboard import SCHEMA_VERSION, build_leaderboard, write_leaderboard
from t2ibias.comparison.match import match_runs
from t2ibias.comparison.paired import CONFIDENCE, DEFINITIONS, N_RESAMPLES, compare_figures
from t2ibias.core.errors import UserError, check_output_file
from t2ibias.core.files import atomic_write_text, json_safe
from t2ibias.core.version import __version__

COMPARE_SCHEMA = "t2ibias-compare"
RANDOM_NOTE = "a model with random weights is compared: its numbers exercise the pipeline and mean nothing"
LEADERBOARD_JSON = "leaderboard.json"
LEADERBOARD_HTML = "leaderboard.html"


def compare_document(paths: list[str | Path], *, confidence: float = CONFIDENCE, allow_different_measurers: bool = False,
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(compare document, leaderboard document) for the runs at ``paths``."""
    if not (isinstance(confidence, (int, float)) and 0.0 < float(confidence) < 1.0):
        raise UserError(f"--confidence {confidence}: must lie strictly between 0 and 1 (e.g. 0.95)")
    matched = match_runs(paths, allow_different_measurers)
    if not matched.axes:
        why = "; ".join(f"{a}: {w}" for a, w in matched.skipped_axes.items()) or "no attribute"
        raise UserError(f"compare: no attribute was measured in every run with the same labels ({why}); "
                        "score every run first (`t2ibias score RUN`)")
    figures = compare_figures(matched, confidence, n_resamples, seed)
    board = build_leaderboard(matched, figures, confidence, allow_different_measurers)
    doc = {
        "schema": COMPARE_SCHEMA, "schema_version": SCHEMA_VERSION, "t2ibias_version": __version__,
        "confidence": confidence, "matching": board["matching"], "models": board["models"],
        "skipped_axes": matched.skipped_axes, "definitions": DEFINITIONS,
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "resampling": "prompts, the same for every model"},
        "rows": figures,
    }
    return json_safe(doc), json_safe(board)


def headline(board: dict[str, Any]) -> list[str]:
    """One line per attribute: the models in rank order on all shared prompts, with their figure."""
    from t2ibias.core.fmt import fmt_estimate

    lines = [f"{board['matching']['n_prompts']} shared prompts, {board['matching']['n_images']} images per model"]
    if board["matching"].get("warning"):
        lines.append(f"warning: {board['matching']['warning']}")
    if any(m.get("random_weights") for m in board["models"]):
        lines.append(RANDOM_NOTE)
    rows = [r for r in board["rows"] if r["metric"] == "total_variation_uniform" and r["group_by"] == "all"]
    for axis in dict.fromkeys(r["axis"] for r in rows):
        ranked = sorted((r for r in rows if r["axis"] == axis), key=lambda r: (r["rank"] is None, r["rank"] or 0, r["model"]))
        cells = [f"{r['rank']} [{r['rank_ci_low']}, {r['rank_ci_high']}] {r['model']} "
                 f"{fmt_estimate(r['value'], r['ci_low'], r['ci_high'], None, 2)}" for r in ranked]
        lines.append(f"{axis} (TV to uniform, rank [interval]): " + " · ".join(cells))
    return lines


def compare_runs(paths: list[str | Path], out_html: str | Path, json_out: str | Path | None = None, *,
                 confidence: float = CONFIDENCE, allow_different_measurers: bool = False,
                 summary: list[str] | None = None) -> dict[str, Path]:
    """Write the compare page, the leaderboard (JSON and page) and optionally the compare JSON; returns
    their paths. ``summary``, when given, receives the headline lines (:func:`headline`)."""
    targets_summary = summary if summary is not None else []
    out_html = Path(out_html)
    targets = {"compare": out_html, "leaderboard": out_html.parent / LEADERBOARD_JSON,
               "leaderboard_page": out_html.parent / LEADERBOARD_HTML}
    if json_out is not None:
        targets["json"] = Path(json_out)
    for name, path in targets.items():
        check_output_file(path, "--json" if name == "json" else "--out")
    if len({p.resolve() for p in targets.values()}) < len(targets):
        raise UserError(f"--out {out_html}: collides with {LEADERBOARD_JSON}/{LEADERBOARD_HTML} or --json (name another file)")
    doc, board = compare_document(paths, confidence=confidence, allow_different_measurers=allow_different_measurers)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(targets["compare"], render_compare(doc))
    write_leaderboard(board, targets["leaderboard"])
    atomic_write_text(targets["leaderboard_page"], render_leaderboard(board))
    if json_out is not None:
        atomic_write_text(targets["json"], json.dumps(doc, indent=1, allow_nan=False) + "\n")
    targets_summary[:] = headline(board)
    return targets
