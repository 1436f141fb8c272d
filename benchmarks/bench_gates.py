"""Face gates on real photos, offline: recall, false positives and speed of each registered detector.

Photos (all ship in installed packages):

* scikit-image's ``lfw_subset()``: 100 labelled face crops and 100 non-face crops (25 × 25 px,
  grey), upscaled to ``--size`` px (bilinear). A face crop counts as found when the gate returns
  at least one box; a non-face crop with a box is a false positive.
* ``astronaut()`` (one frontal face), matplotlib's ``grace_hopper.jpg`` (one frontal face, when
  matplotlib is installed) and ``camera()`` (one face in profile): a face is found when a box
  overlaps the hand-drawn one by IoU ≥ 0.3; every other box is a false positive.

Speed: images per second of each gate on a fixed sample (the three photos and 10 LFW crops),
rounds interleaved across gates, ``OMP_NUM_THREADS`` pinned (default 1), shown as a ratio to
``haar``. Recall and the false-positive rate carry Wilson 95 % intervals.

    OMP_NUM_THREADS=1 python benchmarks/bench_gates.py [--gates haar,mtcnn,dlib-cnn] [--lfw 100] [--json OUT]

``dlib-cnn`` at FairFace's working size (800 px, one upsampling) takes about 10 s per image on
one core; on the LFW crops it runs at ``--dlib-lfw-size`` (default 250: the crops' own size, no
upsampling), which the table says.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

#: (x, y, w, h) of the one face in each photo, drawn by hand.
PHOTO_FACES = {"astronaut": (177, 66, 95, 95), "grace_hopper": (165, 130, 200, 210), "camera_profile": (180, 105, 75, 95)}


def photos() -> dict[str, Image.Image]:
    from skimage import data

    out = {"astronaut": Image.fromarray(data.astronaut())}
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
            out["grace_hopper"] = Image.open(fh).convert("RGB")
    except ImportError:
        pass
    out["camera_profile"] = Image.fromarray(data.camera()).convert("RGB")
    return out


def lfw(n: int, size: int) -> tuple[list[Image.Image], list[Image.Image]]:
    """The first ``n`` face and ``n`` non-face crops of ``lfw_subset()``, upscaled to ``size`` px."""
    from skimage import data

    crops = data.lfw_subset()
    imgs = [Image.fromarray((c * 255).round().astype(np.uint8)).convert("RGB").resize((size, size), Image.BILINEAR)
            for c in crops]
    return imgs[:100][:n], imgs[100:][:n]


def wilson(k: int, n: int) -> tuple[float, float]:
    from t2ibias.stats.binomial import wilson as wilson_interval

    lo, hi = wilson_interval(np.array([k]), np.array([n]))
    return float(lo[0]), float(hi[0])


def build(name: str, lfw_size: int | None = None):
    from t2ibias.measure.gate import create_face_detector

    det = create_face_detector(name, "cuda" if _cuda() else "cpu")
    if lfw_size is not None and name == "dlib-cnn":
        from t2ibias.measure.dlib_faces import DlibCnnFaceGate

        det = DlibCnnFaceGate(max_size=lfw_size, upsample=0)
    return det


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def detect_many(det, images: list) -> list:
    """Boxes per image, batched where the detector batches."""
    many = getattr(det, "detect_many", None)
    return many(images) if callable(many) else [det.detect(i) for i in images]


def quality(name: str, faces: list, others: list, pics: dict, dlib_lfw_size: int) -> dict:
    from t2ibias.measure.gate import Box

    det = build(name)
    lfw_det = build(name, dlib_lfw_size) if name == "dlib-cnn" else det
    hits = sum(bool(b) for b in detect_many(lfw_det, faces))
    fps = sum(bool(b) for b in detect_many(lfw_det, others))
    photo = {}
    for key, img in pics.items():
        boxes = det.detect(img)
        truth = Box(*PHOTO_FACES[key])
        found = any(b.iou(truth) >= 0.3 for b in boxes)
        photo[key] = {"found": found, "false_positives": sum(b.iou(truth) < 0.3 for b in boxes),
                      "boxes": [[b.x, b.y, b.w, b.h] for b in boxes]}
    return {"gate": name, "lfw_recall": hits / len(faces), "lfw_recall_ci": wilson(hits, len(faces)), "lfw_n_faces": len(faces),
            "lfw_false_positive_rate": fps / len(others), "lfw_fp_ci": wilson(fps, len(others)), "lfw_n_nonfaces": len(others),
            "lfw_setting": f"max_size {dlib_lfw_size}, upsample 0" if name == "dlib-cnn" else "default", "photos": photo}


def speed(names: list[str], sample: list, rounds: int) -> dict[str, float]:
    """Images per second of each gate on ``sample``, rounds interleaved (best round kept)."""
    dets = {n: build(n) for n in names}
    for d in dets.values():  # load weights, warm up
        d.detect(sample[0])
    best = {n: 0.0 for n in names}
    for _ in range(rounds):
        for n, d in dets.items():
            t = time.perf_counter()
            detect_many(d, sample)
            best[n] = max(best[n], len(sample) / (time.perf_counter() - t))
    return best


def main() -> None:
    from t2ibias.measure.gate import FACE_DETECTORS, face_detector_unavailable

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gates", default=",".join(FACE_DETECTORS.names()))
    ap.add_argument("--lfw", type=int, default=100, help="face and non-face crops of lfw_subset() each (at most 100)")
    ap.add_argument("--size", type=int, default=250, help="side the LFW crops are upscaled to")
    ap.add_argument("--dlib-lfw-size", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--speed-sample", type=int, default=4, help="LFW crops in the timed sample, besides the photos")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = []
    for n in args.gates.split(","):
        why = face_detector_unavailable(n)
        if why:
            print(f"skip {n}: {why}")
        else:
            names.append(n)
    faces, others = lfw(args.lfw, args.size)
    pics = photos()
    rows = [quality(n, faces, others, pics, args.dlib_lfw_size) for n in names]
    timed = list(pics.values()) + faces[: args.speed_sample // 2] + others[: args.speed_sample - args.speed_sample // 2]
    rates = speed(names, timed, args.rounds)
    base = rates.get("haar")
    print(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, cuda={_cuda()}, LFW crops at {args.size} px")
    head = ("gate", "LFW recall [95% CI]", "LFW false pos. [95% CI]", *pics, "images/s", "vs haar")
    print(" | ".join(head))
    for r in rows:
        ph = []
        for key in pics:
            p = r["photos"][key]
            ph.append(("found" if p["found"] else "missed") + (f", {p['false_positives']} FP" if p["false_positives"] else ""))
        rate = rates[r["gate"]]
        print(" | ".join([
            r["gate"] + (f" (LFW: {r['lfw_setting']})" if r["lfw_setting"] != "default" else ""),
            f"{r['lfw_recall']:.2f} [{r['lfw_recall_ci'][0]:.2f}, {r['lfw_recall_ci'][1]:.2f}] n={r['lfw_n_faces']}",
            f"{r['lfw_false_positive_rate']:.2f} [{r['lfw_fp_ci'][0]:.2f}, {r['lfw_fp_ci'][1]:.2f}] n={r['lfw_n_nonfaces']}",
            *ph, f"{rate:.2f}", f"{rate / base:.3f}" if base else "-",
        ]))
        r["images_per_s"] = rate
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "timed_images": len(timed)}, indent=1))


if __name__ == "__main__":
    main()
