"""Face gate on the cascades that ship inside OpenCV (<5): real signal with no downloads.

A Haar cascade finds frontal faces only; it misses profiles, small and occluded faces. Images
where it finds none fall back to the CLIP ``person`` attribute, and stay counted either way.
Stronger gates for users with weights (a YOLO person detector, RetinaFace/BlazeFace) plug in
behind the same ``detect(image) -> list[Box]`` call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from t2ibias.fingerprint import fingerprint


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h


@dataclass(frozen=True)
class HaarFaceGate:
    cascade: str = "haarcascade_frontalface_default.xml"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size_fraction: float = 0.08  # of the shorter image side
    padding: float = 0.25  # FairFace-style crop padding, as a fraction of the box size

    def fingerprint(self) -> str:
        import cv2

        return fingerprint({"gate": "haar", **asdict(self), "opencv": cv2.__version__})

    def _detector(self) -> Any:
        import cv2

        det = getattr(self, "_cv", None)
        if det is None:
            det = cv2.CascadeClassifier(cv2.data.haarcascades + self.cascade)
            if det.empty():
                raise RuntimeError(f"OpenCV cascade {self.cascade} missing; install opencv-python<5")
            object.__setattr__(self, "_cv", det)
        return det

    def detect(self, image: Any) -> list[Box]:
        """Faces in a PIL image, largest first."""
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY))
        side = max(12, int(self.min_size_fraction * min(gray.shape)))
        found = self._detector().detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side)
        )
        boxes = [Box(int(x), int(y), int(w), int(h)) for x, y, w, h in (found if len(found) else [])]
        return sorted(boxes, key=lambda b: -b.area)

    def crop(self, image: Any, box: Box) -> Any:
        """The padded face crop, clipped to the image."""
        px, py = int(round(box.w * self.padding)), int(round(box.h * self.padding))
        left, top = max(0, box.x - px), max(0, box.y - py)
        right, bottom = min(image.width, box.x + box.w + px), min(image.height, box.y + box.h + py)
        return image.crop((left, top, right, bottom))
