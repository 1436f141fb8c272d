"""Image-cluster bootstrap of per-person values, and tests and simultaneous intervals for gaps.

People of one image share its scene (crowding, lighting, the model's luck on that picture), so
their values (a detection hit at IoU 0.5, the share of IoU thresholds matched, a correct class)
are correlated; resampling people as if independent gives intervals that are too narrow. Here
the image is the resampled unit (the cluster bootstrap, Davison & Hinkley 1997, §3.8; Field &
Welsh, JASA 2007): a replicate draws the I images with replacement (multinomial counts w_i,
Σ w_i = I) and a group's value is the ratio Σ_i w_i s_ig / Σ_i w_i k_ig of per-image sums s of
its people's values and counts k of its people. People outside a group add zeros, so subgroups
(a class, a perceived group, an intersection) are domains of the one resampling design.

One draw of weights serves every group, class and metric: a difference between two groups is
computed on the same images in every replicate (a joint resample), so its interval accounts for
the covariance of groups that share images or people, as FACET's skin-tone groups do (one person
counts under every MST value an annotator chose). All replicates of a set of groups are one
matrix product W (B, I) @ S (I, groups × (metrics + 1)) of the weights and the per-image sums.
Values that are multiples of 1/d (hits: d = 1; mAR over ten thresholds: d = 10) are summed as
integers in float32, which is exact while every sum stays below 2**24; other values use float64.

Tests of a gap = 0 use the linearized cluster-robust (sandwich) variance of the difference of
two ratio means, the variance the image bootstrap estimates (Binder, Int. Stat. Rev. 1983;
Williams, Biometrics 2000): with z_ig = (s_ig − m_g k_ig) / K_g and d_i = z_ia − z_ib,
var(m_a − m_b) = I / (I − 1) · Σ_i d_i². The test takes both means at their pooled value (the
variance under no gap, as the pooled two-proportion z test does) and p = 2 Φ(−|gap| / se₀).
A selection-adjusted interval for the largest of m gaps is the Bonferroni one,
gap ± Φ⁻¹(1 − α / (2m)) · se: it covers all m gaps at once with probability ≥ 1 − α, so it
covers whichever gaps a table selects (Dunn, JASA 1961).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Largest integer-valued sum float32 holds exactly.
EXACT_FLOAT32 = 2**24
MAX_SCALE = 100


def integer_scale(values: np.ndarray, max_scale: int = MAX_SCALE) -> int | None:
    """The smallest d <= ``max_scale`` with every value × d an integer (to 1e-9), or None."""
    uniq = np.unique(np.asarray(values, dtype=float))
    uniq = uniq[np.isfinite(uniq)]
    for d in range(1, max_scale + 1):
        scaled = uniq * d
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-9):
            return d
    return None


def percentile_columns(replicates: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals along axis 0 of (B, ...) replicates, non-finite values left out.

    The numbers of :func:`t2ibias.stats.bootstrap.percentile_intervals` (linear interpolation
    between order statistics), by partial sorting where a column is all finite; NaN where a
    column has no finite replicate or B = 0.
    """
    reps = np.asarray(replicates, dtype=float)
    shape = reps.shape[1:]
    if reps.shape[0] == 0:
        return np.full(shape, np.nan), np.full(shape, np.nan)
    alpha = (1.0 - confidence) / 2.0
    flat = reps.reshape(reps.shape[0], -1)
    finite = np.isfinite(flat)
    full = finite.all(axis=0)
    lo = np.full(flat.shape[1], np.nan)
    hi = np.full(flat.shape[1], np.nan)
    if full.any():
        q = np.quantile(flat[:, full], [alpha, 1.0 - alpha], axis=0)
        lo[full], hi[full] = q[0], q[1]
    part = ~full & finite.any(axis=0)
    if part.any():
        ordered = np.sort(np.where(finite[:, part], flat[:, part], np.nan), axis=0)  # NaN last
        n_fin = finite[:, part].sum(axis=0)
        for arr, qq in ((lo, alpha), (hi, 1.0 - alpha)):
            pos = qq * (n_fin - 1)
            i0 = np.floor(pos).astype(np.int64)
            i1 = np.minimum(i0 + 1, n_fin - 1)
            v0 = np.take_along_axis(ordered, i0[None], axis=0)[0]
            v1 = np.take_along_axis(ordered, i1[None], axis=0)[0]
            arr[part] = v0 + (pos - i0) * (v1 - v0)
    return lo.reshape(shape), hi.reshape(shape)


