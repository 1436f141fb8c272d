"""MTCNN face detection (Zhang, Zhang, Li & Qiao, IEEE SPL 2016): three small cascaded CNNs in torch.

P-Net proposes face windows over an image pyramid, R-Net rejects most of them on 24 × 24 crops and
O-Net settles the rest on 48 × 48 crops; each stage regresses its boxes and suppresses overlaps.
The networks are defined here; their trained weights are the three state-dict files (``pnet.pt``,
``rnet.pt``, ``onet.pt``) that the ``facenet-pytorch`` wheel ships under ``facenet_pytorch/data``.
That package pins torch < 2.3 and numpy < 2, so it is installed without its dependencies
(``pip install --no-deps facenet-pytorch``) and never imported: only its files are read, with the
restricted unpickler. ``T2IBIAS_MTCNN_WEIGHTS`` may name another folder holding the three files.

Every image is detected on its own (its pyramid and its crops in their own calls), so an image's
boxes never depend on the images batched with it; the networks run on the GPU when there is one.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import file_sha256, fingerprint
from t2ibias.measure.boxes import Box, padded_crop

WEIGHTS_ENV = "T2IBIAS_MTCNN_WEIGHTS"
WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")
INSTALL_FIX = (f"pip install --no-deps facenet-pytorch (only its weight files are used), or set {WEIGHTS_ENV} "
               "to a folder holding pnet.pt, rnet.pt and onet.pt")


def weights_folder() -> Path | None:
    """``$T2IBIAS_MTCNN_WEIGHTS``, or the ``data`` folder of an installed facenet-pytorch (not imported)."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    try:
        spec = importlib.util.find_spec("facenet_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def weight_files() -> tuple[Path, Path, Path]:
    folder = weights_folder()
    if folder is None:
        raise UserError(f"face detector mtcnn: needs the MTCNN weight files, and facenet-pytorch is not installed ({INSTALL_FIX})")
    paths = tuple(folder / name for name in WEIGHT_FILES)
    for p in paths:
        if not p.is_file():
            raise UserError(f"face detector mtcnn: {p}: no such file ({INSTALL_FIX})")
    return paths  # type: ignore[return-value]


def available() -> str | None:
    """None when the gate can run here, else why not (for ``t2ibias ls gates``)."""
    try:
        weight_files()
    except UserError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def _networks() -> tuple[Any, Any, Any]:
    """The three MTCNN networks (layer names as the weight files spell them)."""
    from torch import nn

    class PNet(nn.Module):
        """12 × 12 window classifier, fully convolutional: a face probability and a box offset per cell."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

        def forward(self, x: Any) -> tuple[Any, Any]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_1(x).softmax(dim=1)[:, 1], self.conv4_2(x)

    class RNet(nn.Module):
        """24 × 24 crop refiner: face probability and box offsets."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x: Any) -> tuple[Any, Any]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x))
            # the weights were trained on transposed images: flatten as (width, height, channel)
            x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
            return self.dense5_1(x).softmax(dim=1)[:, 1], self.dense5_2(x)

    class ONet(nn.Module):
        """48 × 48 crop verifier: face probability, box offsets and five landmarks."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x: Any) -> tuple[Any, Any, Any]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
            return self.dense6_1(x).softmax(dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)

    return PNet(), RNet(), ONet()


@dataclass(frozen=True)
class MtcnnFaceGate:
    """MTCNN with the paper's settings: pyramid factor 0.709, stage thresholds 0.6 / 0.7 / 0.7.

    ``max_size`` is the working size: a larger image is shrunk so its longer side is ``max_size``
    and boxes are mapped back. ``min_face`` (working pixels) sets the pyramid's largest scale;
    ``min_face_fraction`` of the shorter side raises it for large images. ``padding`` pads the
    crop as the Haar gate does. ``device`` says where the networks run (not in the fingerprint).
    """

    max_size: int = 1024
    min_face: int = 20
    min_face_fraction: float = 0.05
    factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    nms: tuple[float, float, float] = (0.7, 0.7, 0.7)
    padding: float = 0.25
    device: str = field(default="cpu", compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.factor < 1:
            raise UserError(f"face detector mtcnn: factor {self.factor}: must be in (0, 1) (the paper uses 0.709)")
        if any(not 0 <= t <= 1 for t in self.thresholds):
            raise UserError(f"face detector mtcnn: thresholds {self.thresholds}: each must be in [0, 1]")
        if self.min_face < 12:
            raise UserError(f"face detector mtcnn: min_face {self.min_face}: below P-Net's 12 px window")

    def config(self) -> dict[str, Any]:
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k != "device"}
        return {"kind": "mtcnn", **cfg}

    def _state(self) -> dict[str, Any]:
        state = self.__dict__.get("_st")
        if state is None:
            state = self.__dict__.setdefault("_st", {"lock": threading.Lock()})
        return state

    def fingerprint(self) -> str:
        state = self._state()
        if "fp" not in state:
            state["fp"] = fingerprint({"gate": "mtcnn", **self.config(),
                                       "weights_sha256": {p.name: file_sha256(p) for p in weight_files()}})
        return state["fp"]

    def load(self) -> None:
        """Read the three weight files now (a missing or corrupt one fails before anything is written)."""
        self.fingerprint()
        self._nets()

    def _nets(self) -> tuple[Any, Any, Any]:
        state = self._state()
        with state["lock"]:
            if "nets" not in state:
                import torch

                from t2ibias.core.safe_load import load_weights_file

                nets = _networks()
                for net, path in zip(nets, weight_files()):
                    try:
                        sd = load_weights_file(path, "face detector mtcnn", INSTALL_FIX)
                        net.load_state_dict(sd)
                    except UserError:
                        raise
                    except Exception as exc:  # a truncated or foreign file fails in many ways
                        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
                        raise UserError(f"{path}: not an MTCNN {path.stem} state dict ({reason}; {INSTALL_FIX})") from None
                    net.eval().to(self.device)
                    for p in net.parameters():
                        p.requires_grad_(False)
                state["nets"] = nets
                state["torch"] = torch
        return state["nets"]

    # ------------------------------------------------------------ detection

    def detect(self, image: Any) -> list[Box]:
        return self.detect_many([image])[0]

    def detect_many(self, images: list[Any]) -> list[list[Box]]:
        """Faces in each PIL image, largest first, in the image's own pixels (clipped to it)."""
        out = []
        for image in images:
            boxes = self._detect(image)
            out.append(sorted(boxes, key=lambda b: (-b.area, b.y, b.x)))
        return out

    def crop(self, image: Any, box: Box) -> Any:
        """The padded face crop, clipped to the image."""
        return padded_crop(image, box, self.padding)

    def _detect(self, image: Any) -> list[Box]:
        import torch

        pnet, rnet, onet = self._nets()
        rgb = image.convert("RGB")
        scale = min(1.0, self.max_size / max(rgb.size))
        if scale < 1.0:
            from PIL import Image

            rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
        img = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)[None].float().to(self.device)
        with torch.inference_mode():
            found = self._cascade(img, pnet, rnet, onet)
        boxes = []
        for x0, y0, x1, y1 in found.tolist():
            b = Box(int(round(x0 / scale)), int(round(y0 / scale)),
                    int(round((x1 - x0) / scale)), int(round((y1 - y0) / scale))).clipped(image.width, image.height)
            if b.w > 0 and b.h > 0:
                boxes.append(b)
        return boxes

    def _cascade(self, img: Any, pnet: Any, rnet: Any, onet: Any) -> Any:
        """Boxes (x0, y0, x1, y1) in working pixels of one image (1, 3, H, W), values 0..255."""
        import torch
        import torch.nn.functional as F
        from torchvision.ops import nms

        h, w = img.shape[2:]
        norm = (img - 127.5) / 128.0
        min_face = max(self.min_face, self.min_face_fraction * min(h, w))
        m = 12.0 / min_face
        scales, side = [], min(h, w) * m
        while side >= 12:
            scales.append(m * self.factor ** len(scales))
            side *= self.factor
        cands = []
        for s in scales:
            hs, ws = int(math.ceil(h * s)), int(math.ceil(w * s))
            prob, reg = pnet(F.interpolate(norm, size=(hs, ws), mode="area"))
            iy, ix = torch.nonzero(prob[0] >= self.thresholds[0], as_tuple=True)
            if not len(iy):
                continue
            score = prob[0, iy, ix]
            sx, sy = ix.float(), iy.float()
            boxes = torch.stack([2 * sx / s, 2 * sy / s, (2 * sx + 12) / s, (2 * sy + 12) / s], dim=1)
            offsets = reg[0][:, iy, ix].T
            keep = nms(boxes, score, 0.5)
            cands.append(torch.cat([boxes[keep], score[keep, None], offsets[keep]], dim=1))
        if not cands:
            return torch.zeros((0, 4))
        c = torch.cat(cands)
        c = c[nms(c[:, :4], c[:, 4], self.nms[0])]
        boxes = _square(_regress(c[:, :4], c[:, 5:9]))
        # R-Net
        prob, reg = rnet(_crops(img, boxes, 24))
        keep = prob >= self.thresholds[1]
        boxes, prob, reg = boxes[keep], prob[keep], reg[keep]
        if not len(boxes):
            return torch.zeros((0, 4))
        keep = nms(boxes, prob, self.nms[1])
        boxes = _square(_regress(boxes[keep], reg[keep]))
        # O-Net
        prob, reg, _marks = onet(_crops(img, boxes, 48))
        keep = prob >= self.thresholds[2]
        boxes, prob, reg = boxes[keep], prob[keep], reg[keep]
        if not len(boxes):
            return torch.zeros((0, 4))
        boxes = _regress(boxes, reg)
        keep = _nms_min(boxes, prob, self.nms[2])
        return boxes[keep].cpu()


