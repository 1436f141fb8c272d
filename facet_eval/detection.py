"""Class-agnostic person detection on FACET, disaggregated by perceived group.

Detections are matched to ground-truth people once, over all people of each image, by
pycocotools' own ``COCOeval.evaluateImg`` (greedy by score, at most 100 detections per
image, IoU thresholds 0.50:0.05:0.95, crowd people ignored, each person matched at most once).
The per-person match flags then give, for any set of people, AR50, AR75 and mAR (mean over
the ten thresholds) as recall over those people.

Statistics (:mod:`t2ibias.stats.cluster_bootstrap`): people of one image are not independent, so
intervals resample images (all evaluated people of an image together), the same draws for every
class, group and metric. A group's recall is a share of its people: its interval is Korn–Graubard's
at the variance of its replicates (``method`` "korn-graubard (image bootstrap variance)"), never
zero width; a disparity's is that of the differences of the two
groups on the same draws ("joint image bootstrap percentile"), right for groups that share
people (one person can be in several MST groups). Each compared disparity row carries ``se``
(the image-clustered linearized standard error), ``p_value`` (two-sided test of no gap, with the
clustered standard error under no gap, as the pooled two-proportion z test), ``q_value``
(Benjamini–Hochberg) and ``adj_ci_low``/``adj_ci_high`` (Bonferroni-simultaneous Wald interval
with the larger of the two standard errors, so it excludes 0 only where the Bonferroni test
rejects), both over its family: the compared disparity rows of one task, metric and
attribute at the all-classes level (its group pairs), or over classes (its pairs × classes, the
rows a largest-gap table of the attribute is selected from). ``n_tests`` is the family size;
significant means q < 0.05. Rows that are not tests have null ``p_value`` and ``q_value``.
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
from t2ibias.core.errors import UserError
from t2ibias.stats.cluster_bootstrap import (
    bonferroni_intervals,
    group_replicates,
    percentile_columns,
    wald_pvalues,
)
from t2ibias.stats.cluster import resample_weights, share_interval_clustered
from t2ibias.stats.testing import bh_qvalues

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
MAX_DETS = 100
MIN_GROUP_SIZE = 50
N_BOOT = 1000
CONFIDENCE = 0.95
METRICS = ("AR50", "AR75", "mAR")
#: interval methods named in the rows (see :mod:`t2ibias.stats.cluster_bootstrap`)
#: per-group recall is a share of people: Korn–Graubard at the image-bootstrap variance, so a group
#: whose people were all found still gets an interval with width (a percentile one would be [1, 1])
VALUE_METHOD = "korn-graubard (image bootstrap variance)"
GAP_METHOD = "joint image bootstrap percentile"
ADJ_METHOD = "Wald, image-clustered SE"
SIGNIFICANT_Q = 0.05


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
def _rng(seed: int, *key: Any) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode("utf-8"))])


def check_confidence(confidence: float) -> float:
    """``confidence`` when it lies strictly between 0 and 1, else :class:`UserError`."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise UserError(f"confidence: {confidence!r} is not strictly between 0 and 1 (use e.g. 0.95)")
    return float(confidence)


def evaluate_detection(
    data: FacetData,
    predictions: list[dict[str, Any]],
    intersections: Iterable[tuple[str, str]] = (),
    n_boot: int = N_BOOT,
    seed: int = 0,
    per_class: bool = True,
    confidence: float = CONFIDENCE,
) -> list[dict[str, Any]]:
    """Metric rows (see module doc) overall, per attribute group, per class and per group pair."""
    check_confidence(confidence)
    matched, evaluated = match_people(data, predictions)
    return rows_from_matches(data, matched, evaluated, intersections, n_boot, seed, per_class, confidence=confidence)


