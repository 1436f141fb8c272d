"""Intervals for a share (a binomial proportion), for one group of images and over many prompts.

One prompt's share of a label is k successes in n independent images. Its default interval is
Clopper–Pearson's, the inversion of the exact binomial test (Clopper & Pearson, Biometrika 1934):
its coverage is at least the nominal level for every p and n, which the score-type intervals do not
give at the handful of images per prompt a sweep makes (measured by exact enumeration over p: at
n = 4 the Wilson interval covers 87.5 % at p = ½, Jeffreys 87 % near p = 0.1; Brown, Cai &
DasGupta, Statistical Science 2001, describe these dips). Wilson (1927) and Jeffreys (the
equal-tailed Beta(k + ½, n − k + ½) interval, with the boundary rule of Brown et al.) are offered
for comparison with peers. None has zero width for a finite sample: k = n gives [lower < 1, 1].

Over many prompts (clusters of images that share a prompt), a share is either the mean over
prompts of the per-prompt shares or the pooled share Σk / Σn. Its variance is the cluster-robust
(between-prompt) one, and the interval is Korn & Graubard's (Survey Methodology 1998): a
Clopper–Pearson interval at the effective sample size n* = p̂(1 − p̂) / var̂(p̂), with its
degrees of freedom set to prompts − 1. It covers the share over these very prompts at least
nominally (measured: ≥ 95 % at 5 to 100 prompts), and aims at the share in the population of prompts
they stand for (measured 88 % when prompts' shares cluster near 0 or 1, Beta mean 0.95, 25 images). The variance is never
taken below the within-prompt binomial one. A share of 0 or 1 in every prompt has zero estimated
variance; n* is then the number of images, so the interval still has width.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import betaincinv

SHARE_METHODS = ("clopper-pearson", "wilson", "jeffreys")
DEFAULT_SHARE_METHOD = "clopper-pearson"


def _alpha(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence!r} must lie strictly between 0 and 1")
    return 1.0 - confidence


def clopper_pearson(k: np.ndarray, n: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact interval: the Beta(k, n − k + 1) α/2 and Beta(k + 1, n − k) 1 − α/2 quantiles.

    ``k`` may be fractional (an effective count); n = 0 gives NaN.
    """
    a = _alpha(confidence)
    k, n = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, betaincinv(np.maximum(k, 1e-300), np.maximum(n - k + 1, 1e-300), a / 2), 0.0)
        hi = np.where(k < n, betaincinv(np.maximum(k + 1, 1e-300), np.maximum(n - k, 1e-300), 1 - a / 2), 1.0)
    bad = ~(n > 0)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def wilson(k: np.ndarray, n: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's score interval (the inversion of the score test); n = 0 gives NaN."""
    z = stats.norm.ppf(1 - _alpha(confidence) / 2)
    k, n = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def jeffreys(k: np.ndarray, n: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Jeffreys' equal-tailed Beta(k + ½, n − k + ½) interval; lower 0 at k = 0 and upper 1 at k = n."""
    a = _alpha(confidence)
    k, n = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, betaincinv(k + 0.5, np.maximum(n - k, 0) + 0.5, a / 2), 0.0)
        hi = np.where(k < n, betaincinv(k + 0.5, np.maximum(n - k, 0) + 0.5, 1 - a / 2), 1.0)
    bad = ~(n > 0)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


_SHARE = {"clopper-pearson": clopper_pearson, "wilson": wilson, "jeffreys": jeffreys}


def share_interval(k: np.ndarray, n: np.ndarray, confidence: float = 0.95,
                   method: str = DEFAULT_SHARE_METHOD) -> tuple[np.ndarray, np.ndarray]:
    """Interval of k / n by ``method`` (one of :data:`SHARE_METHODS`), elementwise."""
    try:
        fn = _SHARE[method]
    except KeyError:
        raise ValueError(f"unknown share interval method {method!r}; use one of {SHARE_METHODS}") from None
    return fn(k, n, confidence)


def korn_graubard(p: np.ndarray, var: np.ndarray, n_max: np.ndarray, df: np.ndarray,
                  confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Korn–Graubard interval of an estimated share ``p`` with design variance ``var``.

    Effective size n* = p(1 − p) / var, at most ``n_max`` (design effect ≥ 1) and equal to it when
    the variance is 0; n* is scaled by (t_{n_max−1} / t_{df})² for the ``df`` degrees of freedom of
    the variance estimate; then Clopper–Pearson at (n* p, n*).
    """
    a = _alpha(confidence)
    p, var, n_max, df = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (p, var, n_max, df)))
    with np.errstate(invalid="ignore", divide="ignore"):
        n_eff = np.where(var > 0, p * (1 - p) / var, n_max)
        n_eff = np.minimum(np.where(np.isfinite(n_eff) & (n_eff > 0), n_eff, n_max), n_max)
        t_ratio = np.where(df >= 1, stats.t.ppf(1 - a / 2, np.maximum(n_max - 1, 1)) / stats.t.ppf(1 - a / 2, np.maximum(df, 1)), 1.0)
        n_eff = n_eff * t_ratio**2
    lo, hi = clopper_pearson(n_eff * p, n_eff, confidence)
    bad = ~np.isfinite(p) | ~(n_max > 0)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def cluster_shares(k: np.ndarray, n: np.ndarray, confidence: float = 0.95) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Mean-over-prompts and pooled shares of C prompts with counts ``k`` (C, L) of n (C,) images.

    Returns {"mean_over_prompts": (estimate, lo, hi), "pooled": (estimate, lo, hi)}, each of shape
    (L,). Prompts with no image are left out. The mean over prompts weighs prompts equally (its
    variance is s²/C of the per-prompt shares); the pooled share Σk/Σn weighs images equally (the
    ratio estimator, linearized: Σ(k_c − p̂ n_c)² C/(C − 1) / (Σn)²). One prompt: both equal its
    own Clopper–Pearson interval.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    keep = n > 0
    k, n = k[keep], n[keep]
    c = len(n)
    labels = k.shape[1] if k.ndim == 2 else 0
    if c == 0:
        nan = np.full(labels, np.nan)
        return {"mean_over_prompts": (nan, nan, nan), "pooled": (nan, nan, nan)}
    total = n.sum()
    pooled = k.sum(axis=0) / total
    if c == 1:
        lo, hi = clopper_pearson(k[0], n[0], confidence)
        return {"mean_over_prompts": (pooled, lo, hi), "pooled": (pooled, lo, hi)}
    shares = k / n[:, None]
    mean = shares.mean(axis=0)
    resid = k - pooled[None, :] * n[:, None]
    # never below the within-prompt (binomial) variance: few prompts can agree by chance
    within = np.where(n[:, None] > 1, shares * (1 - shares) / np.maximum(n[:, None] - 1, 1), 0.0)
    between_mean = shares.var(axis=0, ddof=1) / c
    within_mean = within.sum(axis=0) / c**2
    between_pooled = (resid**2).sum(axis=0) * c / (c - 1) / total**2
    within_pooled = (within * n[:, None] ** 2).sum(axis=0) / total**2
    # the binomial variance of a mean of C shares is Σ p(1−p)/n_c / C²: its effective size C² / Σ(1/n_c)
    n_mean = c * c / (1.0 / n).sum()
    out = {}
    for name, est, between, within_v, n_max in (("mean_over_prompts", mean, between_mean, within_mean, n_mean),
                                               ("pooled", pooled, between_pooled, within_pooled, total)):
        # C − 1 degrees of freedom: the claim is about the population of prompts, whose spread C prompts estimate
        lo, hi = korn_graubard(est, np.maximum(between, within_v), n_max, c - 1, confidence)
        out[name] = (est, lo, hi)
    return out
