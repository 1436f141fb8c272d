"""Prompt bank speed: load + validate every set, expand, and lay out a ≥100k-image sweep.

Baseline in the same process: parsing the same YAML files with ``yaml.safe_load`` alone.

    python benchmarks/bench_prompts.py [--images 100000]
"""

from __future__ import annotations

import argparse
import math
import time

import pandas as pd
import yaml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from t2ibias.core.paths import prompts_dir
    from t2ibias.prompts.bank import expand, load_prompt_set
    from t2ibias.store.rundir import image_jobs

    files = sorted(prompts_dir().glob("*.yaml"))

    def baseline() -> float:
        t0 = time.perf_counter()
        for f in files:
            yaml.safe_load(f.read_text())
        return time.perf_counter() - t0

    def ours() -> tuple[float, float, int, int]:
        t0 = time.perf_counter()
        records = [r for f in files for r in expand(load_prompt_set(f))]
        t1 = time.perf_counter()
        prompts = pd.DataFrame([r.to_dict() for r in records])
        seeds = math.ceil(args.images / len(prompts))
        spec = {"generator_fingerprint": "0" * 16, "n_seeds": seeds, "base_seed": 0,
                "model": {"id": "x", "source": "x", "pipeline": "x", "steps": 30, "guidance": 5.0, "height": 1024, "width": 1024}}
        jobs = image_jobs(spec, prompts)
        return t1 - t0, time.perf_counter() - t1, len(records), len(jobs)

    base = min(baseline() for _ in range(args.repeats))
    runs = [ours() for _ in range(args.repeats)]
    load = min(r[0] for r in runs)
    layout = min(r[1] for r in runs)
    n_records, n_jobs = runs[0][2], runs[0][3]
    print(f"prompt bank: {len(files)} sets, {n_records} prompt records; sweep of {n_jobs} images; best of {args.repeats}")
    print(f"yaml.safe_load of the same files (baseline): {base * 1000:8.1f} ms")
    print(f"load + validate + expand                  : {load * 1000:8.1f} ms  ({load / base:5.2f}x baseline)")
    print(f"image seeds and keys for {n_jobs} images   : {layout * 1000:8.1f} ms")
    print(f"total                                      : {(load + layout) * 1000:8.1f} ms  (aim: well under 1 s)")


if __name__ == "__main__":
    main()
