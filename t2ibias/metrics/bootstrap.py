"""Vectorized percentile bootstrap for statistics of categorical counts.

Resampling n images with replacement from a group whose labels have counts c is the same as
drawing Multinomial(n, c/n), so a whole bootstrap is one multinomial draw of shape (B, K).
Over several prompts, the cluster bootstrap resamples prompts with replacement and then
images within each resampled prompt (two-stage), as prompts are the units a claim generalizes
over.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Stat = Callable[[np.ndarray], np.ndarray]  # counts (..., K) -> (...)


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
