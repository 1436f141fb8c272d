"""Intervals for skew statistics that stay valid at and near balance.

A bootstrap of total variation, entropy or a max–min gap cannot reach the boundary: at exact
balance every resample is at least as skewed as the truth, so the interval excludes the true 0.
Here the interval of a statistic f(p) is the projection of a simultaneous confidence region for the
label shares p: [min f, max f] over the region. Whatever p is, the region holds it with probability
at least the confidence level, and then f(p) lies in the projection, for every statistic at once.

The region is the box of per-label Clopper–Pearson intervals at level α/K (Bonferroni over the K
labels), intersected with the simplex (K = 2 needs no Bonferroni: the two shares determine each
other). This is the construction of simultaneous multinomial intervals with guaranteed coverage
(Goodman, Technometrics 1965, uses the same Bonferroni step on asymptotic intervals); exact
per-label intervals keep the guarantee at the few images per prompt of a sweep. The price is width:
the projection is conservative for one statistic far from the boundary.

Extremes over the box ∩ simplex (every statistic here is convex in p, entropy concave):
- the least skewed point is p*_k = clip(t·r_k, l_k, u_k) with t set so that Σp* = 1 (r the
  reference, uniform for reference-free statistics): the KKT point of the separable convex
  problems (squared distance, KL, JS, negative entropy), and a point of smallest max–min range;
- the least total variation to r is ½(Σ|q − r| + |1 − Σq|) with q = clip(r, l, u), in closed form;
- the most skewed value of a convex statistic is attained at a vertex of the polytope: K − 1
  shares at a bound and the last one fixing the sum (K·2^(K−1) candidates, enumerated).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from t2ibias.stats.binomial import clopper_pearson

Stat = Callable[[np.ndarray], np.ndarray]  # shares (..., K) -> (...)
#: prompts whose vertices are enumerated at once (memory: chunk × K·2^(K−1) × K × 8 bytes)
CHUNK = 64
#: vertex coordinates enumerated at once, at most (≈ 16 MB of float64 per array)
CHUNK_VALUES = 1 << 21
MAX_LABELS = 12


def simultaneous_box(counts: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of shape (..., K): per-label Clopper–Pearson at level 1 − α/K (1 − α for K = 2)."""
    counts = np.asarray(counts, dtype=float)
    k = counts.shape[-1]
    n = counts.sum(axis=-1, keepdims=True)
    level = confidence if k <= 2 else 1.0 - (1.0 - confidence) / k
    return clopper_pearson(counts, np.broadcast_to(n, counts.shape), level)


