"""The stats engine checked by exact enumeration: every outcome of a small binomial or multinomial
sample, weighted by its probability, so coverage is computed, not estimated."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import optimize, stats

from t2ibias.metrics import legacy
from t2ibias.metrics.skew import js_divergence, max_min_gap, normalized_entropy, total_variation, total_variation_uniform
from t2ibias.stats.binomial import SHARE_METHODS, clopper_pearson, cluster_shares, jeffreys, korn_graubard, share_interval, wilson
from t2ibias.stats.projection import least_skewed_point, least_total_variation, projection_interval, vertices
from t2ibias.stats.testing import bh_qvalues, fit_pvalues, pearson_statistic, t_interval

SHARE_NS = (1, 4, 10, 25)
P_GRID = np.linspace(0.0005, 0.9995, 1999)
TOL = 1e-9


def share_coverage(fn, n: int, ps: np.ndarray = P_GRID) -> np.ndarray:
    """Exact coverage at each p: Σ_k Binom(k; n, p) · [lo_k ≤ p ≤ hi_k]."""
    k = np.arange(n + 1)
    lo, hi = fn(k, np.full(n + 1, n))
    pmf = stats.binom.pmf(k[:, None], n, ps[None, :])
    return (pmf * ((lo[:, None] <= ps + TOL) & (ps <= hi[:, None] + TOL))).sum(axis=0)


@pytest.mark.parametrize("n", SHARE_NS)
def test_clopper_pearson_covers_at_least_95_percent_for_every_p(n: int) -> None:
    cov = share_coverage(clopper_pearson, n)
    assert cov.min() >= 0.95 - 1e-12, f"n={n}: coverage {cov.min():.4f} at p={P_GRID[cov.argmin()]:.4f}"


@pytest.mark.parametrize("fn", [wilson, jeffreys])
@pytest.mark.parametrize("n", SHARE_NS)
def test_score_intervals_cover_95_percent_on_average_over_p(fn, n: int) -> None:
    # pointwise they dip (Brown, Cai & DasGupta 2001); averaged over p they stay near nominal
    cov = share_coverage(fn, n)
    assert cov.mean() >= 0.945
    assert cov.min() >= 0.79  # the worst dip: Wilson at n = 1 (0.794 near p = 0.79)


def test_wilson_dips_below_nominal_at_four_images() -> None:
    """Why Clopper–Pearson is the default: Wilson at n = 4, p = ½ covers only 87.5 %."""
    assert share_coverage(wilson, 4, np.array([0.5]))[0] == pytest.approx(0.875, abs=1e-9)


@pytest.mark.parametrize("method", SHARE_METHODS)
@pytest.mark.parametrize("n", SHARE_NS + (100,))
def test_no_share_interval_from_a_finite_sample_has_zero_width(method: str, n: int) -> None:
    k = np.arange(n + 1)
    lo, hi = share_interval(k, np.full(n + 1, n), 0.95, method)
    assert np.all(hi - lo > 0.01), f"{method} n={n}: widths {hi - lo}"
    assert np.all((lo >= 0) & (hi <= 1))
    assert np.all((lo <= k / n + TOL) & (k / n <= hi + TOL))
    # k = 0 and k = n reach the boundary they stand on, and only that one
    assert lo[0] == pytest.approx(0.0, abs=1e-12) and hi[-1] == pytest.approx(1.0, abs=1e-12)
    assert hi[0] < 1.0 and lo[-1] > 0.0


def test_share_interval_rejects_an_unknown_method_and_a_bad_confidence() -> None:
    with pytest.raises(ValueError, match="unknown share interval method"):
        share_interval(1, 4, 0.95, "normal")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        clopper_pearson(1, 4, 1.0)


def test_clopper_pearson_matches_scipy_binomtest() -> None:
    for n in (1, 4, 10, 25):
        for k in range(n + 1):
            ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
            lo, hi = clopper_pearson(k, n)
            assert (float(lo), float(hi)) == pytest.approx((ci.low, ci.high), abs=1e-10)


@pytest.mark.parametrize("prompts", [2, 5, 20])
def test_cluster_shares_have_width_when_every_prompt_is_one_label(prompts: int) -> None:
    k = np.tile([[4, 0]], (prompts, 1))  # every image of every prompt: label 0
    n = np.full(prompts, 4)
    out = cluster_shares(k, n)
    for name in ("mean_over_prompts", "pooled"):
        est, lo, hi = out[name]
        assert est.tolist() == [1.0, 0.0]
        assert np.all(hi - lo > 0.01), f"{name}: [{lo}, {hi}]"
        assert hi[0] == 1.0 and lo[1] == 0.0
    # zero between-prompt variance: Korn–Graubard falls back to the image count
    lo, hi = korn_graubard(1.0, 0.0, 4.0 * prompts, prompts - 1)
    assert 0 < float(lo) < 1 and float(hi) == 1.0


def test_cluster_shares_of_one_prompt_are_its_clopper_pearson_interval() -> None:
    k = np.array([[3, 6, 1]])
    out = cluster_shares(k, np.array([10]))
    lo, hi = clopper_pearson(k[0], np.full(3, 10))
    for name in ("mean_over_prompts", "pooled"):
        est, a, b = out[name]
        np.testing.assert_allclose(est, [0.3, 0.6, 0.1])
        np.testing.assert_allclose(a, lo)
        np.testing.assert_allclose(b, hi)


def test_cluster_shares_estimates_weigh_prompts_or_images() -> None:
    k = np.array([[1, 1], [9, 1], [0, 0]])  # the empty prompt is left out
    n = np.array([2, 10, 0])
    out = cluster_shares(k, n)
    np.testing.assert_allclose(out["mean_over_prompts"][0], [0.7, 0.3])
    np.testing.assert_allclose(out["pooled"][0], [10 / 12, 2 / 12])
    for est, lo, hi in out.values():
        assert np.all((lo <= est) & (est <= hi))


def test_korn_graubard_is_wider_with_fewer_prompts_at_the_same_variance() -> None:
    lo5, hi5 = korn_graubard(0.4, 0.004, 100.0, 4)
    lo50, hi50 = korn_graubard(0.4, 0.004, 100.0, 49)
    assert float(hi5 - lo5) > float(hi50 - lo50)


# --- skew statistics: the projection of the simultaneous box -------------------------------------


#: name -> (statistic of shares, keyword arguments of projection_interval)
SKEW = {
    "tv": (total_variation_uniform, {"tv_ref": True}),
    "gap": (max_min_gap, {}),
    "std": (legacy.std, {}),
    "mad": (legacy.mad, {}),
    "entropy": (normalized_entropy, {"concave": True}),
}


def compositions(n: int, k: int) -> np.ndarray:
    """Every count vector of n items over k labels, (M, k)."""
    out = []
    for cuts in itertools.combinations(range(n + k - 1), k - 1):
        edges = (-1,) + cuts + (n + k - 1,)
        out.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return np.array(out)


def multinomial_pmf(counts: np.ndarray, p: np.ndarray) -> np.ndarray:
    n = int(counts[0].sum())
    return stats.multinomial.pmf(counts, n, p)


def projection_coverage(n: int, p: np.ndarray, stat, kwargs: dict, ref=None) -> float:
    counts = compositions(n, len(p))
    lo, hi = projection_interval(counts, stat, ref=ref, **kwargs)
    truth = float(stat(p[None])[0])
    hit = (lo <= truth + 1e-9) & (truth <= hi + 1e-9)
    return float((multinomial_pmf(counts, p) * hit).sum())


@pytest.mark.parametrize("name", list(SKEW))
@pytest.mark.parametrize("k", [2, 3, 4, 7])
@pytest.mark.parametrize("n", [1, 4, 10])
def test_projection_at_exact_balance_reaches_balance(name: str, k: int, n: int) -> None:
    stat, kwargs = SKEW[name]
    counts = np.full((1, k), n)
    lo, hi = projection_interval(counts, stat, **kwargs)
    if name == "entropy":
        assert hi[0] == pytest.approx(1.0, abs=1e-9) and lo[0] < 1.0
    else:
        assert lo[0] == pytest.approx(0.0, abs=1e-12) and hi[0] > 0.0


P_TRUE = {
    2: [np.array([0.5, 0.5]), np.array([0.55, 0.45]), np.array([0.8, 0.2]), np.array([0.97, 0.03])],
    3: [np.full(3, 1 / 3), np.array([0.4, 0.33, 0.27]), np.array([0.6, 0.3, 0.1]), np.array([0.9, 0.05, 0.05])],
    4: [np.full(4, 0.25), np.array([0.3, 0.25, 0.25, 0.2]), np.array([0.7, 0.1, 0.1, 0.1])],
}


@pytest.mark.parametrize("name", list(SKEW))
@pytest.mark.parametrize("n,k", [(4, 3), (6, 2), (10, 2), (12, 3), (8, 4)])
def test_projection_interval_covers_by_exact_enumeration(name: str, n: int, k: int) -> None:
    stat, kwargs = SKEW[name]
    for p in P_TRUE[k]:
        cov = projection_coverage(n, p, stat, kwargs)
        assert cov >= 0.95 - 1e-9, f"{name} n={n} p={p}: exact coverage {cov:.4f}"


@pytest.mark.parametrize("n,k", [(6, 2), (10, 2), (12, 3)])
def test_projection_interval_to_a_reference_covers_by_exact_enumeration(n: int, k: int) -> None:
    ref = np.array([0.3, 0.7]) if k == 2 else np.array([0.5, 0.3, 0.2])
    for p in (ref, 0.8 * ref + 0.2 / k, np.eye(k)[0] * 0.8 + 0.2 / k):
        tv = projection_coverage(n, p, lambda q: total_variation(q, ref), {"tv_ref": True}, ref=ref)
        js = projection_coverage(n, p, lambda q: js_divergence(q, ref), {}, ref=ref)
        assert tv >= 0.95 - 1e-9 and js >= 0.95 - 1e-9, f"n={n} p={p}: TV {tv:.4f}, JS {js:.4f}"
    counts = np.round(ref * n * 10).astype(int)[None]  # observed shares equal to the reference
    lo, _ = projection_interval(counts, lambda q: total_variation(q, ref), ref=ref, tv_ref=True)
    assert lo[0] == pytest.approx(0.0, abs=1e-12)


def test_projection_interval_of_an_empty_row_is_nan_and_keeps_leading_shape() -> None:
    counts = np.array([[[3, 1], [0, 0]], [[2, 2], [4, 0]]])
    lo, hi = projection_interval(counts, total_variation_uniform, tv_ref=True)
    assert lo.shape == (2, 2)
    assert np.isnan(lo[0, 1]) and np.isnan(hi[0, 1])
    assert np.isfinite(lo[[0, 1, 1], [0, 0, 1]]).all()


def random_boxes(rng: np.random.Generator, count: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [lo, hi] ⊂ [0, 1]^k that meet the simplex (Σlo ≤ 1 ≤ Σhi)."""
    boxes_lo, boxes_hi = [], []
    while len(boxes_lo) < count:
        centre = rng.dirichlet(np.full(k, 0.7))
        lo = np.clip(centre - rng.uniform(0, 0.3, k), 0, 1)
        hi = np.clip(centre + rng.uniform(0, 0.3, k), 0, 1)
        if lo.sum() <= 1 <= hi.sum():
            boxes_lo.append(lo)
            boxes_hi.append(hi)
    return np.array(boxes_lo), np.array(boxes_hi)


