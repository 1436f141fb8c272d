"""The ultralytics person runner: a local ``.pt``/``.yaml`` path, or a release name such as
``yolo11x.pt`` or ``yolo11x-seg.pt`` (ultralytics downloads it when there is network).

A box is kept when person is its best class (ultralytics' own ``predict`` rule: confidence
threshold 0, NMS at its default IoU 0.7), at most ``MAX_DETS`` per image; masks are pasted at
the image's resolution (``retina_masks``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from facet_eval.runners import Runner, package_version
from facet_eval.runners.coco import MAX_DETS, ImageDetections
from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import file_sha256
from t2ibias.core.safe_load import first_line, load_yolo

#: ultralytics model tasks whose results carry what a FACET task needs: boxes, or masks.
BOX_MODEL_TASKS = ("detect", "segment", "pose")
MASK_MODEL_TASKS = ("segment",)


def open_model(model: str, task: str, masks: bool, device: str, person_class: int | None) -> tuple[Runner, dict[str, Any]]:
    """The runner of an ultralytics model for FACET ``task`` (``masks``: it must give masks) on
    ``device``, and what ``run.json`` records about it."""
    yolo, path, local = _load(model)
    wanted = MASK_MODEL_TASKS if masks else BOX_MODEL_TASKS
    if yolo.task not in wanted:
        raise UserError(f"model {model}: an ultralytics '{yolo.task}' model cannot do FACET {task} "
                        f"(use a {' or '.join(wanted)} model, e.g. yolo11x{'-seg' if masks else ''}.pt)")
    names = {int(k): str(v) for k, v in dict(yolo.names).items()}
    cls = person_index(model, names, person_class)
    udev = "cpu" if device == "cpu" else device.replace("cuda:", "") if device.startswith("cuda:") else "0"
    return _runner(yolo, cls, masks, udev), _info(model, yolo, path, local, names, cls, masks, device)


def _load(model: str) -> tuple[Any, Path, bool]:
    """The loaded model, its path and whether it is a local file."""
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
        raise UserError(f"model {model}: cannot load the ultralytics model: {first_line(exc)} ({fix})") from None
    return yolo, path, local


def person_index(model: str, names: dict[int, str], person_class: int | None) -> int:
    """The class index of people: ``person_class`` when given (checked), else the class named person."""
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


def _runner(yolo: Any, cls: int, masks: bool, udev: str) -> Runner:
    def run(arrays: list[np.ndarray]) -> list[ImageDetections]:
        results = yolo.predict(
            [a[:, :, ::-1] for a in arrays],  # ultralytics reads numpy images as BGR
            conf=0.0, classes=[cls], max_det=MAX_DETS, retina_masks=masks,
            batch=len(arrays), device=udev, verbose=False,
        )
        out = []
        for a, r in zip(arrays, results):
            boxes = r.boxes.xyxy.float().cpu().numpy() if r.boxes is not None else np.zeros((0, 4))
            scores = r.boxes.conf.float().cpu().numpy() if r.boxes is not None else np.zeros(0)
            found = None
            if masks:
                found = np.zeros((0, *a.shape[:2]), dtype=bool) if r.masks is None else r.masks.data.cpu().numpy() > 0
            out.append(ImageDetections(boxes, scores, found))
        return out

    return run


def _info(model: str, yolo: Any, path: Path, local: bool, names: dict[int, str], cls: int, masks: bool,
          device: str) -> dict[str, Any]:
    import ultralytics

    weights_file = Path(getattr(yolo, "ckpt_path", None) or (path if local else ""))
    params = {"library": "ultralytics", "weights": str(path.resolve()) if local else model,
              "weights_sha256": file_sha256(weights_file) if weights_file.is_file() else None,
              "model_task": yolo.task, "person_class": cls, "person_class_name": names[cls],
              "conf": 0.0, "max_det": MAX_DETS, "imgsz": yolo.overrides.get("imgsz"),
              "retina_masks": masks}
    return {"name": model, "parameters": params, "device": device,
            "software": {"torch": package_version("torch"), "ultralytics": ultralytics.__version__}}
