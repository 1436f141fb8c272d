"""Class-agnostic person detection on FACET, disaggregated by perceived group.

Detections are matched to ground-truth people once, over all people of each image, by
pycocotools' own ``COCOeval.evaluateImg`` (greedy by score, at most 100 detections per
image, IoU thresholds 0.50:0.05:0.95, crowd people ignored, each person matched at most once).
The per-person match flags then give, for any set of people, AR50, AR75 and mAR (mean over
the ten thresholds) as recall over those people. Confidence intervals are percentile
bootstraps over people (the bootstrap distribution of a mean of values from a finite set is
drawn exactly as a multinomial over the distinct values, so no per-person resampling is needed).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facet_eval.data import FacetData
from facet_eval.groups import Membership, group_membership, intersect, is_na_group
from t2ibias.errors import UserError

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
MAX_DETS = 100
MIN_GROUP_SIZE = 50
N_BOOT = 1000
METRICS = ("AR50", "AR75", "mAR")


# ---------------------------------------------------------------- predictions
def read_results_list(path: Path, fields: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """The items of a COCO results JSON list as ``(where, item)``, each an object with ``fields``."""
    try:
        with open(path, encoding="utf-8") as fh:
            items = json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (pass a COCO results JSON with --predictions)") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise UserError(f"{path}: not valid JSON: {exc} (write a COCO results list)") from None
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a JSON list of detections (write a COCO results list)")
    shape = "{" + ", ".join(fields) + "}"
    checked = []
    for k, d in enumerate(items):
        where = f"{path}: item {k}"
        if not isinstance(d, dict):
            raise UserError(f"{where}: not an object (each detection is {shape})")
        for key in fields:
            if key not in d:
                raise UserError(f"{where}: field {key}: missing (each detection is {shape})")
        checked.append((where, d))
    return checked


def load_predictions(path: str | Path, data: FacetData) -> list[dict[str, Any]]:
    """Read a COCO results list ``[{image_id, bbox: [x, y, w, h], score}, ...]`` and validate it."""
    path = Path(path)
    known = {int(i) for i in data.images["id"]}
    out = []
    for where, d in read_results_list(path, ("image_id", "bbox", "score")):
        try:
            img = int(d["image_id"])
        except (TypeError, ValueError):
            raise UserError(f"{where}: field image_id: not an integer: {d['image_id']!r} (use coco_boxes.json image ids)") from None
        if img not in known or img != d["image_id"]:
            raise UserError(f"{where}: field image_id: {d['image_id']!r} is not an image of coco_boxes.json (use its image ids)")
        bbox = d["bbox"]
        try:
            box = [float(v) for v in bbox]
        except (TypeError, ValueError):
            raise UserError(f"{where}: field bbox: not a list of numbers: {bbox!r} (write [x, y, width, height])") from None
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise UserError(f"{where}: field bbox: needs 4 finite numbers, got {bbox!r} (write [x, y, width, height])")
        if box[2] < 0 or box[3] < 0:
            raise UserError(f"{where}: field bbox: negative width or height {box[2]}x{box[3]} (write [x, y, width, height])")
        score = d["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or score < 0:
            raise UserError(f"{where}: field score: must be a finite number >= 0, got {score!r} (fix the scores)")
        out.append({"image_id": img, "bbox": box, "score": float(score)})
    return out


# ---------------------------------------------------------------- matching
def _coco(dataset: dict[str, Any]):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def match_people(data: FacetData, predictions: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``(matched, evaluated)``: ``matched[i, t]`` is True when person ``i`` (row of
    ``data.people``) is matched at IoU threshold ``IOU_THRESHOLDS[t]``; ``evaluated[i]`` is False
    for crowd people, whom pycocotools ignores."""
    people = data.people
    n = len(people)
    image_ids = sorted(int(i) for i in data.images["id"])
    images = [{"id": i} for i in image_ids]
    gts = [
        {"id": k + 1, "image_id": int(im), "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h),
         "iscrowd": int(c), "category_id": 1}
        for k, (im, x, y, w, h, c) in enumerate(zip(people["image_id"], people["box_x"], people["box_y"],
                                                     people["box_w"], people["box_h"], people["iscrowd"]))
    ]
    dts = [
        {"id": k + 1, "image_id": d["image_id"], "bbox": list(d["bbox"]), "area": d["bbox"][2] * d["bbox"][3],
         "score": d["score"], "iscrowd": 0, "category_id": 1}
        for k, d in enumerate(predictions)
    ]
    evaluated = people["iscrowd"].to_numpy() == 0
    matched = match_annotations(images, gts, dts, n, "bbox")
    matched[~evaluated] = False
    return matched, evaluated


