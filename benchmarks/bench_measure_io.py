"""Measure-stage checkpoint I/O at scale: CPU seconds and bytes written for N synthetic images,
rewriting the whole tables at every checkpoint (the former scheme) against appending part files
and compacting once (:class:`t2ibias.measure.table.PartWriter`, :func:`~t2ibias.measure.table.compact_tables`).

Rows are made up front, outside the timings: per image one row per attribute for the image and
for each face (faces alternate 0, 1, 2 per image) and one embedding of ``--dim`` float32 values,
checkpointed every 256 images as the stage does. The two schemes run interleaved, ``--repeats``
times each at every size; CPU is this process's (``time.process_time``), bytes are what went
through ``atomic_write_bytes``. The rewrite scheme is quadratic, so above ``--rewrite-max`` images
it is not run: its bytes are then the exact sum of its rewrites' sizes estimated from the
measured bytes per row (printed as "est.").

    OMP_NUM_THREADS=1 python benchmarks/bench_measure_io.py [--sizes 10000 100000] [--dim 768]
        [--attributes 6] [--repeats 2] [--rewrite-max 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

import t2ibias.measure.table as table
from t2ibias.store.rundir import COLUMNS, EMBEDDING_COLUMNS

EVERY = 256  # t2ibias.measure.stage.CHECKPOINT_EVERY


def checkpoints(n_images: int, dim: int, n_attr: int) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    attrs = [f"attr{i}" for i in range(n_attr)]
    probs = json.dumps({"a": 0.6, "b": 0.3, "c": 0.1}, sort_keys=True)
    rng = np.random.default_rng(0)
    out = []
    for start in range(0, n_images, EVERY):
        keys, units, index = [], [], []
        for i in range(start, min(n_images, start + EVERY)):
            key = f"{i:032x}"
            for u, j in [("image", -1)] + [("face", f) for f in range(i % 3)]:
                keys += [key] * n_attr
                units += [u] * n_attr
                index += [j] * n_attr
        n = len(keys)
        box = np.where(np.array(index) < 0, np.nan, 10.0)
        rows = pd.DataFrame({
            "key": keys, "measurer": "f" * 16, "unit": units, "face_index": index,
            "box_x": box, "box_y": box, "box_w": box * 3, "box_h": box * 3,
            "attribute": attrs * (n // n_attr), "label": "a", "top_label": "a",
            "score": rng.random(n), "margin": rng.random(n), "probs": probs,
        }, columns=COLUMNS)
        image_keys = [f"{i:032x}" for i in range(start, min(n_images, start + EVERY))]
        vecs = rng.standard_normal((len(image_keys), dim)).astype("float32")
        emb = pd.DataFrame({"key": image_keys, "measurer": "f" * 16, "embedding": list(vecs)}, columns=EMBEDDING_COLUMNS)
        out.append((rows, emb))
    return out


class Counter:
    def __init__(self) -> None:
        self.bytes = 0
        self.original = table.atomic_write_bytes

    def __enter__(self) -> "Counter":
        def counting(path: Path, data: bytes) -> None:
            self.bytes += len(data)
            self.original(path, data)

        table.atomic_write_bytes = counting
        return self

    def __exit__(self, *exc: object) -> None:
        table.atomic_write_bytes = self.original


def rewrite(run: Path, chunks) -> tuple[float, int, list[int]]:
    """The former scheme: every checkpoint rewrites both tables with every row so far."""
    frames, embs, sizes = [], [], []
    t0 = time.process_time()
    with Counter() as c:
        for rows, emb in chunks:
            frames.append(rows)
            embs.append(emb)
            before = c.bytes
            table.write_tables(run, frames, embs)
            sizes.append(c.bytes - before)
    return time.process_time() - t0, c.bytes, sizes


def append(run: Path, chunks) -> tuple[float, int]:
    t0 = time.process_time()
    with Counter() as c:
        writer = table.PartWriter(run, "local")
        for rows, emb in chunks:
            writer.write(rows, emb)
        table.compact_tables(run)
    return time.process_time() - t0, c.bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=768, help="embedding length (768: ViT-L/14)")
    ap.add_argument("--attributes", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rewrite-max", type=int, default=20_000, help="largest N the quadratic scheme is run at")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, pandas {pd.__version__}; "
          f"{args.attributes} attributes, 0-2 faces per image, {args.dim}-d embeddings, checkpoint every {EVERY} images")
    work = Path(tempfile.mkdtemp(prefix="t2ibias-bench-io-"))
    try:
        for n in args.sizes:
            chunks = checkpoints(n, args.dim, args.attributes)
            n_rows = sum(len(r) for r, _ in chunks)
            run_old = n <= args.rewrite_max
            old_cpu, old_bytes, new_cpu, new_bytes = [], [], [], []
            for r in range(args.repeats):
                if run_old:
                    shutil.rmtree(work / "old", ignore_errors=True)
                    cpu, b, sizes = rewrite(work / "old", chunks)
                    old_cpu.append(cpu)
                    old_bytes.append(b)
                shutil.rmtree(work / "new", ignore_errors=True)
                cpu, b = append(work / "new", chunks)
                new_cpu.append(cpu)
                new_bytes.append(b)
            final = sum(p.stat().st_size for p in (work / "new").glob("*.parquet"))
            print(f"\nN = {n:,} images ({n_rows:,} rows, {len(chunks)} checkpoints); final tables {final / 1e6:,.1f} MB; "
                  f"best of {args.repeats}")
            nc, nb = min(new_cpu), min(new_bytes)
            print(f"  append + compact : {nc:9.2f} s CPU  {nb / 1e9:9.3f} GB written  ({nb / final:.2f}x the final tables)")
            if run_old:
                oc, ob = min(old_cpu), min(old_bytes)
                print(f"  rewrite each time: {oc:9.2f} s CPU  {ob / 1e9:9.3f} GB written  ({ob / final:.1f}x the final tables)")
                print(f"  ratio rewrite/append: CPU {oc / nc:6.1f}x   bytes {ob / nb:6.1f}x")
            else:
                # bytes of rewrite k are about (rows so far) x (bytes per row of the final tables)
                per_image = final / n
                est = sum(per_image * min(n, (k + 1) * EVERY) for k in range(len(chunks)))
                print(f"  rewrite each time: not run (N > --rewrite-max); est. {est / 1e9:9.1f} GB written "
                      f"({est / final:.0f}x the final tables), est. ratio bytes {est / nb:6.0f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
