"""A self-contained HTML leaderboard built from FACET submission files only.

Models are ranked by the overall main metric (higher is better) and, per attribute, by the gap
between their best and worst group (smaller is better), over non-``na`` groups with at least 50
people only, so neither an unannotated group nor a group of a few people decides a rank. Every
submission is validated first; an invalid one is refused with its problems. The summary of every
submission is recomputed from its rows by the current rules, so files of an older schema version
rank by the same rule (their intervals are flagged: version 1 rows resampled people, not images).
Submissions are comparable only when they share a task and the same annotation files, so each
(task, annotation checksums) pair gets its own section.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jinja2

from facet_eval import __version__
from facet_eval.submission import MIN_N, SCHEMA_VERSION, compute_summary, load_submission, validate_document
from t2ibias.core.errors import UserError
from t2ibias.core.files import atomic_write_text
from t2ibias.core.fmt import fmt_cell

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "leaderboard.html.j2"


def competition_ranks(values: list[float | None]) -> list[int | None]:
    """Ranks "1224"-style for values already in ranking order; None (no value) gets no rank."""
    ranks: list[int | None] = []
    for i, v in enumerate(values):
        if v is None:
            ranks.append(None)
        elif i > 0 and values[i - 1] == v:
            ranks.append(ranks[-1])
        else:
            ranks.append(i + 1)
    return ranks


def data_fingerprint(checksums: dict[str, str]) -> str:
    """A short id of an annotation set (sha256 of the sorted name=checksum lines)."""
    if not checksums:
        return "unverified"
    text = "\n".join(f"{k}={v}" for k, v in sorted(checksums.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _entry(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    params = doc["model"]["parameters"]
    summary = compute_summary(doc["rows"], doc["task"])
    return {
        "path": str(path),
        "name": doc["model"]["name"],
        "params": json.dumps(params, sort_keys=True) if params else "",
        "created": doc["created"],
        "software": doc["software"].get("facet_eval", ""),
        "overall": summary["overall"],
        "attributes": summary["attributes"],
        "schema_version": doc["schema_version"],
        "old_schema": doc["schema_version"] != SCHEMA_VERSION,
    }


def build_sections(docs: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Group valid submissions by (task, annotation checksums) and rank within each group."""
    groups: dict[tuple[str, str], list[tuple[Path, dict[str, Any]]]] = {}
    for path, doc in docs:
        key = (doc["task"], data_fingerprint(doc["data"]["annotation_checksums"]))
        groups.setdefault(key, []).append((path, doc))
    sections = []
    for (task, fp), members in sorted(groups.items()):
        entries = [_entry(p, d) for p, d in members]
        metric = compute_summary(members[0][1]["rows"], task)["metric"]
        entries.sort(key=lambda e: (e["overall"]["value"] is None, -(e["overall"]["value"] or 0.0), e["name"]))
        for e, r in zip(entries, competition_ranks([e["overall"]["value"] for e in entries])):
            e["rank"] = r
        attributes = sorted({a for e in entries for a in e["attributes"]})
        per_attr = []
        for attr in attributes:
            rows = []
            for e in entries:
                s = e["attributes"].get(attr)
                rows.append({"name": e["name"], "params": e["params"], "s": s, "gap": s["gap"] if s else None})
            rows.sort(key=lambda r: (r["gap"] is None, r["gap"] if r["gap"] is not None else 0.0, r["name"]))
            for r, k in zip(rows, competition_ranks([r["gap"] for r in rows])):
                r["rank"] = k
            per_attr.append({"attribute": attr, "rows": rows})
        checksums = members[0][1]["data"]["annotation_checksums"]
        sections.append({
            "task": task, "metric": metric, "fingerprint": fp, "checksums": sorted(checksums.items()),
            "data_version": members[0][1]["data"].get("version", ""),
            "entries": entries, "attributes": per_attr, "old_schema": any(e["old_schema"] for e in entries),
        })
    return sections


def _fmt(x: Any, digits: int = 3) -> str:
    """A leaderboard cell: a count as it is, a value with ``digits`` decimals, ``–`` when missing."""
    return fmt_cell(x, digits, missing="–")


def render_leaderboard(paths: list[str | Path]) -> str:
    """The HTML page for the given submission files; :class:`UserError` if any is invalid."""
    if not paths:
        raise UserError("leaderboard: no submission files given (pass one or more submission.json)")
    problems: list[str] = []
    docs: list[tuple[Path, dict[str, Any]]] = []
    for raw in paths:
        path = Path(raw)
        doc, read_problems = load_submission(path)
        found = read_problems or validate_document(doc, str(path))
        if found:
            problems.extend(found)
        else:
            docs.append((path, doc))
    if problems:
        raise UserError(f"leaderboard refused {len(problems)} problem(s): " + "; ".join(problems))
    sections = build_sections(docs)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    return env.get_template(TEMPLATE_NAME).render(
        sections=sections, mixed=len(sections) > 1, version=__version__, n_submissions=len(docs), min_n=MIN_N,
    )


def write_leaderboard(paths: list[str | Path], out_html: str | Path) -> Path:
    """Validate the submissions, render the leaderboard and write it atomically."""
    html = render_leaderboard(paths)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, html)
    return out
