"""Person and face gates: which parts of an image get measured.

The default face gate runs the cascades that ship inside OpenCV (<5): real signal with no
downloads. A Haar cascade finds frontal faces only; it misses profiles, small and occluded
faces. Images where it finds none fall back to the CLIP ``person`` attribute, and stay counted
either way. A YOLO person detector (ultralytics, weights by local path or release name) plugs in
behind the same ``detect(image) -> list[Box]`` / ``fingerprint()`` calls; with it, faces are
searched inside each person box, and an image with no person box counts as showing nobody.

Face detectors are registered by name in :data:`FACE_DETECTORS` (``t2ibias ls gates`` lists
them, with what each needs from :data:`FACE_DETECTOR_NEEDS`): ``haar`` (the default), ``mtcnn``
(:mod:`t2ibias.measure.mtcnn`) and ``dlib-cnn``, FairFace's detection and aligned chips
(:mod:`t2ibias.measure.dlib_faces`); see docs/faces.md for their recall on real photos. Anything
with the :class:`FaceDetector` calls plugs into :class:`PersonFaceGate`; a detector may also offer
``detect_many(images)`` and ``load()`` (open its model files before anything is written). A new
detector is its own module plus one registration here, a builder that imports it on first use::

    @FACE_DETECTORS.entry("mydetector")
    def _mydetector(device: str = "cpu") -> FaceDetector:
        "One line for `t2ibias ls gates`."
        from t2ibias.measure.mydetector import MyDetector

        return MyDetector(device=device)

Its ``config()["kind"]`` is its registered name, so a recorded gate names the detector it used.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from t2ibias.core.errors import UnknownIdError, UserError
from t2ibias.core.fingerprint import file_sha256, fingerprint
from t2ibias.core.registry import Registry
from t2ibias.measure.boxes import Box  # noqa: F401 (re-exported: the detectors' common box)
from t2ibias.core.safe_load import first_line, load_yolo, ultralytics_yolo  # noqa: F401 (ultralytics_yolo: re-exported)


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in an image and cuts their crops; what a :class:`PersonFaceGate` asks of its face part.

    ``fingerprint()`` changes whenever the boxes or crops could; ``config()`` is a JSON-ready dict
    whose ``kind`` is the detector's registered name.
    """

    def detect(self, image: Any) -> list[Box]: ...

    def crop(self, image: Any, box: Box) -> Any: ...

    def fingerprint(self) -> str: ...

    def config(self) -> dict[str, Any]: ...


@runtime_checkable
class Gate(Protocol):
    """Which parts of each image get measured: people (optional) and faces, in image coordinates."""

    face: FaceDetector
    person: YoloPersonGate | None

    def detect_many(self, images: list[Any]) -> list[tuple[list[Box], list[Box]]]: ...

    def fingerprint(self) -> str: ...

    def config(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class HaarFaceGate:
    cascade: str = "haarcascade_frontalface_default.xml"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size_fraction: float = 0.08  # of the shorter image side
    padding: float = 0.25  # FairFace-style crop padding, as a fraction of the box size
    #: Off by default: with a size, a larger image is shrunk so its longer side is ``max_size``
    #: before the cascade runs (faster on big images; boxes mapped back). It changes what the
    #: cascade finds, so it enters the fingerprint only when set (the default's is unchanged).
    max_size: int | None = None

    def _settings(self) -> dict[str, Any]:
        cfg = asdict(self)
        if cfg["max_size"] is None:
            del cfg["max_size"]
        return cfg

    def fingerprint(self) -> str:
        import cv2

        return fingerprint({"gate": "haar", **self._settings(), "opencv": cv2.__version__})

    def _detector(self) -> Any:
        """The cascade of the calling thread (one per thread: gating runs in worker threads)."""
        import cv2

        local = getattr(self, "_cv", None)
        if local is None:
            local = threading.local()
            object.__setattr__(self, "_cv", local)
        det = getattr(local, "det", None)
        if det is None:
            det = cv2.CascadeClassifier(cv2.data.haarcascades + self.cascade)
            if det.empty():
                raise RuntimeError(f"OpenCV cascade {self.cascade} missing; install opencv-python<5")
            local.det = det
        return det

    def detect(self, image: Any) -> list[Box]:
        """Faces in a PIL image, largest first."""
        import cv2

        scale, (width, height) = 1.0, image.size
        if self.max_size is not None and max(image.size) > self.max_size:
            from PIL import Image

            scale = self.max_size / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
        gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY))
        side = max(12, int(self.min_size_fraction * min(gray.shape)))
        found = self._detector().detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side)
        )
        boxes = [Box(int(x), int(y), int(w), int(h)) for x, y, w, h in (found if len(found) else [])]
        if scale != 1.0:
            boxes = [Box(round(b.x / scale), round(b.y / scale), round(b.w / scale), round(b.h / scale)).clipped(width, height)
                     for b in boxes]
        return sorted(boxes, key=lambda b: -b.area)

    def crop(self, image: Any, box: Box) -> Any:
        """The padded face crop, clipped to the image (zero-size when the box lies outside it)."""
        px, py = int(round(box.w * self.padding)), int(round(box.h * self.padding))
        left, top = max(0, box.x - px), max(0, box.y - py)
        right, bottom = min(image.width, box.x + box.w + px), min(image.height, box.y + box.h + py)
        return image.crop((left, top, max(left, right), max(top, bottom)))

    def config(self) -> dict[str, Any]:
        return {"kind": "haar", **self._settings()}


