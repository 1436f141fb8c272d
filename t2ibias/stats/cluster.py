"""Cluster bootstrap of per-unit values: group means when units come in clusters.

People of one image share its lighting, camera and annotators; images of one prompt share its
text. Resampling units as if independent then understates every interval (Field & Welsh, JRSS B
2007, on the cluster bootstrap). Here the resampled units are the clusters: a replicate draws the
C clusters with replacement (one stage), or draws outer units (prompts) and then clusters
(images) within each drawn outer unit (two stages, Davison & Hinkley 1997, §3.8), and every unit
counts as often as its cluster was drawn.

- :func:`resample_weights`: (B, C) multiplicities of the clusters, one or two stages.
- :func:`cluster_group_means`: values per unit (n, M) with NaN = not counted, group membership
  (codes or a boolean (n, G) matrix, so groups may overlap), cluster ids → estimates and (B, M, G)
  replicates of the group means. Units are summed per cluster first, so a replicate is one
  product of its weights with the (C, M·G) cluster sums.
- :func:`share_interval_clustered`: the Korn–Graubard interval of a share (a mean of 0/1 values)
  with the design variance taken from the replicates and clusters − 1 degrees of freedom.
- :func:`compare_groups`: the max − min gap and min / max ratio of G groups, from replicates drawn
  jointly for all groups, with intervals that hold at equality and the p-value of "all equal".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse, stats

from t2ibias.stats.binomial import korn_graubard

#: replicates drawn per matrix product (memory: chunk × clusters × 8 bytes)
CHUNK = 200


def cluster_codes(clusters: Any) -> tuple[np.ndarray, int]:
    """Integer codes 0..C−1 of cluster ids (any hashable values, first appearance order) and C."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(clusters, dtype=object)), sort=False)
    if (codes < 0).any():
        raise ValueError("cluster ids must not be missing")
    return codes.astype(np.int64), len(uniques)


def resample_weights(n_clusters: int, n_resamples: int, rng: np.random.Generator, *,
                     outer: np.ndarray | None = None, dtype: Any = np.int64, chunk: int = 100) -> np.ndarray:
    """(B, C) bootstrap multiplicities of C clusters, as ``dtype`` (float32 halves the memory of a
    FACET-size draw that feeds matrix products).

    One stage (``outer=None``): C clusters drawn with replacement, i.e. Multinomial(C, 1/C), drawn
    as C uniform picks counted by ``bincount``, ``chunk`` rows at a time.
    Two stages: ``outer`` (C,) names each cluster's outer unit (e.g. the prompt of an image); the
    O outer units are drawn with replacement, and an outer unit drawn m times with c clusters
    contributes m·c clusters drawn with replacement from its own (m independent within-unit
    resamples summed, one Multinomial(m·c, 1/c)).
    """
    if n_clusters == 0:
        return np.zeros((n_resamples, 0), dtype=dtype)
    if outer is None:
        out = np.zeros((n_resamples, n_clusters), dtype=dtype)
        for a in range(0, n_resamples, chunk):
            b = min(a + chunk, n_resamples)
            picks = rng.integers(0, n_clusters, size=(b - a, n_clusters))
            picks += (np.arange(b - a) * n_clusters)[:, None]
            out[a:b] = np.bincount(picks.ravel(), minlength=(b - a) * n_clusters).reshape(b - a, n_clusters)
        return out
    outer_codes, n_outer = cluster_codes(outer)
    if len(outer_codes) != n_clusters:
        raise ValueError(f"outer names {len(outer_codes)} clusters, expected {n_clusters}")
    m = rng.multinomial(n_outer, np.full(n_outer, 1.0 / n_outer), size=n_resamples)  # (B, O)
    weights = np.zeros((n_resamples, n_clusters), dtype=np.int64)
    members = pd.Series(np.arange(n_clusters)).groupby(outer_codes).indices
    for o in range(n_outer):
        idx = members[o]
        weights[:, idx] = rng.multinomial(m[:, o] * len(idx), np.full(len(idx), 1.0 / len(idx)))
    return weights.astype(dtype, copy=False)


def _membership(groups: Any, n: int) -> tuple[np.ndarray, list[Any]]:
    g = np.asarray(groups)
    if g.ndim == 2:
        if g.shape[0] != n:
            raise ValueError(f"membership has {g.shape[0]} rows for {n} units")
        return g.astype(bool), list(range(g.shape[1]))
    codes, levels = pd.factorize(pd.Series(g, dtype=object), sort=False)
    out = np.zeros((n, len(levels)), dtype=bool)
    ok = codes >= 0
    out[np.flatnonzero(ok), codes[ok]] = True
    return out, list(levels)


