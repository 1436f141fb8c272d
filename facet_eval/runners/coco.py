"""A runner's person detections of one image as COCO results, and the COCO RLE mask encoder.

The results are exactly what :func:`facet_eval.detection.load_predictions` and
:func:`facet_eval.segmentation.load_segm_predictions` read: the ``MAX_DETS`` best-scoring
detections of the image, boxes clipped to the image as ``[x, y, w, h]``, and for segmentation an
RLE mask at the image's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facet_eval.data import MAX_DETS

__all__ = ["MAX_DETS", "ImageDetections", "coco_results", "encode_mask", "encode_masks"]


@dataclass
class ImageDetections:
    """One image's person detections: ``boxes`` (n, 4) xyxy pixels, ``scores`` (n,), and for
    segmentation ``masks`` (n, H, W) booleans at the image's size."""

    boxes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray | None = None


def coco_results(image_id: int, dets: ImageDetections, h: int, w: int, masks: bool) -> list[dict[str, Any]]:
    """COCO results of one image: top MAX_DETS by score, boxes clipped to the image as xywh, and
    with ``masks`` an RLE ``segmentation`` per item."""
    scores = np.asarray(dets.scores, dtype=np.float64).reshape(-1)
    boxes = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 4)
    keep = np.flatnonzero(np.isfinite(scores) & np.isfinite(boxes).all(axis=1))
    keep = keep[np.argsort(-scores[keep], kind="stable")][:MAX_DETS]
    x1 = np.clip(boxes[keep, 0], 0, w)
    y1 = np.clip(boxes[keep, 1], 0, h)
    x2 = np.clip(boxes[keep, 2], 0, w)
    y2 = np.clip(boxes[keep, 3], 0, h)
    x1, y1 = np.minimum(x1, x2), np.minimum(y1, y2)
    rles: list[dict[str, Any]] | None = None
    if masks:
        if dets.masks is None:
            raise RuntimeError("segmentation runner returned no masks")
        rles = encode_masks(dets.masks[keep], h, w)
    out = []
    for k in range(len(keep)):
        bx, by = round(float(x1[k]), 2), round(float(y1[k]), 2)
        item: dict[str, Any] = {
            "image_id": int(image_id), "category_id": 1,
            "bbox": [bx, by, max(0.0, round(float(x2[k]) - bx, 2)), max(0.0, round(float(y2[k]) - by, 2))],
            "score": max(0.0, float(scores[keep[k]])),
        }
        if rles is not None:
            item["segmentation"] = rles[k]
        out.append(item)
    return out


def encode_masks(masks: np.ndarray, h: int, w: int) -> list[dict[str, Any]]:
    """:func:`encode_mask` of each of ``masks`` (n, h, w)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[1:] != (h, w):
        raise RuntimeError(f"masks of shape {masks.shape[1:]} for an image of {h}x{w}")
    return [encode_mask(m) for m in masks]


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE (``counts`` a str) of a boolean (H, W) mask, equal to ``pycocotools.mask.encode``.

    Only the columns the mask touches are put in column-major order (the rest are whole runs of
    background), which avoids a Fortran-order copy of the full image per mask: on FACET's
    ~1500x2250 images, 100 masks per image, that copy would dominate the run time."""
    from pycocotools import mask as mask_utils

    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    cols = np.flatnonzero(mask.any(axis=0))
    if len(cols) == 0:
        runs = [h * w]
    else:
        x0, x1 = int(cols[0]), int(cols[-1]) + 1
        flat = np.ascontiguousarray(mask[:, x0:x1].T).ravel()  # the strip in column-major order
        bounds = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]))
        runs = np.diff(bounds).tolist()
        if flat[0]:
            runs.insert(0, 0)  # RLE starts with a (possibly empty) background run
        runs[0] += x0 * h
        tail = (w - x1) * h
        if tail and flat[-1]:
            runs.append(tail)
        elif tail:
            runs[-1] += tail
    rle = mask_utils.frPyObjects({"size": [h, w], "counts": runs}, h, w)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}