def tv_max_by_subsets(lo: np.ndarray, hi: np.ndarray, ref: np.ndarray) -> float:
    """max of ½Σ|p − r| over box ∩ simplex, as max over label sets S of max p(S) − r(S).

    TV = max_S (p(S) − r(S)), and the largest p(S) with p in the box and Σp = 1 is
    min(Σ_S hi, 1 − Σ_{not S} lo).
    """
    k = len(lo)
    best = 0.0
    for mask in itertools.product((False, True), repeat=k):
        s = np.array(mask)
        best = max(best, min(hi[s].sum(), 1.0 - lo[~s].sum()) - ref[s].sum())
    return float(best)


def tv_extremes_by_lp(lo: np.ndarray, hi: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """min and max of ½Σ|p − r| over box ∩ simplex by linear programs.

    max: TV = max over sign vectors s of ½ s·(p − r), so the maximum is the largest of 2^K linear
    programs; min: minimize ½Σt subject to t ≥ ±(p − r).
    """
    k = len(lo)
    a_eq, b_eq = np.ones((1, k)), [1.0]
    best = -np.inf
    for signs in itertools.product((-1.0, 1.0), repeat=k):
        s = np.array(signs)
        res = optimize.linprog(-s, A_eq=a_eq, b_eq=b_eq, bounds=list(zip(lo, hi)), method="highs")
        assert res.status == 0
        best = max(best, 0.5 * float(-res.fun - s @ ref))
    return tv_min_by_lp(lo, hi, ref), best


def tv_min_by_lp(lo: np.ndarray, hi: np.ndarray, ref: np.ndarray) -> float:
    k = len(lo)
    c = np.concatenate([np.zeros(k), np.full(k, 0.5)])
    eye = np.eye(k)
    a_ub = np.block([[eye, -eye], [-eye, -eye]])
    b_ub = np.concatenate([ref, -ref])
    res = optimize.linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=np.hstack([np.ones((1, k)), np.zeros((1, k))]), b_eq=[1.0],
                           bounds=list(zip(lo, hi)) + [(0, None)] * k, method="highs")
    assert res.status == 0
    return float(res.fun)