def cluster_sums(values: np.ndarray, membership: np.ndarray, codes: np.ndarray, n_clusters: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, metric and group: the sum of counted values and their number, each (C, M·G)."""
    v = np.asarray(values, dtype=float)
    n, m = v.shape
    g = membership.shape[1]
    counted = np.isfinite(v)
    x = (np.where(counted, v, 0.0)[:, :, None] * membership[:, None, :]).reshape(n, m * g)
    k = (counted[:, :, None] & membership[:, None, :]).reshape(n, m * g).astype(float)
    a = sparse.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_clusters, n))
    return np.asarray(a @ x), np.asarray(a @ k)


def cluster_group_means(values: np.ndarray, groups: Any, clusters: Any, n_resamples: int,
                        rng: np.random.Generator, *, outer: Any = None, chunk: int = CHUNK) -> dict[str, Any]:
    """Group means of per-unit values and their cluster-bootstrap replicates.

    ``values`` (n,) or (n, M): NaN where a unit does not count for that metric. ``groups``: one
    group per unit (codes or labels, None = in no group) or a boolean membership matrix (n, G).
    ``clusters``: the cluster id of each unit. ``outer``: each unit's outer unit (constant within a
    cluster) for a two-stage resample. Returns {"levels" (the G groups), "estimate" (M, G),
    "n" (M, G) counted units, "n_clusters" (M, G) clusters with a counted unit, "replicates"
    (B, M, G)}; a mean with nothing counted is NaN (also in a replicate that drew none of its
    clusters).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    n, m = v.shape
    member, levels = _membership(groups, n)
    codes, c = cluster_codes(clusters) if n else (np.zeros(0, dtype=np.int64), 0)
    g = member.shape[1]
    sums, counts = cluster_sums(v, member, codes, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        total, k = sums.sum(axis=0), counts.sum(axis=0)
        estimate = np.where(k > 0, total / np.where(k > 0, k, 1.0), np.nan).reshape(m, g)
    outer_per_cluster = None
    if outer is not None:
        outer_arr = np.asarray(outer, dtype=object)
        first = np.zeros(c, dtype=np.int64)
        first[codes[::-1]] = np.arange(n)[::-1]  # first unit of each cluster
        outer_per_cluster = outer_arr[first]
        if n and pd.Series(outer_arr).groupby(codes).nunique(dropna=False).max() > 1:
            raise ValueError("a cluster's units must share one outer unit")
    reps = np.empty((n_resamples, m * g))
    for a in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - a)
        w = resample_weights(c, b, rng, outer=outer_per_cluster).astype(float)
        num, den = w @ sums, w @ counts
        with np.errstate(invalid="ignore", divide="ignore"):
            reps[a:a + b] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return {"levels": levels, "estimate": estimate, "n": k.reshape(m, g).astype(np.int64),
            "n_clusters": (counts > 0).sum(axis=0).reshape(m, g), "replicates": reps.reshape(n_resamples, m, g)}