@dataclass(frozen=True)
class YoloPersonGate:
    """People found by an ultralytics YOLO detector (its ``person`` class only), largest first.

    ``weights`` is a local ``.pt`` file or an ultralytics release name such as ``yolo11n.pt``
    (downloaded by ultralytics when online). ``conf`` is the detection confidence threshold;
    boxes overlapping a larger kept box by more than ``iou`` are dropped. ``device`` only says
    where it runs and is not part of the fingerprint.
    """

    weights: str
    conf: float = 0.25
    iou: float = 0.7
    imgsz: int = 640
    max_people: int = 20
    device: str = field(default="cpu", compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.conf <= 1:
            raise UserError(f"person detector confidence {self.conf}: must be in [0, 1] (ultralytics' default is 0.25)")
        if not 0 < self.iou <= 1:
            raise UserError(f"person detector iou {self.iou}: must be in (0, 1]")

    def _local_path(self) -> Path | None:
        path = Path(self.weights).expanduser()
        return path if path.is_file() else None

    def _load(self) -> Any:
        model = getattr(self, "_yolo", None)
        if model is not None:
            return model
        local = self._local_path()
        looks_like_path = os.sep in self.weights or "/" in self.weights or not self.weights.endswith(".pt")
        if local is None and looks_like_path:
            raise UserError(f"person detector {self.weights}: no such file (give a local YOLO .pt file or a release name such as yolo11n.pt)")
        if local is not None:
            os.environ.setdefault("YOLO_OFFLINE", "1")  # a local file needs no network: skip ultralytics' probes
        elif os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise UserError(
                f"person detector {self.weights}: not a local file and ultralytics is offline (YOLO_OFFLINE=1); "
                "download the weights where there is network and pass their path"
            )
        try:
            model = load_yolo(str(local) if local is not None else self.weights, f"person detector {self.weights}")
        except UserError:
            raise
        except Exception as exc:  # network, unknown release names, bad files come in many types
            raise UserError(
                f"person detector {self.weights}: cannot load YOLO weights ({first_line(exc, 160)}); "
                "pass a local .pt file or an ultralytics release name such as yolo11n.pt"
            ) from None
        names = getattr(model, "names", None) or {}
        person = [int(i) for i, n in names.items() if str(n).lower() == "person"]
        if not person:
            raise UserError(f"person detector {self.weights}: the model has no 'person' class (use COCO-trained YOLO weights)")
        object.__setattr__(self, "_yolo", model)
        object.__setattr__(self, "_person_class", person[0])
        return model

    def weights_identity(self) -> str:
        """sha256 of the weights file (local, or the one ultralytics downloaded)."""
        ident = getattr(self, "_identity", None)
        if ident is None:
            local = self._local_path()
            if local is None:
                model = self._load()
                local = Path(getattr(model, "ckpt_path", None) or self.weights)
            ident = f"sha256:{file_sha256(local)}" if local.is_file() else f"name:{self.weights}"
            object.__setattr__(self, "_identity", ident)
        return ident

    def config(self) -> dict[str, Any]:
        return {"kind": "yolo", "weights": self.weights, "conf": self.conf, "iou": self.iou,
                "imgsz": self.imgsz, "max_people": self.max_people}

    def fingerprint(self) -> str:
        import ultralytics

        cfg = {**self.config(), "weights": self.weights_identity(), "ultralytics": ultralytics.__version__}
        return fingerprint({"gate": "yolo-person", **cfg})

    def detect_many(self, images: list[Any]) -> list[list[Box]]:
        """People in each PIL image, largest first, clipped to the image; empty boxes dropped."""
        if not images:
            return []
        with self._lock():  # an ultralytics predictor is not thread-safe; gating runs in worker threads
            return self._detect_many(images)

    def _lock(self) -> threading.Lock:
        lock = self.__dict__.get("_mutex")
        if lock is None:
            lock = self.__dict__.setdefault("_mutex", threading.Lock())
        return lock

    def _detect_many(self, images: list[Any]) -> list[list[Box]]:
        model = self._load()
        # ultralytics letterboxes a batch of mixed sizes to one square shape but a lone image to a
        # tighter one: predict per size so an image's boxes never depend on its batch-mates
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(img.size, []).append(i)
        results: list[Any] = [None] * len(images)
        for idx in by_size.values():
            found = model.predict(
                [images[i].convert("RGB") for i in idx], conf=self.conf, iou=self.iou, imgsz=self.imgsz,
                classes=[self._person_class], max_det=self.max_people * 4, device=self.device, verbose=False,
            )
            for i, res in zip(idx, found):
                results[i] = res
        out = []
        for img, res in zip(images, results):
            boxes = []
            xyxy = res.boxes.xyxy.cpu().numpy() if res.boxes is not None else np.zeros((0, 4))
            for x0, y0, x1, y1 in xyxy:
                box = Box(int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))).clipped(img.width, img.height)
                if box.w > 0 and box.h > 0:
                    boxes.append(box)
            out.append(_suppress(sorted(boxes, key=lambda b: -b.area), self.iou)[: self.max_people])
        return out

    def detect(self, image: Any) -> list[Box]:
        return self.detect_many([image])[0]

    def crop(self, image: Any, box: Box) -> Any:
        """The person crop, clipped to the image (no padding: the box already holds the body)."""
        b = box.clipped(image.width, image.height)
        return image.crop((b.x, b.y, b.x + b.w, b.y + b.h))


