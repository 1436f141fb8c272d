"""What the classifier sees of each FACET person, and asking it about all of them in batches.

A crop is the person's FACET box padded by :data:`PADDING` of its width and height on each
side, clipped to the image; a person whose box lies outside the image gets no crop. With a face
gate the classifier sees the largest face centred inside the person's box instead, as the
measure stage labels an image by its largest face; a person with no face found gets no answer
(an abstention, not a skip).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from t2ibias.core.errors import UserError

PADDING = 0.25


def crop_box(box: tuple[float, float, float, float], image_size: tuple[int, int],
             padding: float = PADDING) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) pixel box of an (x, y, w, h) box padded by ``padding`` × its size
    on each side and clipped to the image; None when nothing of it lies inside the image."""
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        return None
    width, height = image_size
    left = max(0, math.floor(x - padding * w))
    top = max(0, math.floor(y - padding * h))
    right = min(width, math.ceil(x + w + padding * w))
    bottom = min(height, math.ceil(y + h + padding * h))
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


class Measured(NamedTuple):
    """The answers for the people asked about, in their order (``{}``: no face found), which of
    them had no crop (box outside the image), and how many images and faces were odd."""

    preds: list[dict[str, Any]]
    outside: np.ndarray
    n_rescaled: int
    n_no_face: int
    #: With a face gate: per person asked about, whether the gate found their face.
    face_found: np.ndarray | None = None


class _Batches:
    """Crops waiting for the predictor, sent ``batch_size`` at a time; ``progress(done, total)``
    is called after each batch, where done also counts people answered without asking."""

    def __init__(self, predictor: Any, total: int, batch_size: int,
                 progress: Callable[[int, int], None] | None) -> None:
        self.predictor, self.total, self.batch_size, self.progress = predictor, total, batch_size, progress
        self.preds: list[dict[str, Any] | None] = [None] * total
        self.pending: list[tuple[int, Any]] = []
        self.done = 0

    def add(self, k: int, crop: Any) -> None:
        self.pending.append((k, crop))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def no_answer(self, k: int) -> None:
        self.preds[k] = {}
        self.done += 1

    def flush(self) -> None:
        if not self.pending:
            return
        out = self.predictor.measure([c for _, c in self.pending])
        if len(out) != len(self.pending):
            raise UserError(f"predictor {type(self.predictor).__name__}: measure() returned {len(out)} results for "
                            f"{len(self.pending)} crops (return one dict per crop)")
        for (k, _), p in zip(self.pending, out):
            self.preds[k] = p
        self.done += len(self.pending)
        self.pending.clear()
        if self.progress is not None:
            self.progress(self.done, self.total)


def _face_in(crop: Any, box: tuple[float, float, float, float], cb: tuple[int, int, int, int], face_gate: Any) -> Any:
    """The largest face whose centre lies in the person's own (unpadded) ``box``, not a
    neighbour's face that the padding brought in, cropped as the gate crops it; None without one."""
    bx, by = box[0] - cb[0], box[1] - cb[1]
    faces = [f for f in face_gate.detect(crop)
             if bx <= f.x + f.w / 2 <= bx + box[2] and by <= f.y + f.h / 2 <= by + box[3]]
    face = face_gate.crop(crop, faces[0]) if faces else None
    return None if face is None or face.width == 0 or face.height == 0 else face


def measure_crops(predictor: Any, facet: Any, order: np.ndarray, batch_size: int,
                  progress: Callable[[int, int], None] | None = None, face_gate: Any = None) -> Measured:
    """Predictions for the people ``order`` (row indices of ``facet.people``), image by image.

    ``face_gate`` is anything with ``detect(image)`` (faces largest first) and ``crop(image, box)``;
    without one the predictor sees the padded person crop."""
    from PIL import Image

    paths = facet.image_paths()
    people = facet.people
    sizes = {int(i): (w, h) for i, w, h in zip(facet.images["id"], facet.images["width"], facet.images["height"])}
    batches = _Batches(predictor, len(order), batch_size, progress)
    outside = np.zeros(len(order), dtype=bool)
    found = np.zeros(len(order), dtype=bool)
    n_rescaled = n_no_face = 0
    image_ids = people["image_id"].to_numpy()[order]
    for img_id in pd.unique(image_ids):
        with Image.open(paths[int(img_id)]) as im:
            im = im.convert("RGB")
            sx = sy = 1.0
            w0, h0 = sizes.get(int(img_id), (None, None))
            if w0 and h0 and (int(w0), int(h0)) != im.size:
                # boxes are in the annotated image's pixels; map them onto the file's size
                sx, sy = im.size[0] / float(w0), im.size[1] / float(h0)
                n_rescaled += 1
            for k in np.flatnonzero(image_ids == img_id):
                r = people.iloc[int(order[k])]
                box = (r["box_x"] * sx, r["box_y"] * sy, r["box_w"] * sx, r["box_h"] * sy)
                cb = crop_box(box, im.size)
                if cb is None:
                    outside[k] = True
                    continue
                crop = im.crop(cb) if face_gate is None else _face_in(im.crop(cb), box, cb, face_gate)
                if crop is None:
                    batches.no_answer(int(k))
                    n_no_face += 1
                    continue
                found[k] = True
                batches.add(int(k), crop)
        batches.flush()
    return Measured(batches.preds, outside, n_rescaled, n_no_face,  # type: ignore[arg-type]
                    found if face_gate is not None else None)
