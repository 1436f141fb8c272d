"""Tests of fit and multiplicity control.

- :func:`fit_pvalues`: Pearson's X² test of label counts against a distribution (uniform for a
  test of balance), its p-value from the exact null distribution by Monte Carlo (the multinomial
  at the row's own n, so it holds at the few images of one prompt where the χ² approximation does
  not). p = (1 + #{X²* ≥ X²}) / (1 + B) (Davison & Hinkley 1997, §4.2), B = 9,999 draws per
  distinct (n, reference), shared by all rows with that n.
- :func:`bh_qvalues`: Benjamini–Hochberg adjusted p-values (q-values), NaN p-values left out.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

N_NULL = 9_999


def pearson_statistic(counts: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """X² = Σ (c − n r)² / (n r) over labels with r > 0 (a count where r = 0 makes it +inf)."""
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(axis=-1, keepdims=True)
    ref = np.asarray(ref, dtype=float)
    expected = n * ref
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (counts - expected) ** 2 / np.where(expected > 0, expected, 1.0),
                         np.where(counts > 0, np.inf, 0.0))
    return terms.sum(axis=-1)


def fit_pvalues(counts: np.ndarray, ref: np.ndarray | None = None, *, seed: int = 0,
                n_null: int = N_NULL) -> np.ndarray:
    """Monte Carlo exact p-values of H0: shares = ``ref`` (uniform if None) for rows of ``counts`` (..., K).

    ``ref`` is one distribution (K,) or one per row (..., K). Empty rows give NaN.
    """
    counts = np.asarray(counts, dtype=np.int64)
    shape, k = counts.shape[:-1], counts.shape[-1]
    flat = counts.reshape(-1, k)
    refs = np.broadcast_to(np.full(k, 1.0 / k) if ref is None else np.asarray(ref, dtype=float), counts.shape).reshape(-1, k)
    observed = pearson_statistic(flat, refs)
    n = flat.sum(axis=-1)
    out = np.full(len(flat), np.nan)
    cache: dict[tuple, np.ndarray] = {}
    for i in np.flatnonzero(n > 0):
        key = (int(n[i]), refs[i].tobytes())
        null = cache.get(key)
        if null is None:
            rng = np.random.default_rng([seed, int(n[i]), k])
            r = refs[i] / refs[i].sum()
            null = np.sort(pearson_statistic(rng.multinomial(int(n[i]), r, size=n_null), r))
            cache[key] = null
        # ties count as at least as extreme; a tolerance absorbs rounding of equal statistics
        at_least = n_null - np.searchsorted(null, observed[i] - 1e-9 * max(1.0, observed[i]), side="left")
        out[i] = (1.0 + at_least) / (1.0 + n_null)
    return out.reshape(shape)


def bh_qvalues(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values (``scipy.stats.false_discovery_control``); NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(np.clip(p[ok], 0.0, 1.0), method="bh")
    return q


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Mean of ``values`` (NaN left out), its t interval over the units, and the two-sided p-value of mean = 0.

    Returns (mean, lo, hi, p); NaN interval and p-value with fewer than 2 values, and a zero-width
    interval only when every value is equal (then p is 1 if that value is 0, else NaN).
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.nan, np.nan, np.nan, np.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, np.nan, np.nan, np.nan
    se = float(v.std(ddof=1) / np.sqrt(v.size))
    if se == 0:
        return mean, mean, mean, (1.0 if mean == 0 else np.nan)
    t = stats.t.ppf(0.5 + confidence / 2, v.size - 1)
    p = float(2 * stats.t.sf(abs(mean / se), v.size - 1))
    return mean, mean - t * se, mean + t * se, p