def match_annotations(images: list[dict[str, Any]], gts: list[dict[str, Any]], dts: list[dict[str, Any]],
                      n: int, iou_type: str = "bbox") -> np.ndarray:
    """Per-GT match flags ``(n, T)`` from one class-agnostic pycocotools ``COCOeval.evaluate``
    (``iou_type`` "bbox" or "segm"); GT ``id`` k+1 fills row k, rows without a GT stay False."""
    from pycocotools.cocoeval import COCOeval

    matched = np.zeros((n, len(IOU_THRESHOLDS)), dtype=bool)
    if n == 0 or not dts or not gts:
        return matched
    cats = [{"id": 1, "name": "person"}]
    gt = _coco({"images": images, "annotations": gts, "categories": cats})
    dt = _coco({"images": images, "annotations": dts, "categories": cats})
    ev = COCOeval(gt, dt, iou_type)
    p = ev.params
    p.imgIds = [im["id"] for im in images]
    p.useCats = 0
    p.maxDets = [MAX_DETS]
    p.areaRng = [[0.0, 1e10]]
    p.areaRngLbl = ["all"]
    p.iouThrs = IOU_THRESHOLDS.copy()
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    for e in ev.evalImgs:
        if e is None or not e["gtIds"]:
            continue
        cols = np.asarray(e["gtIds"], dtype=np.int64) - 1
        matched[cols] = (np.asarray(e["gtMatches"]) > 0).T
    return matched


