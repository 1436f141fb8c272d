"""Render a scored run directory as a self-contained ``report.html`` and a ``model_card.md`` section.

The report reads a run's output files only (``spec.json``, ``prompts.parquet``, ``manifest*.jsonl``,
``image_labels.parquet``, ``metrics.json`` and, when present, ``instrument.json``), through the
run-directory reader every stage uses (:class:`t2ibias.store.rundir.RunDir`). It never recomputes a
metric: every number shown comes from ``metrics.json`` or ``instrument.json``; images are only counted
and thumbnailed. The face gate's audited detection rate (``instrument.json`` ``gate``) has its own
section; while that rate differs across groups, a banner above the headline table and a mark on every
estimate table and chart caption point to it.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup, escape
from PIL import Image

from t2ibias.core.version import __version__
from t2ibias.core.errors import UserError
from t2ibias.store.image_store import confined_path
from t2ibias.store.rundir import IMAGE_LABELS_FILE, METRICS_FILE, PROMPTS_FILE, THUMBS_DIR, WRITTEN_BY, RunDir
from t2ibias.core.files import atomic_write_bytes, atomic_write_text
from t2ibias.core.fmt import MISSING, as_float, fmt_estimate

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
THUMB_PX = 128
#: Thumbnails shown per prompt, and in the whole report: a 200k-image sweep stays a page, not a gigabyte.
#: A 128 px JPEG of a photograph is ~4-6 kB (~7 kB as base64), so 200 of them are ~1.3 MB of the page
#: (benchmarks/bench_report.py keeps 2,000 prompts × 50 images under 5 MB).
THUMBS_PER_PROMPT = 8
MAX_THUMBNAILS = 200
#: Prompts given a full section (tables and thumbnails) in the whole report, shared out over the
#: families (the first prompts with images of each); every prompt with images is in the index.
DETAIL_PROMPTS = 40
#: A split of the prompts (by subject, template, ...) with more groups than this is one compact table.
SPLIT_FULL_GROUPS = 12
BINS = ("abstain", "no_person", "blocked", "failed")  # visible bins, always listed after class labels
INTEGER_METRICS = {"count"}
METRIC_ORDER = ("proportion", "count", "total_variation_uniform", "normalized_entropy")
METRIC_NAMES = {
    "proportion": "share",
    "count": "count",
    "total_variation_uniform": "TV to uniform",
    "normalized_entropy": "normalized entropy",
}
MODEL_FIELDS = ("id", "source", "revision", "pipeline", "dtype", "scheduler", "steps", "guidance",
                "height", "width", "licence")
CLASSIFIER_FIELDS = ("id", "arch", "pretrained", "fingerprint")
PROMPT_COLUMNS = ("prompt_id", "family", "subject", "template_id", "intervention", "text")
LABEL_COLUMNS = ("key", "attribute", "label")


# --------------------------------------------------------------------------- numbers

def _cell(row: dict, with_n: bool = True) -> dict:
    """A metric row as ``{text, note, missing}``; the note explains a ``—``."""
    metric = row.get("metric")
    integer = metric in INTEGER_METRICS
    text = fmt_estimate(row.get("value"), row.get("ci_low"), row.get("ci_high"),
                        row.get("n") if with_n and not integer else None, digits=0 if integer else 2)
    note = str(row.get("note") or "")
    if text == MISSING and not note:
        note = "no value"
    q = as_float(row.get("q_value"))
    if math.isfinite(q):
        note = "; ".join(x for x in (note, f"q = {q:.2g}" + (" (significant)" if q < 0.05 else "")) if x)
    method = str(row.get("method") or "")
    return {"text": text, "note": note, "missing": text == MISSING, "method": method}


def _direction(higher_is_better: Any) -> str:
    if higher_is_better is True:
        return "↑ higher is better"
    if higher_is_better is False:
        return "↓ lower is better"
    return "descriptive (no better direction)"


def _plain(v: Any) -> str:
    """A spec value as text."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


# --------------------------------------------------------------------------- loading


@dataclass
class Run:
    """The output files of one run directory, as read from disk."""

    dir: Path
    spec: dict
    prompts: pd.DataFrame
    manifest: dict[str, dict]  # key -> the last manifest line with that key
    bad_manifest_lines: int
    labels: pd.DataFrame
    metrics: dict
    audit: Any = None
    #: Prompts of the run's prompt sets left out by ``--limit`` (not generated, not scored, not shown).
    prompts_cut: int = 0


def _check_metric_rows(path: Path, metrics: Any, fix: str) -> None:
    """A metrics.json the report can read: an object whose ``rows`` are complete metric rows."""
    from t2ibias.metrics.score import ROW_KEYS

    # rows written before intervals named their aggregate, method and tests are still readable
    required = [k for k in ROW_KEYS if k not in ("aggregate", "method", "p_value", "q_value")]
    rows = metrics.get("rows") if isinstance(metrics, dict) else None
    if not isinstance(rows, list):
        raise UserError(f"{path}: field rows: missing or not a list of metric rows (re-run `{fix}`)")
    for i, row in enumerate(rows):
        lacking = [k for k in required if k not in row] if isinstance(row, dict) else required
        if lacking:
            raise UserError(f"{path}: field rows[{i}]: lacks {', '.join(lacking)} (re-run `{fix}`)")


