"""The score stage's metric computation at scale, against a scipy.stats.bootstrap baseline.

1,000,000 images × 2 attributes (the two of the shipped classifiers), 2,000 prompts: every row
``compute_metrics`` writes (shares with CIs for every bin, TV, entropy, max–min gap, DALL-Eval
MAD/STD, OpenBias with CIs, per prompt and pooled with the two-stage cluster bootstrap, seed-to-seed
variation), vs ``scipy.stats.bootstrap`` computing ONE metric (TV to uniform) per prompt group,
timed on a sample of groups and scaled to all of them.

    python benchmarks/bench_score.py [--prompts 2000] [--images-per-prompt 500] [--scipy-sample 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--images-per-prompt", type=int, default=500)
    ap.add_argument("--scipy-sample", type=int, default=200)
    args = ap.parse_args()

    from scipy import stats

    from t2ibias.metrics.score import N_RESAMPLES, compute_metrics
    from t2ibias.metrics.skew import total_variation_uniform

    rng = np.random.default_rng(0)
    P, per = args.prompts, args.images_per_prompt
    pids = [f"p{i}" for i in range(P)]
    prompts = pd.DataFrame({"prompt_id": pids, "family": ["occupation"] * P})
    axes = {"gender_presentation": ["masc", "fem", "abstain"], "age_group": ["young", "middle", "older", "abstain"]}
    frames = [pd.DataFrame({"key": np.arange(P * per).astype(str), "prompt_id": np.repeat(pids, per),
                            "image_index": np.tile(np.arange(per), P), "attribute": axis,
                            "label": rng.choice(labels, size=P * per)}) for axis, labels in axes.items()]
    labels = pd.concat(frames, ignore_index=True)

    t0 = time.perf_counter()
    rows = compute_metrics(labels, prompts, {"classifier": {"id": "tiny-random-clip"}, "base_seed": 0})
    ours = time.perf_counter() - t0

    groups = P * len(axes)
    sample = min(args.scipy_sample, groups)
    codes = {a: pd.Categorical(f["label"], categories=l).codes.reshape(P, per) for (a, l), f in zip(axes.items(), frames)}
    t0 = time.perf_counter()
    done = 0
    for axis, labs in axes.items():
        k = len(labs) - 1  # classified labels (abstain excluded), as compute_metrics does
        for i in range(sample // len(axes)):
            x = codes[axis][i]
            x = x[x < k]
            # a vectorized statistic, so scipy resamples all at once: the fast way to call it
            stats.bootstrap((x,), lambda d, axis=-1, k=k: total_variation_uniform((d[..., None] == np.arange(k)).sum(axis=-2)),
                            n_resamples=N_RESAMPLES, method="percentile", vectorized=True, random_state=0)
            done += 1
    scipy_all = (time.perf_counter() - t0) / done * groups
    print(f"data: {P * per:,} images x {len(axes)} attributes, {P:,} prompts, {N_RESAMPLES} resamples")
    print(f"t2ibias compute_metrics (all {len(rows):,} rows, every metric and pooling): {ours:7.1f} s")
    print(f"scipy.stats.bootstrap, TV to uniform only, {groups:,} prompt groups (timed {done}, scaled): {scipy_all:7.1f} s")
    print(f"ratio scipy / t2ibias: {scipy_all / ours:5.1f}x  (scipy computing one metric, t2ibias all of them)")


if __name__ == "__main__":
    main()
