"""Decoding FACET images for a model.

Person runners get RGB arrays as stored (EXIF rotation only when that is what makes an image match
its size in ``coco_boxes.json``); the CLIP classifier gets PIL images for its own preprocessing.
Either way runners read them through :func:`t2ibias.core.prefetch.prefetch_batches`, which decodes
the next batches on worker threads while the model runs on the current one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from t2ibias.core.errors import UserError
from t2ibias.core.safe_load import first_line


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