def _regress(boxes: Any, offsets: Any) -> Any:
    """Shift each box's edges by its predicted offsets (fractions of its width and height)."""
    import torch

    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * wh if len(boxes) else torch.zeros_like(boxes)


def _square(boxes: Any) -> Any:
    """Each box grown to a square about its centre (the crops the next stage sees are square)."""
    import torch

    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values
    return torch.cat([centre - side / 2, centre + side / 2], dim=1)


def _crops(img: Any, boxes: Any, size: int) -> Any:
    """Each box of ``img`` (0..255; black outside the image) resampled to ``size`` × ``size``, normalized.

    ``roi_align`` averages several samples per output pixel, close to the area resampling the
    networks were trained with, and cuts every crop in one call.
    """
    import torch
    from torchvision.ops import roi_align

    rois = torch.cat([torch.zeros((len(boxes), 1), device=boxes.device, dtype=boxes.dtype), boxes], dim=1)
    crops = roi_align(img, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return (crops - 127.5) / 128.0


def _nms_min(boxes: Any, scores: Any, threshold: float) -> list[int]:
    """Greedy suppression by intersection over the smaller box (O-Net's final step): drops a box
    lying mostly inside a better one, which IoU keeps when the sizes differ."""
    order = scores.argsort(descending=True).tolist()
    b = boxes.tolist()
    kept: list[int] = []
    for i in order:
        x0, y0, x1, y1 = b[i]
        ok = True
        for k in kept:
            a0, b0, a1, b1 = b[k]
            inter = max(0.0, min(x1, a1) - max(x0, a0)) * max(0.0, min(y1, b1) - max(y0, b0))
            small = min((x1 - x0) * (y1 - y0), (a1 - a0) * (b1 - b0))
            if small > 0 and inter / small > threshold:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept
