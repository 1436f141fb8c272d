"""FACET submissions: one versioned JSON document per evaluated model.

A submission packs the metric rows of one evaluation (``<out>/metrics.json``) with who made them
(model name and parameters), on which data (checksums of the FACET annotation files) and with
which software, plus a summary that anyone can recompute from the rows. The schema is documented
field by field in ``docs/facet_submission.md``; :func:`validate_submission` checks it and names
the field and the fix of every problem.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import importlib.metadata
import json
import math
import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facet_eval import __version__
from facet_eval.disaggregate import MIN_GROUP_SIZE as MIN_N
from facet_eval.groups import is_na_group
from facet_eval.tasks import all_tasks, task_ids
from t2ibias.core.errors import UserError, decode_error_message
from t2ibias.core.files import atomic_write_text

SCHEMA_NAME = "facet-eval-submission"
#: Version 2: worst-group gaps over non-``na`` groups with n >= MIN_N only, with ``best_n`` and the
#: gap's interval; rows from image-clustered intervals. Version 1 files are still read and validated.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
DATA_NAME = "FACET"
#: The tasks a submission may hold, and the metric names each is ranked by, preferred first
#: (:attr:`facet_eval.tasks.Task.main_metrics`).
TASKS = task_ids()
MAIN_METRIC = {t.id: t.main_metrics for t in all_tasks()}
TOLERANCE = 1e-9
NO_ROOT_NOTE = "no FACET root given: annotation checksums not recorded"

ROW_KEYS = ("task", "metric", "attribute", "group", "class", "value", "n", "ci_low", "ci_high")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: ``p(field, what, fix)``: report one problem of a submission
Problem = Callable[[str, str, str], None]


# ----------------------------------------------------------------------------- summary


def main_metric(task: str, rows: list[Any] | None = None) -> str:
    """The metric a task is ranked by: mAR for detection and segmentation, recall (top-1) for
    classification (FACET, Gustafson et al. 2023, §4). With ``rows``, the first of the task's
    accepted names that the rows use (``recall`` before ``recall@1``)."""
    names = MAIN_METRIC.get(task, ("mAR",))
    if rows:
        used = {r.get("metric") for r in rows if isinstance(r, dict) and r.get("task") == task}
        for name in names:
            if name in used:
                return name
    return names[0]


def is_disparity_row(row: dict[str, Any]) -> bool:
    metric = row.get("metric")
    return (isinstance(metric, str) and metric.startswith("disparity")) or "group_a" in row or "group_b" in row


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _summary_rows(rows: list[Any], task: str, metric: str) -> list[dict[str, Any]]:
    return [
        r for r in rows
        if isinstance(r, dict) and r.get("task") == task and r.get("metric") == metric
        and r.get("class") is None and not is_disparity_row(r)
        and isinstance(r.get("attribute"), str) and isinstance(r.get("group"), str)
    ]


def _overall(usable: list[dict[str, Any]]) -> dict[str, Any]:
    for r in usable:
        if r["attribute"] == "all" and r["group"] == "all":
            return {k: r.get(k) for k in ("value", "n", "ci_low", "ci_high")}
    return {"value": None, "n": None, "ci_low": None, "ci_high": None}


def _gap_interval(rows: list[Any], task: str, metric: str, attr: str, best: str, worst: str) -> tuple[Any, Any]:
    """The interval of best − worst from the all-classes disparity row of the pair (either order)."""
    for r in rows:
        if not (isinstance(r, dict) and r.get("task") == task and r.get("metric") == f"disparity_{metric}"
                and r.get("attribute") == attr and r.get("class") is None):
            continue
        lo, hi = r.get("ci_low"), r.get("ci_high")
        if not (_number(lo) and _number(hi)):
            continue
        if (r.get("group_a"), r.get("group_b")) == (best, worst):
            return lo, hi
        if (r.get("group_a"), r.get("group_b")) == (worst, best):
            return -hi, -lo
    return None, None


def compute_summary(rows: list[Any], task: str, version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The summary of a submission, from its rows alone, by the rules of schema ``version``.

    ``overall`` is the all-classes, all-groups row of the task's main metric. For every attribute,
    the all-classes rows of the main metric per group (disparity rows and null values left out)
    give the worst group (lowest value; ties broken by group name), the best group and
    ``gap`` = best − worst. Version 2 uses only non-``na`` groups with n >= ``MIN_N`` (an
    attribute with fewer than two such groups is left out) and adds ``best_n`` and the gap's
    interval ``gap_ci_low``/``gap_ci_high`` from the pair's disparity row (the joint image
    bootstrap; null when the rows have none). Version 1 used every group.
    """
    metric = main_metric(task, rows)
    usable = _summary_rows(rows, task, metric)
    by_attr: dict[str, list[dict[str, Any]]] = {}
    for r in usable:
        if r["attribute"] != "all" and r["group"] != "all" and _number(r.get("value")):
            if version >= 2 and (is_na_group(r["group"]) or not (_number(r.get("n")) and r["n"] >= MIN_N)):
                continue
            by_attr.setdefault(r["attribute"], []).append(r)
    attributes: dict[str, Any] = {}
    for attr in sorted(by_attr):
        groups = sorted(by_attr[attr], key=lambda r: (r["value"], r["group"]))
        if version >= 2 and len(groups) < 2:
            continue
        worst, best = groups[0], groups[-1]
        entry = {
            "n_groups": len(groups),
            "worst_group": worst["group"],
            "worst_value": worst["value"],
            "worst_n": worst.get("n"),
            "worst_ci_low": worst.get("ci_low"),
            "worst_ci_high": worst.get("ci_high"),
            "best_group": best["group"],
            "best_value": best["value"],
            "gap": best["value"] - worst["value"],
        }
        if version >= 2:
            lo, hi = _gap_interval(rows, task, metric, attr, best["group"], worst["group"])
            entry.update(best_n=best.get("n"), gap_ci_low=lo, gap_ci_high=hi)
        attributes[attr] = entry
    summary: dict[str, Any] = {"metric": metric, "overall": _overall(usable), "attributes": attributes}
    if version >= 2:
        summary["min_n"] = MIN_N
    return summary