def share_interval_clustered(estimate: np.ndarray, replicates: np.ndarray, n: np.ndarray, n_clusters: np.ndarray,
                             confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Korn–Graubard interval of shares with the variance of their cluster-bootstrap replicates.

    ``replicates`` (B, ...) beside ``estimate``, ``n`` (units) and ``n_clusters`` (...): the effective
    size p(1 − p) / var is capped at n and the degrees of freedom are clusters − 1 (Korn &
    Graubard, Survey Methodology 1998). Never zero width for a finite sample; NaN where n = 0.
    """
    reps = np.asarray(replicates, dtype=float)
    finite = np.isfinite(reps)
    with np.errstate(invalid="ignore", divide="ignore"):
        cnt = finite.sum(axis=0)
        mean = np.where(cnt > 0, np.where(finite, reps, 0.0).sum(axis=0) / np.maximum(cnt, 1), np.nan)
        var = np.where(cnt > 1, (np.where(finite, reps - mean, 0.0) ** 2).sum(axis=0) / np.maximum(cnt - 1, 1), 0.0)
    return korn_graubard(estimate, var, n, np.maximum(np.asarray(n_clusters) - 1, 0), confidence)


def _critical(stat: np.ndarray, confidence: float) -> float:
    """The ⌈confidence·(B + 1)⌉-th smallest of B bootstrap statistics (+inf when B is too small)."""
    s = np.sort(stat[np.isfinite(stat)] if stat.size else stat)
    j = math.ceil(confidence * (len(s) + 1)) - 1
    return float(s[j]) if 0 <= j < len(s) else math.inf


def _small_sample(n_clusters: int | None) -> tuple[float, Any]:
    """(se factor, map of a normal-scale critical value) for C clusters: √(C/(C − 1)) and the
    normal → t_{C−1} quantile map (Cameron & Miller, J. Human Resources 2015: cluster-robust
    inference with few clusters); identity without C."""
    if n_clusters is None or n_clusters < 3:
        return 1.0, lambda c: c
    df = n_clusters - 1
    return math.sqrt(n_clusters / df), lambda c: float(stats.t.ppf(stats.norm.cdf(c), df)) if math.isfinite(c) else c


def compare_groups(estimate: np.ndarray, replicates: np.ndarray, confidence: float = 0.95, *,
                   n_clusters: int | None = None) -> dict[str, Any]:
    """Gap (max − min) and ratio (min / max) of G ≥ 2 group values, from joint replicates (B, G).

    Gap: simultaneous intervals d̂ ± c·se for every pairwise difference, c the confidence quantile
    of the bootstrap max-|t| statistic max over pairs |d* − d̂| / se (single-step max-T, Westfall &
    Young 1993; Romano & Wolf, JASA 2005); the gap max |d| then lies in
    [max over pairs of the distance of 0 to the pair's interval, max over pairs of its farthest
    end]. Groups that do not differ give a gap interval holding 0 with at least the confidence
    level. p_value (all groups equal): (1 + #{T* ≥ max |d̂| / se}) / (1 + B), below α exactly when
    the gap interval excludes 0. Ratio: simultaneous max-|t| intervals for the group values,
    clipped at 0, projected onto min / max (1 when the intervals share a point). Given the number
    of clusters resampled, the bootstrap se is scaled by √(C/(C − 1)) and critical values are read
    on the t_{C−1} scale, as for cluster-robust tests with few clusters.
    Replicates in which a group is missing are left out. Returns {"difference": (value, lo, hi),
    "ratio": (value, lo, hi), "p_value", "n_resamples"}.
    """
    est = np.asarray(estimate, dtype=float)
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps).all(axis=1)]
    g = len(est)
    nan3 = (math.nan, math.nan, math.nan)
    if g < 2 or not np.isfinite(est).all():
        return {"difference": nan3, "ratio": nan3, "p_value": math.nan, "n_resamples": len(reps)}
    top, bottom = float(est.max()), float(est.min())
    gap = top - bottom
    ratio = bottom / top if top > 0 else math.nan
    if len(reps) < 2:
        return {"difference": (gap, math.nan, math.nan), "ratio": (ratio, math.nan, math.nan), "p_value": math.nan,
                "n_resamples": len(reps)}
    ii, jj = np.triu_indices(g, 1)
    d_hat = est[ii] - est[jj]
    d_rep = reps[:, ii] - reps[:, jj]
    scale, to_t = _small_sample(n_clusters)
    se = d_rep.std(axis=0, ddof=1)
    pos = se > 0
    t_star = (np.abs(d_rep[:, pos] - d_hat[pos]) / se[pos]).max(axis=1) if pos.any() else np.zeros(len(reps))
    c = _critical(t_star, confidence)
    half = np.where(pos, to_t(c) * scale * se, 0.0)
    lo_pair, hi_pair = d_hat - half, d_hat + half
    gap_lo = float(np.max(np.maximum(0.0, np.maximum(lo_pair, -hi_pair))))
    gap_hi = float(np.max(np.maximum(np.abs(lo_pair), np.abs(hi_pair))))
    with np.errstate(invalid="ignore", divide="ignore"):
        t_obs = np.where(pos, np.abs(d_hat) / np.where(pos, scale * se, 1.0), np.where(d_hat != 0, np.inf, 0.0)).max()
    if n_clusters is not None and n_clusters >= 3 and math.isfinite(t_obs):
        t_obs = float(stats.norm.ppf(stats.t.cdf(t_obs, n_clusters - 1)))  # back onto the bootstrap's scale
    # a difference with no bootstrap spread (t_obs = ∞) is beaten by no replicate
    beaten = 0.0 if math.isinf(t_obs) else float((t_star >= t_obs - 1e-12 * max(1.0, t_obs)).sum())
    p = (1.0 + beaten) / (1.0 + len(reps))
    # ratio: a simultaneous box for the group values
    se_g = reps.std(axis=0, ddof=1)
    pos_g = se_g > 0
    t_g = (np.abs(reps[:, pos_g] - est[pos_g]) / se_g[pos_g]).max(axis=1) if pos_g.any() else np.zeros(len(reps))
    c_g = to_t(_critical(t_g, confidence)) * scale
    lo_g = np.maximum(est - np.where(pos_g, c_g * se_g, 0.0), 0.0)
    hi_g = est + np.where(pos_g, c_g * se_g, 0.0)
    if not hi_g.max() > 0:
        r_lo = r_hi = math.nan
    else:
        # smallest min/max: one group at its lower end, another at its upper end
        with np.errstate(invalid="ignore", divide="ignore"):
            cross = lo_g[:, None] / hi_g[None, :]
        np.fill_diagonal(cross, np.inf)
        r_lo = float(np.min(cross))
        r_hi = 1.0 if lo_g.max() <= hi_g.min() else float(hi_g.min() / lo_g.max())
    return {"difference": (gap, gap_lo, gap_hi), "ratio": (ratio, r_lo, r_hi), "p_value": float(p),
            "n_resamples": len(reps)}
