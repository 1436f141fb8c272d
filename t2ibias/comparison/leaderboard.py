"""``leaderboard.json``: a versioned, validated table of text-to-image models compared on shared prompts.

One document per comparison: which models (model id, revision, weights identity, generator and run
fingerprints), measured by which instrument (classifier and gate fingerprints, and the classifier's
audit when the run carries one), on which prompts (prompt-set ids, versions and checksums; how many
prompts and images per prompt were matched), and one row per model, attribute, group and metric with
its n, number of prompts, interval and rank. :func:`validate_leaderboard` checks a file and names the
field and the fix of every problem (``FILE: field F: what (fix)``); ``t2ibias validate FILE`` runs it.
The fields are described in ``docs/compare.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t2ibias.comparison.match import Matched
from t2ibias.comparison.paired import DEFINITIONS, HIGHER_IS_BETTER, RANK, SHARE, TV
from t2ibias.core.errors import UserError, decode_error_message
from t2ibias.core.files import atomic_write_text, json_safe
from t2ibias.core.version import __version__

SCHEMA_NAME = "t2ibias-leaderboard"
SCHEMA_VERSION = 1
READABLE_VERSIONS = (1,)
METRICS = (TV, SHARE)
ROW_KEYS = ("model", "axis", "group_by", "group", "metric", "label", "value", "ci_low", "ci_high", "n", "n_prompts",
            "method", "rank", "rank_ci_low", "rank_ci_high")
MODEL_KEYS = ("id", "model", "revision", "weights", "generator_fingerprint", "run_fingerprint", "measurer", "prompt_sets")
MEASURER_KEYS = ("classifier_id", "classifier_fingerprint", "gate_fingerprint")
Problem = Callable[[str, str, str], None]
FIX = "re-create it with `t2ibias compare RUN RUN ... --out FILE.html`; do not edit it by hand"


def looks_like_leaderboard(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("schema") == SCHEMA_NAME


def _audit(audit: dict[str, Any] | None) -> dict[str, Any] | None:
    """The audit a run carries, as the leaderboard names it: its classifier, source, checksum and
    per-attribute accuracy."""
    if audit is None:
        return None
    prov = audit.get("provenance") or {}
    return {"classifier": audit.get("classifier"), "source": prov.get("source"), "sha256": prov.get("sha256"),
            "accuracy": {name: (entry or {}).get("accuracy") for name, entry in (audit.get("attributes") or {}).items()}}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_leaderboard(matched: Matched, figures: dict[str, list[dict[str, Any]]], confidence: float,
                      allow_different_measurers: bool) -> dict[str, Any]:
    """The leaderboard document of a comparison; :class:`UserError` if it would not validate."""
    models = []
    for r in matched.runs:
        spec = r.spec
        models.append({
            "id": r.name, "model": r.model_id, "revision": str(spec["model"].get("revision") or ""),
            "weights": str(spec["weights"]), "generator_fingerprint": str(spec["generator_fingerprint"]),
            "run_fingerprint": str(spec["fingerprint"]), "run": str(r.path),
            "random_weights": bool(spec.get("model_is_random", False)),
            "measurer": {k: r.measurer[k] for k in (*MEASURER_KEYS, "measurer")},
            "audit": _audit(r.audit),
            "prompt_sets": [{k: s.get(k) for k in ("id", "version", "sha256")} for s in spec.get("prompt_sets") or []
                            if isinstance(s, dict)],
        })
    ranks = {(x["model"], x["axis"], x["group_by"], x["group"]): x for x in figures["ranks"]}
    rows = []
    for x in figures["models"]:
        rank = ranks.get((x["model"], x["axis"], x["group_by"], x["group"])) if x["metric"] == TV else None
        rows.append({**{k: x.get(k) for k in ROW_KEYS if k in x},
                     "rank": int(rank["value"]) if rank else None,
                     "rank_ci_low": int(rank["ci_low"]) if rank and math.isfinite(rank["ci_low"]) else None,
                     "rank_ci_high": int(rank["ci_high"]) if rank and math.isfinite(rank["ci_high"]) else None})
    doc = {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "created": _now(),
        "software": {"t2ibias": __version__, "python": platform.python_version()},
        "confidence": confidence,
        "matching": {"on": ["prompt text", "seed index"], "n_prompts": len(matched.texts),
                     "n_images": int(matched.n_images.sum()), "prompts_per_run": matched.n_prompts_per_run,
                     "allow_different_measurers": bool(allow_different_measurers), "warning": matched.warning},
        "metrics": {m: {"definition": DEFINITIONS[m], "higher_is_better": HIGHER_IS_BETTER[m]} for m in METRICS},
        "ranking": {"metric": TV, "definition": DEFINITIONS[RANK]},
        "models": models,
        "rows": [json_safe(r) for r in rows],
    }
    problems = validate_document(json.loads(json.dumps(json_safe(doc))), "leaderboard.json")
    if problems:
        raise UserError(_joined(problems))
    return doc


def write_leaderboard(doc: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(json_safe(doc), indent=1, allow_nan=False) + "\n")
    return path


# ----------------------------------------------------------------------------- validating

def _joined(problems: list[str]) -> str:
    return f"{len(problems)} problem(s): " + "; ".join(problems)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _text(x: Any) -> bool:
    return isinstance(x, str) and bool(x.strip())


def validate_document(doc: Any, label: str = "leaderboard.json") -> list[str]:
    """Problems of a loaded leaderboard, one line each: ``<label>: field X: what (fix)``."""
    problems: list[str] = []

    def p(field: str, what: str, fix: str = FIX) -> None:
        problems.append(f"{label}: field {field}: {what} ({fix})")

    if not isinstance(doc, dict):
        p("(top level)", "not a JSON object", "pass the leaderboard.json `t2ibias compare` wrote")
        return problems
    if doc.get("schema") != SCHEMA_NAME:
        p("schema", f"{doc.get('schema')!r} is not {SCHEMA_NAME!r}", "this is not a t2ibias leaderboard")
        return problems
    version = doc.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        p("schema_version", f"version {version!r} is not supported, t2ibias {__version__} reads version(s) "
          f"{', '.join(map(str, READABLE_VERSIONS))}", "re-create it with this t2ibias, or use the t2ibias that wrote it")
        return problems
    created = doc.get("created")
    try:
        ok = isinstance(created, str) and _dt.datetime.fromisoformat(created.replace("Z", "+00:00")).utcoffset() is not None
    except ValueError:
        ok = False
    if not ok:
        p("created", f"{created!r} is not an ISO 8601 time with a zone", 'use UTC, e.g. "2026-05-01T12:00:00Z"')
    software = doc.get("software")
    if not (isinstance(software, dict) and _text(software.get("t2ibias"))):
        p("software.t2ibias", "missing or not a string", "record the t2ibias version that made the file")
    conf = doc.get("confidence")
    if not (_number(conf) and 0 < conf < 1):
        p("confidence", f"{conf!r} is not a number strictly between 0 and 1", "e.g. 0.95")
    matching = doc.get("matching")
    allow = False
    if not isinstance(matching, dict):
        p("matching", "missing or not an object")
    else:
        for k in ("n_prompts", "n_images"):
            if not (_count(matching.get(k)) and matching[k] > 0):
                p(f"matching.{k}", f"{matching.get(k)!r} is not a positive integer")
        allow = matching.get("allow_different_measurers") is True
        if not isinstance(matching.get("allow_different_measurers"), bool):
            p("matching.allow_different_measurers", "missing or not true/false")
    names = _check_models(doc.get("models"), allow, matching if isinstance(matching, dict) else {}, p)
    _check_rows(doc.get("rows"), names, p)
    return problems


def _check_models(models: Any, allow: bool, matching: dict[str, Any], p: Problem) -> list[str]:
    if not isinstance(models, list) or len(models) < 2:
        p("models", "missing, not a list or fewer than 2 models", "a leaderboard compares two or more runs")
        return []
    names: list[str] = []
    instruments = set()
    for i, m in enumerate(models):
        f = f"models[{i}]"
        if not isinstance(m, dict):
            p(f, "not an object")
            continue
        for k in MODEL_KEYS:
            if k not in m:
                p(f"{f}.{k}", "missing")
        for k in ("id", "model", "weights", "generator_fingerprint", "run_fingerprint"):
            if k in m and not _text(m[k]):
                p(f"{f}.{k}", f"{m[k]!r} is not a non-empty string")
        if _text(m.get("id")):
            if m["id"] in names:
                p(f"{f}.id", f"{m['id']!r} names two models", "model ids must be unique")
            names.append(m["id"])
        meas = m.get("measurer")
        if not isinstance(meas, dict):
            if "measurer" in m:
                p(f"{f}.measurer", "not an object")
        else:
            for k in MEASURER_KEYS:
                if not _text(meas.get(k)):
                    p(f"{f}.measurer.{k}", "missing or not a string", "name the instrument that measured the run")
            instruments.add((meas.get("classifier_fingerprint"), meas.get("gate_fingerprint")))
        audit = m.get("audit")
        if audit is not None and not (isinstance(audit, dict) and isinstance(audit.get("accuracy"), dict)):
            p(f"{f}.audit", "not null and not an object with accuracy", "null when the run carries no audit.json")
        sets = m.get("prompt_sets")
        if "prompt_sets" in m and not (isinstance(sets, list) and all(isinstance(s, dict) and _text(s.get("id")) for s in sets)):
            p(f"{f}.prompt_sets", "not a list of {id, version, sha256}")
    if len(instruments) > 1 and not allow:
        p("models[].measurer", "the models were measured with different classifiers or gates, but "
          "matching.allow_different_measurers is false", "measure every run with one instrument")
    if len(instruments) > 1 and allow and not _text(matching.get("warning")):
        p("matching.warning", "missing for models measured with different instruments", "say so on every figure")
    return names


def _check_rows(rows: Any, names: list[str], p: Problem) -> None:
    if not isinstance(rows, list) or not rows:
        p("rows", "missing, empty or not a list")
        return
    seen: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        f = f"rows[{i}]"
        if not isinstance(row, dict):
            p(f, "not an object")
            continue
        for k in ROW_KEYS:
            if k not in row:
                p(f"{f}.{k}", "missing", f"add {k} (null where it does not apply)")
        if names and row.get("model") not in names:
            p(f"{f}.model", f"{row.get('model')!r} is not one of the models {names}")
        if row.get("metric") not in METRICS:
            p(f"{f}.metric", f"{row.get('metric')!r} is not one of {', '.join(METRICS)}")
        for k in ("axis", "group_by", "group"):
            if k in row and not _text(row[k]):
                p(f"{f}.{k}", f"{row[k]!r} is not a non-empty string")
        nums = {}
        for k in ("value", "ci_low", "ci_high"):
            v = row.get(k)
            if v is None:
                continue
            if not _number(v):
                p(f"{f}.{k}", f"{v!r} is not a finite number", "use a number or null")
            elif not 0.0 <= v <= 1.0:
                p(f"{f}.{k}", f"{v!r} is outside [0, 1]", "shares and distances are fractions, not percentages")
            else:
                nums[k] = v
        for k in ("n", "n_prompts"):
            if k in row and not _count(row[k]):
                p(f"{f}.{k}", f"{row[k]!r} is not a non-negative integer", "n counts the images behind the value, n_prompts the prompts")
        if "ci_low" in nums and "ci_high" in nums and nums["ci_low"] > nums["ci_high"]:
            p(f"{f}.ci_low", f"{nums['ci_low']!r} > ci_high {nums['ci_high']!r}", "swap the interval bounds")
        elif len(nums) == 3 and not nums["ci_low"] - 1e-12 <= nums["value"] <= nums["ci_high"] + 1e-12:
            p(f"{f}.value", f"{nums['value']!r} is outside its interval [{nums['ci_low']!r}, {nums['ci_high']!r}]",
              "the interval must contain the estimate")
        rank = [row.get(k) for k in ("rank", "rank_ci_low", "rank_ci_high")]
        if row.get("metric") == TV and rank[0] is not None:
            if not all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= max(len(names), 1) for r in rank):
                p(f"{f}.rank", f"{rank!r} are not ranks between 1 and {len(names)}", "rank, rank_ci_low, rank_ci_high are whole ranks")
            elif not rank[1] <= rank[0] <= rank[2]:
                p(f"{f}.rank", f"{rank[0]} is outside its interval [{rank[1]}, {rank[2]}]")
        elif row.get("metric") != TV and any(r is not None for r in rank):
            p(f"{f}.rank", "set on a row that is not ranked", f"only {TV} rows carry ranks")
        key = tuple(json.dumps(row.get(k)) for k in ("model", "axis", "group_by", "group", "metric", "label"))
        if key in seen:
            p(f, f"duplicates rows[{seen[key]}] (same model, axis, group, metric, label)", "keep one row per combination")
        else:
            seen[key] = i


def load_leaderboard(path: str | Path) -> tuple[Any, list[str]]:
    """The parsed document (or None) and the problems of reading it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [f"{path}: field (file): not found (check the path)"]
    except UnicodeDecodeError:
        return None, [decode_error_message(path)]
    except OSError as e:
        return None, [f"{path}: field (file): cannot be read: {e} (check the file)"]
    try:
        return json.loads(text), []
    except (ValueError, RecursionError) as e:
        return None, [f"{path}: field (file): not valid JSON: {e} ({FIX})"]


def validate_leaderboard(path: str | Path) -> list[str]:
    """Every problem of a leaderboard file, one line each (empty: valid)."""
    doc, problems = load_leaderboard(path)
    return problems or validate_document(doc, str(path))