def load_run(run_dir: Path) -> Run:
    """Read a run directory through :class:`RunDir`; a missing or malformed required file raises
    :class:`UserError` naming the stage that writes it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a run directory (create one with `t2ibias sweep --out {run_dir}`)")
    run = RunDir(run_dir)
    spec = run.spec
    prompts = run.require_columns(PROMPTS_FILE, run.prompts, PROMPT_COLUMNS)
    manifest, bad = run.records, run.store.malformed_lines
    labels = run.require_columns(IMAGE_LABELS_FILE, run.labels, LABEL_COLUMNS)
    metrics = run.metrics
    _check_metric_rows(run.file(METRICS_FILE), metrics, f"t2ibias {WRITTEN_BY[METRICS_FILE]} {run_dir}")
    instrument = run.instrument
    cut = run.prompts_cut
    if cut:  # images an earlier, larger run made for prompts now cut stay in the store, not in this report
        ran = set(prompts["prompt_id"].astype(str))
        manifest = {k: r for k, r in manifest.items() if str(r.get("prompt_id")) in ran}
    return Run(run_dir, spec, prompts, manifest, bad, labels, metrics, instrument, cut)


# --------------------------------------------------------------------------- context


def _image_file(run_dir: Path, rel: Any) -> Path | None:
    """The image file a manifest path names, or None when it is empty or leaves the run dir."""
    try:
        return confined_path(run_dir, rel)
    except UserError:
        return None


def _has_file(run_dir: Path, rec: dict, plain: set[str] | None = None) -> bool:
    """Does the record's image file exist inside the run? ``plain``: the regular files of the image
    store (``images/xx/name``, no symlink), listed once, which answers without resolving each path."""
    rel = rec.get("path")
    if plain is not None and isinstance(rel, str) and rel in plain:
        return True
    path = _image_file(run_dir, rel)
    return path is not None and path.is_file()


def _plain_images(run_dir: Path) -> set[str]:
    """``images/xx/name`` of every regular file (not a symlink) in the run's image store folders."""
    out: set[str] = set()
    images = run_dir / "images"
    if images.is_symlink() or not images.is_dir():
        return out
    with os.scandir(images) as folders:
        for folder in folders:
            if not folder.is_dir(follow_symlinks=False):
                continue
            with os.scandir(folder.path) as files:
                out.update(f"images/{folder.name}/{f.name}" for f in files if f.is_file(follow_symlinks=False))
    return out


