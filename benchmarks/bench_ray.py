"""``--executor ray`` with 2 CPU workers vs the local executor, on CPU-bound tiny generation.

Both make the same fresh run (tiny-random-sd with more steps and a larger size, so that the
denoiser dominates, not per-call overhead), one intra-op thread per worker and in the local
process (OMP_NUM_THREADS=1), rounds interleaved (local, ray, local, ray, ...) so that a change in
the machine's load hits both. The Ray cluster is started once, before the rounds; each Ray round
starts its actors and loads the pipeline in them, which is counted. Printed per executor: images/s
of the whole generate stage (median over rounds) and of its steady part (first to last chunk
done), and the ratio Ray / local of each.

    OMP_NUM_THREADS=1 python benchmarks/bench_ray.py [--prompts 4] [--seeds 12] [--steps 8] [--size 128] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import ray
    import torch

    from t2ibias.executors.ray import RayExecutor
    from t2ibias.generation.stage import generate_stage
    from t2ibias.runspec import SweepRequest, prepare_run

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    model = tmp / "tiny-bench.yaml"
    model.write_text(
        "source: tiny:tiny-random-sd\nrevision: main\npipeline: StableDiffusionPipeline\ndtype: float32\n"
        f"steps: {args.steps}\nguidance: 7.5\nheight: {args.size}\nwidth: {args.size}\n"
        "licence: none (random weights made by t2ibias)\nrandom_weights: true\n")
    n_images = args.prompts * args.seeds

    def fresh(name: str) -> Path:
        run = tmp / name
        prepare_run(run, SweepRequest(model=str(model), prompt_sets=["demo"], n_seeds=args.seeds, limit=args.prompts, device="cpu"))
        return run

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    times: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    try:
        for r in range(args.rounds):
            for name in ("local", "ray"):
                run = fresh(f"{name}-{r}")
                stamps: list[float] = []

                def progress(total: int, done: int):
                    return lambda n: stamps.append(time.perf_counter())

                start = time.perf_counter()
                if name == "local":
                    result = generate_stage(run, device="cpu", batch_size=args.batch_size, progress=progress)
                else:
                    with RayExecutor(workers=args.workers) as ex:
                        result = generate_stage(run, device="cpu", batch_size=args.batch_size, executor=ex, progress=progress)
                wall = time.perf_counter() - start
                assert result.generated == n_images, result
                steady = (n_images - args.batch_size) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
                times[name].append((n_images / wall, steady))
                print(f"round {r} {name:5s}: {n_images / wall:6.2f} images/s whole stage, {steady:6.2f} steady "
                      f"({wall:.1f} s for {n_images} images)", flush=True)
    finally:
        ray.shutdown()
    med = {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v)) for k, v in times.items()}
    print(f"\n{n_images} images of {args.size}x{args.size}, {args.steps} steps, batch {args.batch_size}; "
          f"{args.rounds} interleaved rounds; {os.cpu_count()} CPUs; OMP_NUM_THREADS=1")
    print(f"local       : {med['local'][0]:6.2f} images/s whole stage, {med['local'][1]:6.2f} steady")
    print(f"ray x{args.workers}      : {med['ray'][0]:6.2f} images/s whole stage, {med['ray'][1]:6.2f} steady")
    print(f"ratio ray/local: {med['ray'][0] / med['local'][0]:.2f}x whole stage, {med['ray'][1] / med['local'][1]:.2f}x steady")


if __name__ == "__main__":
    main()
