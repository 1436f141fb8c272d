"""Run a person detector or segmenter over FACET images and return COCO results lists.

The lists are exactly what :func:`facet_eval.detection.load_predictions` and
:func:`facet_eval.segmentation.load_segm_predictions` read, so a model run and a predictions
file from elsewhere are scored by the same code. FACET's detection protocol (Gustafson et al.,
ICCV 2023) scores class-agnostic person boxes with no confidence threshold and at most 100
detections per image, so every runner keeps the person class only, sets the lowest threshold its
library allows and keeps the 100 best-scoring person detections of each image.

Two kinds of model id:

- ultralytics: a local ``.pt``/``.yaml`` path, or a release name such as ``yolo11x.pt`` or
  ``yolo11x-seg.pt`` (ultralytics downloads it when there is network).
- torchvision: ``torchvision:<architecture>`` with torchvision's COCO weights (downloaded into the
  torch hub cache when there is network), or ``torchvision:<architecture>=PATH`` with a local
  ``state_dict`` file (``torch.save`` or ``.safetensors``, read without running pickled code).
  Architectures: :data:`TORCHVISION_ARCHITECTURES`.

What "person detection" means per library: ultralytics keeps a box when person is its best class
(its own ``predict`` rule: confidence threshold 0, NMS at its default IoU 0.7); torchvision
scores every proposal for every class with no threshold, runs its per-class NMS, and the 100
best person boxes are kept (the 100 cap counts person boxes only, not boxes of other classes).

Images are decoded as stored (no EXIF rotation unless that is what makes them match the size in
``coco_boxes.json``), in batches read ahead on worker threads, so memory stays bounded by the
batch size; boxes and masks are in original image pixels.
"""

from __future__ import annotations

import difflib
import json
import os
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facet_eval.data import FacetData
from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import file_sha256
from t2ibias.core.safe_load import first_line, load_weights_file, load_yolo, refuse_code, weights_only_loads

MAX_DETS = 100
TASKS = ("detection", "segmentation")
TORCHVISION_PREFIX = "torchvision:"
#: architecture → (builder in torchvision.models.detection, COCO weights enum, has a mask head)
TORCHVISION_ARCHITECTURES: dict[str, tuple[str, str, bool]] = {
    "fasterrcnn_resnet50_fpn": ("fasterrcnn_resnet50_fpn", "FasterRCNN_ResNet50_FPN_Weights", False),
    "fasterrcnn_resnet50_fpn_v2": ("fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights", False),
    "maskrcnn_resnet50_fpn": ("maskrcnn_resnet50_fpn", "MaskRCNN_ResNet50_FPN_Weights", True),
    "maskrcnn_resnet50_fpn_v2": ("maskrcnn_resnet50_fpn_v2", "MaskRCNN_ResNet50_FPN_V2_Weights", True),
}
#: torchvision's COCO detection models number classes 1..90 with 0 the background; person is 1.
TORCHVISION_COCO_PERSON = 1
#: Mask R-CNN mask probabilities at or above this are foreground (as Detectron2 pastes masks).
MASK_THRESHOLD = 0.5
#: ultralytics model tasks whose results carry boxes, by FACET task.
YOLO_TASKS = {"detection": ("detect", "segment", "pose"), "segmentation": ("segment",)}

Progress = Callable[[int, int], None]


@dataclass
class _ImageDetections:
    """One image's person detections: ``boxes`` (n, 4) xyxy pixels, ``scores`` (n,), and for
    segmentation ``masks`` (n, H, W) booleans at the image's size."""

    boxes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray | None = None


Runner = Callable[[list[np.ndarray]], list[_ImageDetections]]


# ---------------------------------------------------------------- public API
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
    if task not in TASKS:
        raise UserError(f"task {task!r}: unknown task (use detection or segmentation)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch size {batch_size!r}: must be a positive integer (e.g. 16)")
    if person_class is not None and (isinstance(person_class, bool) or not isinstance(person_class, int) or person_class < 0):
        raise UserError(f"person class {person_class!r}: must be a class index >= 0 (see the model's class names)")
    paths = data.image_paths()  # a missing image is reported before any model is loaded
    runner, run_info = _open_model(model, task, device, person_class)
    ids = sorted(paths)
    if task == "segmentation" and data.masks:
        pid_image = dict(zip(data.people["person_id"].astype(int), data.people["image_id"].astype(int)))
        with_masks = {pid_image[p] for p in data.masks if p in pid_image}
        ids = [i for i in ids if i in with_masks]
    if info is not None:
        info.update(run_info, n_images=len(ids))
    sizes = _annotated_sizes(data)
    out: list[dict[str, Any]] = []
    done = 0
    for batch_ids, arrays in _read_batches(ids, paths, sizes, batch_size):
        for img_id, arr, dets in zip(batch_ids, arrays, runner(arrays)):
            out.extend(_coco_results(img_id, dets, arr.shape[0], arr.shape[1], task))
        done += len(batch_ids)
        if progress is not None:
            progress(done, len(ids))
    return out


