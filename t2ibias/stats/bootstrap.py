"""Vectorized percentile bootstrap for statistics of categorical counts.

Resampling n images with replacement from a group whose labels have counts c is the same as
drawing Multinomial(n, c/n), so a whole bootstrap is one multinomial draw of shape (B, K).
Over several prompts, the cluster bootstrap resamples prompts with replacement and then
images within each resampled prompt (two-stage), as prompts are the units a claim generalizes
over.

Intervals: ``percentile`` (the α/2 and 1 − α/2 quantiles of the replicates) and ``bca``
(bias-corrected and accelerated, Efron 1987). BCa's acceleration comes from a jackknife: over
items for one group's counts, where leaving out one item of label k gives counts − e_k and all
c_k such items give the same value, so K evaluations weighted by c_k replace n; over clusters
(leave one prompt out) for cluster counts of shape (C, K), matching the cluster bootstrap.

Many groups at once: :func:`group_intervals` resamples G groups' counts in chunks of groups,
and :func:`pooled_replicates` draws the two-stage cluster bootstrap in chunks of resamples; each
chunk has its own generator spawned from the caller's, so results depend on the seed and the
chunk size but not on the number of worker threads (numpy's samplers release the GIL).

Comparisons between groups follow FACET's minimum-n policy: a gap involving a group with fewer
than ``MIN_N`` items is NaN with a note saying which group is too small.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.special import ndtr, ndtri

Stat = Callable[[np.ndarray], np.ndarray]  # counts (..., K) -> (...)

MIN_N = 50  # FACET: no comparison involving a group with fewer items than this
INTERVAL_METHODS = ("percentile", "bca")


def resample_counts(counts: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, K) bootstrap replicates of one group's label counts."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return np.zeros((n_resamples, counts.shape[-1]), dtype=np.int64)
    return rng.multinomial(n, counts / n, size=n_resamples)


def resample_clusters(cluster_counts: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, K) replicates of pooled counts: resample clusters (rows), then items within each."""
    cluster_counts = np.asarray(cluster_counts, dtype=np.int64)
    n_clusters, k = cluster_counts.shape
    picks = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
    chosen = cluster_counts[picks]  # (B, C, K)
    sizes = chosen.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pvals = np.where(sizes[..., None] > 0, chosen / np.maximum(sizes[..., None], 1), 1.0 / k)
    return rng.multinomial(sizes, pvals).sum(axis=1)


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of finite replicates; NaN when none is finite."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def resample_counts_many(counts: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, G, K) bootstrap replicates of G groups' label counts (G, K) in one draw.

    Row g of every replicate resamples group g's own items (its total stays fixed); an empty
    group stays all zero.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2:
        raise ValueError(f"counts must have shape (groups, labels), got {counts.shape}")
    n = counts.sum(axis=-1)
    k = counts.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        pvals = np.where(n[:, None] > 0, counts / np.maximum(n, 1)[:, None], 1.0 / k)
    return rng.multinomial(n, pvals, size=(n_resamples, len(counts)))


