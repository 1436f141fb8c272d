"""Decoding FACET images for a model, and the one read-ahead pool every runner reads through.

Person runners get RGB arrays as stored (EXIF rotation only when that is what makes an image match
its size in ``coco_boxes.json``); the CLIP classifier gets PIL images for its own preprocessing.
Either way the next batches are decoded on worker threads while the model runs on the current
one, so memory stays bounded by a few batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from t2ibias.core.errors import UserError
from t2ibias.core.safe_load import first_line

Item = TypeVar("Item")
Decoded = TypeVar("Decoded")


def read_image_array(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """RGB uint8 (H, W, 3) of ``path`` as stored; EXIF-rotated only when that gives the annotated
    ``size`` (height, width). UserError naming the file when it cannot be read or has another size."""
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
        raise UserError(f"{path}: cannot read the image: {first_line(exc)} (re-download the FACET image archive)") from None


def read_image_pil(path: Path) -> Any:
    """The image at ``path`` as an RGB PIL image; UserError naming the file when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise UserError(f"{path}: cannot read image: not a format PIL can decode (re-download or replace the file)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{path}: cannot read image: {exc} (re-download or replace the file)") from None


def prefetch_batches(items: Sequence[Item], decode: Callable[[Item], Decoded], batch_size: int, workers: int,
                     ahead: int = 1) -> Iterator[list[Decoded]]:
    """``decode`` of every item, one list per batch of ``batch_size`` items, in order. A pool of
    ``workers`` threads decodes the next ``ahead`` batches while the caller works on the current one;
    a decoding error is raised when its batch is reached."""
    batches = [items[k:k + batch_size] for k in range(0, len(items), batch_size)]
    if not batches:
        return
    ahead = max(1, ahead)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facet-decode")
    try:
        def submit(batch: Sequence[Item]) -> list[Future[Decoded]]:
            return [pool.submit(decode, item) for item in batch]

        upcoming = iter(batches)
        pending: deque[list[Future[Decoded]]] = deque()
        for batch in upcoming:
            pending.append(submit(batch))
            if len(pending) == ahead:
                break
        while pending:
            current = pending.popleft()
            nxt = next(upcoming, None)
            if nxt is not None:
                pending.append(submit(nxt))
            yield [f.result() for f in current]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
