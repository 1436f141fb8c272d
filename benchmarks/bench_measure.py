"""Measure-stage benchmark: images/s of ``measure_stage`` against a raw CLIP loop, same process.

A small run is generated offline (tiny-random-sd by default), its images optionally upscaled to
the size real generators produce. Then, on the same images and batch size:

1. raw loop: load the classifier, open each PNG and call ``CLIPAttributeClassifier.encode_images``
   batch by batch (the least work that still reads and encodes every image);
2. ``measure_stage``: classifier load, decode + face gate (+ person gate) + CLIP on every unit
   (image, faces, people) + rows and parquet writes, from an empty measurement file.

Both load the classifier the same way (text embeddings from the disk cache after the warm-up).

    python benchmarks/bench_measure.py [--classifier tiny-random-clip] [--device auto] [--batch-size 16]
        [--seeds 8] [--upscale 512] [--workers 1] [--person-detector yolo11n.pt] [--person-conf 0.25] [--repeats 3]

With real weights on a GPU box: ``--classifier clip-vit-l-14-openai --device cuda --upscale 512``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # steady timings on a loaded CPU; set it yourself to use more


def _upscale(run: Path, size: int) -> None:
    """Rewrite every stored image at size × size and let the manifest vouch for the new bytes."""
    from PIL import Image

    from t2ibias.store.image_store import ImageStore

    rows = []
    for row in ImageStore(run).records().values():
        if row.get("status") != "ok":
            continue
        path = run / row["path"]
        with Image.open(path) as img:
            big = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, format="PNG")
        path.write_bytes(buf.getvalue())
        rows.append({**row, "sha256": hashlib.sha256(buf.getvalue()).hexdigest(), "width": size, "height": size})
    with open(run / "manifest-0.jsonl", "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random-sd")
    ap.add_argument("--prompts", default="demo")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--classifier", default="tiny-random-clip", help="classifier id or YAML file (real weights: clip-vit-l-14-openai)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--upscale", type=int, default=0, metavar="PX", help="resize the generated images to PX × PX first (0: keep)")
    ap.add_argument("--workers", type=int, default=1, help="measure_stage's decode/gate/preprocess threads")
    ap.add_argument("--person-detector", default=None, help="YOLO weights (local .pt or release name) for the person gate")
    ap.add_argument("--person-conf", type=float, default=None, help="person gate confidence threshold (default 0.25)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    from PIL import Image

    from t2ibias.core.device import resolve_device
    from t2ibias.models.classifier_spec import resolve_classifier_spec
    from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier
    from t2ibias.measure.stage import measure_stage
    from t2ibias.store.rundir import EMBEDDINGS_FILE, MEASURE_FILE, MEASUREMENTS_FILE, parts_dir
    from t2ibias.runspec import SweepRequest, prepare_run
    from t2ibias.generation.stage import generate_stage
    from t2ibias.store.image_store import ImageStore

    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="t2ibias-bench-measure-"))
    run = work / "run"
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else ""))
    t0 = time.perf_counter()
    prepare_run(run, SweepRequest(args.model, [args.prompts], args.seeds, 0, "tiny-random-clip", device))
    generate_stage(run, device=device, batch_size=8)
    if args.upscale:
        _upscale(run, args.upscale)
    paths = [run / r["path"] for r in ImageStore(run).records().values() if r.get("status") == "ok"]
    with Image.open(paths[0]) as first:
        size = first.size
    print(f"run: {len(paths)} images of {size[0]}x{size[1]} ({args.model}), made in {time.perf_counter() - t0:.1f} s")

    cspec = resolve_classifier_spec(args.classifier)
    load_times = []

    def raw() -> float:
        t0 = time.perf_counter()
        clf = CLIPAttributeClassifier(cspec, device)  # measure_stage loads its classifier too
        clf.load()
        load_times.append(time.perf_counter() - t0)
        for i in range(0, len(paths), args.batch_size):
            images = []
            for p in paths[i : i + args.batch_size]:
                with Image.open(p) as img:
                    images.append(img.convert("RGB"))
            clf.encode_images(images).cpu()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def ours() -> tuple[float, dict]:
        for name in (MEASUREMENTS_FILE, EMBEDDINGS_FILE, MEASURE_FILE):
            (run / name).unlink(missing_ok=True)
            shutil.rmtree(parts_dir(run, name), ignore_errors=True)
        t0 = time.perf_counter()
        result = measure_stage(run, device=device, batch_size=args.batch_size, classifier=args.classifier,
                               person_detector=args.person_detector or "none", person_conf=args.person_conf,
                               workers=args.workers)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, result

    raw()  # warm-up (kernels, allocator, file cache)
    ours()
    raw_times, our_times = [], []
    for _ in range(args.repeats):
        raw_times.append(raw())
        t, result = ours()
        our_times.append(t)
    t0 = time.perf_counter()
    cached = measure_stage(run, device=device, batch_size=args.batch_size, classifier=args.classifier,
                           person_detector=args.person_detector or "none", person_conf=args.person_conf)
    resume_s = time.perf_counter() - t0
    n = len(paths)
    r, o = min(raw_times), min(our_times)
    print(f"classifier {cspec.id} ({cspec.arch}), batch {args.batch_size}, workers {args.workers}, "
          f"person gate {args.person_detector or 'none'}; best of {args.repeats}")
    print(f"classifier load (text embeddings cached): {min(load_times):6.2f} s, in both timings below")
    print(f"raw loop (load + open + encode_images): {r:8.3f} s  ({n / r:8.2f} images/s)")
    print(f"measure_stage (load + gate + rows)    : {o:8.3f} s  ({n / o:8.2f} images/s)  "
          f"units: {result['faces']} faces, {result['people']} people, {result['nobody']} images with nobody")
    units = n + result["faces"] + result["people"]
    print(f"  ratio measure/raw images/s          : {r / o:6.3f}x   (aim >= 0.9)")
    print(f"  ratio measure/raw CLIP crops/s      : {units * r / (n * o):6.3f}x   "
          f"({units} crops encoded by measure_stage vs {n} by the raw loop: the stage's overhead alone)")
    print(f"measure again on the measured run     : {resume_s:8.3f} s  ({cached['cached']} cached)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