def _suppress(boxes: list[Box], iou: float) -> list[Box]:
    """Greedy suppression of boxes (largest first) overlapping a kept one by more than ``iou``."""
    kept: list[Box] = []
    for b in boxes:
        if all(b.iou(k) <= iou for k in kept):
            kept.append(b)
    return kept


@dataclass(frozen=True)
class PersonFaceGate:
    """The gate of a measurer: faces alone, or faces searched inside YOLO person boxes.

    ``face`` is any :class:`FaceDetector` (the Haar cascade by default). Without a person
    detector the fingerprint is the face detector's own, so runs measured before person
    detection existed keep their cached rows.
    """

    face: FaceDetector = field(default_factory=HaarFaceGate)
    person: YoloPersonGate | None = None

    def fingerprint(self) -> str:
        if self.person is None:
            return self.face.fingerprint()
        return fingerprint({"person": self.person.fingerprint(), "face": self.face.fingerprint()})

    def config(self) -> dict[str, Any]:
        return {"face": self.face.config(), "person": None if self.person is None else self.person.config()}

    def detect_many(self, images: list[Any]) -> list[tuple[list[Box], list[Box]]]:
        """(people, faces) per image; faces largest first, in image coordinates, each found once."""
        if self.person is None:
            many = getattr(self.face, "detect_many", None)  # detectors that batch say so
            found = many(images) if callable(many) else [self.face.detect(img) for img in images]
            return [([], faces) for faces in found]
        out = []
        for img, people in zip(images, self.person.detect_many(images)):
            faces: list[Box] = []
            for p in people:
                region = self.person.crop(img, p)
                if region.width < 1 or region.height < 1:
                    continue
                for f in self.face.detect(region):
                    moved = Box(f.x + p.x, f.y + p.y, f.w, f.h)
                    if all(moved.iou(k) <= 0.5 for k in faces):  # overlapping people: one face, found twice
                        faces.append(moved)
            out.append((people, sorted(faces, key=lambda b: -b.area)))
        return out


# ---------------------------------------------------------------- registered face detectors