def percentile_intervals(replicates: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals along axis 0 of (B, ...) replicates, ignoring non-finite values.

    Same numbers as :func:`percentile_interval` column by column (linear interpolation between
    order statistics); NaN where a column has no finite replicate.
    """
    reps = np.asarray(replicates, dtype=float)
    reps = np.where(np.isfinite(reps), reps, np.nan)
    ordered = np.sort(reps, axis=0)  # NaN sorts last
    n_finite = np.isfinite(ordered).sum(axis=0)
    alpha = (1.0 - confidence) / 2.0

    def at(q: float) -> np.ndarray:
        pos = q * np.maximum(n_finite - 1, 0)
        lo_i = np.floor(pos).astype(np.int64)
        hi_i = np.minimum(lo_i + 1, np.maximum(n_finite - 1, 0))
        lo_v = np.take_along_axis(ordered, lo_i[None], axis=0)[0]
        hi_v = np.take_along_axis(ordered, hi_i[None], axis=0)[0]
        value = lo_v + (pos - lo_i) * (hi_v - lo_v)
        return np.where(n_finite > 0, value, np.nan)

    return at(alpha), at(1.0 - alpha)


def jackknife(stat_fn: Stat, data_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out values of ``stat_fn`` and their weights (multiplicities).

    One group's counts (K,): leaving out any one of the c_k items of label k gives counts − e_k,
    so the n jackknife values are K distinct values with weights c_k (labels with c_k = 0 are
    left out). Cluster counts (C, K): leave one cluster out, C values of weight 1.
    """
    data = np.asarray(data_counts, dtype=np.int64)
    if data.ndim == 1:
        present = np.flatnonzero(data > 0)
        rows = data[None, :] - np.eye(len(data), dtype=np.int64)[present]
        return np.asarray(stat_fn(rows), dtype=float), data[present].astype(float)
    if data.ndim == 2:
        rows = data.sum(axis=0)[None, :] - data
        return np.asarray(stat_fn(rows), dtype=float), np.ones(len(data))
    raise ValueError(f"data_counts must be one group's counts (K,) or cluster counts (C, K), got shape {data.shape}")


def acceleration(stat_fn: Stat, data_counts: np.ndarray) -> float:
    """BCa acceleration a = Σ w d³ / (6 (Σ w d²)^{3/2}) with d = mean of the jackknife values − each value.

    0 when the jackknife values do not vary (or cannot be computed, e.g. a single item), so BCa
    then reduces to the bias-corrected percentile interval.
    """
    values, weights = jackknife(stat_fn, data_counts)
    ok = np.isfinite(values) & (weights > 0)
    if ok.sum() < 2:
        return 0.0
    values, weights = values[ok], weights[ok]
    d = np.average(values, weights=weights) - values
    den = float((weights * d**2).sum())
    if not den > 0:
        return 0.0
    return float((weights * d**3).sum() / (6.0 * den**1.5))


def bca_interval(stat_fn: Stat, data_counts: np.ndarray, replicates: np.ndarray, estimate: float,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Bias-corrected and accelerated interval from bootstrap ``replicates`` of ``stat_fn``.

    ``data_counts`` is what was resampled: one group's counts (K,) (items resampled) or cluster
    counts (C, K) (clusters resampled); ``estimate`` is ``stat_fn`` on the observed data.
    Bias correction z0 = Φ⁻¹(share of replicates below the estimate, ties counting half, as
    scipy does), acceleration from :func:`acceleration`; the interval is the replicates' quantiles
    at Φ(z0 + (z0 + z)/(1 − a(z0 + z))) for z = Φ⁻¹(α/2), Φ⁻¹(1 − α/2). Non-finite replicates
    are ignored. NaN when there is no finite replicate or estimate, or when every replicate lies
    on one side of the estimate (z0 infinite: BCa is undefined; use the percentile interval).
    """
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0 or not np.isfinite(estimate):
        return math.nan, math.nan
    share = ((reps < estimate).sum() + (reps <= estimate).sum()) / (2.0 * reps.size)
    if share <= 0.0 or share >= 1.0:
        return math.nan, math.nan
    z0 = float(ndtri(share))
    a = acceleration(stat_fn, data_counts)
    alpha = (1.0 - confidence) / 2.0
    levels = []
    for z in (ndtri(alpha), ndtri(1.0 - alpha)):
        shifted = z0 + z
        levels.append(float(ndtr(z0 + shifted / (1.0 - a * shifted))))
    lo, hi = np.quantile(reps, levels)
    return float(lo), float(hi)


def interval(method: str, replicates: np.ndarray, confidence: float = 0.95, *, stat_fn: Stat | None = None,
             data_counts: np.ndarray | None = None, estimate: float | None = None) -> tuple[float, float]:
    """Confidence interval by ``method``: "percentile", or "bca" (needs stat_fn, data_counts and estimate)."""
    if method == "percentile":
        return percentile_interval(np.asarray(replicates, dtype=float), confidence)
    if method == "bca":
        if stat_fn is None or data_counts is None or estimate is None:
            raise ValueError("method='bca' needs stat_fn, data_counts and estimate")
        return bca_interval(stat_fn, data_counts, replicates, estimate, confidence)
    raise ValueError(f"unknown interval method {method!r}; use one of {INTERVAL_METHODS}")


def gap_or_nan(a: float, n_a: int, b: float, n_b: int, min_n: int = MIN_N, *,
               names: tuple[str, str] = ("a", "b")) -> tuple[float, str]:
    """a − b, or NaN with a note when a group has fewer than ``min_n`` items or no value (FACET's policy).

    The note names each group that blocks the comparison, e.g. "n=12 < 50 for group X"; it is
    "" when the gap is computed.
    """
    reasons = []
    for value, n, name in ((a, n_a, names[0]), (b, n_b, names[1])):
        if n < min_n:
            reasons.append(f"n={int(n)} < {min_n} for group {name}")
        elif value is None or not math.isfinite(float(value)):
            reasons.append(f"no value for group {name}")
    if reasons:
        return math.nan, "; ".join(reasons)
    return float(a) - float(b), ""


def _workers(workers: int | None) -> int:
    return max(1, min(8, os.cpu_count() or 1)) if workers is None else max(1, int(workers))


def _run_all(jobs: list[Callable[[], object]], workers: int | None) -> list[object]:
    n = _workers(workers)
    if n == 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=min(n, len(jobs))) as pool:
        return list(pool.map(lambda job: job(), jobs))


def group_intervals(counts: np.ndarray, stat_fn: Stat, n_resamples: int, rng: np.random.Generator,
                    confidence: float = 0.95, method: str = "percentile", *, chunk: int = 256,
                    workers: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate and bootstrap interval of ``stat_fn`` for each of G groups' counts (G, K).

    Items are resampled within each group (as :func:`resample_counts`), ``chunk`` groups per
    multinomial draw, chunks spread over ``workers`` threads (default: the CPU count, at most 8).
    Returns (estimate, ci_low, ci_high), each of shape (G,); empty groups are NaN.
    """
    if method not in INTERVAL_METHODS:
        raise ValueError(f"unknown interval method {method!r}; use one of {INTERVAL_METHODS}")
    counts = np.asarray(counts, dtype=np.int64)
    g = len(counts)
    estimate = np.asarray(stat_fn(counts), dtype=float)
    lo, hi = np.full(g, np.nan), np.full(g, np.nan)
    spans = [(a, min(a + chunk, g)) for a in range(0, g, chunk)]
    children = rng.spawn(len(spans))

    def job(i: int) -> None:
        a, b = spans[i]
        reps = np.asarray(stat_fn(resample_counts_many(counts[a:b], n_resamples, children[i])), dtype=float)  # (B, b-a)
        if method == "percentile":
            lo[a:b], hi[a:b] = percentile_intervals(reps, confidence)
        else:
            for j in range(b - a):
                lo[a + j], hi[a + j] = bca_interval(stat_fn, counts[a + j], reps[:, j], estimate[a + j], confidence)

    _run_all([lambda i=i: job(i) for i in range(len(spans))], workers)
    return estimate, lo, hi


def _collapsed_cluster_draw(cluster_counts: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    c, k = cluster_counts.shape
    sizes = cluster_counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pvals = np.where(sizes[:, None] > 0, cluster_counts / np.maximum(sizes, 1)[:, None], 1.0 / k)
    picks = rng.integers(0, c, size=(n_resamples, c))
    mult = np.bincount((np.arange(n_resamples)[:, None] * c + picks).ravel(), minlength=n_resamples * c)
    mult = mult.reshape(n_resamples, c)
    rep, clus = np.nonzero(mult)  # row-major: rep is sorted and every replicate has a cluster
    draws = rng.multinomial(mult[rep, clus] * sizes[clus], pvals[clus])
    return np.add.reduceat(draws, np.searchsorted(rep, np.arange(n_resamples)), axis=0)


def pooled_replicates(cluster_counts: np.ndarray, n_resamples: int, rng: np.random.Generator, *,
                      chunk: int = 250, workers: int | None = None) -> np.ndarray:
    """(B, K) two-stage cluster bootstrap replicates of pooled counts, in parallel chunks of resamples.

    Same distribution as :func:`resample_clusters` (resample clusters, then items within each
    drawn cluster), drawn with fewer random numbers: a cluster drawn m times in one replicate
    contributes m independent Multinomial(n_c, p_c) draws, whose sum is one Multinomial(m·n_c, p_c).
    """
    cluster_counts = np.asarray(cluster_counts, dtype=np.int64)
    if cluster_counts.ndim != 2:
        raise ValueError(f"cluster_counts must have shape (clusters, labels), got {cluster_counts.shape}")
    if len(cluster_counts) == 0:
        return np.zeros((n_resamples, cluster_counts.shape[-1]), dtype=np.int64)
    spans = [(a, min(a + chunk, n_resamples)) for a in range(0, n_resamples, chunk)]
    children = rng.spawn(len(spans))
    parts = _run_all([lambda i=i: _collapsed_cluster_draw(cluster_counts, spans[i][1] - spans[i][0], children[i])
                      for i in range(len(spans))], workers)
    return np.concatenate(parts, axis=0)
