"""Monte Carlo coverage of intervals whose units come in clusters, through the project's own code.

1. The audit (``t2ibias.audit.groupwise.metric_rows``): people in images of 1-5 people whose
   accuracy shares an image effect (normal on the logit scale). Overall and per-group accuracy
   intervals, and whether the gap interval between two groups that do not differ holds 0; beside
   them the former scheme (all people resampled as independent rows, percentile).
2. Confusion-corrected shares pooled over prompts (``t2ibias.metrics.correction``): prompts whose
   true share is Beta(1, 1), images read by a classifier with sensitivity 0.9 and specificity 0.8,
   an audit of 200 people per class; the two-stage resample (prompts, then images) beside the
   images-as-independent one. The truth is the prompt population's mean share, 0.5.

Usage: python benchmarks/coverage_clustered.py [--trials 400] [--resamples 1000] [--part audit|correction|both]
Prints nominal, observed coverage and its Monte Carlo standard error per case.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.special import expit

from t2ibias.audit.groupwise import metric_rows
from t2ibias.metrics.correction import corrected_proportions
from t2ibias.stats.bootstrap import percentile_intervals

NOMINAL = 0.95


def _line(case: str, hits: int, trials: int) -> str:
    c = hits / trials
    return f"{case:55s} nominal {NOMINAL:.2f}  observed {c:.3f}  ± {np.sqrt(c * (1 - c) / trials):.3f}"


def audit_coverage(trials: int, resamples: int, image_sd: float = 1.0) -> None:
    truth = float(expit(1.5 + np.random.default_rng(99).normal(0, image_sd, 4_000_000)).mean())
    print(f"# audit: image effect sd {image_sd} (logit), true accuracy {truth:.3f}, {trials} trials, {resamples} resamples")
    for n_img in (20, 60, 200):
        hits = dict.fromkeys(("overall", "group", "gap 0"), 0)
        before = dict.fromkeys(hits, 0)
        for r in range(trials):
            rng = np.random.default_rng([r, n_img])
            images = np.repeat(np.arange(n_img), rng.integers(1, 6, n_img))
            y = (rng.random(len(images)) < expit(1.5 + rng.normal(0, image_sd, n_img)[images])).astype(float)
            g = np.where(rng.random(len(images)) < 0.5, "masc", "fem")
            w = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=resamples).astype(float)
            onehot = np.stack([g == "masc", g == "fem"], 1).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                grp = (w @ (y[:, None] * onehot)) / (w @ onehot)
            for key, reps, target in (("overall", (w @ y) / len(y), truth), ("group", grp[:, 0], truth),
                                      ("gap 0", np.abs(grp[:, 0] - grp[:, 1]), 0.0)):
                lo, hi = percentile_intervals(reps)
                before[key] += lo <= target <= hi
            overall, rows, comps = metric_rows({"accuracy": y}, g, ece_inputs=None, n_boot=resamples, seed=r, confidence=NOMINAL,
                                               min_n=0, engine="vectorized", clusters=images)
            a, m, d = overall["accuracy"], next(x for x in rows if x["group"] == "masc"), comps[0]["difference"]
            hits["overall"] += a["ci_low"] <= truth <= a["ci_high"]
            hits["group"] += m["ci_low"] <= truth <= m["ci_high"]
            hits["gap 0"] += d["ci_low"] <= 0.0 <= d["ci_high"]
        for key in hits:
            print(_line(f"{n_img:3d} images (~{3 * n_img} people) {key}, rows resampled", before[key], trials))
            print(_line(f"{n_img:3d} images (~{3 * n_img} people) {key}, images resampled", hits[key], trials))


def correction_coverage(trials: int, resamples: int, n_prompts: int = 20, n_images: int = 8) -> None:
    print(f"# corrected share pooled over {n_prompts} prompts × {n_images} images, {trials} trials, {resamples} resamples")
    rng = np.random.default_rng(7)
    hits = {"prompts, then images": 0, "images as independent": 0}
    for t in range(trials):
        share = rng.beta(1.0, 1.0, n_prompts)
        masc = rng.binomial(n_images, share)
        read = rng.binomial(masc, 0.9) + rng.binomial(n_images - masc, 0.2)
        observed = [{"masc": int(m), "fem": int(n_images - m)} for m in read]
        a, b = int(rng.binomial(200, 0.9)), int(rng.binomial(200, 0.8))
        audit = {"true": ["masc", "fem"], "pred": ["masc", "fem"], "counts": [[a, 200 - a], [200 - b, b]]}
        pooled = {k: sum(o[k] for o in observed) for k in ("masc", "fem")}
        for name, obs in (("prompts, then images", observed), ("images as independent", pooled)):
            row = next(r for r in corrected_proportions(obs, audit, n_boot=resamples, seed=t) if r["label"] == "masc")
            hits[name] += row["ci_low"] <= 0.5 <= row["ci_high"]
    for name, h in hits.items():
        print(_line(f"pooled corrected share, {name} resampled", h, trials))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--part", choices=("audit", "correction", "both"), default="both")
    args = parser.parse_args()
    if args.part in ("audit", "both"):
        audit_coverage(args.trials, args.resamples)
    if args.part in ("correction", "both"):
        correction_coverage(args.trials, args.resamples)
        correction_coverage(args.trials, args.resamples, n_images=16)


if __name__ == "__main__":
    main()
