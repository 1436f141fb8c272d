"""Pixel skin-tone benchmark: crops per second of ``PixelSkinTone.measure``.

Synthetic ``--size``×``--size`` face crops (grey background, a noisy face ellipse painted with a
random MST swatch, dark hair, eyes and lips), ``--crops`` of them, measured in one call; the
batch is timed ``--repeat`` times and the best time reported. Also times ``--single`` crops one
call each, to show what batching buys, and checks that the labels agree.

    python benchmarks/bench_skin_tone.py [--crops 2000] [--size 112]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from t2ibias.measure.skin_tone import MST_HEX, PixelSkinTone, hex_to_rgb  # noqa: E402


def synthetic_crops(n: int, size: int, seed: int = 0) -> tuple[list[Image.Image], list[str]]:
    rng = np.random.default_rng(seed)
    crops, truth = [], []
    s = size / 112
    for _ in range(n):
        mst = int(rng.integers(1, 11))
        img = Image.new("RGB", (size, size), (150, 155, 160))
        draw = ImageDraw.Draw(img)
        draw.ellipse([24 * s, 26 * s, 88 * s, 108 * s], fill=hex_to_rgb(MST_HEX[mst - 1]))
        draw.chord([18 * s, 8 * s, 94 * s, 70 * s], 180, 360, fill=(45, 30, 22))
        for x in (42, 64):
            draw.ellipse([x * s, 58 * s, (x + 7) * s, 63 * s], fill=(25, 20, 20))
        draw.ellipse([47 * s, 88 * s, 65 * s, 94 * s], fill=(170, 50, 60))
        arr = np.asarray(img).astype(np.float64) + rng.normal(0, 3.0, (size, size, 3))
        crops.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
        truth.append(str(mst))
    return crops, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=2000)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--single", type=int, default=200)
    args = ap.parse_args()

    crops, truth = synthetic_crops(args.crops, args.size)
    tone = PixelSkinTone()
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        preds = tone.measure(crops)
        best = min(best, time.perf_counter() - t0)
    labels = [p["skin_tone"].label for p in preds]
    exact = np.mean([a == b for a, b in zip(labels, truth)])

    t0 = time.perf_counter()
    single = [tone.measure([c])[0]["skin_tone"].label for c in crops[: args.single]]
    one_by_one = (time.perf_counter() - t0) / max(1, len(single))
    assert single == labels[: len(single)], "batched and one-by-one labels differ"

    print(f"{args.crops} crops {args.size}x{args.size}: {best:.2f} s, {args.crops / best:,.0f} crops/s (batched)")
    print(f"one call per crop: {1 / one_by_one:,.0f} crops/s over {len(single)} crops")
    print(f"labels equal to the painted swatch: {exact:.1%}")


if __name__ == "__main__":
    main()
