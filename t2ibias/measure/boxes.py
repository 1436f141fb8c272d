"""A detected box in image pixels: what every gate and detector returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def clipped(self, width: int, height: int) -> "Box":
        """The part of the box inside a ``width`` × ``height`` image (possibly empty)."""
        left, top = max(0, self.x), max(0, self.y)
        right, bottom = min(width, self.x + self.w), min(height, self.y + self.h)
        return Box(left, top, max(0, right - left), max(0, bottom - top))

    def iou(self, other: "Box") -> float:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def contains(self, other: "Box") -> bool:
        return (self.x <= other.x and self.y <= other.y
                and other.x + other.w <= self.x + self.w and other.y + other.h <= self.y + self.h)


def padded_crop(image: Any, box: Box, padding: float) -> Any:
    """The crop of ``box`` grown by ``padding`` of its size on each side, clipped to the image
    (zero-size when the box lies outside it)."""
    px, py = int(round(box.w * padding)), int(round(box.h * padding))
    left, top = max(0, box.x - px), max(0, box.y - py)
    right, bottom = min(image.width, box.x + box.w + px), min(image.height, box.y + box.h + py)
    return image.crop((left, top, max(left, right), max(top, bottom)))
