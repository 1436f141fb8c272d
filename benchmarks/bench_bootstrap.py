"""Bootstrap benchmark: our vectorized path vs a per-group ``scipy.stats.bootstrap`` loop.

Synthetic data: ``--rows`` image rows, each with a label for 4 attributes (K = 2, 3, 7, 10),
spread over ``--prompts`` prompts with per-prompt skewed label distributions. Statistic:
total variation to uniform, ``--resamples`` bootstrap resamples, 95 % percentile intervals.

- per prompt: ours = ``group_intervals`` (one multinomial draw per chunk of prompts, the
  statistic and percentile intervals vectorized over the chunk, chunks on worker threads);
  scipy = one ``scipy.stats.bootstrap``
  call per (attribute, prompt) on that prompt's label array (method="percentile",
  vectorized statistic that counts labels with one offset ``bincount``).
- pooled: ours = two-stage cluster bootstrap (``pooled_replicates``: prompts, then images);
  scipy = ``scipy.stats.bootstrap`` over prompt indices (resamples prompts only: scipy has no
  two-stage cluster bootstrap), statistic = TV of the summed counts of the drawn prompts.

Ours is timed from the raw rows (count tables included); scipy gets its per-prompt label arrays
prepared outside the timing. If the full scipy loop would take longer than ``--scipy-budget``
seconds (projected from the first ``--probe`` prompts of each attribute), only a subset of
prompts runs and the time is extrapolated linearly; the output says so. Peak memory of our path
is measured in a separate run under tracemalloc (so tracing does not slow the timed runs).
Ours runs with ``--workers`` threads (default: all CPUs) and once more with one thread, so the
single-thread ratio is reported next to the multi-thread one (the scipy loop is single-threaded).

    python benchmarks/bench_bootstrap.py [--rows 1000000] [--prompts 2000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy
import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2ibias.stats.bootstrap import (
    group_intervals,
    percentile_interval,
    pooled_replicates,
)
from t2ibias.metrics.skew import total_variation_uniform

KS = (2, 3, 7, 10)
CONFIDENCE = 0.95


def make_data(rows: int, prompts: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    prompt = np.sort(rng.integers(0, prompts, size=rows)).astype(np.int32)
    labels = []
    for k in KS:
        # each prompt gets its own skewed label distribution
        dist = rng.dirichlet(np.full(k, 0.7), size=prompts)
        u = rng.random(rows)
        cdf = np.cumsum(dist, axis=1)[prompt]
        labels.append(np.minimum((u[:, None] > cdf).sum(axis=1), k - 1).astype(np.int8))
    return prompt, labels


def ours(prompt: np.ndarray, labels: list[np.ndarray], prompts: int, resamples: int, seed: int,
         chunk: int, workers: int) -> dict[int, tuple]:
    rng = np.random.default_rng(seed)
    out: dict[int, tuple] = {}
    for k, lab in zip(KS, labels):
        counts = np.bincount(prompt.astype(np.int64) * k + lab, minlength=prompts * k).reshape(prompts, k)
        _, lo, hi = group_intervals(counts, total_variation_uniform, resamples, rng, CONFIDENCE, chunk=chunk, workers=workers)
        pooled_reps = pooled_replicates(counts, resamples, rng, workers=workers)
        pooled = percentile_interval(total_variation_uniform(pooled_reps), CONFIDENCE)
        out[k] = (lo, hi, pooled, counts)
    return out


def _tv_of_labels(k: int):
    def stat(x: np.ndarray, axis: int = -1) -> np.ndarray:
        x = np.moveaxis(np.asarray(x, dtype=np.int64), axis, -1)
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        offsets = (np.arange(len(flat)) * k)[:, None]
        counts = np.bincount((flat + offsets).ravel(), minlength=len(flat) * k).reshape(len(flat), k)
        return total_variation_uniform(counts).reshape(lead)

    return stat


def _tv_of_clusters(counts: np.ndarray):
    def stat(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(np.asarray(idx, dtype=np.int64), axis, -1)
        return total_variation_uniform(counts[idx].sum(axis=-2))

    return stat


def scipy_group(data: np.ndarray, k: int, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    res = scipy.stats.bootstrap((data,), _tv_of_labels(k), n_resamples=resamples, method="percentile",
                                confidence_level=CONFIDENCE, vectorized=True, random_state=rng)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=256, help="prompts per multinomial draw (bounds memory)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads for our path")
    ap.add_argument("--scipy-budget", type=float, default=120.0, help="seconds; above this the scipy loop is extrapolated")
    ap.add_argument("--probe", type=int, default=25, help="prompts per attribute timed to project the scipy loop")
    args = ap.parse_args()

    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, numpy {np.__version__}, scipy {scipy.__version__}")
    print(f"data: {args.rows:,} image rows x {len(KS)} attributes (K = {', '.join(map(str, KS))}), "
          f"{args.prompts:,} prompts, {args.resamples} resamples, TV to uniform, {CONFIDENCE:.0%} percentile intervals")
    prompt, labels = make_data(args.rows, args.prompts, args.seed)

    # -- ours ----------------------------------------------------------------------------------------
    ours(prompt[:1000], [lab[:1000] for lab in labels], args.prompts, 10, args.seed, args.chunk, args.workers)  # warm-up
    t0 = time.perf_counter()
    result = ours(prompt, labels, args.prompts, args.resamples, args.seed, args.chunk, args.workers)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = ours(prompt, labels, args.prompts, args.resamples, args.seed, args.chunk, 1)
    t_ours_1 = time.perf_counter() - t0
    same = all(np.array_equal(result[k][0], single[k][0]) and result[k][2] == single[k][2] for k in KS)

    # -- scipy loop ----------------------------------------------------------------------------------
    bounds = np.searchsorted(prompt, np.arange(args.prompts + 1))
    per_group = [[lab[bounds[i]:bounds[i + 1]] for i in range(args.prompts)] for lab in labels]
    rng = np.random.default_rng(args.seed + 1)
    probe = min(args.probe, args.prompts)
    t_probe = 0.0
    probe_ci = {}
    for a, k in enumerate(KS):
        t0 = time.perf_counter()
        probe_ci[k] = [scipy_group(per_group[a][i], k, args.resamples, rng) for i in range(probe)]
        t_probe += time.perf_counter() - t0
    projected = t_probe * args.prompts / probe
    if projected <= args.scipy_budget:
        t0 = time.perf_counter()
        for a, k in enumerate(KS):
            probe_ci[k] = [scipy_group(per_group[a][i], k, args.resamples, rng) for i in range(args.prompts)]
        t_scipy_groups = time.perf_counter() - t0
        done = args.prompts
        how = "measured over all prompts"
    else:
        t_scipy_groups = projected
        done = probe
        how = (f"EXTRAPOLATED linearly from {probe} prompts per attribute ({t_probe:.2f} s measured); "
               f"the full loop would take ~{projected:.0f} s > budget {args.scipy_budget:.0f} s")

    t0 = time.perf_counter()
    pooled_scipy = {}
    for k in KS:
        counts = result[k][3]
        res = scipy.stats.bootstrap((np.arange(args.prompts),), _tv_of_clusters(counts), n_resamples=args.resamples,
                                    method="percentile", confidence_level=CONFIDENCE, vectorized=True, random_state=rng)
        pooled_scipy[k] = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    t_scipy_pooled = time.perf_counter() - t0
    t_scipy = t_scipy_groups + t_scipy_pooled

    # agreement on the prompts scipy ran (Monte-Carlo error only: same data, same interval method)
    worst = 0.0
    for k in KS:
        lo, hi = result[k][0][:done], result[k][1][:done]
        sc = np.array(probe_ci[k][:done])
        worst = max(worst, float(np.max(np.abs(lo - sc[:, 0]))), float(np.max(np.abs(hi - sc[:, 1]))))

    # -- peak memory of our path ---------------------------------------------------------------------
    tracemalloc.start()
    ours(prompt, labels, args.prompts, args.resamples, args.seed, args.chunk, args.workers)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    n_groups = len(KS) * args.prompts
    print()
    print(f"ours   (per prompt + pooled, all {n_groups:,} prompt-attribute groups + {len(KS)} pooled), "
          f"{args.workers} threads: {t_ours:8.2f} s; 1 thread: {t_ours_1:8.2f} s (identical results: {same})")
    print(f"scipy  per-prompt loop, {n_groups:,} bootstrap calls: {t_scipy_groups:8.2f} s  [{how}]")
    print(f"scipy  pooled (prompts resampled, one stage), {len(KS)} calls: {t_scipy_pooled:8.2f} s")
    print(f"scipy  total: {t_scipy:8.2f} s")
    print(f"speed-up (scipy / ours): {t_scipy / t_ours:.1f}x with {args.workers} threads, {t_scipy / t_ours_1:.1f}x single-threaded")
    print(f"per-prompt intervals, ours vs scipy on {done * len(KS):,} groups: max |endpoint difference| = {worst:.4f} (Monte-Carlo)")
    for k in KS:
        print(f"  pooled K={k:>2}: ours two-stage {result[k][2][0]:.4f}..{result[k][2][1]:.4f}   "
              f"scipy one-stage {pooled_scipy[k][0]:.4f}..{pooled_scipy[k][1]:.4f}")
    print(f"peak traced memory of our path (tracemalloc, chunk {args.chunk} prompts, {args.workers} threads): {peak / 2**20:.0f} MiB; "
          f"process max RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