def _thumbnail_bytes(path: Path) -> bytes | None:
    """A JPEG at most ``THUMB_PX`` on the long side; None when the file can't be read."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG sources decode at reduced size
            im.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return buf.getvalue()


_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


def _cached_thumbnail(run_dir: Path, key: str, source: Path) -> bytes | None:
    """The thumbnail of one image, made once: read from ``<run>/thumbs/<key>.jpg`` when it is newer
    than the image, else made and written there (a read-only run dir only loses the cache)."""
    cache = run_dir / THUMBS_DIR / f"{key}.jpg" if _SAFE_KEY.match(key) else None
    try:
        if cache is not None and cache.is_file() and cache.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            return cache.read_bytes()
    except OSError:
        pass
    data = _thumbnail_bytes(source)
    if data is not None and cache is not None:
        try:
            cache.parent.mkdir(exist_ok=True)
            atomic_write_bytes(cache, data)
        except OSError:
            pass
    return data


def _thumbnails(run_dir: Path, jobs: dict[str, Path]) -> dict[str, str | None]:
    """key → JPEG data URI (None: unreadable) for every ``key → image file``, made in threads
    (Pillow releases the GIL while it decodes and encodes)."""
    def one(item: tuple[str, Path]) -> tuple[str, str | None]:
        data = _cached_thumbnail(run_dir, *item)
        return item[0], None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")

    if not jobs:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2, len(jobs))) as pool:
        return dict(pool.map(one, jobs.items()))


def _accounting(run: Run, n_prompts: int) -> dict:
    status = Counter(str(r.get("status") or "unknown") for r in run.manifest.values())
    lab = run.labels
    abstain = lab[lab["label"] == "abstain"].groupby("attribute").size()
    plain = _plain_images(run.dir)
    missing = sum(1 for r in run.manifest.values() if r.get("status") == "ok" and not _has_file(run.dir, r, plain))
    n_seeds = run.spec.get("n_seeds")
    planned = n_prompts * n_seeds if isinstance(n_seeds, int) else None
    total = len(run.manifest)
    return {
        "total": total,
        "ok": status["ok"],
        "blocked": status["blocked"],
        "failed": status["failed"],
        "other": {k: v for k, v in status.items() if k not in ("ok", "blocked", "failed")},
        "no_person": int(lab.loc[lab["label"] == "no_person", "key"].nunique()),
        "abstain": int(abstain.sum()),
        "abstain_by_axis": {str(k): int(v) for k, v in abstain.items()},
        "missing_files": missing,
        "bad_manifest_lines": run.bad_manifest_lines,
        "planned": planned,
        "not_generated": max(planned - total, 0) if planned is not None else 0,
    }


def _ordered(names: list[str], first: tuple[str, ...]) -> list[str]:
    """Unique ``names``: those in ``first`` in that order, then the others in order of appearance."""
    seen = list(dict.fromkeys(names))
    return [n for n in first if n in seen] + [n for n in seen if n not in first]


#: Splits of the prompts shown beside the per-family tables: a claim should not rest on one cue.
SPLIT_TITLES = {"intervention": "By intervention", "intervention_vs_none": "Each intervention minus none (paired over matched prompts)",
                "template_id": "By template", "subject": "By subject"}
POOLED_SUFFIX = "__pooled"


class _Tables:
    """Metric rows of ``metrics.json`` arranged as one table per (group_by, group, axis)."""

    def __init__(self, metrics: dict, attributes: list[str]) -> None:
        rows = [r for r in metrics.get("rows") or [] if isinstance(r, dict)]
        self.defs = {str(k): v for k, v in (metrics.get("metrics") or {}).items() if isinstance(v, dict)}
        # over several prompts the headline is the mean over prompts; the pooled-counts figure of the
        # same metric is shown beside it under its own name, never in its place
        rows = [dict(r, metric=f"{r.get('metric')}{POOLED_SUFFIX}")
                if r.get("aggregate") == "pooled" and r.get("metric") != "count" and not str(r.get("metric")).endswith("_seed_sd")
                and r.get("group_by") != "prompt_id" else r
                for r in rows]
        for name in [str(r.get("metric")) for r in rows if str(r.get("metric")).endswith(POOLED_SUFFIX)]:
            base = self.defs.get(name[: -len(POOLED_SUFFIX)], {})
            self.defs.setdefault(name, {**base, "definition": f"{base.get('definition', '')} Computed on counts pooled over the prompts; "
                                                          "prompts skewed in different directions cancel here, not in the mean over prompts."})
        for r in rows:  # a metric without a definition entry still has its rows' direction
            self.defs.setdefault(str(r.get("metric")), {"higher_is_better": r.get("higher_is_better")})
        self.axes = _ordered([str(r.get("axis")) for r in rows] + attributes, ())
        labels = defaultdict(list)
        self.rows: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            self.rows[(str(r.get("group_by")), str(r.get("group")))][str(r.get("axis"))].append(r)
            if r.get("label") is not None:
                labels[str(r.get("axis"))].append(str(r["label"]))
        # class labels in order of appearance, then the visible bins in a fixed order
        self.labels = {a: [x for x in dict.fromkeys(v) if x not in BINS] + [b for b in BINS if b in v]
                       for a, v in labels.items()}
        names = _ordered(list(self.defs) + [str(r.get("metric")) for r in rows], METRIC_ORDER)
        self.metric_info = [self.info(m) for m in names]

    def info(self, metric: str) -> dict:
        d = self.defs.get(metric, {})
        pooled = metric.endswith(POOLED_SUFFIX)
        base = metric[: -len(POOLED_SUFFIX)] if pooled else metric
        name = METRIC_NAMES.get(base, base.replace("_", " ")) + (" (pooled counts)" if pooled else "")
        return {"metric": metric, "name": name, "interval": str(d.get("interval") or "none"),
                "definition": str(d.get("definition") or ""), "higher_is_better": d.get("higher_is_better"),
                "direction": _direction(d.get("higher_is_better"))}

    def groups(self, group_by: str) -> list[str]:
        """The groups of one split, in order of appearance."""
        return [g for gb, g in self.rows if gb == group_by]

    def for_group(self, group_by: str, group: Any) -> list[dict]:
        by_axis = self.rows.get((group_by, str(group)), {})
        return [self.table(a, by_axis[a]) for a in self.axes if a in by_axis]

    def table(self, axis: str, rows: list[dict]) -> dict:
        cells: dict[tuple[str, str | None], dict] = {}
        for r in rows:  # a repeated (metric, label) keeps its last row
            cells[(str(r.get("metric")), None if r.get("label") is None else str(r["label"]))] = r
        labelled = _ordered([m for m, lab in cells if lab is not None], METRIC_ORDER)
        scalars = _ordered([m for m, lab in cells if lab is None], METRIC_ORDER)
        present = {lab for _, lab in cells if lab is not None}
        shares = [(lab, cells[("proportion", lab)]) for lab in self.labels.get(axis, [])
                  if ("proportion", lab) in cells]
        ns = {as_float(r.get("n")) for _, r in shares}
        n_all = next(iter(ns)) if len(ns) == 1 else math.nan
        return {
            "axis": axis,
            "label_metrics": [self.info(m) for m in labelled],
            "labels": [{"label": lab, "bin": lab in BINS,
                        "cells": [_cell(cells[(m, lab)]) if (m, lab) in cells else None for m in labelled]}
                       for lab in self.labels.get(axis, []) if lab in present],
            "scalars": [dict(self.info(m), cell=_cell(cells[(m, None)])) for m in scalars],
            "scalar_cells": {m: _cell(cells[(m, None)]) for m in scalars},
            # for the model card: shares without n, and n once when all labels share it
            "shares": [(lab, _cell(r, with_n=len(ns) > 1)) for lab, r in shares],
            "shares_n": int(n_all) if math.isfinite(n_all) else None,
        }


def _caption(rec: dict, labels: list[dict], axes: list[str]) -> tuple[str, str]:
    """A short caption and a longer hover title for one image."""
    status = str(rec.get("status") or "unknown")
    title = [f"#{rec.get('image_index')} · seed {rec.get('seed')} · {status}"]
    if status != "ok":
        if rec.get("error"):
            title.append(str(rec["error"]))
        return status, "\n".join(title)
    labels = sorted(labels, key=lambda x: axes.index(x["attribute"]) if x["attribute"] in axes else len(axes))
    for x in labels:
        score, faces = as_float(x.get("score")), as_float(x.get("n_faces"))
        extra = [f"score {score:.2f}" if math.isfinite(score) else None, x.get("person_source") or None,
                 f"{int(faces)} face(s)" if math.isfinite(faces) else None]
        title.append(f"{x['attribute']}: {x['label']} ({', '.join(e for e in extra if e)})")
    caption = " · ".join(dict.fromkeys(str(x["label"]) for x in labels)) or "unlabelled"
    return caption, "\n".join(title)


def _image_entry(run: Run, rec: dict, labels: list[dict], axes: list[str], thumbs: dict[str, str | None] | None) -> dict:
    caption, title = _caption(rec, labels, axes)
    src, placeholder = None, str(rec.get("status") or "unknown")
    if placeholder == "ok":
        if not _has_file(run.dir, rec):
            placeholder, title = "missing", title + f"\nfile missing: {rec.get('path')}"
        elif thumbs is not None:
            src = thumbs.get(str(rec.get("key")))
            if src is None:
                placeholder, title = "unreadable", title + f"\nunreadable image: {rec.get('path')}"
    return {"key": rec.get("key"), "src": src, "placeholder": placeholder, "caption": caption,
            "title": title, "status": rec.get("status")}


def _index(rec: dict) -> tuple[float, str]:
    i = as_float(rec.get("image_index"))
    return (i if math.isfinite(i) else math.inf, str(rec.get("key")))


def _spec_sections(run: Run, n_prompts: int) -> list[dict]:
    spec, model, clf = run.spec, run.spec.get("model") or {}, run.spec.get("classifier") or {}
    boot = run.metrics.get("bootstrap") or {}
    sets = [(f"prompt set {s.get('id')}", f"version {s.get('version')} · sha256 {str(s.get('sha256'))[:12]}")
            for s in spec.get("prompt_sets") or [] if isinstance(s, dict)]
    sections = {
        "Generator": [(k, model.get(k)) for k in MODEL_FIELDS if k in model]
        + [(k, v) for k, v in model.items() if k not in MODEL_FIELDS and k != "random_weights"]
        + [("generator fingerprint", spec.get("generator_fingerprint")),
           ("random weights", spec.get("model_is_random"))],
        "Prompts and seeds": sets + [("prompts", n_prompts)]
        + ([("cut by --limit", f"{run.prompts_cut} (only the first {n_prompts} prompts ran)")] if run.prompts_cut else [])
        + [("seeds per prompt", spec.get("n_seeds")),
                                     ("base seed", spec.get("base_seed"))],
        "Classifier": [(k, clf.get(k)) for k in CLASSIFIER_FIELDS if k in clf]
        + [(k, v) for k, v in clf.items() if k not in CLASSIFIER_FIELDS and k != "is_random"]
        + [("random weights", clf.get("is_random"))],
        "Run": [("fingerprint", spec.get("fingerprint")), ("created", spec.get("created")),
                ("t2ibias version", spec.get("t2ibias_version")), ("device", spec.get("device")),
                ("metrics t2ibias version", run.metrics.get("t2ibias_version")),
                ("report t2ibias version", __version__)],
        "Bootstrap": [(k, v) for k, v in boot.items()],
    }
    known = {"model", "classifier", "classifier_spec", "prompt_sets", "n_seeds", "base_seed", "generator_fingerprint",
             "model_is_random", "fingerprint", "created", "t2ibias_version", "device"}
    sections["Other"] = [(k, v) for k, v in spec.items() if k not in known]
    return [{"title": t, "rows": [(k, _plain(v)) for k, v in rows]} for t, rows in sections.items() if rows]


def _split(tables: _Tables, group_by: str) -> dict:
    """One split of the prompts: every table of each group when it has few groups, else one compact
    table, a row per group and a column per axis with the headline skew (every row is in metrics.csv)."""
    groups = tables.groups(group_by)
    out = {"group_by": group_by, "title": SPLIT_TITLES[group_by], "n_groups": len(groups), "groups": [], "compact": None}
    if len(groups) <= SPLIT_FULL_GROUPS:
        out["groups"] = [{"group": g, "tables": tables.for_group(group_by, g)} for g in groups]
        return out
    axes = [a for a in tables.axes if any(a in tables.rows.get((group_by, g), {}) for g in groups)]
    rows = []
    for g in groups:
        by_axis = tables.rows.get((group_by, g), {})
        cells = []
        for a in axes:
            row = next((r for r in by_axis.get(a, []) if r.get("metric") == SKEW_METRIC and r.get("label") is None), None)
            cells.append(_cell(row) if row is not None else None)
        rows.append({"group": g, "cells": cells})
    out["compact"] = {"metric": tables.info(SKEW_METRIC), "axes": axes, "rows": rows}
    return out


def _anchor(*parts: Any) -> str:
    """An HTML id from free text: letters, digits and dashes only."""
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(str(p) for p in parts)).strip("-").lower() or "x"


def _detailed(prompts: list[dict]) -> set[str]:
    """The prompts given a full section: the first ``DETAIL_PROMPTS`` shared out evenly over the
    families, in prompt order (deterministic; a family with fewer prompts leaves its share to others)."""
    by_family: dict[str, list[str]] = defaultdict(list)
    for p in prompts:
        by_family[str(p.get("family"))].append(str(p["prompt_id"]))
    chosen: list[str] = []
    depth = 0
    while len(chosen) < DETAIL_PROMPTS and any(depth < len(v) for v in by_family.values()):
        for ids in by_family.values():
            if depth < len(ids) and len(chosen) < DETAIL_PROMPTS:
                chosen.append(ids[depth])
        depth += 1
    return set(chosen)


def build_context(run: Run, thumbnails: bool = True) -> dict:
    """Everything the templates show, as plain dicts and lists."""
    spec, model, clf = run.spec, run.spec.get("model") or {}, run.spec.get("classifier") or {}
    prompts = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in rec.items()}
               for rec in run.prompts.to_dict("records")]
    prompts = list({str(p["prompt_id"]): p for p in prompts}.values())
    attributes = [str(a) for a in dict.fromkeys(run.labels["attribute"].tolist())]
    tables = _Tables(run.metrics, attributes)

    images_by_prompt: dict[str, list[dict]] = defaultdict(list)
    for rec in sorted(run.manifest.values(), key=_index):
        images_by_prompt[str(rec.get("prompt_id"))].append(rec)
    # prompts without images (not generated yet, or cut) get no section: they are counted in the accounting
    shown_prompts = [p for p in prompts if images_by_prompt.get(str(p["prompt_id"]))]
    detailed = _detailed(shown_prompts)
    per_prompt = max(1, min(THUMBS_PER_PROMPT, MAX_THUMBNAILS // max(len(detailed), 1)))
    shown = {pid: images_by_prompt[pid][:per_prompt] for pid in detailed}
    shown_keys = {str(rec.get("key")) for recs in shown.values() for rec in recs}
    lab = run.labels[run.labels["key"].astype(str).isin(shown_keys)]
    labels_by_key: dict[str, list[dict]] = defaultdict(list)
    for x in lab.to_dict("records"):
        labels_by_key[str(x["key"])].append(x)
    thumbs = None
    if thumbnails:
        jobs = {str(rec["key"]): _image_file(run.dir, rec["path"]) for recs in shown.values() for rec in recs
                if rec.get("status") == "ok" and _has_file(run.dir, rec)}
        thumbs = _thumbnails(run.dir, jobs)

    families: dict[str, dict[str, Any]] = {}
    for p in shown_prompts:
        pid = str(p["prompt_id"])
        fam = families.setdefault(str(p.get("family")), {"index": [], "subjects": defaultdict(list)})
        entry = {**{k: p.get(k) for k in ("set_id", "set_version", "template_id", "intervention", "text", "subject")},
                 "prompt_id": pid, "n_images": len(images_by_prompt[pid]), "detailed": pid in shown}
        fam["index"].append(entry)
        if pid in shown:
            fam["subjects"][str(p.get("subject"))].append({
                **entry,
                "tables": tables.for_group("prompt_id", pid),
                "images": [_image_entry(run, rec, labels_by_key.get(str(rec["key"]), []), tables.axes, thumbs)
                           for rec in shown[pid]],
                "images_not_shown": len(images_by_prompt[pid]) - len(shown[pid]),
            })

    random_parts = [name for name, flag in (("generator", spec.get("model_is_random")),
                                            ("classifier", clf.get("is_random"))) if flag is True]
    fingerprint = str(run.metrics.get("run_fingerprint") or spec.get("fingerprint") or "")
    overall = tables.for_group("all", "all")
    gate = _gate_context(run.audit)
    index_columns = _bin_columns(tables, [str(p["prompt_id"]) for p in shown_prompts])
    if gate["no_face"]:
        index_columns.append({"header": "no face", "cells": gate["no_face"],
                              "title": "share of the prompt's images on which the face gate found no face "
                                       "(exact Clopper–Pearson interval)"})
    charts = _charts(run, tables, prompts) if thumbnails else []
    if gate["warning"]:  # every chart's caption points to the gate's warning
        for section in charts:
            section["figures"] = [Markup(str(f).replace("</figcaption>", f" {GATE_MARK}</figcaption>", 1))
                                  for f in section["figures"]]
    return {
        "model_id": model.get("id") or "unknown model",
        "fingerprint": fingerprint,
        "fingerprint_short": fingerprint[:12],
        "created": spec.get("created"),
        "version": spec.get("t2ibias_version") or run.metrics.get("t2ibias_version"),
        "random_parts": random_parts,
        "spec_sections": _spec_sections(run, len(prompts)),
        "prompt_sets": [{k: s.get(k) for k in ("id", "version", "sha256")}
                        for s in spec.get("prompt_sets") or [] if isinstance(s, dict)],
        "n_prompts": len(prompts),
        "prompts_cut": run.prompts_cut,
        "limit": spec.get("limit") if run.prompts_cut else None,
        "local_model": model.get("revision") == "local" or str(spec.get("weights") or "").startswith("local:"),
        "n_seeds": spec.get("n_seeds"),
        "classifier_id": clf.get("id"),
        "accounting": _accounting(run, len(prompts)),
        "model": {k: model.get(k) for k in MODEL_FIELDS} | model,
        "bootstrap": {"n_resamples": None, "confidence": None} | (run.metrics.get("bootstrap") or {}),
        "overall": overall,
        # the model card's table: the headline (mean over prompts) of each metric; pooled counts are in the report
        "overall_scalars": [tables.info(m) for m in _ordered([s["metric"] for t in overall for s in t["scalars"]
                                                              if not s["metric"].endswith(POOLED_SUFFIX)], METRIC_ORDER)],
        "metric_info": tables.metric_info,
        "splits": [_split(tables, gb) for gb in SPLIT_TITLES if tables.groups(gb)],
        "families": [{"family": f, "anchor": _anchor("family", f), "tables": tables.for_group("family", f),
                      "index": fam["index"], "n_detailed": sum(e["detailed"] for e in fam["index"]),
                      "subjects": [{"subject": s, "prompts": ps} for s, ps in fam["subjects"].items()]}
                     for f, fam in families.items()],
        "n_prompts_shown": len(shown_prompts),
        "n_detailed": len(detailed),
        "n_thumbnails": sum(len(v) for v in shown.values()) if thumbnails else 0,
        "charts": charts,
        "instrument": _instrument_context(run.audit, clf.get("id")),
        "gate": gate,
        "gate_mark": GATE_MARK if gate["warning"] else "",
        "index_columns": index_columns,
        "eval_rows": _eval_rows(tables),
    }


def _pct(cell: Any) -> str:
    """An ``{value, n, ci_low, ci_high}`` dict as ``0.62 [0.41, 0.80] n=8``."""
    if not isinstance(cell, dict):
        return MISSING
    return fmt_estimate(cell.get("value"), cell.get("ci_low"), cell.get("ci_high"), cell.get("n"))


def _instrument_context(doc: Any, classifier_id: Any) -> dict:
    """The measurement-instrument section: audit summary, corrected shares, agreement."""
    doc = doc if isinstance(doc, dict) else {}
    audit = doc.get("audit") if isinstance(doc.get("audit"), dict) else None
    ctx: dict[str, Any] = {"classifier_id": classifier_id, "audit": None, "corrected": [], "agreement": []}
    if audit is not None:
        rows = []
        for attr, a in (audit.get("attributes") or {}).items():
            worst, best = a.get("worst_group") or {}, a.get("best_group") or {}
            gap = as_float(best.get("value")) - as_float(worst.get("value"))
            rows.append({
                "attribute": attr, "accuracy": _pct(a.get("accuracy")), "abstain": _pct(a.get("abstain_rate")),
                "ece": _pct(a.get("ece")), "within_range": _pct(a.get("within_range")) if a.get("within_range") else None,
                "worst": f"{worst.get('group')}: {_pct(worst)}" if worst else MISSING,
                "best": f"{best.get('group')}: {_pct(best)}" if best else MISSING,
                "gap": f"{gap:.2f}" if math.isfinite(gap) else MISSING,
            })
        clf = audit.get("classifier") or {}
        ctx["audit"] = {"source": audit.get("source"), "classifier": clf.get("id"), "n_audited": audit.get("n_audited"),
                        "sha256": str(audit.get("sha256") or "")[:12] or None, "attached_by": audit.get("attached_by"),
                        "file": audit.get("file"),
                        "matches": bool(audit.get("matches_run_classifier")), "note": audit.get("note"), "rows": rows}
    for r in doc.get("corrected") or []:
        if r.get("group_by") not in ("all", "family"):
            continue
        ctx["corrected"].append({
            "attribute": r.get("attribute"), "group": "all images" if r.get("group_by") == "all" else f"family {r.get('group')}",
            "label": r.get("label") or MISSING,
            "raw": fmt_estimate(r.get("raw"), r.get("raw_ci_low"), r.get("raw_ci_high")),
            "corrected": fmt_estimate(r.get("corrected"), r.get("ci_low"), r.get("ci_high")),
            "n": r.get("n_answered"), "note": r.get("note") or "", "unstable": bool(r.get("ill_conditioned")),
            "corrected_ok": r.get("label") is not None,
        })
    for r in doc.get("agreement") or []:
        if r.get("metric") != "kappa":
            continue
        ctx["agreement"].append({
            "attribute": r.get("attribute"), "pair": f"{r.get('measurer_a')} vs {r.get('measurer_b')}",
            "pairing": r.get("pairing"), "group": "overall" if r.get("group") is None else f"family {r.get('group')}",
            "kappa": fmt_estimate(r.get("value"), r.get("ci_low"), r.get("ci_high"), r.get("n")),
            "excluded": r.get("n_excluded"), "note": r.get("note") or "",
        })
    return ctx


# --------------------------------------------------------------------------- rendering


_LINE_BREAK = re.compile(r"\r\n|[\r\n\u2028\u2029]")
#: Characters that start markdown syntax anywhere in a line (emphasis, code, links, images,
#: strikethrough, table cells, escapes); ``<``, ``>`` and ``&`` become HTML entities instead.
_MD_SPECIAL = re.compile(r"[\\`*\[\]|~]")
_HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _one_line(text: Any) -> str:
    return _LINE_BREAK.sub(" ", str(text))


def _md(text: Any) -> str:
    """Text shown as itself in markdown: no HTML, link, image, emphasis or table cell can start in it.

    Config files and run files are untrusted (a generator YAML may hold ``<script>`` or
    ``[x](javascript:...)``), so every value placed in the model card goes through here or :func:`_code`.
    """
    out = re.sub(r"[&<>]", lambda m: _HTML_ENTITIES[m.group()], _one_line(text))
    out = _MD_SPECIAL.sub(lambda m: "\\" + m.group(), out)
    return re.sub("_", _underscore, out)


def _underscore(m: re.Match) -> str:
    """An underscore between two letters or digits cannot open or close emphasis: ``no_person`` stays."""
    s, i = m.string, m.start()
    return "_" if 0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum() else "\\_"


def _code(text: Any, table: bool = False) -> str:
    """``text`` as one inline code span, whatever backticks it holds (markdown shows a code span
    literally: no HTML or link inside it is rendered); ``table``: inside a table cell."""
    body = _one_line(text)
    if not body.strip():
        return _md(body) or MISSING
    fence = "`" * (max((len(r) for r in re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body[0] in "` " or body[-1] in "` " else ""
    if table:
        body = body.replace("|", "\\|")
    return f"{fence}{pad}{body}{pad}{fence}"


def _ticks(text: Any) -> Markup:
    """Plain ``text`` for HTML with its backtick spans (commands the notes name) as ``<code>``;
    everything else escaped."""
    parts = re.split(r"`([^`]+)`", str(text))
    return Markup("").join(Markup("<code>{}</code>").format(p) if i % 2 else escape(p) for i, p in enumerate(parts))


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENV.filters["md"] = _md
_ENV.filters["code"] = _code
_ENV.filters["ticks"] = _ticks


def _write_atomic(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path


def _target(run_dir: Path, out: Path | None, name: str) -> Path:
    if out is None:
        return Path(run_dir) / name
    out = Path(out)
    return out / name if out.is_dir() else out


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the self-contained HTML report (default ``<run>/report.html``); return its path."""
    ctx = build_context(load_run(run_dir))
    return _write_atomic(_target(run_dir, out, "report.html"), _ENV.get_template("report.html.j2").render(ctx))


