"""Run a person detector or segmenter over FACET images and return COCO results lists.

The lists are exactly what :func:`facet_eval.detection.load_predictions` and
:func:`facet_eval.segmentation.load_segm_predictions` read, so a model run and a predictions
file from elsewhere are scored by the same code. FACET's detection protocol (Gustafson et al.,
ICCV 2023) scores class-agnostic person boxes with no confidence threshold and at most 100
detections per image, so every runner keeps the person class only, sets the lowest threshold its
library allows and keeps the 100 best-scoring person detections of each image.

A model id picks its runner by prefix (:data:`RUNNERS`, the longest registered prefix wins):

- ``torchvision:<architecture>[=PATH]``: :mod:`facet_eval.runners.torchvision`;
- anything else (a local ``.pt``/``.yaml`` path or an ultralytics release name):
  :mod:`facet_eval.runners.ultralytics`.

Images are decoded and read ahead by :mod:`facet_eval.runners.images`, so memory stays bounded
by the batch size; a runner gets the images of a batch one size at a time (:func:`run_by_size`),
so predictions do not depend on the batch size; boxes and masks are in original image pixels
(:mod:`facet_eval.runners.coco`).
The open_clip classifier of the classification task is :mod:`facet_eval.runners.clip`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import closing
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facet_eval.data import FacetData
from t2ibias.core.errors import UserError
from t2ibias.core.registry import Registry

if TYPE_CHECKING:
    from facet_eval.runners.coco import ImageDetections

Progress = Callable[[int, int], None]
#: A loaded model: RGB arrays (H, W, 3) of a batch of images → their person detections.
Runner = Callable[[list[np.ndarray]], list["ImageDetections"]]
#: ``open_model(model, task, masks, device, person_class)`` → the runner and what run.json records
#: about it (``name``, ``parameters``, ``device``, ``software``). ``masks``: the task needs masks.
OpenModel = Callable[[str, str, bool, str, "int | None"], "tuple[Runner, dict[str, Any]]"]

#: Runner modules by model-id prefix; each module's ``open_model`` is imported when first used.
RUNNERS: Registry[OpenModel] = Registry("model runner")
RUNNERS.register("torchvision:", lambda: import_module("facet_eval.runners.torchvision").open_model)
RUNNERS.register("", lambda: import_module("facet_eval.runners.ultralytics").open_model)


def runner_for(model: str) -> OpenModel:
    """The ``open_model`` of the runner whose prefix is the longest one ``model`` starts with."""
    prefix = max((p for p in RUNNERS.names() if model.startswith(p)), key=len)
    return RUNNERS.get(prefix)


def person_tasks() -> dict[str, bool]:
    """The FACET tasks a person runner serves, each with whether it needs masks."""
    from facet_eval.tasks import all_tasks

    return {t.id: t.output == "masks" for t in all_tasks() if t.output in ("boxes", "masks")}


def predict_people(
    data: FacetData,
    model: str,
    task: str = "detection",
    device: str = "auto",
    batch_size: int = 16,
    person_class: int | None = None,
    progress: Progress | None = None,
    info: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run ``model`` on the images of ``data`` and return its person detections as a COCO
    results list ``[{image_id, category_id: 1, bbox: [x, y, w, h], score[, segmentation]}]``.

    ``task`` "detection" gives boxes; "segmentation" gives boxes and RLE masks (``counts`` a str,
    ``size`` [height, width]) and, when the release has person masks, runs only on the images
    that have one (no other image can change a segmentation score). ``person_class`` is the
    model's class index for people, needed only when the model does not name a class "person"
    (ultralytics) or is not a COCO-shaped head (torchvision). ``progress(done, total)`` is called
    after each batch of images. Order: image id, then score descending.

    When ``info`` is a dict it is filled with what a results file should record about the run:
    ``name`` (the model id), ``parameters`` (library, weights and their sha256 when local, person
    class, thresholds), ``device``, ``software`` (library versions) and ``n_images``.
    """
    from facet_eval.runners.coco import coco_results
    from facet_eval.runners.images import read_image_array
    from t2ibias.core.prefetch import prefetch_batches

    tasks = person_tasks()
    if task not in tasks:
        raise UserError(f"task {task!r}: unknown task (use {' or '.join(tasks)})")
    masks = tasks[task]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch size {batch_size!r}: must be a positive integer (e.g. 16)")
    if person_class is not None and (isinstance(person_class, bool) or not isinstance(person_class, int) or person_class < 0):
        raise UserError(f"person class {person_class!r}: must be a class index >= 0 (see the model's class names)")
    paths = data.image_paths()  # a missing image is reported before any model is loaded
    runner, run_info = _open_model(model, task, masks, device, person_class)
    ids = _images_to_run(data, sorted(paths), masks)
    if info is not None:
        info.update(run_info, n_images=len(ids))
    sizes = data.image_sizes()
    workers = max(1, min(4, os.cpu_count() or 1, batch_size))
    out: list[dict[str, Any]] = []
    done = 0
    batches = prefetch_batches(ids, lambda i: read_image_array(paths[i], sizes.get(i)), batch_size, workers,
                               thread_name="facet-decode")
    with closing(batches):
        for k, arrays in enumerate(batches):
            batch_ids = ids[k * batch_size:(k + 1) * batch_size]
            for img_id, arr, dets in zip(batch_ids, arrays, run_by_size(runner, arrays)):
                out.extend(coco_results(img_id, dets, arr.shape[0], arr.shape[1], masks))
            done += len(batch_ids)
            if progress is not None:
                progress(done, len(ids))
    return out


def run_by_size(runner: Runner, arrays: list[np.ndarray]) -> list[ImageDetections]:
    """``runner`` over ``arrays``, called once per image size among them (in order of first
    appearance), its answers put back in the order of ``arrays``. Models pad the images of a
    batch to one shape (ultralytics letterboxes a mixed-size batch to a square, torchvision pads
    to the largest image), so an image batched with images of another size would get other
    detections than alone: grouping by size keeps predictions independent of the batch size."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, arr in enumerate(arrays):
        groups.setdefault(arr.shape, []).append(k)
    found: dict[int, ImageDetections] = {}
    for members in groups.values():
        found.update(zip(members, runner([arrays[k] for k in members])))
    return [found[k] for k in range(len(arrays))]


def _images_to_run(data: FacetData, ids: list[int], masks: bool) -> list[int]:
    """All images, or for a masks task on a release with person masks, only the images that have one."""
    if not (masks and data.masks):
        return ids
    pid_image = dict(zip(data.people["person_id"].astype(int), data.people["image_id"].astype(int)))
    with_masks = {pid_image[p] for p in data.masks if p in pid_image}
    return [i for i in ids if i in with_masks]


def _open_model(model: str, task: str, masks: bool, device: str, person_class: int | None) -> tuple[Runner, dict[str, Any]]:
    if not isinstance(model, str) or not model.strip():
        raise UserError("model: empty id (pass a .pt path, an ultralytics release name such as yolo11x.pt, "
                        "or torchvision:fasterrcnn_resnet50_fpn)")
    from t2ibias.core.device import resolve_device

    dev = resolve_device(device)
    return runner_for(model)(model, task, masks, dev, person_class)


def write_predictions(preds: list[dict[str, Any]], path: str | Path) -> Path:
    """Write ``preds`` as a COCO results JSON list, atomically (readers never see half a file)."""
    from t2ibias.core.files import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(preds, separators=(",", ":"), allow_nan=False) + "\n")
    return path


def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
