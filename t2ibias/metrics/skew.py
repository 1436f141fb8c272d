"""Representation skew of a distribution over K groups, vectorized over rows of counts.

Every function takes counts of shape (..., K) and returns shape (...); a row with no counts
gives NaN. Definitions:

- total variation to uniform: ½ Σ_k |p_k − 1/K|; 0 = every group equally often,
  1 − 1/K = one group only.
- normalized entropy: H(p) / log K with 0·log 0 = 0 (OpenBias reports 1 − this as its bias);
  1 = uniform, 0 = one group only.
- max–min gap: max_k p_k − min_k p_k; 0 = uniform, 1 = one group only (K ≥ 2).

Against a reference distribution r (shape (K,), or anything that broadcasts against the
counts, e.g. one reference per row of shape (..., K); check it with :func:`check_reference`):

- total variation: ½ Σ_k |p_k − r_k|, in [0, 1].
- Kullback–Leibler divergence KL(p ‖ r) = Σ_k p_k ln(p_k / r_k), in nats, with 0·ln(0/r) = 0;
  +inf when some p_k > 0 where r_k = 0 (the model shows a group the reference says never
  occurs), so KL is unbounded and asymmetric.
- Jensen–Shannon divergence ½ KL(p ‖ m) + ½ KL(r ‖ m) with m = (p + r) / 2, in nats (natural
  log), so it lies in [0, ln 2]; always finite, symmetric, and its square root is a metric.
  Divide by ln 2 for the base-2 value in [0, 1].
- ratio to reference: p_k / r_k per group (shape (..., K)); 1 = represented as often as the
  reference says, +inf where p_k > 0 and r_k = 0, NaN where both are 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from t2ibias.core.errors import UserError

REFERENCE_TOLERANCE = 1e-6


def proportions(counts: np.ndarray) -> np.ndarray:
    """Shares c_k / Σ c over the last axis; an all-zero row is NaN throughout (0/0)."""
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / total


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


def max_min_gap(counts: np.ndarray) -> np.ndarray:
    """max_k p_k − min_k p_k over the K groups; NaN for an empty row."""
    p = proportions(counts)
    return p.max(axis=-1) - p.min(axis=-1)


def _with_reference(counts: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shares p, the reference broadcast to p's shape, and the empty-row mask (...)."""
    p = proportions(counts)
    r = np.asarray(ref, dtype=float)
    if r.ndim == 0 or r.shape[-1] != p.shape[-1]:
        raise ValueError(f"reference has shape {r.shape}; its last axis must have the K = {p.shape[-1]} groups of the counts")
    p, r = np.broadcast_arrays(p, r)
    empty = np.isnan(p).any(axis=-1)
    return p, r, empty


def total_variation(counts: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """½ Σ_k |p_k − r_k|; NaN for an empty row."""
    p, r, _ = _with_reference(counts, ref)
    return 0.5 * np.abs(p - r).sum(axis=-1)


def _kl_terms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise a·ln(a/b) with 0·ln(0/b) = 0 and +inf where a > 0 = b."""
    pos = a > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = a * (np.log(np.where(pos, a, 1.0)) - np.log(np.where(pos, b, 1.0)))
    return np.where(pos, terms, 0.0)


def kl_divergence(counts: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """KL(p ‖ r) = Σ_k p_k ln(p_k / r_k) in nats; +inf where p_k > 0 = r_k; NaN for an empty row."""
    p, r, empty = _with_reference(counts, ref)
    kl = _kl_terms(np.nan_to_num(p), r).sum(axis=-1)
    return np.where(empty, np.nan, kl)


def js_divergence(counts: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence of p and r in nats (natural log), in [0, ln 2]; NaN for an empty row."""
    p, r, empty = _with_reference(counts, ref)
    p = np.nan_to_num(p)
    m = 0.5 * (p + r)
    js = 0.5 * _kl_terms(p, m).sum(axis=-1) + 0.5 * _kl_terms(r, m).sum(axis=-1)
    # rounding can leave a tiny negative value for identical distributions
    return np.where(empty, np.nan, np.clip(js, 0.0, math.log(2)))


def ratio_to_reference(counts: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """p_k / r_k per group, shape (..., K): +inf where p_k > 0 = r_k, NaN where both are 0 or the row is empty."""
    p, r, _ = _with_reference(counts, ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        return p / r


def check_reference(ref: Mapping[str, float] | Sequence[float] | np.ndarray, labels: Sequence[str], where: str) -> np.ndarray:
    """Validate a reference distribution over ``labels`` and return it as an array in label order.

    ``ref`` maps each label to its share (or is a sequence in label order). Raises
    :class:`UserError` with a one-line message naming ``where``, the offending field and the fix
    when a label is missing or unknown, a share is negative or NaN, or the shares do not sum to
    1 within ±1e-6.
    """
    labels = list(labels)
    if isinstance(ref, Mapping):
        missing = [lab for lab in labels if lab not in ref]
        if missing:
            raise UserError(f"{where}: reference has no share for label {missing[0]!r}; add {missing[0]!r} (use 0 if it should never occur)")
        extra = [key for key in ref if key not in labels]
        if extra:
            raise UserError(f"{where}: reference label {extra[0]!r} is not one of {labels}; remove it or fix its spelling")
        items = [(f"reference[{lab!r}]", ref[lab]) for lab in labels]
    else:
        values = list(np.asarray(ref, dtype=object).ravel()) if not isinstance(ref, (list, tuple)) else list(ref)
        if len(values) != len(labels):
            raise UserError(f"{where}: reference has {len(values)} shares but there are {len(labels)} labels {labels}; give one share per label")
        items = [(f"reference[{i}] ({lab!r})", v) for i, (lab, v) in enumerate(zip(labels, values))]
    out = np.empty(len(labels), dtype=float)
    for i, (field, value) in enumerate(items):
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: {field} is {value!r}, not a number; give a share between 0 and 1") from None
        if math.isnan(x):
            raise UserError(f"{where}: {field} is NaN; give a share between 0 and 1")
        if x < 0:
            raise UserError(f"{where}: {field} is {x:g}, below 0; shares must be between 0 and 1")
        out[i] = x
    total = float(out.sum())
    if abs(total - 1.0) > REFERENCE_TOLERANCE:
        raise UserError(f"{where}: reference shares sum to {total:.6g}, not 1 (±{REFERENCE_TOLERANCE:g}); rescale them so they sum to 1")
    return out


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

#: Further reference-free skew metrics, reported beside SKEW_METRICS in every metrics.json.
EXTRA_SKEW_METRICS = (
    SkewMetric(
        "max_min_gap", max_min_gap, False,
        "Largest minus smallest label share (classified images only): max p − min p; 0 is balanced, 1 is a single label.",
    ),
)

#: Skew metrics against a reference distribution (labour statistics), for axes a reference table covers.
REFERENCE_SKEW_METRICS = (
    SkewMetric(
        "total_variation_reference", total_variation, False,
        "Total variation distance between the label shares (classified images only) and the reference (e.g. US labour statistics): ½Σ|p−r|; 0 matches it.",
    ),
    SkewMetric(
        "js_divergence_reference", js_divergence, False,
        "Jensen-Shannon divergence (natural log, at most ln 2) between the label shares and the reference; 0 matches it.",
    ),
)