def _meta(text: Any) -> str:
    """Text for the YAML metadata: letters, digits and ``._/+:,() -`` only. Run files are untrusted and
    a card's front matter is shown as-is by many markdown renderers, so nothing there may start markup."""
    return re.sub(r"[^A-Za-z0-9._/+:,() -]", "_", _one_line(text))[:200]


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _eval_rows(tables: _Tables) -> list[dict]:
    """The headline rows of the whole run: one per axis and reference-free scalar metric (the mean
    over prompts, not the pooled-counts figure), with a finite value."""
    out = []
    for axis, rows in tables.rows.get(("all", "all"), {}).items():
        for r in rows:
            metric = str(r.get("metric"))
            if r.get("label") is None and not metric.endswith(POOLED_SUFFIX) and math.isfinite(as_float(r.get("value"))):
                out.append(r)
    return out


def model_card_data(ctx: dict) -> Any:
    """The card's YAML metadata: a ``model-index`` entry per headline figure (``metric_type``
    ``t2ibias/<metric>``, ``metric_config`` the axis, the interval and n in ``metric_args``)."""
    from huggingface_hub import EvalResult, ModelCardData

    sets = ctx["prompt_sets"] or [{"id": "prompts", "version": None, "sha256": None}]
    dataset_type = _meta("t2ibias/" + "+".join(str(s["id"]) for s in sets))
    dataset_name = _meta(", ".join(f"{s['id']} v{s['version']}" if s.get("version") else str(s["id"]) for s in sets))
    revision = _meta(",".join(str(s["sha256"])[:12] for s in sets if s.get("sha256"))) or None
    confidence = (ctx["bootstrap"] or {}).get("confidence") or 0.95
    results = []
    for r in ctx["eval_rows"]:
        metric = str(r["metric"])
        info = next((m for m in ctx["metric_info"] if m["metric"] == metric), {"name": metric})
        args = {"ci_low": as_float(r.get("ci_low")), "ci_high": as_float(r.get("ci_high")), "confidence": confidence,
                "n": r.get("n"), "aggregate": r.get("aggregate") or "mean_over_prompts"}
        results.append(EvalResult(
            task_type="text-to-image", task_name="social bias (perceived attributes)", dataset_type=dataset_type,
            dataset_name=dataset_name, dataset_revision=revision, metric_type=_meta(f"t2ibias/{metric}"),
            metric_name=_meta(f"{info['name']} ({r['axis']})"), metric_config=_meta(r["axis"]),
            metric_value=round(float(r["value"]), 6),
            metric_args={k: (round(v, 6) if isinstance(v, float) else v) for k, v in args.items()
                         if not (isinstance(v, float) and not math.isfinite(v))}))
    model_id = _meta(ctx["model_id"]) or "model"
    source = str((ctx.get("model") or {}).get("source") or "")
    return ModelCardData(
        model_name=model_id, eval_results=results or None, pipeline_tag="text-to-image",
        tags=["t2ibias", "bias-evaluation", "text-to-image"],
        base_model=source if _HUB_ID.match(source) and "/" in source else None)


