"""The torchvision person runner: ``torchvision:<architecture>`` with torchvision's COCO weights
(downloaded into the torch hub cache when there is network), or ``torchvision:<architecture>=PATH``
with a local ``state_dict`` file (``torch.save`` or ``.safetensors``, read without running pickled
code). Architectures: :data:`TORCHVISION_ARCHITECTURES`.

Every proposal is scored for every class with no threshold, torchvision's per-class NMS runs, and
the ``MAX_DETS`` best person boxes are kept (the cap counts person boxes only, not boxes of other
classes); Mask R-CNN masks are pasted for the kept person boxes only.
"""

from __future__ import annotations

import difflib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from facet_eval.runners import Runner, package_version
from facet_eval.runners.coco import MAX_DETS, ImageDetections
from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import file_sha256
from t2ibias.core.safe_load import first_line, load_weights_file, refuse_code, weights_only_loads

PREFIX = "torchvision:"
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


def parse_torchvision_id(model: str) -> tuple[str, Path | None]:
    """``"torchvision:NAME[=PATH]"`` → ``(NAME, PATH or None)``; unknown names raise a UserError."""
    spec = model[len(PREFIX):]
    name, sep, path = spec.partition("=")
    name = name.strip()
    if name not in TORCHVISION_ARCHITECTURES:
        close = difflib.get_close_matches(name, list(TORCHVISION_ARCHITECTURES), n=1)
        hint = f"did you mean {PREFIX}{close[0]}? " if close else ""
        raise UserError(f"model {model}: unknown torchvision architecture {name!r} ({hint}known: "
                        f"{', '.join(TORCHVISION_ARCHITECTURES)})")
    if sep and not path.strip():
        raise UserError(f"model {model}: empty weights path after '=' (write {PREFIX}{name}=PATH, "
                        "or drop '=' for torchvision's COCO weights)")
    return name, (Path(path.strip()).expanduser() if sep else None)


def open_model(model: str, task: str, masks: bool, device: str, person_class: int | None) -> tuple[Runner, dict[str, Any]]:
    """The runner of a torchvision detector for FACET ``task`` (``masks``: it must give masks) on
    ``device``, and what ``run.json`` records about it."""
    name, weights_path = parse_torchvision_id(model)
    _, weights_enum, has_masks = TORCHVISION_ARCHITECTURES[name]
    if masks and not has_masks:
        raise UserError(f"model {model}: {name} has no mask head (use {PREFIX}maskrcnn_resnet50_fpn "
                        "for segmentation)")
    net, num_classes = _build(model, name, weights_path)
    label = person_label(model, num_classes, person_class)
    roi = net.roi_heads
    if not masks and roi.has_mask():
        roi.mask_roi_pool = roi.mask_head = roi.mask_predictor = None  # boxes only: skip the mask branch
    _keep_people(roi, label)
    net.eval().to(device)
    params: dict[str, Any] = {
        "library": "torchvision", "architecture": name,
        "weights": f"{weights_enum}.COCO_V1" if weights_path is None else str(weights_path.resolve()),
        "weights_sha256": None if weights_path is None else file_sha256(weights_path),
        "num_classes": num_classes, "person_label": label, "box_score_thresh": 0.0, "max_person_detections": MAX_DETS,
    }
    if masks:
        params["mask_threshold"] = MASK_THRESHOLD
    return _runner(net, masks, device), {
        "name": model, "parameters": params, "device": device,
        "software": {"torch": package_version("torch"), "torchvision": package_version("torchvision")}}


def _build(model: str, name: str, weights_path: Path | None) -> tuple[Any, int]:
    """The network with its weights (torchvision's COCO ones, or the state_dict at ``weights_path``)
    and its number of classes. No confidence threshold and no cap before the person filter."""
    import torch
    import torchvision.models.detection as tvd

    builder_name, weights_enum, _ = TORCHVISION_ARCHITECTURES[name]
    builder = getattr(tvd, builder_name)
    opts = {"box_score_thresh": 0.0, "box_detections_per_img": 1_000_000}
    if weights_path is not None:
        state = _load_state_dict(model, weights_path)
        num_classes = _num_classes(model, state)
        net = builder(weights=None, weights_backbone=None, num_classes=num_classes, **opts)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise UserError(f"model {model}: {weights_path} does not fit torchvision's {name}: {first_line(exc)} "
                            f"(save {name}(...).state_dict() of the same architecture)") from None
        return net, num_classes
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
        raise UserError(f"model {model}: cannot load torchvision's COCO weights: {first_line(exc)} (download them "
                        f"where there is network, then pass {PREFIX}{name}=PATH to the file "
                        f"or copy it into {torch.hub.get_dir()}/checkpoints/)") from None
    return net, len(weights.meta["categories"])


def _keep_people(roi: Any, label: int) -> None:
    """Make the box head keep only its ``MAX_DETS`` best boxes of class ``label`` per image, so
    masks are then pasted for kept person boxes only."""
    import torch

    original = roi.postprocess_detections

    def person_only(class_logits, box_regression, proposals, image_shapes):
        boxes, scores, labels = original(class_logits, box_regression, proposals, image_shapes)
        for k in range(len(boxes)):
            keep = torch.nonzero(labels[k] == label).flatten()
            keep = keep[torch.argsort(scores[k][keep], descending=True, stable=True)][:MAX_DETS]
            boxes[k], scores[k], labels[k] = boxes[k][keep], scores[k][keep], labels[k][keep]
        return boxes, scores, labels

    roi.postprocess_detections = person_only


def _runner(net: Any, masks: bool, device: str) -> Runner:
    import torch

    def run(arrays: list[np.ndarray]) -> list[ImageDetections]:
        with torch.inference_mode():
            batch = [torch.from_numpy(a).to(device).permute(2, 0, 1).float().div_(255) for a in arrays]
            outputs = net(batch)
        out = []
        for a, o in zip(arrays, outputs):
            found = None
            if masks:
                found = (o["masks"][:, 0] >= MASK_THRESHOLD).cpu().numpy() if len(o["scores"]) else \
                    np.zeros((0, *a.shape[:2]), dtype=bool)
            out.append(ImageDetections(o["boxes"].float().cpu().numpy(), o["scores"].float().cpu().numpy(), found))
        return out

    return run


def _load_state_dict(model: str, path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise UserError(f"model {model}: weights file {path} not found (pass the path of a saved state_dict)")
    try:
        obj = load_weights_file(path, f"model {model}")
    except UserError:
        raise
    except Exception as exc:  # a non-checkpoint file fails in many ways (pickle, zip, struct)
        raise UserError(f"model {model}: cannot read {path}: {first_line(exc)} "
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


def person_label(model: str, num_classes: int, person_class: int | None) -> int:
    """The label of people in a ``num_classes`` head: ``person_class`` when given (checked), else
    COCO's person for a COCO-shaped head."""
    if person_class is not None:
        if not 1 <= person_class < num_classes:
            raise UserError(f"model {model}: person class {person_class} is not an object class of a "
                            f"{num_classes}-class head (pick 1..{num_classes - 1}; 0 is the background)")
        return person_class
    if num_classes in (91, 2):  # COCO's 90 classes + background, or background + person
        return TORCHVISION_COCO_PERSON
    raise UserError(f"model {model}: a {num_classes}-class head is not COCO's, so the person label is unknown "
                    "(pass its index as person_class / --person-class)")
