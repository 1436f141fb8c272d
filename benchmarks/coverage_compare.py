"""Monte Carlo coverage of ``t2ibias compare``'s intervals, through compare's own functions.

Two models' labels are drawn per prompt from known label probabilities (K = 2 or 4 labels, n images
per prompt, P prompts); per-prompt probabilities are Dirichlet around a centre, the same prompts
drawn once per case. Replications are stacked as runs of one ``Axis`` so ``_per_prompt`` computes
every projection bound at once; each replication then calls ``model_tv``, ``tv_difference``,
``tv_difference_plugin`` (the former method) and ``share_difference``. Truths: mean over prompts of
TV(p) (per model), of TV(p_b) − TV(p_a), and of p_b[0] − p_a[0]. The null part draws both models
from the same probabilities and reports the fraction of p < 0.05 (TV and share tests) and of
BH q < 0.05 over each replication's table of all K share rows plus the TV row.

Usage: OMP_NUM_THREADS=1 python benchmarks/coverage_compare.py [--trials 400] [--seed 0]
Prints observed coverage ± its Monte Carlo standard error per case and interval (nominal 0.95).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from t2ibias.comparison.match import Axis
from t2ibias.comparison.paired import _per_prompt, model_tv, share_difference, tv_difference, tv_difference_plugin
from t2ibias.metrics.skew import total_variation_uniform
from t2ibias.stats.testing import bh_qvalues

NOMINAL = 0.95
CENTRES = {  # model a, model b: centre of the per-prompt label probabilities
    "balanced vs mild": ({2: [0.5, 0.5], 4: [0.25] * 4}, {2: [0.65, 0.35], 4: [0.4, 0.2, 0.2, 0.2]}),
    "mild vs skewed": ({2: [0.65, 0.35], 4: [0.4, 0.2, 0.2, 0.2]}, {2: [0.9, 0.1], 4: [0.7, 0.1, 0.1, 0.1]}),
    "balanced vs balanced'": ({2: [0.5, 0.5], 4: [0.25] * 4}, {2: [0.55, 0.45], 4: [0.3, 0.25, 0.25, 0.2]}),
}
CONCENTRATION = 200.0  # per-prompt Dirichlet spread around the centre (larger: prompts more alike)


def _probs(rng: np.random.Generator, centre: list[float], p: int) -> np.ndarray:
    return rng.dirichlet(CONCENTRATION * np.asarray(centre), size=p)


def _draw(rng: np.random.Generator, probs: np.ndarray, n: int, trials: int) -> np.ndarray:
    """(trials, prompts, K) counts of n images per prompt."""
    return np.stack([np.stack([rng.multinomial(n, q) for q in probs]) for _ in range(trials)])


def _se(c: float, trials: int) -> float:
    return float(np.sqrt(max(c * (1 - c), 1e-12) / trials))


def coverage(trials: int, seed: int) -> None:
    print(f"# coverage, {trials} trials per case, nominal {NOMINAL}; columns: observed ± MC s.e. (mean width)")
    print(f"{'case':24s} {'K':>2s} {'n':>3s} {'P':>4s}  {'TV a':>14s} {'TV b':>14s} {'TV diff (new)':>20s} "
          f"{'TV diff (old t)':>20s} {'share diff':>20s}")
    rng = np.random.default_rng(seed)
    for case, (ca, cb) in CENTRES.items():
        for k in (2, 4):
            for p in (10, 200):
                pa, pb = _probs(rng, ca[k], p), _probs(rng, cb[k], p)
                tv_a = float(np.mean(total_variation_uniform(pa)))
                tv_b = float(np.mean(total_variation_uniform(pb)))
                truth_d, truth_s = tv_b - tv_a, float(np.mean(pb[:, 0] - pa[:, 0]))
                for n in (4, 10, 50):
                    ca_ = _draw(rng, pa, n, trials)
                    cb_ = _draw(rng, pb, n, trials)
                    counts = np.concatenate([ca_, cb_])  # runs 0..T-1 model a, T..2T-1 model b
                    pp = _per_prompt(Axis("sim", [str(j) for j in range(k)], [str(j) for j in range(k)], counts), NOMINAL)
                    hits = np.zeros(5)
                    width = np.zeros(5)
                    for t in range(trials):
                        a, b = t, trials + t
                        mask = (pp["n_cls"][[a, b]] > 0).all(axis=0)
                        res = [model_tv(pp, a, mask, k, NOMINAL)[1:], model_tv(pp, b, mask, k, NOMINAL)[1:],
                               tv_difference(pp, a, b, mask, k, NOMINAL)[1:3],
                               tv_difference_plugin(pp, a, b, mask, NOMINAL)[1:3],
                               share_difference(counts[:, :, 0], pp["totals"], a, b, np.ones(p, bool), NOMINAL)[1:3]]
                        # truths over the prompts used (all prompts unless a prompt had no classified image)
                        tvs = (float(np.mean(total_variation_uniform(pa[mask]))), float(np.mean(total_variation_uniform(pb[mask]))))
                        for i, ((lo, hi), truth) in enumerate(zip(res, (tvs[0], tvs[1], tvs[1] - tvs[0], tvs[1] - tvs[0], truth_s))):
                            hits[i] += lo <= truth <= hi
                            width[i] += hi - lo
                    cov, width = hits / trials, width / trials
                    cells = [f"{c:.3f}±{_se(c, trials):.3f} ({w:.2f})" for c, w in zip(cov, width)]
                    print(f"{case:24s} {k:2d} {n:3d} {p:4d}  {cells[0]:>14s} {cells[1]:>14s} {cells[2]:>20s} {cells[3]:>20s} {cells[4]:>20s}"
                          f"   [true TV {tv_a:.3f}/{tv_b:.3f}, diff {truth_d:+.3f}]")


def null_calibration(trials: int, seed: int) -> None:
    print(f"\n# null (both models draw from the same probabilities): fraction with p < 0.05 / BH q < 0.05, {trials} trials")
    rng = np.random.default_rng(seed + 1)
    for name, centre in (("balanced", {2: [0.5, 0.5], 4: [0.25] * 4}), ("skewed", {2: [0.8, 0.2], 4: [0.55, 0.15, 0.15, 0.15]})):
        for k in (2, 4):
            for p in (10, 200):
                probs = _probs(rng, centre[k], p)
                for n in (4, 10, 50):
                    counts = np.concatenate([_draw(rng, probs, n, trials), _draw(rng, probs, n, trials)])
                    pp = _per_prompt(Axis("sim", [str(j) for j in range(k)], [str(j) for j in range(k)], counts), NOMINAL)
                    rej_tv = rej_sh = rej_q = 0
                    for t in range(trials):
                        a, b = t, trials + t
                        mask = (pp["n_cls"][[a, b]] > 0).all(axis=0)
                        p_tv = tv_difference(pp, a, b, mask, k, NOMINAL)[3] if mask.any() else np.nan
                        p_sh = [share_difference(counts[:, :, j], pp["totals"], a, b, np.ones(p, bool), NOMINAL)[3] for j in range(k)]
                        rej_tv += p_tv < 0.05
                        rej_sh += p_sh[0] < 0.05
                        ps = np.array([x for x in [p_tv, *p_sh] if np.isfinite(x)])
                        rej_q += bool((bh_qvalues(ps) < 0.05).any()) if len(ps) else 0
                    f = [x / trials for x in (rej_tv, rej_sh, rej_q)]
                    print(f"{name:9s} K={k} n={n:3d} P={p:4d}  TV test {f[0]:.3f}±{_se(f[0], trials):.3f}  "
                          f"share test {f[1]:.3f}±{_se(f[1], trials):.3f}  any BH q<0.05 {f[2]:.3f}±{_se(f[2], trials):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part", choices=("coverage", "null", "both"), default="both")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.part in ("coverage", "both"):
        coverage(args.trials, args.seed)
    if args.part in ("null", "both"):
        null_calibration(args.trials, args.seed)
    print(f"\n# {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