def gap_min_by_lp(lo: np.ndarray, hi: np.ndarray) -> float:
    """min of max p − min p over box ∩ simplex: minimize u − l with l ≤ p_k ≤ u."""
    k = len(lo)
    c = np.concatenate([np.zeros(k), [1.0, -1.0]])
    eye = np.eye(k)
    a_ub = np.block([[eye, -np.ones((k, 1)), np.zeros((k, 1))], [-eye, np.zeros((k, 1)), np.ones((k, 1))]])
    res = optimize.linprog(c, A_ub=a_ub, b_ub=np.zeros(2 * k), A_eq=np.concatenate([np.ones(k), [0, 0]])[None], b_eq=[1.0],
                           bounds=list(zip(lo, hi)) + [(None, None)] * 2, method="highs")
    assert res.status == 0
    return float(res.fun)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_vertex_enumeration_finds_the_extremes_of_total_variation(k: int) -> None:
    rng = np.random.default_rng(k)
    lo, hi = random_boxes(rng, 16, k)
    refs = np.vstack([np.full((6, k), 1 / k), rng.dirichlet(np.ones(k), size=10)])
    verts, feasible = vertices(lo, hi)
    assert feasible.any(axis=1).all()
    assert np.all(np.abs(verts[feasible].sum(axis=-1) - 1) < 1e-9)
    found_max = np.where(feasible, total_variation(verts, refs[:, None, :]), -np.inf).max(axis=1)
    found_min = least_total_variation(lo, hi, refs)
    for i in range(len(lo)):
        assert found_max[i] == pytest.approx(tv_max_by_subsets(lo[i], hi[i], refs[i]), abs=1e-9)
        if i % 6 == 0:  # a few by linear programming too: slower, independent of the subset identity
            tv_min, tv_max = tv_extremes_by_lp(lo[i], hi[i], refs[i])
            assert found_max[i] == pytest.approx(tv_max, abs=1e-7)
        else:
            tv_min = tv_min_by_lp(lo[i], hi[i], refs[i])
        assert found_min[i] == pytest.approx(tv_min, abs=1e-7)


