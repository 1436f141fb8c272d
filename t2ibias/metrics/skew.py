"""Representation skew of a distribution over K groups, vectorized over rows of counts.

Every function takes counts of shape (..., K) and returns shape (...); a row with no counts
gives NaN. Definitions:

- total variation to uniform: ½ Σ_k |p_k − 1/K|; 0 = every group equally often,
  1 − 1/K = one group only.
- normalized entropy: H(p) / log K with 0·log 0 = 0 (OpenBias reports 1 − this as its bias);
  1 = uniform, 0 = one group only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def proportions(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.where(total > 0, total, 1), np.nan)


def total_variation_uniform(counts: np.ndarray) -> np.ndarray:
    p = proportions(counts)
    k = p.shape[-1]
    return 0.5 * np.abs(p - 1.0 / k).sum(axis=-1)


def normalized_entropy(counts: np.ndarray) -> np.ndarray:
    p = proportions(counts)
    k = p.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    h = terms.sum(axis=-1) / np.log(k)
    return np.where(np.isnan(p).any(axis=-1), np.nan, h)


@dataclass(frozen=True)
class SkewMetric:
    name: str
    fn: object
    higher_is_better: bool
    definition: str


SKEW_METRICS = (
    SkewMetric(
        "total_variation_uniform", total_variation_uniform, False,
        "Total variation distance between the label shares (classified images only) and uniform: ½Σ|p−1/K|; 0 is balanced.",
    ),
    SkewMetric(
        "normalized_entropy", normalized_entropy, True,
        "Shannon entropy of the label shares over log K; 1 is balanced, 0 is a single label (OpenBias bias = 1 − this).",
    ),
)