@dataclass
class GroupReplicates:
    """Image-bootstrap results for G groups and M metrics (see :func:`group_replicates`).

    ``estimate`` (G, M): mean value over each group's people (NaN for an empty group);
    ``n`` (G,): people; ``n_clusters`` (G,): images holding them; ``replicates`` (B, G, M): the
    group means of each replicate (NaN where a replicate drew none of the group's images);
    ``image_counts`` (I_d, G) and ``image_sums`` (I_d, G, M): per-image counts and value sums
    over the I_d images holding the domain's people, of ``n_total`` images in the design.
    """

    estimate: np.ndarray
    n: np.ndarray
    n_clusters: np.ndarray
    replicates: np.ndarray
    image_counts: np.ndarray
    image_sums: np.ndarray
    n_total: int

    def gap_variance(self, a: np.ndarray, b: np.ndarray, *, null: bool = False, chunk: int = 32) -> np.ndarray:
        """(P, M) linearized image-clustered variances of estimate[a] − estimate[b] for group
        index pairs (a[p], b[p]): I / (I − 1) · Σ_i d_i² with d_i = (s_ia − m_a k_ia) / K_a −
        (s_ib − m_b k_ib) / K_b. With ``null``, m_a = m_b = the pair's pooled mean, the variance
        under no gap (the clustered analogue of the pooled two-proportion test, which holds its
        level at the small tail probabilities a Bonferroni or BH threshold asks for, where the
        unpooled one rejects too often). NaN where a group is empty."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        m = self.estimate.shape[1]
        out = np.full((len(a), m), np.nan)
        if self.n_total < 2:
            return out
        factor = self.n_total / (self.n_total - 1.0)
        totals = self.n.astype(float)
        sums = np.nan_to_num(self.estimate) * totals[:, None]
        for lo in range(0, len(a), chunk):
            ia, ib = a[lo:lo + chunk], b[lo:lo + chunk]
            ka, kb = totals[ia], totals[ib]
            if null:
                with np.errstate(invalid="ignore", divide="ignore"):
                    pooled = (sums[ia] + sums[ib]) / (ka + kb)[:, None]
                ma = mb = pooled
            else:
                ma, mb = self.estimate[ia], self.estimate[ib]
            with np.errstate(invalid="ignore", divide="ignore"):
                da = (self.image_sums[:, ia, :] - ma[None] * self.image_counts[:, ia, None]) / ka[None, :, None]
                db = (self.image_sums[:, ib, :] - mb[None] * self.image_counts[:, ib, None]) / kb[None, :, None]
            var = factor * ((da - db) ** 2).sum(axis=0)
            out[lo:lo + chunk] = np.where(((ka > 0) & (kb > 0))[:, None], var, np.nan)
        return out

    def gap_replicates(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(B, P, M) joint replicates of estimate[a] − estimate[b] (same image draws for both)."""
        return self.replicates[:, np.asarray(a, dtype=np.int64)] - self.replicates[:, np.asarray(b, dtype=np.int64)]