def write_predictions(preds: list[dict[str, Any]], path: str | Path) -> Path:
    """Write ``preds`` as a COCO results JSON list, atomically (readers never see half a file)."""
    from t2ibias.core.files import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(preds, separators=(",", ":"), allow_nan=False) + "\n")
    return path


def parse_torchvision_id(model: str) -> tuple[str, Path | None]:
    """``"torchvision:NAME[=PATH]"`` → ``(NAME, PATH or None)``; unknown names raise a UserError."""
    spec = model[len(TORCHVISION_PREFIX):]
    name, sep, path = spec.partition("=")
    name = name.strip()
    if name not in TORCHVISION_ARCHITECTURES:
        close = difflib.get_close_matches(name, list(TORCHVISION_ARCHITECTURES), n=1)
        hint = f"did you mean {TORCHVISION_PREFIX}{close[0]}? " if close else ""
        raise UserError(f"model {model}: unknown torchvision architecture {name!r} ({hint}known: "
                        f"{', '.join(TORCHVISION_ARCHITECTURES)})")
    if sep and not path.strip():
        raise UserError(f"model {model}: empty weights path after '=' (write {TORCHVISION_PREFIX}{name}=PATH, "
                        "or drop '=' for torchvision's COCO weights)")
    return name, (Path(path.strip()).expanduser() if sep else None)


# ---------------------------------------------------------------- images
def _annotated_sizes(data: FacetData) -> dict[int, tuple[int, int] | None]:
    out: dict[int, tuple[int, int] | None] = {}
    for i, w, h in zip(data.images["id"], data.images["width"], data.images["height"]):
        try:
            hw = (int(h), int(w))
        except (TypeError, ValueError):
            hw = None
        out[int(i)] = hw
    return out


