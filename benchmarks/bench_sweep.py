"""Sweep machinery benchmarks: ratios against a baseline run in the same process.

1. generate: images/s of ``generate_stage`` (store, hashing, manifest, sample-wise execution)
   vs calling the same pipeline directly on the same prompts and seeds, same batch size.
2. resume: a second ``generate_stage`` on the finished run vs the first run.
3. demo: wall time of the whole offline demo (`t2ibias sweep --model tiny-random-sd --prompts demo`)
   in a fresh process with a warm model cache, install excluded.

    python benchmarks/bench_sweep.py [--model tiny-random-sd] [--seeds 8] [--batch-size 4] [--device auto]

Torch runs on ``--threads`` threads (default 1, set before torch is imported): on a loaded machine,
idle OpenMP threads spin and make single timings vary 10x or more. Compared runs are interleaved
round by round, and each ratio is the median of the per-round ratios (min-max over the n rounds).
With ``--seeds 1`` the batches span prompts: the store batches jobs across prompts, not only
within one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import statistics
from pathlib import Path


def _ratio(num: list[float], den: list[float]) -> str:
    r = [a / b for a, b in zip(num, den)]
    return f"{statistics.median(r):6.3f}x [{min(r):.3f}-{max(r):.3f}], n={len(r)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random-sd")
    ap.add_argument("--prompts", default="demo")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall seconds, or CPU seconds of the process (all its threads): steadier on a loaded machine")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (pinned for steady timings)")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    now = time.process_time if args.clock == "cpu" else time.perf_counter

    from t2ibias.generation.diffusers_adapter import DiffusersGenerator
    from t2ibias.core.device import resolve_device
    from t2ibias.models.generator_spec import GeneratorSpec
    from t2ibias.runspec import SweepRequest, prepare_run
    from t2ibias.generation.stage import generate_stage
    from t2ibias.store.rundir import image_jobs, read_prompts

    work = Path(tempfile.mkdtemp(prefix="t2ibias-bench-"))
    device = resolve_device(args.device)
    req = SweepRequest(args.model, [args.prompts], args.seeds, 0, "tiny-random-clip", device)
    print(f"machine: {os.cpu_count()} CPUs, {args.threads} torch thread(s), torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else ""))

    # Baseline: the same pipeline, called directly (plain batched call, as a user would).
    probe = work / "probe"
    spec = prepare_run(probe, req)
    jobs = image_jobs(spec, read_prompts(probe, spec))
    gspec = GeneratorSpec(**spec["model"])
    from t2ibias.generation.diffusers_adapter import dtype_kwarg, resolve_weights
    from diffusers import DiffusionPipeline

    weights = resolve_weights(gspec)
    kw = {dtype_kwarg(): getattr(torch, gspec.dtype)}
    if weights.revision:
        kw["revision"] = weights.revision
    pipe = DiffusionPipeline.from_pretrained(weights.load_from, **kw).to(device)
    pipe.set_progress_bar_config(disable=True)
    import diffusers.utils.logging as dlogging

    dlogging.disable_progress_bar()

    def direct(pipe=pipe, sw=None, batch: int | None = None) -> float:
        size = batch or args.batch_size
        t0 = now()
        for i in range(0, len(jobs), size):
            batch = jobs[i : i + size]
            if sw is not None:
                sw.n_images = len(batch)
            pipe(prompt=[j.text for j in batch], generator=[torch.Generator("cpu").manual_seed(j.seed) for j in batch],
                 num_inference_steps=gspec.steps, guidance_scale=gspec.guidance, height=gspec.height, width=gspec.width,
                 output_type="pil", **gspec.call_kwargs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return now() - t0

    def ours(i: int, batch_invariant: bool = True, loaded: DiffusersGenerator | None = None) -> tuple[float, float]:
        run = work / f"run{i}-{batch_invariant}-{loaded is not None}"
        prepare_run(run, dataclasses.replace(req, batch_invariant=batch_invariant))
        t0 = now()
        generate_stage(run, device=device, batch_size=args.batch_size, generator=loaded)
        first = now() - t0
        t0 = now()
        again = generate_stage(run, device=device, batch_size=args.batch_size)
        resume = now() - t0
        assert again.generated == 0
        return first, resume

    direct()  # warm-up (kernels, allocator)
    gen = DiffusersGenerator(gspec, weights, device, gspec.dtype)
    gen.load()  # warm the adapter's own loading path once too
    from t2ibias.generation.samplewise import make_pipeline_samplewise

    sw_pipe = DiffusionPipeline.from_pretrained(weights.load_from, **kw).to(device)
    sw_pipe.set_progress_bar_config(disable=True)
    sw = make_pipeline_samplewise(sw_pipe)
    gen_fast = DiffusersGenerator(gspec, weights, device, gspec.dtype, batch_invariant=False)
    gen_fast.load()
    d_times, one_times, s_times, o_times, f_times, r_times, ol_times, fl_times = [], [], [], [], [], [], [], []
    for i in range(args.repeats):
        d_times.append(direct())
        one_times.append(direct(batch=1))
        s_times.append(direct(sw_pipe, sw))
        first, resume = ours(i)
        o_times.append(first)
        r_times.append(resume)
        f_times.append(ours(i, batch_invariant=False)[0])
        ol_times.append(ours(i, loaded=gen)[0])
        fl_times.append(ours(i, batch_invariant=False, loaded=gen_fast)[0])
    n = len(jobs)
    med = statistics.median
    print(f"images per run: {n} ({args.model}, --seeds {args.seeds}, batch {args.batch_size}); medians of {args.repeats} interleaved rounds, {args.clock} seconds")
    print(f"direct pipeline calls        : {med(d_times):8.3f} s  ({n / med(d_times):7.2f} images/s)")
    print(f"direct, one per call         : {med(one_times):8.3f} s  ({n / med(one_times):7.2f} images/s)  (the plain way to batch-invariant images)")
    print(f"direct, sample-wise          : {med(s_times):8.3f} s  ({n / med(s_times):7.2f} images/s)  (same pipeline, batch-invariant execution)")
    print(f"t2ibias generate             : {med(o_times):8.3f} s  ({n / med(o_times):7.2f} images/s)  (includes model load, PNG, hashing, manifest)")
    print(f"t2ibias generate --fast-batching: {med(f_times):8.3f} s  ({n / med(f_times):7.2f} images/s)")
    print(f"t2ibias generate, pipeline loaded once: {med(ol_times):8.3f} s; --fast-batching: {med(fl_times):8.3f} s  "
          "(generate_stage(generator=...): PNG, hashing, manifest; no model load)")
    print(f"  generate / direct sample-wise (same batches)   : {_ratio(o_times, s_times)}   (aim <= 1.1)")
    print(f"  generate --fast-batching / direct (same batches): {_ratio(f_times, d_times)}   (aim <= 1.1)")
    print(f"  the same without the model load (loaded once)  : {_ratio(ol_times, s_times)}; --fast-batching {_ratio(fl_times, d_times)}")
    print(f"  generate / direct batched (cost of batch invariance + overhead): {_ratio(o_times, d_times)}")
    print(f"  generate / direct one per call: {_ratio(o_times, one_times)}")
    print(f"resume of the finished run   : {med(r_times):8.3f} s")
    print(f"  resume / first run         : {_ratio(r_times, o_times)}   (aim <= 0.02x)")

    if not args.skip_demo:
        demo_out = work / "demo"
        cmd = [sys.executable, "-m", "t2ibias.cli", "sweep", "--model", "tiny-random-sd", "--prompts", "demo", "--out", str(demo_out)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        demo = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        demo_again = time.perf_counter() - t0
        print(f"demo end to end (fresh process, warm model cache): {demo:6.1f} s   (aim < 90 s)")
        print(f"demo again on the finished run (resume)          : {demo_again:6.1f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