@pytest.mark.parametrize("k", [3, 4, 6])
def test_least_skewed_point_minimizes_the_max_min_gap(k: int) -> None:
    rng = np.random.default_rng(10 + k)
    lo, hi = random_boxes(rng, 25, k)
    p = least_skewed_point(lo, hi, np.full(k, 1 / k))
    assert np.all(np.abs(p.sum(axis=-1) - 1) < 1e-9)
    assert np.all((p >= lo - 1e-9) & (p <= hi + 1e-9))
    for i in range(len(lo)):
        assert float(max_min_gap(p[i])) == pytest.approx(gap_min_by_lp(lo[i], hi[i]), abs=1e-7)


def test_vertex_enumeration_finds_the_minimum_of_entropy_on_a_grid() -> None:
    rng = np.random.default_rng(3)
    lo, hi = random_boxes(rng, 15, 3)
    verts, feasible = vertices(lo, hi)
    grid = compositions(400, 3) / 400.0
    for i in range(len(lo)):
        inside = np.all((grid >= lo[i]) & (grid <= hi[i]), axis=1)
        if not inside.any():
            continue
        grid_min = normalized_entropy(grid[inside]).min()
        found = normalized_entropy(verts[i][feasible[i]]).min()
        assert found <= grid_min + 1e-12
        assert found >= grid_min - 0.02  # the grid is 1/400 apart


# --- tests of fit, q-values, t intervals -------------------------------------------------------