def group_replicates(values: np.ndarray, groups: np.ndarray, clusters: np.ndarray, weights: np.ndarray) -> GroupReplicates:
    """Means of ``values`` (n, M) over each group (``groups`` (n, G) bool) with image-bootstrap
    replicates under ``weights`` (B, I) (from :func:`t2ibias.stats.cluster.resample_weights`), people belonging to
    cluster ``clusters[i]`` in [0, I).

    Pass the people of one domain (e.g. one class) with the weights of the whole design: images
    with none of them still count in I, as in a domain estimate over the design.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    groups = np.asarray(groups, dtype=bool)
    clusters = np.asarray(clusters, dtype=np.int64)
    n_boot, n_total = weights.shape
    n, m = values.shape
    g = groups.shape[1]
    order = np.argsort(clusters, kind="stable")
    cl = clusters[order]
    starts = np.flatnonzero(np.r_[True, cl[1:] != cl[:-1]]) if n else np.zeros(0, dtype=np.int64)
    touched = cl[starts]
    scale = integer_scale(values) if n else 1
    work = np.float32 if scale is not None else np.float64
    vals = (values[order] * (scale or 1)).astype(work)
    memb = groups[order].astype(work)
    stacked = np.concatenate([memb, (memb[:, :, None] * vals[:, None, :]).reshape(n, g * m)], axis=1)
    per_image = np.add.reduceat(stacked, starts, axis=0) if n else np.zeros((0, g * (m + 1)), dtype=work)
    del stacked
    k_img, s_img = per_image[:, :g], per_image[:, g:].reshape(-1, g, m)

    counts = k_img.sum(axis=0, dtype=np.float64)
    sums = s_img.sum(axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = np.where(counts[:, None] > 0, sums / np.where(counts > 0, counts, 1.0)[:, None], np.nan)
    n_clusters = (k_img > 0).sum(axis=0)

    if n_boot and n:
        w = weights if len(touched) == n_total else weights[:, touched]
        exact = scale is not None and min(float(per_image.max(initial=0.0)) * n_total,
                                          float(w.max(initial=0.0)) * float(per_image.sum(axis=0, dtype=np.float64).max())
                                          ) < EXACT_FLOAT32
        dtype = np.float32 if exact else np.float64
        prod = (w.astype(dtype, copy=False) @ per_image.astype(dtype, copy=False)).astype(np.float64)
        k_rep, s_rep = prod[:, :g], prod[:, g:].reshape(n_boot, g, m)
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates = np.where(k_rep[:, :, None] > 0, s_rep / np.where(k_rep > 0, k_rep, 1.0)[:, :, None], np.nan)
    else:
        replicates = np.full((n_boot, g, m), np.nan)
    estimate = estimate / (scale or 1)
    replicates = replicates / (scale or 1)

    return GroupReplicates(estimate=estimate, n=counts.astype(np.int64), n_clusters=n_clusters.astype(np.int64),
                           replicates=replicates, image_counts=k_img.astype(np.float64),
                           image_sums=s_img.astype(np.float64) / (scale or 1), n_total=n_total)


def wald_pvalues(gap: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Two-sided p-values of gap = 0: 2 Φ(−|gap| / √variance); with zero variance 1 for a zero gap
    and 0 otherwise; NaN where the gap or variance is NaN."""
    gap = np.asarray(gap, dtype=float)
    var = np.asarray(variance, dtype=float)
    se = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 2.0 * stats.norm.sf(np.abs(gap) / np.where(se > 0, se, 1.0))
    p = np.where(se > 0, p, np.where(gap == 0, 1.0, 0.0))
    return np.where(np.isfinite(gap) & np.isfinite(var), p, np.nan)


def bonferroni_intervals(gap: np.ndarray, variance: np.ndarray, n_tests: int | np.ndarray,
                         confidence: float = 0.95, bounds: tuple[float, float] = (-1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous Wald intervals gap ± Φ⁻¹(1 − α / (2m)) · se for a family of m = ``n_tests``
    gaps, clipped to ``bounds`` (a difference of two shares lies in [−1, 1])."""
    gap = np.asarray(gap, dtype=float)
    se = np.sqrt(np.maximum(np.asarray(variance, dtype=float), 0.0))
    m = np.maximum(np.asarray(n_tests, dtype=float), 1.0)
    z = stats.norm.isf((1.0 - confidence) / (2.0 * m))
    return np.clip(gap - z * se, *bounds), np.clip(gap + z * se, *bounds)