def write_model_card(run_dir: Path, out: Path | None = None) -> Path:
    """Write ``model_card.md`` (default ``<run>/model_card.md``): YAML metadata with ``model-index``
    results built by ``huggingface_hub``, then the hub template's evaluation sections; return its path."""
    from huggingface_hub import ModelCard

    ctx = build_context(load_run(run_dir), thumbnails=False)
    body = _ENV.get_template("model_card.md.j2").render(ctx)
    card = ModelCard(f"---\n{model_card_data(ctx).to_yaml()}\n---\n\n{body}")
    return _write_atomic(_target(run_dir, out, "model_card.md"), str(card))


# --------------------------------------------------------------------------- charts

#: The per-prompt skew figure the prompt-set charts show.
SKEW_METRIC = "total_variation_uniform"
_REFERENCE_NOTE = re.compile(r"reference (-?\d+(?:\.\d+)?) \(")


def _point(row: dict, label: str, **extra: Any) -> dict:
    q = as_float(row.get("q_value"))
    return {"label": label, "value": as_float(row.get("value")), "lo": as_float(row.get("ci_low")),
            "hi": as_float(row.get("ci_high")), "n": row.get("n"), "q": f"{q:.2g}" if math.isfinite(q) else None,
            "note": str(row.get("note") or "") or None} | extra