def rows_from_matches(
    data: FacetData,
    matched: np.ndarray,
    evaluated: np.ndarray,
    intersections: Iterable[tuple[str, str]] = (),
    n_boot: int = N_BOOT,
    seed: int = 0,
    per_class: bool = True,
    task: str = "detection",
    confidence: float = CONFIDENCE,
) -> list[dict[str, Any]]:
    """Rows of AR50, AR75 and mAR from per-person match flags ``(n, T)`` (see :func:`match_people`)."""
    per_person = {"AR50": matched[:, 0].astype(float), "AR75": matched[:, 5].astype(float),
                  "mAR": matched.sum(axis=1) / matched.shape[1]}
    return rows_from_values(data, per_person, evaluated, intersections, n_boot, seed, per_class, task, confidence)


def _family(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["task"], row["metric"], row["attribute"], row["class"] is None)


def rows_from_values(
    data: FacetData,
    per_person: dict[str, np.ndarray],
    evaluated: np.ndarray,
    intersections: Iterable[tuple[str, str]] = (),
    n_boot: int = N_BOOT,
    seed: int = 0,
    per_class: bool = True,
    task: str = "detection",
    confidence: float = CONFIDENCE,
) -> list[dict[str, Any]]:
    """Metric rows from one value per person and metric (``per_person[metric][i]`` for row ``i``
    of ``data.people``, e.g. 1.0 matched / 0.0 missed), over the people with ``evaluated[i]``.

    For every class (None = all classes) and every (attribute, group): the mean value with its
    image-bootstrap CI; for every pair of non-``na`` groups of an attribute: the signed difference
    ``disparity_<metric>`` = group_a − group_b (FACET eq. 1) with its joint image-bootstrap CI, a
    p-value of no gap, its BH q-value and a Bonferroni interval over its family (see module doc),
    computed only when both groups have at least ``MIN_GROUP_SIZE`` people of that class,
    otherwise null with a note.
    """
    confidence = check_confidence(confidence)
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

    groups: list[tuple[str, str]] = [("all", "all")]
    masks: list[np.ndarray] = [np.ones(n, dtype=bool)]
    for attr, gs in membership.items():
        for g, m in gs.items():
            groups.append((attr, g))
            masks.append(m)
    index = {ag: j for j, ag in enumerate(groups)}
    people = np.flatnonzero(np.asarray(evaluated, dtype=bool))
    _, clusters = np.unique(data.people["image_id"].to_numpy()[people], return_inverse=True)
    n_images = int(clusters.max()) + 1 if len(people) else 0
    weights = resample_weights(n_images, n_boot, _rng(seed, "images"), dtype=np.float32)
    values = np.column_stack([np.asarray(per_person[m], dtype=float)[people] for m in metrics])
    member = np.column_stack([m[people] for m in masks])
    pairs: list[tuple[str, str, str]] = []
    for attr, gs in membership.items():
        names = [g for g in gs if not is_na_group(g)]
        pairs += [(attr, ga, gb) for i, ga in enumerate(names) for gb in names[i + 1:]]

    rows: list[dict[str, Any]] = []
    gap_rows: list[tuple[dict[str, Any], float]] = []
    for cls, cmask in class_masks:
        sel = cmask[people]
        res = group_replicates(values[sel], member[sel], clusters[sel], weights)
        lo, hi = share_interval_clustered(res.estimate, res.replicates, res.n[:, None], res.n_clusters[:, None], confidence)
        for j, (attr, g) in enumerate(groups):
            k = int(res.n[j])
            for mi, metric in enumerate(metrics):
                row = {"task": task, "metric": metric, "attribute": attr, "group": g, "class": cls,
                       "value": float(res.estimate[j, mi]) if k else math.nan, "n": k,
                       "ci_low": float(lo[j, mi]), "ci_high": float(hi[j, mi]), "n_images": int(res.n_clusters[j]),
                       "method": VALUE_METHOD, "p_value": None, "q_value": None}
                if k == 0:
                    row["note"] = "no people in this group"
                rows.append(row)
        ia = np.array([index[(attr, ga)] for attr, ga, _ in pairs], dtype=np.int64)
        ib = np.array([index[(attr, gb)] for attr, _, gb in pairs], dtype=np.int64)
        ok = (res.n[ia] >= MIN_GROUP_SIZE) & (res.n[ib] >= MIN_GROUP_SIZE)
        var = res.gap_variance(ia[ok], ib[ok])
        var_null = res.gap_variance(ia[ok], ib[ok], null=True)
        glo, ghi = percentile_columns(res.gap_replicates(ia[ok], ib[ok]), confidence)
        gap = res.estimate[ia[ok]] - res.estimate[ib[ok]]
        pvals = wald_pvalues(gap, var_null)
        slot = np.cumsum(ok) - 1
        for p, (attr, ga, gb) in enumerate(pairs):
            na, nb = int(res.n[ia[p]]), int(res.n[ib[p]])
            for mi, metric in enumerate(metrics):
                row = {"task": task, "metric": f"disparity_{metric}", "attribute": attr,
                       "group": f"{ga}-{gb}", "class": cls, "group_a": ga, "group_b": gb,
                       "value": math.nan, "n": min(na, nb), "n_a": na, "n_b": nb,
                       "ci_low": math.nan, "ci_high": math.nan, "method": GAP_METHOD,
                       "p_value": None, "q_value": None}
                if ok[p]:
                    s = slot[p]
                    row.update(value=float(gap[s, mi]), ci_low=float(glo[s, mi]), ci_high=float(ghi[s, mi]),
                               se=float(math.sqrt(var[s, mi])), p_value=float(pvals[s, mi]))
                    gap_rows.append((row, float(max(var[s, mi], var_null[s, mi]))))
                else:
                    row["note"] = (f"not compared: needs >= {MIN_GROUP_SIZE} people in both groups "
                                   f"({ga}: {na}, {gb}: {nb})")
                rows.append(row)
    adjust_gap_rows(gap_rows, confidence)
    return rows


