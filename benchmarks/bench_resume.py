"""Resuming a finished run: the check of what is already done, by size (the default) vs by re-hash.

Writes N tiny PNGs (``--png-bytes`` of payload each, default a 64×64 image's ~10 kB) and their
manifest through :class:`t2ibias.store.image_store.ImageStore` into a temporary folder, then times
``done_keys`` over every key, interleaved: the default (exists + recorded size) and ``deep=True``
(the re-hash of every image that resume did before, and ``t2ibias validate --deep`` does now).
The page cache is warm for both, which flatters the re-hash: on a cold cache or a network
filesystem it also reads every byte from disk (≈ 135 GB at 90k SDXL images).

    OMP_NUM_THREADS=1 python benchmarks/bench_resume.py [--images 100000] [--png-bytes 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--png-bytes", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from t2ibias.store.image_store import OK, ImageStore

    with tempfile.TemporaryDirectory(prefix="bench_resume_") as tmp:
        store = ImageStore(tmp)
        payload = os.urandom(args.png_bytes)
        keys = [f"{i:032x}" for i in range(args.images)]
        t0 = time.perf_counter()
        for i, key in enumerate(keys):
            store.put(key, b"\x89PNG\r\n\x1a\n" + i.to_bytes(8, "big") + payload, {"status": OK, "prompt_id": "p", "image_index": i})
        store.close()
        print(f"{args.images:,} images of {args.png_bytes + 16:,} bytes written in {time.perf_counter() - t0:.1f} s")
        times: dict[str, list[float]] = {"size": [], "re-hash": []}
        for _ in range(args.repeats):
            for name, deep in (("size", False), ("re-hash", True)):
                t0 = time.perf_counter()
                done = ImageStore(tmp).done_keys(keys, deep=deep)
                times[name].append(time.perf_counter() - t0)
                assert len(done) == args.images
        best = {k: min(v) for k, v in times.items()}
        print(f"resume check of {args.images:,} finished images, best of {args.repeats} (interleaved):")
        print(f"  by size (default):     {best['size']:6.2f} s")
        print(f"  re-hash (before; --deep): {best['re-hash']:6.2f} s")
        print(f"  ratio re-hash / size:  {best['re-hash'] / best['size']:5.1f}x  "
              f"(re-hash read {args.images * (args.png_bytes + 16) / 1e9:.2f} GB; size read none)")


if __name__ == "__main__":
    main()
