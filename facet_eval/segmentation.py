"""Class-agnostic person instance segmentation on FACET, disaggregated by perceived group.

FACET scores segmentation by mask IoU against verified person masks only (Gustafson et al.,
ICCV 2023): ``coco_masks.json`` is not exhaustive, so only people who have a person mask are
evaluated and everybody else is left out of every denominator. Predicted masks (COCO results
with an RLE ``segmentation``) are matched to those masks once, over all of an image's masked
people, by pycocotools ``COCOeval`` with ``iouType="segm"`` and the detection settings
(class-agnostic, at most 100 detections per image, IoU 0.50:0.05:0.95). Rows are those of
:mod:`facet_eval.detection` with ``task`` = "segmentation".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from facet_eval.data import FacetData
from facet_eval.detection import DetectionEvaluator, DetectionTask, match_annotations, read_results_list
from facet_eval.disaggregate import CONFIDENCE, N_BOOT
from facet_eval.tasks import RunOptions, register_task
from t2ibias.core.errors import UserError

RLE_HINT = "write an RLE {'size': [height, width], 'counts': ...} as pycocotools.mask.encode gives"


def _decode_counts(s: str) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString), or None if malformed."""
    cnts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None
            c = ord(s[p]) - 48
            if c < 0 or c > 63:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x)
    return cnts


def check_rle(rle: Any, where: str) -> dict[str, Any]:
    """Validate an RLE dict and return it in compressed form (``counts`` a str)."""
    from pycocotools import mask as mask_utils

    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise UserError(f"{where}: field segmentation: not an RLE dict with size and counts ({RLE_HINT})")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise UserError(f"{where}: field segmentation: size must be [height, width] integers, got {size!r} ({RLE_HINT})")
    h, w = size
    counts = rle["counts"]
    if isinstance(counts, (bytes, bytearray)):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            counts = None
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise UserError(f"{where}: field segmentation: counts must be non-negative integers ({RLE_HINT})")
        runs = counts
    elif isinstance(counts, str):
        runs = _decode_counts(counts)
        if runs is None or any(v < 0 for v in runs):
            raise UserError(f"{where}: field segmentation: counts is not a valid compressed RLE string ({RLE_HINT})")
    else:
        raise UserError(f"{where}: field segmentation: counts must be a string or a list of integers ({RLE_HINT})")
    if sum(runs) != h * w:
        raise UserError(f"{where}: field segmentation: run lengths cover {sum(runs)} pixels, size {h}x{w} needs "
                        f"{h * w} ({RLE_HINT})")
    if isinstance(counts, list):
        out = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        return {"size": [h, w], "counts": out["counts"].decode("ascii")}
    return {"size": [h, w], "counts": counts}