def _rows_of(tables: _Tables, group_by: str, metric: str) -> list[dict]:
    return [r for (gb, _), by_axis in tables.rows.items() if gb == group_by
            for rows in by_axis.values() for r in rows if r.get("metric") == metric]


def _charts(run: Run, tables: _Tables, prompts: list[dict]) -> list[dict]:
    """The summary charts, drawn from metrics.json rows only: per prompt set the spread of per-prompt
    skew, per occupation the share against the labour-statistics reference, per intervention the
    paired difference to ``none``, per situation the place the neutral images resemble."""
    from t2ibias.report import charts

    info = tables.info(SKEW_METRIC)
    by_id = {str(p["prompt_id"]): p for p in prompts}
    sections = []

    # 1. per prompt set and axis: each prompt's skew with its interval, sorted
    skew = [r for r in _rows_of(tables, "prompt_id", SKEW_METRIC) if str(r.get("group")) in by_id]
    figs = []
    for set_id in dict.fromkeys(str(p.get("set_id") or "all prompts") for p in prompts):
        for axis in tables.axes:
            # the table keeps id and estimate only (the prompt's text is in the per-prompt index): 2,000 rows stay small
            pts = [_point(r, str(r["group"]), note=None) for r in skew
                   if r.get("axis") == axis and str(by_id[str(r["group"])].get("set_id") or "all prompts") == set_id]
            pts = [p for p in pts if math.isfinite(p["value"])]
            if len(pts) < 2:
                continue
            vals = sorted(p["value"] for p in pts)
            figs.append(charts.ranked_intervals(
                pts, title=f"{set_id}: {info['name']} of {axis} per prompt", y_label=info["name"], label_header="prompt",
                alt=(f"{len(pts)} prompts of {set_id} sorted by {info['name']} of {axis} ({info['direction']}), each with its "
                     f"95% interval; median {vals[len(vals) // 2]:.2f}, range {vals[0]:.2f} to {vals[-1]:.2f}.")))
    if figs:
        sections.append({"id": "chart-skew", "title": "Skew per prompt",
                         "intro": f"Each prompt's {info['name']} (0 = every label equally often), lowest to highest; "
                                  "a wide spread means the set's mean hides prompts skewed much more than it.",
                         "figures": figs})

    # 2. per occupation: share of a label against the reference the score stage compared it with
    ref_of: dict[tuple[str, str, str], float] = {}  # (axis, subject, label) → reference share
    for r in _rows_of(tables, "prompt_id", "share_minus_reference"):
        m = _REFERENCE_NOTE.search(str(r.get("note") or ""))
        p = by_id.get(str(r.get("group")))
        if m and p is not None:
            ref_of[(str(r["axis"]), str(p.get("subject")), str(r.get("label")))] = float(m.group(1))
    figs = []
    diff_rows = _rows_of(tables, "subject", "share_minus_reference")
    for axis, label in dict.fromkeys((str(r["axis"]), str(r.get("label"))) for r in diff_rows):
        pts = []
        for r in diff_rows:
            ref = ref_of.get((axis, str(r.get("group")), label))
            if r["axis"] != axis or str(r.get("label")) != label or ref is None:
                continue
            d = _point(r, str(r["group"]), x=ref)
            pts.append(d | {"value": ref + d["value"], "lo": ref + d["lo"], "hi": ref + d["hi"],
                            "note": f"share − reference {_fmt(d['value'])} [{_fmt(d['lo'])}, {_fmt(d['hi'])}]"})
        if len(pts) < 1:
            continue
        above = sum(1 for p in pts if p["lo"] > p["x"])
        below = sum(1 for p in pts if p["hi"] < p["x"])
        figs.append(charts.scatter_identity(
            sorted(pts, key=lambda p: p["x"]), title=f"{axis} {label}: share in images vs labour statistics",
            x_label=f"reference share {label}", y_label=f"share {label} in images", label_header="occupation",
            alt=(f"{_count(len(pts), 'occupation')}: the share of {label} among classified images (mean over each occupation's prompts, "
                 f"with intervals) against its labour-statistics share; {above} clearly above the line y = x, "
                 f"{below} clearly below.")))
    if figs:
        sections.append({"id": "chart-reference", "title": "Occupations against labour statistics",
                         "intro": "Points on the dashed line match the reference; above it the label is over-represented "
                                  "in the images. Shares are of the classified images (abstentions and bins left out), as the "
                                  "reference has no such bins.", "figures": figs})

    # 3. per intervention: paired difference of skew to `none`
    pts = [_point(r, f"{r['axis']}: {r['group']}") for r in _rows_of(tables, "intervention_vs_none", SKEW_METRIC)]
    if pts:
        sections.append({"id": "chart-interventions", "title": "Interventions against none", "intro":
                         f"Mean over matched prompt pairs of the change in {info['name']} (intervention − none); "
                         "left of the dashed zero line the intervention reduced the skew.",
                         "figures": [charts.dot_interval(
                             pts, title=f"Change in {info['name']} per intervention and axis", x_label=f"Δ {info['name']}",
                             reference=0.0, reference_label="no change", label_header="axis: intervention",
                             alt=f"{_count(len(pts), 'paired difference')} of {info['name']} to prompts without intervention, with intervals; "
                                 f"{sum(1 for p in pts if p['hi'] < 0)} clearly below zero, {sum(1 for p in pts if p['lo'] > 0)} clearly above.")]})

    # 4. per situation: the place the location-neutral images resemble most
    figs = []
    pooled = [_point(r, str(r.get("label"))) for r in _rows_of(tables, "all", "location_distance")]
    if pooled:
        best = min((p for p in pooled if math.isfinite(p["value"])), key=lambda p: p["value"], default=None)
        figs.append(charts.dot_interval(
            pooled, title="Distance of location-neutral images to each place", x_label="cosine distance (mean over prompts)",
            sort=True, highlight_min=True, label_header="place",
            alt=f"Mean cosine distance between neutral images and {_count(len(pooled), 'place')}; closest: "
                f"{best['label'] if best else 'none'} ({_fmt(best['value']) if best else '—'})."))
    per = defaultdict(list)
    for r in _rows_of(tables, "prompt_id", "location_distance"):
        if math.isfinite(as_float(r.get("value"))):
            per[str(r.get("group"))].append(r)
    if per:
        pts = []
        for pid, rows in per.items():
            r = min(rows, key=lambda x: as_float(x.get("value")))
            p = by_id.get(pid, {})
            pts.append(_point(r, f"{p.get('subject') or pid} → {r.get('label')}"))
        figs.append(charts.dot_interval(
            pts, title="Closest place per situation", x_label="cosine distance to the closest place", label_header="situation → place",
            alt=f"For {_count(len(pts), 'location-neutral prompt')}, the place whose images its images resemble most, with the distance."))
    if figs:
        sections.append({"id": "chart-location", "title": "Which place neutral images resemble",
                         "intro": "Smaller is closer; the closest place is marked in orange with a ring.", "figures": figs})
    return sections


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _fmt(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else MISSING


# --------------------------------------------------------------------------- face gate

#: The marker on every estimate table and chart caption while the gate's audited detection rate
#: differs across groups; it links to the gate's section of the report.
GATE_MARK = Markup('<a class="gate-mark" href="#face-gate" title="the face gate finds faces of some groups more '
                   'often than others: classified-only shares are not missing-at-random">⚠ face-gate warning</a>')
#: Said wherever the gate has no audit: what its shares then take for granted.
UNKNOWN_RECALL = "classified-only shares assume that faces are missed at random (equally often in every group)"


def _p_text(v: Any) -> str:
    v = as_float(v)
    return f"{v:.2g}" if math.isfinite(v) else MISSING


def _gate_kind(cfg: Any) -> str | None:
    return str(cfg.get("kind")) if isinstance(cfg, dict) and cfg.get("kind") is not None else None


def _gate_context(doc: Any) -> dict:
    """The face gate beside the estimates, from ``instrument.json`` ``gate`` (written by ``score``,
    :mod:`t2ibias.metrics.gate_rows`): the audited detection rate among FACET's visible faces overall
    and per group, the tests of equal rates, the warning, and the run's no-face rate per prompt."""
    gate = doc.get("gate") if isinstance(doc, dict) and isinstance(doc.get("gate"), dict) else None
    ctx: dict[str, Any] = {"present": gate is not None, "kind": None, "run_kind": None, "audit_kind": None,
                           "warning": "", "note": "", "unknown": UNKNOWN_RECALL, "audit": None, "matches": None,
                           "no_face": {}, "no_face_pooled": None}
    if gate is None:
        ctx["note"] = "this run's instrument.json has no face-gate record (score it again: `t2ibias score RUN`)"
        return ctx
    audit = gate.get("audit") if isinstance(gate.get("audit"), dict) else None
    ctx["run_kind"] = _gate_kind(gate.get("run_gate"))
    ctx["audit_kind"] = _gate_kind((audit or {}).get("face_gate"))
    ctx["kind"] = ctx["audit_kind"] or ctx["run_kind"] or "unknown"
    ctx["warning"] = str(gate.get("warning") or "").strip().rstrip(".")
    ctx["note"] = str(gate.get("note") or "")
    ctx["matches"] = gate.get("matches_run_gate")
    for r in gate.get("no_face_by_prompt") or []:
        if not isinstance(r, dict):
            continue
        if r.get("group_by") == "prompt_id":
            ctx["no_face"][str(r.get("group"))] = _cell(r)
        elif r.get("group_by") == "all":
            k = as_float(r.get("value")) * as_float(r.get("n"))  # images without a face
            ctx["no_face_pooled"] = {**_cell(r), "n": r.get("n"), "k": round(k) if math.isfinite(k) else None}
    if audit is None:
        return ctx
    ov = (audit.get("overall") or {}).get("gate_recall") if isinstance(audit.get("overall"), dict) else None
    a: dict[str, Any] = {"not_audited": str(audit.get("not_audited") or ""), "definition": str(audit.get("definition") or ""),
                         "overall": None, "n": audit.get("n"), "n_detected": audit.get("n_detected"),
                         "n_images": audit.get("n_images"), "alpha": audit.get("alpha", 0.05),
                         "differs": bool(audit.get("differs_across_groups")), "by_group": [], "comparisons": []}
    if isinstance(ov, dict):
        a["overall"] = {"text": fmt_estimate(ov.get("value"), ov.get("ci_low"), ov.get("ci_high")),
                        "n": ov.get("n"), "method": str(ov.get("method") or "")}
    for r in audit.get("by_group") or []:
        if isinstance(r, dict) and r.get("metric", "gate_recall") == "gate_recall":
            a["by_group"].append({"grouping": r.get("group_attribute"), "group": r.get("group"),
                                  "text": fmt_estimate(r.get("value"), r.get("ci_low"), r.get("ci_high")),
                                  "n": r.get("n"), "note": str(r.get("note") or ""), "method": str(r.get("method") or "")})
    for c in audit.get("comparisons") or []:
        if not isinstance(c, dict):
            continue
        gap, ratio = c.get("difference") or {}, c.get("ratio") or {}
        q = as_float(c.get("q_value"))
        a["comparisons"].append({
            "grouping": c.get("group_attribute"), "groups": ", ".join(str(g) for g in c.get("groups") or []) or MISSING,
            "gap": fmt_estimate(gap.get("value"), gap.get("ci_low"), gap.get("ci_high")),
            "ratio": fmt_estimate(ratio.get("value"), ratio.get("ci_low"), ratio.get("ci_high")),
            "p": _p_text(c.get("p_value")), "q": _p_text(q),
            "significant": math.isfinite(q) and q < as_float(a["alpha"]),
            "note": str(c.get("note") or ""), "method": str(c.get("method") or "")})
    ctx["audit"] = a
    return ctx


def _same(cells: list[dict]) -> bool:
    return len({(c["text"], c["note"]) for c in cells}) <= 1


def _bin_columns(tables: _Tables, prompt_ids: list[str]) -> list[dict]:
    """Index columns of each prompt's abstention and no-person shares (``proportion`` rows of
    metrics.json): one column per bin when every axis gives the same share for every prompt
    (no-person usually does: it is decided per image), else one column per axis."""
    out = []
    for label, name in (("abstain", "abstain"), ("no_person", "no person")):
        per_axis: dict[str, dict[str, dict]] = {}
        for axis in tables.axes:
            cells = {}
            for pid in prompt_ids:
                row = next((r for r in tables.rows.get(("prompt_id", pid), {}).get(axis, [])
                            if r.get("metric") == "proportion" and r.get("label") == label), None)
                if row is not None:
                    cells[pid] = _cell(row)
            if cells:
                per_axis[axis] = cells
        if not per_axis:
            continue
        axes = list(per_axis)
        merged = len(axes) > 1 and all(
            set(per_axis[a]) == set(per_axis[axes[0]]) for a in axes) and all(
            _same([per_axis[a][pid] for a in axes]) for pid in per_axis[axes[0]])
        def method(a: str) -> str:
            found = next((c["method"] for c in per_axis[a].values() if c["method"]), "")
            return f"; interval: {found}" if found else ""

        if len(axes) == 1 or merged:
            out.append({"header": name, "title": f"share of the prompt's images labelled {label} "
                        f"({'every axis' if merged else axes[0]}){method(axes[0])}", "cells": per_axis[axes[0]]})
        else:
            out += [{"header": f"{name} ({a})", "title": f"share of the prompt's images labelled {label} on {a}{method(a)}",
                     "cells": per_axis[a]} for a in axes]
    return out