# ---------------------------------------------------------------- statistics
def _boot_means(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Bootstrap distribution of the mean of ``values`` (resampling people with replacement)."""
    n = len(values)
    if n == 0:
        return np.full(n_boot, np.nan)
    uniq, inv = np.unique(values, return_inverse=True)
    freq = np.bincount(inv.ravel(), minlength=len(uniq)) / n
    counts = rng.multinomial(n, freq, size=n_boot)
    return counts @ uniq / n


def _ci(samples: np.ndarray) -> tuple[float, float]:
    if np.isnan(samples).any():
        return math.nan, math.nan
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def _rng(seed: int, *key: Any) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode("utf-8"))])


def evaluate_detection(
    data: FacetData,
    predictions: list[dict[str, Any]],
    intersections: Iterable[tuple[str, str]] = (),
    n_boot: int = N_BOOT,
    seed: int = 0,
    per_class: bool = True,
) -> list[dict[str, Any]]:
    """Metric rows (see module doc) overall, per attribute group, per class and per group pair."""
    matched, evaluated = match_people(data, predictions)
    return rows_from_matches(data, matched, evaluated, intersections, n_boot, seed, per_class)


def rows_from_matches(
    data: FacetData,
    matched: np.ndarray,
    evaluated: np.ndarray,
    intersections: Iterable[tuple[str, str]] = (),
    n_boot: int = N_BOOT,
    seed: int = 0,
    per_class: bool = True,
    task: str = "detection",
) -> list[dict[str, Any]]:
    """Rows of AR50, AR75 and mAR from per-person match flags ``(n, T)`` (see :func:`match_people`)."""
    per_person = {"AR50": matched[:, 0].astype(float), "AR75": matched[:, 5].astype(float),
                  "mAR": matched.mean(axis=1)}
    return rows_from_values(data, per_person, evaluated, intersections, n_boot, seed, per_class, task)


def rows_from_values(
    data: FacetData,
    per_person: dict[str, np.ndarray],
    evaluated: np.ndarray,
    intersections: Iterable[tuple[str, str]] = (),
    n_boot: int = N_BOOT,
    seed: int = 0,
    per_class: bool = True,
    task: str = "detection",
) -> list[dict[str, Any]]:
    """Metric rows from one value per person and metric (``per_person[metric][i]`` for row ``i``
    of ``data.people``, e.g. 1.0 matched / 0.0 missed), over the people with ``evaluated[i]``.

    For every class (None = all classes) and every (attribute, group): the mean value with its
    bootstrap CI; for every pair of non-``na`` groups of an attribute: the signed difference
    ``disparity_<metric>`` = group_a − group_b (FACET eq. 1), computed only when both groups
    have at least ``MIN_GROUP_SIZE`` people of that class, otherwise null with a note.
    """
    membership: Membership = group_membership(data.people)
    for a, b in intersections:
        membership[f"{a}&{b}"] = intersect(membership, a, b)
    metrics = list(per_person)
    n = len(data.people)
    class_masks: list[tuple[str | None, np.ndarray]] = [(None, np.ones(n, dtype=bool))]
    if per_class:
        classes = data.people["classes"]
        for c in data.classes:
            class_masks.append((c, np.array([c in cl for cl in classes], dtype=bool)))

    rows: list[dict[str, Any]] = []
    for cls, cmask in class_masks:
        base = cmask & evaluated
        groups: list[tuple[str, str, np.ndarray]] = [("all", "all", base)]
        for attr, gs in membership.items():
            groups.extend((attr, g, base & m) for g, m in gs.items())
        samples: dict[tuple[str, str, str], np.ndarray] = {}
        sizes: dict[tuple[str, str], int] = {}
        for attr, g, mask in groups:
            rng = _rng(seed, cls, attr, g)
            k = int(mask.sum())
            sizes[(attr, g)] = k
            for metric in metrics:
                vals = per_person[metric][mask]
                boot = _boot_means(vals, rng, n_boot)
                samples[(attr, g, metric)] = boot
                lo, hi = _ci(boot)
                row = {"task": task, "metric": metric, "attribute": attr, "group": g, "class": cls,
                       "value": float(vals.mean()) if k else math.nan, "n": k, "ci_low": lo, "ci_high": hi}
                if k == 0:
                    row["note"] = "no people in this group"
                rows.append(row)
        for attr, gs in membership.items():
            names = [g for g in gs if not is_na_group(g)]
            for i, ga in enumerate(names):
                for gb in names[i + 1:]:
                    na, nb = sizes[(attr, ga)], sizes[(attr, gb)]
                    for metric in metrics:
                        row = {"task": task, "metric": f"disparity_{metric}", "attribute": attr,
                               "group": f"{ga}-{gb}", "class": cls, "group_a": ga, "group_b": gb,
                               "value": math.nan, "n": min(na, nb), "n_a": na, "n_b": nb,
                               "ci_low": math.nan, "ci_high": math.nan}
                        if na >= MIN_GROUP_SIZE and nb >= MIN_GROUP_SIZE:
                            va = float(per_person[metric][base & gs[ga]].mean())
                            vb = float(per_person[metric][base & gs[gb]].mean())
                            row["value"] = va - vb
                            row["ci_low"], row["ci_high"] = _ci(samples[(attr, ga, metric)] - samples[(attr, gb, metric)])
                        else:
                            row["note"] = (f"not compared: needs >= {MIN_GROUP_SIZE} people in both groups "
                                           f"({ga}: {na}, {gb}: {nb})")
                        rows.append(row)
    return rows


# ---------------------------------------------------------------- output
def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


def write_outputs(rows: list[dict[str, Any]], out_dir: str | Path, console: Any = None) -> None:
    """Write ``metrics.json`` (``{"rows": [...]}``, NaN as null) and ``metrics.csv`` atomically,
    then print a summary."""
    from t2ibias.store.image_store import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = [{k: _clean(v) for k, v in r.items()} for r in rows]
    atomic_write_text(out / "metrics.json", json.dumps({"rows": clean}, indent=1, allow_nan=False) + "\n")
    columns: list[str] = []
    for r in clean:
        for k in r:
            if k not in columns:
                columns.append(k)
    atomic_write_text(out / "metrics.csv", pd.DataFrame(clean, columns=columns).to_csv(index=False))
    print_summary(rows, console)


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def main_metric_of(rows: list[dict[str, Any]]) -> str:
    """The headline metric of some rows: mAR when present, else the first non-disparity metric."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows if not str(r["metric"]).startswith("disparity_")))
    return "mAR" if "mAR" in metrics or not metrics else metrics[0]


def print_summary(rows: list[dict[str, Any]], console: Any = None) -> None:
    """The overall values and, per attribute, the worst group and the largest gap of the headline
    metric (mAR for detection and segmentation, recall for classification)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    main = main_metric_of(rows)
    metrics = list(dict.fromkeys(r["metric"] for r in rows if not str(r["metric"]).startswith("disparity_")))
    top = [r for r in rows if r["class"] is None]
    overall = {r["metric"]: r for r in top if r["attribute"] == "all"}
    if main in overall:
        console.print("overall (n={}): ".format(overall[main]["n"]) + ", ".join(
            f"{m} {_fmt(overall[m]['value'])}" for m in metrics if m in overall))
    task = rows[0].get("task", "detection") if rows else "detection"
    table = Table(title=f"person {task} {main} by attribute (all classes)")
    for col in ("attribute", "groups", "worst group", main, "largest gap", "gap"):
        table.add_column(col)
    attrs = list(dict.fromkeys(r["attribute"] for r in top if r["attribute"] != "all"))
    for attr in attrs:
        grp = [r for r in top if r["attribute"] == attr and r["metric"] == main
               and not is_na_group(r["group"]) and r["n"] > 0]
        worst = min(grp, key=lambda r: r["value"]) if grp else None
        gaps = [r for r in top if r["attribute"] == attr and r["metric"] == f"disparity_{main}"
                and not (r["value"] is None or math.isnan(r["value"]))]
        gap = max(gaps, key=lambda r: abs(r["value"])) if gaps else None
        table.add_row(attr, str(len(grp)), worst["group"] if worst else "-", _fmt(worst["value"]) if worst else "-",
                      gap["group"] if gap else "-", _fmt(gap["value"]) if gap else "-")
    console.print(table)