# ----------------------------------------------------------------------------- making


def annotation_checksums(facet_root: str | Path) -> dict[str, str]:
    """sha256 of every ``annotations/*.csv`` and ``annotations/*.json`` under a FACET root."""
    ann = Path(facet_root) / "annotations"
    if not ann.is_dir():
        raise UserError(f"{ann}: no annotations folder (pass the FACET root that holds annotations/)")
    out: dict[str, str] = {}
    for p in sorted(ann.iterdir()):
        if p.is_file() and p.suffix.lower() in (".csv", ".json"):
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out[p.name] = h.hexdigest()
    if not out:
        raise UserError(f"{ann}: no .csv or .json annotation files (pass the FACET root that holds annotations/)")
    return out


def software_versions() -> dict[str, Any]:
    def version_of(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
        try:
            mod = importlib.import_module(name)
        except ImportError:
            return None
        return str(getattr(mod, "__version__", "unknown"))

    return {
        "facet_eval": __version__,
        "python": platform.python_version(),
        "numpy": version_of("numpy"),
        "pycocotools": version_of("pycocotools"),
        "platform": platform.platform(),
    }


def _read_json(path: Path, what: str) -> Any:
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"{path.parent}: is a file, not an evaluation folder (pass the --out folder of the evaluation)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found ({what})") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a file ({what})") from None
    except UnicodeDecodeError:
        raise UserError(decode_error_message(path)) from None
    except (ValueError, RecursionError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); re-run the evaluation to rewrite it") from None


def _run_info(out: Path) -> dict[str, Any]:
    path = out / "run.json"
    if not path.is_file():
        return {}
    info = _read_json(path, "run information")
    return info if isinstance(info, dict) else {}


def make_submission(
    out_dir: str | Path,
    model_name: str | None = None,
    model_params: dict[str, Any] | None = None,
    facet_root: str | Path | None = None,
) -> dict[str, Any]:
    """Build a submission from an evaluation folder (``metrics.json`` and optional ``run.json``).

    Explicit arguments win over ``run.json``. Raises :class:`UserError` when the metrics do not
    form a valid submission (the problems are those of :func:`validate_document`).
    """
    out = Path(out_dir)
    metrics = _read_json(out / "metrics.json", "run a FACET evaluation with --out first")
    rows = metrics.get("rows") if isinstance(metrics, dict) else None
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{out / 'metrics.json'}: field rows: missing or empty (re-run the evaluation)")
    run = _run_info(out)
    model = _model_of(run, model_name, model_params, out)
    data = _data_of(run, facet_root)
    task = _task_of(rows, out)
    sub = {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "task": task,
        "data": data,
        "rows": rows,
        "summary": compute_summary(rows, task),
        "software": software_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }
    problems = validate_document(sub, str(out / "metrics.json"))
    if problems:
        raise UserError(_joined(problems))
    return sub