#: Face detectors by name; each entry builds a detector for a device ("cpu", "cuda", ...). Building
#: is cheap (``t2ibias ls gates`` builds each to show its settings): weights load on first use.
FACE_DETECTORS: Registry[Callable[[str], FaceDetector]] = Registry("face detector", "t2ibias ls gates")
DEFAULT_FACE_DETECTOR = "haar"
NO_PERSON_DETECTOR = ("", "none")


#: What each registered detector needs beyond the base install, and a check whether it is here
#: (None when it can run, else why not); both shown by ``t2ibias ls gates``.
FACE_DETECTOR_NEEDS: dict[str, tuple[str, Callable[[], str | None]]] = {}


def _always() -> str | None:
    return None


@FACE_DETECTORS.entry("haar")
def _haar(device: str = "cpu") -> FaceDetector:
    """OpenCV's frontal-face Haar cascade: no download, CPU only; misses profiles, small and occluded faces."""
    return HaarFaceGate()


FACE_DETECTOR_NEEDS["haar"] = ("opencv-python<5 (installed with t2ibias)", _always)


@FACE_DETECTORS.entry("dlib-cnn")
def _dlib_cnn(device: str = "cpu") -> FaceDetector:
    """FairFace's pipeline: dlib's MMOD CNN detector at 800 px, 5-point alignment, 300 px chips (padding 0.25); CPU, slow."""
    from t2ibias.measure.dlib_faces import DlibCnnFaceGate

    return DlibCnnFaceGate(device=device)


def _dlib_available() -> str | None:
    from t2ibias.measure.dlib_faces import available

    return available()


FACE_DETECTOR_NEEDS["dlib-cnn"] = ("t2ibias[faces] (dlib-bin, face-recognition-models)", _dlib_available)


@FACE_DETECTORS.entry("mtcnn")
def _mtcnn(device: str = "cpu") -> FaceDetector:
    """MTCNN (P-Net, R-Net, O-Net) in torch: finds profiles and small faces, runs on the GPU when there is one."""
    from t2ibias.measure.mtcnn import MtcnnFaceGate

    return MtcnnFaceGate(device=device)


def _mtcnn_available() -> str | None:
    from t2ibias.measure.mtcnn import available

    return available()


FACE_DETECTOR_NEEDS["mtcnn"] = ("weights from facenet-pytorch (pip install --no-deps facenet-pytorch) or $T2IBIAS_MTCNN_WEIGHTS",
                                _mtcnn_available)


def face_detector_unavailable(name: str) -> str | None:
    """Why the registered detector ``name`` cannot run here, or None when it can."""
    entry = FACE_DETECTOR_NEEDS.get(name)
    return None if entry is None else entry[1]()


def create_face_detector(name: str = DEFAULT_FACE_DETECTOR, device: str = "cpu") -> FaceDetector:
    """The registered face detector ``name`` on ``device`` (UnknownIdError with a hint for other names)."""
    return FACE_DETECTORS.get(name)(device)


@dataclass(frozen=True)
class FaceDetectorInfo:
    """A registered face detector as ``t2ibias ls gates`` shows it."""

    id: str
    definition: str
    config: dict[str, Any]
    needs: str = ""
    unavailable: str | None = None  # why it cannot run here; None when it can


def face_detectors() -> list[FaceDetectorInfo]:
    """Every registered face detector with its one-line description, default settings, what it
    needs and whether it can run here."""
    out = []
    for name in FACE_DETECTORS:
        build = FACE_DETECTORS.get(name)
        doc = (build.__doc__ or "").strip().splitlines()
        needs = FACE_DETECTOR_NEEDS.get(name, ("", _always))[0]
        out.append(FaceDetectorInfo(name, doc[0] if doc else "", build("cpu").config(), needs,
                                    face_detector_unavailable(name)))
    return out


def create_gate(person_detector: str | None = None, person_conf: float = 0.25, device: str = "cpu",
                face_detector: str = DEFAULT_FACE_DETECTOR) -> PersonFaceGate:
    """The registered ``face_detector`` (Haar by default), with a YOLO person detector (weights
    path or release name) in front when ``person_detector`` is given ("none" or "" for none)."""
    try:
        face = create_face_detector(face_detector, device)
    except UnknownIdError as exc:
        raise UnknownIdError(f"--face-detector: {exc}") from None
    if person_detector is None or person_detector.strip().lower() in NO_PERSON_DETECTOR:
        return PersonFaceGate(face=face)
    return PersonFaceGate(face=face, person=YoloPersonGate(person_detector, conf=float(person_conf), device=device))