def least_skewed_point(lo: np.ndarray, hi: np.ndarray, ref: np.ndarray, iters: int = 60) -> np.ndarray:
    """p*_k = clip(t·r_k, lo_k, hi_k) with Σ p* = 1, by bisection on t (vectorized over leading axes)."""
    ref = np.broadcast_to(np.asarray(ref, dtype=float), lo.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_hi = np.nanmax(np.where(ref > 0, hi / ref, 0.0), axis=-1, keepdims=True) + 1.0
    t_lo = np.zeros_like(t_hi)
    for _ in range(iters):
        mid = 0.5 * (t_lo + t_hi)
        total = np.clip(mid * ref, lo, hi).sum(axis=-1, keepdims=True)
        low = total < 1.0
        t_lo = np.where(low, mid, t_lo)
        t_hi = np.where(low, t_hi, mid)
    p = np.clip(0.5 * (t_lo + t_hi) * ref, lo, hi)
    # the remaining rounding goes to the labels that are not at a bound
    free = (p > lo) & (p < hi)
    gap = 1.0 - p.sum(axis=-1, keepdims=True)
    nfree = free.sum(axis=-1, keepdims=True)
    return np.where(free & (nfree > 0), p + gap / np.maximum(nfree, 1), p)


def least_total_variation(lo: np.ndarray, hi: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """min over box ∩ simplex of ½Σ|p − r|: ½(Σ|q − r| + |1 − Σq|) with q = clip(r, lo, hi)."""
    ref = np.broadcast_to(np.asarray(ref, dtype=float), lo.shape)
    q = np.clip(ref, lo, hi)
    return 0.5 * (np.abs(q - ref).sum(axis=-1) + np.abs(1.0 - q.sum(axis=-1)))


@lru_cache(maxsize=None)
def _patterns(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertex patterns: (free index (V,), upper-bound mask (V, K)) for K·2^(K−1) vertices."""
    bits = ((np.arange(2 ** (k - 1))[:, None] >> np.arange(k - 1)) & 1).astype(bool)  # (2^(K−1), K−1)
    free, masks = [], []
    for j in range(k):
        m = np.insert(bits, j, False, axis=1)
        free.append(np.full(len(m), j))
        masks.append(m)
    return np.concatenate(free), np.concatenate(masks)


def vertices(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate vertices (N, V, K) of box ∩ simplex for boxes (N, K), and which are feasible (N, V)."""
    k = lo.shape[-1]
    if k > MAX_LABELS:
        raise ValueError(f"{k} labels: vertex enumeration is limited to {MAX_LABELS}")
    free, upper = _patterns(k)
    onehot = np.eye(k, dtype=bool)[free]  # (V, K)
    p = np.where(upper[None], hi[:, None, :], lo[:, None, :])
    p = np.where(onehot[None], 0.0, p)
    rest = 1.0 - p.sum(axis=-1)  # (N, V): the free share
    lo_f, hi_f = lo[:, free], hi[:, free]
    feasible = (rest >= lo_f - 1e-12) & (rest <= hi_f + 1e-12)
    p = np.where(onehot[None], np.clip(rest, 0.0, 1.0)[..., None], p)
    return p, feasible


def box_projection(lo: np.ndarray, hi: np.ndarray, stat: Stat, *, concave: bool = False, ref: np.ndarray | None = None,
                   tv_ref: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """[min, max] of ``stat`` over box ∩ simplex for boxes (N, K) (see :func:`projection_interval`)."""
    return box_projections(lo, hi, [(stat, concave, tv_ref)], ref=ref)[0]


def _chunk_rows(k: int) -> int:
    """Boxes whose vertices are enumerated at once: about ``CHUNK_VALUES`` vertex coordinates."""
    return max(CHUNK, CHUNK_VALUES // (k * 2 ** (k - 1) * k))


def box_projections(lo: np.ndarray, hi: np.ndarray, stats: list[tuple[Stat, bool, bool]], *,
                    ref: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`box_projection` of several statistics over the same boxes (N, K): ``stats`` holds
    ``(stat, concave, tv_ref)`` for each. The vertices of each box and its least skewed point are
    found once and every statistic is evaluated on them (a row's figures do not depend on which
    other rows or statistics share the call)."""
    n, k = lo.shape
    r = np.broadcast_to(np.full(k, 1.0 / k) if ref is None else np.asarray(ref, dtype=float), lo.shape)
    out = [(np.full(n, np.nan), np.full(n, np.nan)) for _ in stats]
    step = _chunk_rows(k)
    for a in range(0, n, step):
        sl = slice(a, a + step)
        verts, feasible = vertices(lo[sl], hi[sl])
        # only feasible vertices are evaluated (a third of them at K = 7), box by box in order
        per_box = feasible.sum(axis=1)
        some = per_box > 0
        starts = np.concatenate([[0], np.cumsum(per_box)[:-1]])[some]
        verts = verts[feasible]
        point = None
        for (stat, concave, tv_ref), (lo_out, hi_out) in zip(stats, out):
            if tv_ref:
                best = least_total_variation(lo[sl], hi[sl], r[sl])
            else:
                if point is None:
                    point = least_skewed_point(lo[sl], hi[sl], r[sl])
                best = stat(point)
            worst = np.full(len(per_box), np.inf if concave else -np.inf)
            if len(verts):
                worst[some] = (np.minimum if concave else np.maximum).reduceat(stat(verts), starts)
            lo_out[sl], hi_out[sl] = (worst, best) if concave else (best, worst)
    return out


def projection_interval(counts: np.ndarray, stat: Stat, *, concave: bool = False, ref: np.ndarray | None = None,
                        tv_ref: bool = False, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """[min, max] of ``stat`` over the simultaneous region of each row of ``counts`` (..., K).

    ``stat`` maps shares (..., K) to (...) and is convex in p (``concave=True`` for entropy-like
    statistics, whose extremes swap). ``ref`` is the point the statistic is smallest at (uniform when
    None; one per row allowed); ``tv_ref`` says the statistic is total variation to that reference,
    whose minimum has a closed form. Empty rows give NaN.
    """
    counts = np.asarray(counts, dtype=float)
    shape, k = counts.shape[:-1], counts.shape[-1]
    flat = counts.reshape(-1, k)
    r = None if ref is None else np.broadcast_to(np.asarray(ref, dtype=float), counts.shape).reshape(-1, k)
    lo_out = np.full(len(flat), np.nan)
    hi_out = np.full(len(flat), np.nan)
    ok = np.flatnonzero(flat.sum(axis=-1) > 0)
    if len(ok):
        lo, hi = simultaneous_box(flat[ok], confidence)
        lo_out[ok], hi_out[ok] = box_projection(lo, hi, stat, concave=concave, ref=None if r is None else r[ok], tv_ref=tv_ref)
    return lo_out.reshape(shape), hi_out.reshape(shape)


def mean_of_bounds(lo: np.ndarray, hi: np.ndarray, value_range: tuple[float, float], confidence: float = 0.95,
                   miss_rate: float | None = None) -> tuple[float, float]:
    """Interval for the mean over P units of a statistic, from each unit's own interval [lo_i, hi_i].

    Each unit's interval misses its truth with probability at most ``miss_rate`` (1 − the level the
    unit intervals were made at; default 1 − ``confidence``), independently across units. So with
    probability ≥ 1 − α/2 at most m of the P lower ends lie above their truths, m the 1 − α/2
    quantile of Binomial(P, miss_rate); a missed unit's truth is still ≥ the statistic's smallest
    value. The lower end is therefore the mean after replacing the m largest lower ends by that
    smallest value (the upper end likewise, with the m smallest upper ends replaced by the largest
    value). Plain averaging of the bounds is not valid at the boundary: at exact balance every
    unit's truth is the minimum, so any one high lower end lifts the mean above the truth.
    """
    from scipy import stats

    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    ok = np.isfinite(lo) & np.isfinite(hi)
    lo, hi = lo[ok], hi[ok]
    p = len(lo)
    if p == 0:
        return np.nan, np.nan
    alpha = 1.0 - confidence
    rate = alpha if miss_rate is None else miss_rate
    m = int(min(p, stats.binom.ppf(1.0 - alpha / 2.0, p, rate)))
    fmin, fmax = value_range
    lo_s, hi_s = np.sort(lo), np.sort(hi)
    if m:
        lo_s[p - m :] = np.minimum(lo_s[p - m :], fmin)
        hi_s[:m] = np.maximum(hi_s[:m], fmax)
    return float(lo_s.mean()), float(hi_s.mean())


def difference_of_mean_bounds(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray,
                              value_range: tuple[float, float], confidence: float = 0.95) -> tuple[float, float]:
    """Interval for mean_b − mean_a over the same P units, from each arm's per-unit intervals (made at
    ``confidence``): each arm's :func:`mean_of_bounds` at 1 − α/2, then [lo_b − hi_a, hi_b − lo_a].
    Both arms' intervals hold together with probability ≥ 1 − α (Bonferroni), whatever the arms'
    dependence and whatever the bias of the plug-in statistic, which a t interval of the per-unit
    plug-in differences is not (a skew plug-in's bias differs between arms)."""
    half = 1.0 - (1.0 - confidence) / 2.0
    la, ua = mean_of_bounds(lo_a, hi_a, value_range, half, miss_rate=1.0 - confidence)
    lb, ub = mean_of_bounds(lo_b, hi_b, value_range, half, miss_rate=1.0 - confidence)
    return lb - ua, ub - la