def load_segm_predictions(path: str | Path, data: FacetData) -> list[dict[str, Any]]:
    """Read a COCO results list ``[{image_id, segmentation: RLE, score}, ...]`` and validate it."""
    path = Path(path)
    sizes = data.image_sizes()
    out = []
    for where, d in read_results_list(path, ("image_id", "segmentation", "score")):
        img = d["image_id"]
        if isinstance(img, bool) or not isinstance(img, int) or img not in sizes:
            raise UserError(f"{where}: field image_id: {img!r} is not an image of coco_boxes.json (use its image ids)")
        rle = check_rle(d["segmentation"], where)
        if sizes[img] is not None and tuple(rle["size"]) != sizes[img]:
            raise UserError(f"{where}: field segmentation: size {rle['size']} differs from image {img}'s "
                            f"[height, width] {list(sizes[img])} (encode masks at the image size)")
        score = d["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or score < 0:
            raise UserError(f"{where}: field score: must be a finite number >= 0, got {score!r} (fix the scores)")
        out.append({"image_id": img, "segmentation": rle, "score": float(score)})
    return out


def match_people_segm(data: FacetData, predictions: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``(matched, evaluated)`` as :func:`facet_eval.detection.match_people`, by mask IoU;
    ``evaluated[i]`` is True only for non-crowd people with a person mask."""
    from pycocotools import mask as mask_utils

    people = data.people
    n = len(people)
    sizes = data.image_sizes()
    evaluated = np.zeros(n, dtype=bool)
    gts = []
    img_size: dict[int, tuple[int, int]] = {}
    for k, (pid, im, crowd) in enumerate(zip(people["person_id"], people["image_id"], people["iscrowd"])):
        seg = data.masks.get(int(pid))
        if seg is None:
            continue
        rle = check_rle(seg, f"coco_masks.json: person {int(pid)}")
        img_size.setdefault(int(im), tuple(rle["size"]))  # type: ignore[arg-type]
        evaluated[k] = int(crowd) == 0
        gts.append({"id": k + 1, "image_id": int(im), "segmentation": rle,
                    "area": float(mask_utils.area(rle)), "iscrowd": int(crowd), "category_id": 1})
    image_ids = sorted(sizes)
    images = []
    for i in image_ids:
        h, w = sizes[i] or img_size.get(i, (0, 0))
        images.append({"id": i, "height": h, "width": w})
    for g in gts:
        size = sizes[g["image_id"]]
        if size is not None and tuple(g["segmentation"]["size"]) != size:
            raise UserError(f"coco_masks.json: person {people['person_id'].iloc[g['id'] - 1]}: mask size "
                            f"{g['segmentation']['size']} differs from its image's [height, width] {list(size)} "
                            "(use the release's files)")
    dts = [
        {"id": k + 1, "image_id": d["image_id"], "segmentation": d["segmentation"],
         "area": float(mask_utils.area(d["segmentation"])), "score": d["score"], "iscrowd": 0, "category_id": 1}
        for k, d in enumerate(predictions)
    ]
    for d in dts:
        want = img_size.get(d["image_id"])
        if want is not None and tuple(d["segmentation"]["size"]) != want:
            raise UserError(f"predictions: detection {d['id'] - 1}: mask size {d['segmentation']['size']} differs "
                            f"from the person masks of image {d['image_id']} {list(want)} (encode at the image size)")
    matched = match_annotations(images, gts, dts, n, "segm")
    matched[~evaluated] = False
    return matched, evaluated


def evaluate_segmentation(
    data: FacetData,
    predictions: list[dict[str, Any]],
    intersections: Iterable[tuple[str, str]] = (),
    n_boot: int = N_BOOT,
    seed: int = 0,
    per_class: bool = True,
    confidence: float = CONFIDENCE,
) -> list[dict[str, Any]]:
    """Metric rows (as detection's, ``task`` = "segmentation") over people with a person mask;
    intervals resample images, so the masked people of one image stay together."""
    evaluator = SegmentationEvaluator(data, intersections, n_boot, seed, per_class, confidence)
    evaluator.process(predictions)
    return evaluator.evaluate()


class SegmentationEvaluator(DetectionEvaluator):
    """Person segmentation with detectron2's evaluator protocol: as :class:`DetectionEvaluator`,
    matched by mask IoU over the people who have a person mask (:func:`match_people_segm`)."""

    task = "segmentation"

    def match(self, predictions: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        return match_people_segm(self.data, predictions)


class SegmentationTask(DetectionTask):
    """``facet-eval segment``: COCO results with RLE person masks from a file or a person runner."""

    id = "segmentation"
    command = "segment"
    output = "masks"

    def evaluator(self, data: FacetData, **options: Any) -> SegmentationEvaluator:
        return SegmentationEvaluator(data, **options)

    def prepare(self, data: FacetData, opts: RunOptions, intersections: list[tuple[str, str]]) -> dict[str, Any]:
        if not data.masks:
            raise UserError(f"{opts.facet_root / 'annotations' / 'coco_masks.json'}: no person masks found "
                            "(segmentation needs the release's coco_masks.json)")
        return super().prepare(data, opts, intersections)

    def load_predictions(self, path: Path, data: FacetData) -> list[dict[str, Any]]:
        return load_segm_predictions(path, data)

    def evaluate(self, data: FacetData, predictions: list[dict[str, Any]], intersections: list[tuple[str, str]],
                 seed: int) -> list[dict[str, Any]]:
        return evaluate_segmentation(data, predictions, intersections=intersections, seed=seed)


register_task(SegmentationTask())