def exact_fit_pvalues(outcomes: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """P_H0(X² ≥ X²_obs) for each row of ``outcomes`` (every outcome of its n), summed over outcomes."""
    x2 = pearson_statistic(outcomes, ref)
    pmf = multinomial_pmf(outcomes, ref)
    at_least = x2[None, :] >= x2[:, None] - 1e-9 * np.maximum(1.0, x2[:, None])
    return np.minimum(1.0, (at_least * pmf[None, :]).sum(axis=1))


@pytest.mark.parametrize("n,ref", [(6, np.full(3, 1 / 3)), (8, np.array([0.3, 0.7])), (10, np.array([0.5, 0.25, 0.25])),
                                   (12, np.full(4, 0.25))])
def test_fit_pvalues_match_the_exact_multinomial_test(n: int, ref: np.ndarray) -> None:
    outcomes = compositions(n, len(ref))
    got = fit_pvalues(outcomes, None if np.allclose(ref, ref[0]) else ref)
    exact = exact_fit_pvalues(outcomes, ref)
    se = np.sqrt(exact * (1 - exact) / 9_999)  # the Monte Carlo error of B = 9,999 null draws
    bad = np.abs(got - exact) > 4.5 * se + 2e-4
    assert not bad.any(), f"{outcomes[bad][:3]}: Monte Carlo {got[bad][:3]}, exact {exact[bad][:3]}"


@pytest.mark.parametrize("n,k", [(20, 3), (30, 2), (12, 5)])
def test_fit_pvalues_are_valid_under_the_null(n: int, k: int) -> None:
    """P_H0(p ≤ α) ≤ α (a discrete test is at most uniform), computed over every outcome."""
    outcomes = compositions(n, k)
    pmf = multinomial_pmf(outcomes, np.full(k, 1 / k))
    p = fit_pvalues(outcomes)
    sizes = []
    for alpha in (0.01, 0.05, 0.1, 0.25, 0.5):
        size = float(pmf[p <= alpha].sum())
        assert size <= alpha + 0.01, f"n={n} K={k}: P(p ≤ {alpha}) = {size:.4f}"
        sizes.append(size)
    assert sizes[-1] >= 0.3  # not a test that never rejects: its size follows α, as far as the discrete outcomes allow
    assert np.all((p > 0) & (p <= 1))


def test_fit_pvalues_empty_rows_are_nan_and_shape_is_kept() -> None:
    p = fit_pvalues(np.array([[[5, 5], [0, 0]], [[10, 0], [3, 7]]]))
    assert p.shape == (2, 2) and np.isnan(p[0, 1])
    assert p[0, 0] == 1.0 and p[1, 0] < 0.01


def test_bh_qvalues_equal_scipy_false_discovery_control_and_keep_nan() -> None:
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 0.01, size=10)])
    np.testing.assert_allclose(bh_qvalues(p), stats.false_discovery_control(p, method="bh"), rtol=0, atol=1e-15)
    with_nan = p.copy()
    with_nan[[3, 17]] = np.nan
    q = bh_qvalues(with_nan)
    assert np.isnan(q[[3, 17]]).all()
    finite = np.isfinite(with_nan)
    np.testing.assert_allclose(q[finite], stats.false_discovery_control(with_nan[finite], method="bh"), atol=1e-15)
    assert np.isnan(bh_qvalues(np.array([np.nan, np.nan]))).all()


@pytest.mark.parametrize("seed", range(4))
def test_t_interval_equals_scipy_ttest_1samp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(0.1 * seed, 1.0, size=3 + 7 * seed)
    mean, lo, hi, p = t_interval(values, 0.9)
    res = stats.ttest_1samp(values, 0.0)
    ci = res.confidence_interval(0.9)
    assert (mean, lo, hi, p) == pytest.approx((values.mean(), ci.low, ci.high, res.pvalue), rel=1e-12)
    with_nan = np.append(values, np.nan)
    assert t_interval(with_nan, 0.9) == pytest.approx((mean, lo, hi, p), rel=1e-12)


def test_t_interval_with_too_few_or_equal_values() -> None:
    assert np.isnan(t_interval(np.array([0.3]))[1:]).all()
    assert np.isnan(t_interval(np.array([]))).all()
    assert t_interval(np.array([0.0, 0.0, 0.0])) == (0.0, 0.0, 0.0, 1.0)