def _read_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """RGB uint8 (H, W, 3) of ``path`` as stored; EXIF-rotated only when that gives the annotated size."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()
            if size is not None and (im.height, im.width) != size:
                turned = ImageOps.exif_transpose(im)
                if (turned.height, turned.width) == size:
                    im = turned
            if size is not None and (im.height, im.width) != size:
                raise UserError(f"{path}: image is {im.width}x{im.height} but coco_boxes.json says {size[1]}x{size[0]} "
                                "(use the release's images, not resized copies)")
            return np.array(im.convert("RGB"))  # writable: torch tensors share it
    except UserError:
        raise
    except Exception as exc:  # PIL's errors, and ImportError once ultralytics has patched Image.open
        raise UserError(f"{path}: cannot read the image: {_first_line(exc)} (re-download the FACET image archive)") from None


def _read_batches(ids: list[int], paths: dict[int, Path], sizes: dict[int, tuple[int, int] | None],
                  batch_size: int) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """Batches of (ids, RGB arrays) in ``ids`` order, the next batch decoded while this one runs."""
    batches = [ids[k:k + batch_size] for k in range(0, len(ids), batch_size)]
    if not batches:
        return
    workers = max(1, min(4, os.cpu_count() or 1, batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(b: list[int]):
            return [pool.submit(_read_image, paths[i], sizes.get(i)) for i in b]

        pending = submit(batches[0])
        for k, b in enumerate(batches):
            futures = pending
            if k + 1 < len(batches):
                pending = submit(batches[k + 1])
            yield b, [f.result() for f in futures]


# ---------------------------------------------------------------- results
def _coco_results(image_id: int, dets: _ImageDetections, h: int, w: int, task: str) -> list[dict[str, Any]]:
    """COCO results of one image: top MAX_DETS by score, boxes clipped to the image as xywh."""
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
    if task == "segmentation":
        if dets.masks is None:
            raise RuntimeError("segmentation runner returned no masks")
        rles = _encode_masks(dets.masks[keep], h, w)
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


def _encode_masks(masks: np.ndarray, h: int, w: int) -> list[dict[str, Any]]:
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


# ---------------------------------------------------------------- models
def _open_model(model: str, task: str, device: str, person_class: int | None) -> tuple[Runner, dict[str, Any]]:
    if not isinstance(model, str) or not model.strip():
        raise UserError("model: empty id (pass a .pt path, an ultralytics release name such as yolo11x.pt, "
                        f"or {TORCHVISION_PREFIX}fasterrcnn_resnet50_fpn)")
    from t2ibias.core.device import resolve_device

    dev = resolve_device(device)
    if model.startswith(TORCHVISION_PREFIX):
        return _open_torchvision(model, task, dev, person_class)
    return _open_ultralytics(model, task, dev, person_class)


def _first_line(exc: BaseException) -> str:
    return first_line(exc)


def _open_ultralytics(model: str, task: str, device: str, person_class: int | None) -> tuple[Runner, dict[str, Any]]:
    path = Path(model).expanduser()
    local = path.is_file()
    if not local and (path.exists() or "/" in model or os.sep in model):
        raise UserError(f"model {model}: no such model file (pass the path of an ultralytics .pt/.yaml file, "
                        "or a release name such as yolo11x.pt)")
    if local:
        os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        yolo = load_yolo(str(path) if local else model, f"model {model}", definitions=True)
    except UserError:
        raise
    except Exception as exc:  # the loader's errors vary by cause: no network, bad file, unknown name
        fix = ("pass an ultralytics .pt checkpoint or model .yaml" if local
               else "download it where there is network and pass the local path")
        raise UserError(f"model {model}: cannot load the ultralytics model: {_first_line(exc)} ({fix})") from None
    if yolo.task not in YOLO_TASKS[task]:
        raise UserError(f"model {model}: an ultralytics '{yolo.task}' model cannot do FACET {task} "
                        f"(use a {' or '.join(YOLO_TASKS[task])} model, e.g. yolo11x{'-seg' if task == 'segmentation' else ''}.pt)")
    names = {int(k): str(v) for k, v in dict(yolo.names).items()}
    cls = _ultralytics_person(model, names, person_class)
    udev = "cpu" if device == "cpu" else device.replace("cuda:", "") if device.startswith("cuda:") else "0"

    def run(arrays: list[np.ndarray]) -> list[_ImageDetections]:
        results = yolo.predict(
            [a[:, :, ::-1] for a in arrays],  # ultralytics reads numpy images as BGR
            conf=0.0, classes=[cls], max_det=MAX_DETS, retina_masks=task == "segmentation",
            batch=len(arrays), device=udev, verbose=False,
        )
        out = []
        for a, r in zip(arrays, results):
            boxes = r.boxes.xyxy.float().cpu().numpy() if r.boxes is not None else np.zeros((0, 4))
            scores = r.boxes.conf.float().cpu().numpy() if r.boxes is not None else np.zeros(0)
            masks = None
            if task == "segmentation":
                if r.masks is None:
                    masks = np.zeros((0, *a.shape[:2]), dtype=bool)
                else:
                    masks = r.masks.data.cpu().numpy() > 0
            out.append(_ImageDetections(boxes, scores, masks))
        return out

    import ultralytics

    weights_file = Path(getattr(yolo, "ckpt_path", None) or (path if local else ""))
    params = {"library": "ultralytics", "weights": str(path.resolve()) if local else model,
              "weights_sha256": file_sha256(weights_file) if weights_file.is_file() else None,
              "model_task": yolo.task, "person_class": cls, "person_class_name": names[cls],
              "conf": 0.0, "max_det": MAX_DETS, "imgsz": yolo.overrides.get("imgsz"),
              "retina_masks": task == "segmentation"}
    return run, {"name": model, "parameters": params, "device": device,
                 "software": {"torch": _version("torch"), "ultralytics": ultralytics.__version__}}


def _ultralytics_person(model: str, names: dict[int, str], person_class: int | None) -> int:
    if person_class is not None:
        if person_class not in names:
            raise UserError(f"model {model}: person class {person_class} is not one of its {len(names)} classes "
                            f"(pick an index 0..{len(names) - 1})")
        return person_class
    found = [k for k, v in sorted(names.items()) if v.strip().lower() == "person"]
    if not found:
        sample = ", ".join(f"{k}={v}" for k, v in list(sorted(names.items()))[:5])
        raise UserError(f"model {model}: no class is named 'person' (classes {sample}, ...; "
                        "pass the index of its person class as person_class / --person-class)")
    return found[0]


def _open_torchvision(model: str, task: str, device: str, person_class: int | None) -> tuple[Runner, dict[str, Any]]:
    import torch
    import torchvision.models.detection as tvd

    name, weights_path = parse_torchvision_id(model)
    builder_name, weights_enum, has_masks = TORCHVISION_ARCHITECTURES[name]
    if task == "segmentation" and not has_masks:
        raise UserError(f"model {model}: {name} has no mask head (use {TORCHVISION_PREFIX}maskrcnn_resnet50_fpn "
                        "for segmentation)")
    builder = getattr(tvd, builder_name)
    # No confidence threshold; no cap before the person filter (the cap applies to person boxes only).
    opts = {"box_score_thresh": 0.0, "box_detections_per_img": 1_000_000}
    if weights_path is None:
        weights = getattr(tvd, weights_enum).COCO_V1
        try:
            with weights_only_loads():  # torch's hub cache is otherwise read with full unpickling
                net = builder(weights=weights, **opts)
        except pickle.UnpicklingError:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            refuse_code(cached, f"model {model}")
            raise UserError(f"model {model}: {cached} is not torchvision's {name} COCO checkpoint (delete it; "
                            "torchvision downloads it again where there is network)") from None
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a truncated download a RuntimeError
            raise UserError(f"model {model}: cannot load torchvision's COCO weights: {_first_line(exc)} (download them "
                            f"where there is network, then pass {TORCHVISION_PREFIX}{name}=PATH to the file "
                            f"or copy it into {torch.hub.get_dir()}/checkpoints/)") from None
        num_classes = len(weights.meta["categories"])
    else:
        state = _load_state_dict(model, weights_path)
        num_classes = _num_classes(model, state)
        net = builder(weights=None, weights_backbone=None, num_classes=num_classes, **opts)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise UserError(f"model {model}: {weights_path} does not fit torchvision's {name}: {_first_line(exc)} "
                            f"(save {name}(...).state_dict() of the same architecture)") from None
    label = _torchvision_person(model, num_classes, person_class)
    roi = net.roi_heads
    if task == "detection" and roi.has_mask():
        roi.mask_roi_pool = roi.mask_head = roi.mask_predictor = None  # boxes only: skip the mask branch
    original = roi.postprocess_detections

    def person_only(class_logits, box_regression, proposals, image_shapes):
        boxes, scores, labels = original(class_logits, box_regression, proposals, image_shapes)
        for k in range(len(boxes)):
            keep = torch.nonzero(labels[k] == label).flatten()
            keep = keep[torch.argsort(scores[k][keep], descending=True, stable=True)][:MAX_DETS]
            boxes[k], scores[k], labels[k] = boxes[k][keep], scores[k][keep], labels[k][keep]
        return boxes, scores, labels

    roi.postprocess_detections = person_only  # masks are then pasted for kept person boxes only
    net.eval().to(device)

    def run(arrays: list[np.ndarray]) -> list[_ImageDetections]:
        with torch.inference_mode():
            batch = [torch.from_numpy(a).to(device).permute(2, 0, 1).float().div_(255) for a in arrays]
            outputs = net(batch)
        out = []
        for a, o in zip(arrays, outputs):
            masks = None
            if task == "segmentation":
                masks = (o["masks"][:, 0] >= MASK_THRESHOLD).cpu().numpy() if len(o["scores"]) else \
                    np.zeros((0, *a.shape[:2]), dtype=bool)
            out.append(_ImageDetections(o["boxes"].float().cpu().numpy(), o["scores"].float().cpu().numpy(), masks))
        return out

    params: dict[str, Any] = {
        "library": "torchvision", "architecture": name,
        "weights": f"{weights_enum}.COCO_V1" if weights_path is None else str(weights_path.resolve()),
        "weights_sha256": None if weights_path is None else file_sha256(weights_path),
        "num_classes": num_classes, "person_label": label, "box_score_thresh": 0.0, "max_person_detections": MAX_DETS,
    }
    if task == "segmentation":
        params["mask_threshold"] = MASK_THRESHOLD
    return run, {"name": model, "parameters": params, "device": device,
                 "software": {"torch": _version("torch"), "torchvision": _version("torchvision")}}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None




def _load_state_dict(model: str, path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise UserError(f"model {model}: weights file {path} not found (pass the path of a saved state_dict)")
    try:
        obj = load_weights_file(path, f"model {model}")
    except UserError:
        raise
    except Exception as exc:  # a non-checkpoint file fails in many ways (pickle, zip, struct)
        raise UserError(f"model {model}: cannot read {path}: {_first_line(exc)} "
                        "(save it with torch.save(model.state_dict(), PATH) or as .safetensors)") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UserError(f"model {model}: {path} is not a state_dict of tensors "
                        "(save it with torch.save(model.state_dict(), PATH))")
    return obj


def _num_classes(model: str, state: dict[str, Any]) -> int:
    w = state.get("roi_heads.box_predictor.cls_score.weight")
    if w is None or w.ndim != 2:
        raise UserError(f"model {model}: the state_dict has no roi_heads.box_predictor.cls_score.weight "
                        "(save the state_dict of a torchvision Faster/Mask R-CNN)")
    return int(w.shape[0])


def _torchvision_person(model: str, num_classes: int, person_class: int | None) -> int:
    if person_class is not None:
        if not 1 <= person_class < num_classes:
            raise UserError(f"model {model}: person class {person_class} is not an object class of a "
                            f"{num_classes}-class head (pick 1..{num_classes - 1}; 0 is the background)")
        return person_class
    if num_classes in (91, 2):  # COCO's 90 classes + background, or background + person
        return TORCHVISION_COCO_PERSON
    raise UserError(f"model {model}: a {num_classes}-class head is not COCO's, so the person label is unknown "
                    "(pass its index as person_class / --person-class)")
