"""Class-agnostic person detection on FACET, disaggregated by perceived group.

Detections are matched to ground-truth people once, over all people of each image, by
pycocotools' own ``COCOeval.evaluateImg`` (greedy by score, at most 100 detections per
image, IoU thresholds 0.50:0.05:0.95, crowd people ignored, each person matched at most once).
The per-person match flags then give, for any set of people, AR50, AR75 and mAR (mean over
the ten thresholds) as recall over those people.

Rows, intervals and tests are those of :mod:`facet_eval.disaggregate` (people of one image
resampled together).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from facet_eval.data import MAX_DETS, FacetData
from facet_eval.disaggregate import CONFIDENCE, N_BOOT, GroupedEvaluator, rows_from_values
from facet_eval.tasks import RunOptions, Say, Task, register_task
from t2ibias.core.errors import UserError
from t2ibias.core.progress import Bars, done_of_total, quiet

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
#: FACET scores at most 100 detections per image (Gustafson et al., ICCV 2023); runners keep as many.
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


# ---------------------------------------------------------------- rows
class DetectionEvaluator(GroupedEvaluator):
    """Person detection with detectron2's evaluator protocol: :meth:`process` collects COCO results
    (validated, as :func:`load_predictions` gives them) of any set of images, :meth:`evaluate`
    matches all of them to the people once and returns the rows of :func:`rows_from_matches`."""

    task = "detection"

    def reset(self) -> None:
        self._predictions: list[dict[str, Any]] = []

    def process(self, predictions: Iterable[dict[str, Any]]) -> None:
        self._predictions.extend(predictions)

    def match(self, predictions: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """``(matched, evaluated)`` of :func:`match_people`."""
        return match_people(self.data, predictions)

    def evaluate(self) -> list[dict[str, Any]]:
        matched, evaluated = self.match(self._predictions)
        return rows_from_matches(self.data, matched, evaluated, self.intersections, self.n_boot, self.seed,
                                 self.per_class, task=self.task, confidence=self.confidence)


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
    evaluator = DetectionEvaluator(data, intersections, n_boot, seed, per_class, confidence)
    evaluator.process(predictions)
    return evaluator.evaluate()


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


# ---------------------------------------------------------------- task
class DetectionTask(Task):
    """``facet-eval detect``: COCO results of person boxes from a file or a person runner."""

    id = "detection"
    command = "detect"
    main_metrics = ("mAR",)
    output = "boxes"

    def evaluator(self, data: FacetData, **options: Any) -> DetectionEvaluator:
        return DetectionEvaluator(data, **options)

    def prepare(self, data: FacetData, opts: RunOptions, intersections: list[tuple[str, str]]) -> dict[str, Any]:
        if (opts.model is None) == (opts.predictions is None):
            raise UserError(f"{self.command}: pass exactly one of --model ID or --predictions FILE")
        return {"task": self.id, "facet_root": str(data.root.resolve())}

    def load_predictions(self, path: Path, data: FacetData) -> list[dict[str, Any]]:
        return load_predictions(path, data)

    def predict(self, data: FacetData, opts: RunOptions, say: Say,
                bars: Bars = quiet) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from facet_eval.runners import predict_people

        if opts.batch_size < 1:
            raise UserError(f"--batch-size: {opts.batch_size} is not a positive number (use e.g. 16)")
        info: dict[str, Any] = {}
        with bars(self.command) as bar:
            preds = predict_people(data, str(opts.model), task=self.id, device=opts.device, batch_size=opts.batch_size,
                                   person_class=opts.person_class, progress=done_of_total(bar), info=info)
        return preds, {"model": {"name": info.get("name", opts.model), "parameters": info.get("parameters", {})},
                       "device": info.get("device"), "software": info.get("software"),
                       "n_images": info.get("n_images"), "batch_size": opts.batch_size,
                       "predictions": "predictions.json"}

    def write_predictions(self, predictions: list[dict[str, Any]], path: Path) -> Path:
        from facet_eval.runners import write_predictions

        return write_predictions(predictions, path)

    def evaluate(self, data: FacetData, predictions: list[dict[str, Any]], intersections: list[tuple[str, str]],
                 seed: int) -> list[dict[str, Any]]:
        return evaluate_detection(data, predictions, intersections=intersections, seed=seed)


register_task(DetectionTask())