def _model_of(run: dict[str, Any], model_name: str | None, model_params: dict[str, Any] | None,
              out: Path) -> dict[str, Any]:
    """``{name, parameters}``: the arguments when given, else what run.json recorded."""
    run_model = run.get("model")
    if model_name is None:
        model_name = run_model.get("name") if isinstance(run_model, dict) else run_model
        model_name = model_name or run.get("model_name")
    if not model_name:
        raise UserError(f"{out}: no model name in run.json (pass --model-name)")
    if model_params is None:
        model_params = (run_model.get("parameters") if isinstance(run_model, dict) else None) \
            or run.get("model_params") or run.get("parameters") or {}
    return {"name": str(model_name), "parameters": dict(model_params)}


def _data_of(run: dict[str, Any], facet_root: str | Path | None) -> dict[str, Any]:
    """The data section: FACET's release and the annotation checksums of ``facet_root`` (or of the
    root run.json names, when it is still there), else a note saying none were recorded."""
    data: dict[str, Any] = {"name": DATA_NAME, "version": str(run.get("facet_version") or "1.0")}
    if facet_root is None:
        root = run.get("facet_root") or run.get("root")
        if root and (Path(root) / "annotations").is_dir():
            facet_root = root
    if facet_root is not None:
        data["annotation_checksums"] = annotation_checksums(facet_root)
    else:
        data["annotation_checksums"] = {}
        data["note"] = NO_ROOT_NOTE
    return data


def _task_of(rows: list[Any], out: Path) -> str:
    """The one task of the rows (UserError for rows of several tasks)."""
    tasks = sorted({str(r.get("task")) for r in rows if isinstance(r, dict)})
    if len(tasks) != 1:
        raise UserError(
            f"{out / 'metrics.json'}: field rows[].task: rows of several tasks {tasks} "
            "(make one submission per task from separate evaluation folders)"
        )
    return tasks[0]