def adjust_gap_rows(gap_rows: list[tuple[dict[str, Any], float]], confidence: float = CONFIDENCE) -> None:
    """Add ``q_value`` (Benjamini–Hochberg), ``n_tests`` and the Bonferroni interval
    ``adj_ci_low``/``adj_ci_high`` to compared disparity rows, within each family: the rows of one
    task, metric and attribute, at the all-classes level or over classes (see module doc). The
    adjusted interval is widened to hold the naive one where the two methods disagree, so it is
    never the narrower of the two."""
    families: dict[tuple[Any, ...], list[tuple[dict[str, Any], float]]] = {}
    for row, var in gap_rows:
        families.setdefault(_family(row), []).append((row, var))
    for members in families.values():
        m = len(members)
        q = bh_qvalues(np.array([r["p_value"] for r, _ in members], dtype=float))
        lo, hi = bonferroni_intervals(np.array([r["value"] for r, _ in members]), np.array([v for _, v in members]),
                                      m, confidence)
        for (row, _), qi, a, b in zip(members, q, lo, hi):
            naive = [v for v in (row["ci_low"], row["ci_high"]) if math.isfinite(v)]
            row.update(q_value=float(qi), n_tests=m, adj_ci_low=float(min([a, row["value"], *naive])),
                       adj_ci_high=float(max([b, row["value"], *naive])),
                       adj_method=f"Bonferroni over {m} gaps ({ADJ_METHOD})")


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
    from t2ibias.core.csvsafe import frame_to_csv
    from t2ibias.core.files import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = [{k: _clean(v) for k, v in r.items()} for r in rows]
    atomic_write_text(out / "metrics.json", json.dumps({"rows": clean}, indent=1, allow_nan=False) + "\n")
    columns: list[str] = []
    for r in clean:
        for k in r:
            if k not in columns:
                columns.append(k)
    atomic_write_text(out / "metrics.csv", frame_to_csv(pd.DataFrame(clean, columns=columns)))
    print_summary(rows, console)


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def main_metric_of(rows: list[dict[str, Any]]) -> str:
    """The headline metric of some rows: mAR when present, else the first non-disparity metric."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows if not str(r["metric"]).startswith("disparity_")))
    return "mAR" if "mAR" in metrics or not metrics else metrics[0]


def _ci_text(lo: Any, hi: Any) -> str:
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


def _q_text(q: Any) -> str:
    if q is None or (isinstance(q, float) and math.isnan(q)):
        return "-"
    return f"{q:.2g}" + ("*" if q < SIGNIFICANT_Q else "")


def print_summary(rows: list[dict[str, Any]], console: Any = None) -> None:
    """The overall values and, per attribute, the worst group (non-``na`` groups with at least
    ``MIN_GROUP_SIZE`` people) and the largest gap of the headline metric (mAR for detection and
    segmentation, recall for classification), with its naive and selection-adjusted intervals."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    main = main_metric_of(rows)
    metrics = list(dict.fromkeys(r["metric"] for r in rows if not str(r["metric"]).startswith("disparity_")))
    top = [r for r in rows if r["class"] is None]
    overall = {r["metric"]: r for r in top if r["attribute"] == "all"}
    if main in overall:
        console.print("overall (n={}): ".format(overall[main]["n"]) + ", ".join(
            f"{m} {_fmt(overall[m]['value'])}" for m in metrics if m in overall), markup=False)
    task = rows[0].get("task", "detection") if rows else "detection"
    worst_table = Table(title=escape(f"person {task} {main}: worst group per attribute (all classes; non-na groups "
                              f"with n >= {MIN_GROUP_SIZE})"))
    for col in ("attribute", "groups", "worst group", main, "CI", "n"):
        worst_table.add_column(col, justify="left" if col in ("attribute", "worst group") else "right",
                               no_wrap=col == "CI")
    gap_table = Table(title=escape(f"person {task} {main}: largest gap per attribute (all classes)"))
    for col in ("attribute", "pair", "gap", "CI", "adjusted CI", "q"):
        gap_table.add_column(col, justify="left" if col in ("attribute", "pair") else "right",
                             no_wrap=col not in ("attribute", "pair"))
    attrs = list(dict.fromkeys(r["attribute"] for r in top if r["attribute"] != "all"))
    for attr in attrs:
        grp = [r for r in top if r["attribute"] == attr and r["metric"] == main
               and not is_na_group(r["group"]) and r["n"] >= MIN_GROUP_SIZE]
        worst = min(grp, key=lambda r: (r["value"], r["group"])) if grp else None
        worst_table.add_row(escape(str(attr)), str(len(grp)), *([escape(str(worst["group"])), _fmt(worst["value"]),
                            _ci_text(worst["ci_low"], worst["ci_high"]), str(worst["n"])] if worst else ["-"] * 4))
        gaps = [r for r in top if r["attribute"] == attr and r["metric"] == f"disparity_{main}"
                and not (r["value"] is None or math.isnan(r["value"]))]
        gap = max(gaps, key=lambda r: abs(r["value"])) if gaps else None
        if gap:
            gap_table.add_row(escape(str(attr)), escape(str(gap["group"])), _fmt(gap["value"]), _ci_text(gap["ci_low"], gap["ci_high"]),
                              _ci_text(gap.get("adj_ci_low"), gap.get("adj_ci_high")), _q_text(gap.get("q_value")))
    console.print(worst_table)
    console.print(gap_table)
    console.print(f"largest gap: the largest |gap| among an attribute's compared pairs; selecting it inflates it. "
                  f"CI: joint image bootstrap; adjusted CI: simultaneous over the attribute's compared pairs "
                  f"(Bonferroni); q: Benjamini-Hochberg over them, * = significant (q < {SIGNIFICANT_Q}).")