def write_submission(sub: dict[str, Any], path: str | Path) -> Path:
    """Write a submission as indented JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(sub, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return path


# ----------------------------------------------------------------------------- validating


def _joined(problems: list[str]) -> str:
    return f"{len(problems)} problem(s): " + "; ".join(problems)


def _compare(expected: Any, found: Any, field: str, out: list[str]) -> None:
    if isinstance(expected, dict) and isinstance(found, dict):
        for k in sorted(set(expected) | set(found)):
            if k not in found:
                out.append(f"{field}.{k}: missing")
            elif k not in expected:
                out.append(f"{field}.{k}: not derivable from the rows")
            else:
                _compare(expected[k], found[k], f"{field}.{k}", out)
    elif _number(expected) and _number(found):
        if abs(expected - found) > TOLERANCE:
            out.append(f"{field}: {found!r}, rows give {expected!r}")
    elif expected != found:
        out.append(f"{field}: {found!r}, rows give {expected!r}")


def _check_row(i: int, row: Any, task: Any, p: Problem) -> None:
    f = f"rows[{i}]"
    if not isinstance(row, dict):
        p(f, "not an object", "each row is an object with keys " + ", ".join(ROW_KEYS))
        return
    for k in ROW_KEYS:
        if k not in row:
            p(f"{f}.{k}", "missing", f"add {k} (null where not applicable)" if k in ("class", "value", "ci_low", "ci_high") else f"add {k}")
    if "task" in row and row["task"] != task:
        p(f"{f}.task", f"{row['task']!r} differs from the submission task {task!r}", "one task per submission")
    for k in ("metric", "attribute", "group"):
        if k in row and not (isinstance(row[k], str) and row[k]):
            p(f"{f}.{k}", f"{row[k]!r} is not a non-empty string", 'use "all" for overall' if k != "metric" else "name the metric")
    if "class" in row and row["class"] is not None and not (isinstance(row["class"], str) and row["class"]):
        p(f"{f}.class", f"{row['class']!r} is not a class name or null", "null means all classes")
    disparity = is_disparity_row(row)
    lo_ok = -1.0 if disparity else 0.0
    nums = {}
    for k in ("value", "ci_low", "ci_high"):
        if k not in row or row[k] is None:
            continue
        v = row[k]
        if not _number(v):
            p(f"{f}.{k}", f"{v!r} is not a finite number", "use a number or null")
        elif not lo_ok <= v <= 1.0:
            p(f"{f}.{k}", f"{v!r} is outside [{lo_ok:g}, 1]", "report fractions, not percentages")
        else:
            nums[k] = v
    if "n" in row:
        n = row["n"]
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            p(f"{f}.n", f"{n!r} is not a non-negative integer", "n counts the examples behind the value")
    if "ci_low" in nums and "ci_high" in nums and nums["ci_low"] > nums["ci_high"]:
        p(f"{f}.ci_low", f"{nums['ci_low']!r} > ci_high {nums['ci_high']!r}", "swap the interval bounds")
    elif len(nums) == 3 and not nums["ci_low"] <= nums["value"] <= nums["ci_high"]:
        p(f"{f}.value", f"{nums['value']!r} is outside its interval [{nums['ci_low']!r}, {nums['ci_high']!r}]",
          "the interval must contain the estimate")
    if disparity:
        ga, gb = row.get("group_a"), row.get("group_b")
        for k, g in (("group_a", ga), ("group_b", gb)):
            if not (isinstance(g, str) and g):
                p(f"{f}.{k}", "missing on a disparity row", "name both compared groups")
        if isinstance(ga, str) and isinstance(gb, str) and ga and gb and row.get("group") != f"{ga}-{gb}":
            p(f"{f}.group", f"{row.get('group')!r} does not match group_a-group_b {ga}-{gb}", f'set group to "{ga}-{gb}"')


def validate_document(doc: Any, label: str = "submission.json") -> list[str]:
    """Problems of a submission already loaded, one line each: ``<label>: field X: what (fix)``."""
    problems: list[str] = []

    def p(field: str, what: str, fix: str) -> None:
        problems.append(f"{label}: field {field}: {what} ({fix})")

    version = _check_header(doc, p)
    if version is None:
        return problems
    _check_model(doc.get("model"), p)
    task = doc.get("task")
    if task not in TASKS:
        p("task", f"{task!r} is not one of {', '.join(TASKS)}", "set the task the rows were evaluated on")
    _check_data(doc.get("data"), p)
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows:
        p("rows", "missing, empty or not a list", "include the rows of metrics.json")
        rows = []
    _check_rows(rows, task, p)
    _check_summary(doc.get("summary"), rows, task, version, p)
    _check_software(doc.get("software"), p)
    created = doc.get("created")
    if not _is_zoned_iso(created):
        p("created", f"{created!r} is not an ISO 8601 time with a zone", 'use UTC, e.g. "2024-05-01T12:00:00Z"')
    return problems


def _check_header(doc: Any, p: Problem) -> int | None:
    """The schema version when ``doc`` is a facet-eval submission this version reads, else None
    (the problem reported: nothing else can be checked)."""
    if not isinstance(doc, dict):
        p("(top level)", "not a JSON object", "write the object made by `facet-eval submit`")
        return None
    if doc.get("schema") != SCHEMA_NAME:
        p("schema", f"{doc.get('schema')!r} is not {SCHEMA_NAME!r}", "this is not a facet-eval submission; make one with `facet-eval submit`")
        return None
    version = doc.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        p("schema_version", f"version {version!r} is not supported, this facet-eval reads versions {readable}",
          f"re-create the submission with `facet-eval submit` of facet-eval {__version__}, or use the facet-eval that wrote it")
        return None
    return version


def _check_model(model: Any, p: Problem) -> None:
    if not isinstance(model, dict):
        p("model", "missing or not an object", "give {name, parameters}")
        return
    if not (isinstance(model.get("name"), str) and model["name"].strip()):
        p("model.name", "missing or empty", "pass --model-name")
    if not isinstance(model.get("parameters"), dict):
        p("model.parameters", "missing or not an object", "use {} when there are none")


def _check_data(data: Any, p: Problem) -> None:
    if not isinstance(data, dict):
        p("data", "missing or not an object", "give {name, version, annotation_checksums}")
        return
    if data.get("name") != DATA_NAME:
        p("data.name", f"{data.get('name')!r} is not {DATA_NAME!r}", f'set it to "{DATA_NAME}"')
    if not (isinstance(data.get("version"), str) and data["version"]):
        p("data.version", "missing or not a string", 'give the FACET release, e.g. "1.0"')
    sums = data.get("annotation_checksums")
    if not isinstance(sums, dict):
        p("data.annotation_checksums", "missing or not an object", "map annotation file names to sha256, or {} with a note")
        return
    for name, h in sums.items():
        if not (isinstance(h, str) and _HEX64.match(h)):
            p(f"data.annotation_checksums.{name}", f"{h!r} is not 64 lower-case hex digits", "use the sha256 hex digest of the file")
    if not sums and not (isinstance(data.get("note"), str) and data["note"]):
        p("data.note", "no checksums and no note saying why", "pass --facet-root, or add a note")


def _check_rows(rows: list[Any], task: Any, p: Problem) -> None:
    """Every row (:func:`_check_row`), and no two rows for the same task, metric, attribute, group and class."""
    seen: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        _check_row(i, row, task, p)
        if isinstance(row, dict):
            key = tuple(json.dumps(row.get(k), sort_keys=True) for k in ("task", "metric", "attribute", "group", "class"))
            if key in seen:
                p(f"rows[{i}]", f"duplicates rows[{seen[key]}] (same task, metric, attribute, group, class)", "keep one row per combination")
            else:
                seen[key] = i


def _check_summary(summary: Any, rows: list[Any], task: Any, version: int, p: Problem) -> None:
    """The summary equals the one recomputed from the rows by the rules of its schema version."""
    if not isinstance(summary, dict):
        p("summary", "missing or not an object", "re-create the submission with `facet-eval submit`")
        return
    if task not in TASKS:
        return
    diffs: list[str] = []
    _compare(compute_summary(rows, task, version), summary, "summary", diffs)
    for d in diffs:
        field, _, what = d.partition(": ")
        p(field, what or "does not match the rows", "recompute it with `facet-eval submit`; do not edit summary by hand")


def _check_software(software: Any, p: Problem) -> None:
    if not isinstance(software, dict):
        p("software", "missing or not an object", "give {facet_eval, python, numpy, pycocotools, platform}")
        return
    for k in ("facet_eval", "python"):
        if not (isinstance(software.get(k), str) and software[k]):
            p(f"software.{k}", "missing or not a string", "record the version used")


def _is_zoned_iso(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        stamp = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return stamp.utcoffset() is not None


def load_submission(path: str | Path) -> tuple[Any, list[str]]:
    """The parsed document (or None) and the problems of reading it."""
    path = Path(path)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [f"{label}: field (file): not found (check the path)"]
    except IsADirectoryError:
        return None, [f"{label}: field (file): is a folder, not a submission file (pass the JSON file `facet-eval submit` wrote)"]
    except UnicodeDecodeError:
        return None, [f"{label}: field (file): {decode_error_message(path).split(': ', 1)[1]}"]
    except OSError as e:
        return None, [f"{label}: field (file): cannot be read: {e} (check the file)"]
    try:
        return json.loads(text), []
    except RecursionError:
        return None, [f"{label}: field (file): nested too deeply to be a submission (re-create it with `facet-eval submit`)"]
    except ValueError as e:
        return None, [f"{label}: field (file): not valid JSON: {e} (re-create it with `facet-eval submit`)"]


def validate_submission(path: str | Path) -> list[str]:
    """Every problem of a submission file, one line each (empty list: valid)."""
    doc, problems = load_submission(path)
    if problems:
        return problems
    return validate_document(doc, str(path))


def validate_or_raise(path: str | Path) -> dict[str, Any]:
    """The submission when valid; otherwise :class:`UserError` with all problems joined."""
    problems = validate_submission(path)
    if problems:
        raise UserError(_joined(problems))
    doc, _ = load_submission(path)
    return doc
