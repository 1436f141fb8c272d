"""Reference-based skew, peers' legacy metrics, BCa intervals and the minimum-n policy (offline, no models)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from t2ibias.core.errors import UserError
from t2ibias.metrics import legacy
from t2ibias.stats.bootstrap import (
    MIN_N,
    acceleration,
    bca_interval,
    gap_or_nan,
    group_intervals,
    interval,
    jackknife,
    percentile_interval,
    percentile_intervals,
    pooled_replicates,
    resample_clusters,
    resample_counts,
    resample_counts_many,
)
from t2ibias.metrics.skew import (
    EXTRA_SKEW_METRICS,
    SKEW_METRICS,
    check_reference,
    js_divergence,
    kl_divergence,
    max_min_gap,
    normalized_entropy,
    proportions,
    ratio_to_reference,
    total_variation,
    total_variation_uniform,
)

LN2 = math.log(2)


# -- skew against a reference ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "counts, ref, expected",
    [
        ([3, 1], [0.5, 0.5], 0.25),
        ([6, 3, 1], [0.5, 0.3, 0.2], 0.1),  # p = (.6, .3, .1): ½(.1 + 0 + .1)
        ([4, 0], [0.0, 1.0], 1.0),
        ([2, 2], [0.5, 0.5], 0.0),
        ([1, 1, 2], [0.25, 0.25, 0.5], 0.0),
    ],
)
def test_total_variation_to_a_reference_hand_values(counts, ref, expected):
    assert float(total_variation(np.array(counts), np.array(ref))) == pytest.approx(expected, abs=1e-12)


def test_total_variation_to_uniform_reference_is_total_variation_uniform():
    counts = np.random.default_rng(0).integers(0, 9, size=(40, 4))
    np.testing.assert_allclose(total_variation(counts, np.full(4, 0.25)), total_variation_uniform(counts), equal_nan=True)


@pytest.mark.parametrize(
    "counts, ref, expected",
    [
        # .75 ln(.75/.5) + .25 ln(.25/.5) = .75 ln 1.5 − .25 ln 2 = 0.1308120359...
        ([3, 1], [0.5, 0.5], 0.75 * math.log(1.5) - 0.25 * LN2),
        ([3, 1], [0.5, 0.5], 0.13081203594113697),
        ([4, 0], [0.5, 0.5], LN2),  # 1·ln(1/.5); the empty label adds 0·ln 0 = 0
        ([6, 3, 1], [0.6, 0.3, 0.1], 0.0),
        # p = (.5, .5, 0) vs r = (.25, .25, .5): 2 · .5 ln 2 = ln 2
        ([1, 1, 0], [0.25, 0.25, 0.5], LN2),
    ],
)
def test_kl_divergence_hand_values(counts, ref, expected):
    assert float(kl_divergence(np.array(counts), np.array(ref))) == pytest.approx(expected, abs=1e-12)


def test_kl_divergence_is_infinite_where_the_reference_rules_a_group_out():
    assert kl_divergence(np.array([1, 1]), np.array([1.0, 0.0])) == math.inf
    # but a group with p = 0 and r = 0 is fine
    assert float(kl_divergence(np.array([3, 0]), np.array([1.0, 0.0]))) == 0.0


@pytest.mark.parametrize(
    "counts, ref, expected",
    [
        ([1, 0], [0.0, 1.0], LN2),  # disjoint supports: the maximum, ln 2
        # p = (1, 0), r = (.5, .5), m = (.75, .25): ½ ln(4/3) + ½(½ ln(2/3) + ½ ln 2) = ¾ ln(4/3)
        ([5, 0], [0.5, 0.5], 0.75 * math.log(4 / 3)),
        ([5, 0], [0.5, 0.5], 0.21576155433883568),
        ([2, 2], [0.5, 0.5], 0.0),
    ],
)
def test_js_divergence_hand_values_in_nats(counts, ref, expected):
    assert float(js_divergence(np.array(counts), np.array(ref))) == pytest.approx(expected, abs=1e-12)


def test_js_divergence_is_bounded_and_symmetric():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, size=(200, 5))
    a[:, 0] += 1
    b = rng.integers(0, 6, size=(200, 5))
    b[:, 1] += 1
    pa, pb = proportions(a), proportions(b)
    js_ab = np.array([float(js_divergence(a[i], pb[i])) for i in range(200)])
    js_ba = np.array([float(js_divergence(b[i], pa[i])) for i in range(200)])
    np.testing.assert_allclose(js_ab, js_ba, atol=1e-12)
    assert (js_ab >= 0).all() and (js_ab <= LN2 + 1e-15).all()
    # finite even where KL is not
    assert np.isfinite(js_divergence(np.array([1, 1]), np.array([1.0, 0.0])))


@pytest.mark.parametrize(
    "counts, expected",
    [([5, 3, 2], 0.3), ([4, 0], 1.0), ([2, 2], 0.0), ([1, 1, 1, 1], 0.0), ([6, 1, 1], 0.75 - 0.125)],
)
def test_max_min_gap_hand_values(counts, expected):
    assert float(max_min_gap(np.array(counts))) == pytest.approx(expected, abs=1e-12)


def test_ratio_to_reference_hand_values():
    # p = (.6, .3, .1) vs (.5, .3, .2)
    np.testing.assert_allclose(ratio_to_reference(np.array([6, 3, 1]), np.array([0.5, 0.3, 0.2])), [1.2, 1.0, 0.5])
    out = ratio_to_reference(np.array([2, 0, 2]), np.array([0.5, 0.5, 0.0]))
    assert out[0] == pytest.approx(1.0) and out[1] == 0.0 and out[2] == math.inf
    both_zero = ratio_to_reference(np.array([2, 0]), np.array([1.0, 0.0]))
    assert both_zero[0] == 1.0 and math.isnan(both_zero[1])
    assert ratio_to_reference(np.zeros((4, 3)), np.full(3, 1 / 3)).shape == (4, 3)


REF3 = np.array([0.5, 0.3, 0.2])
REFERENCE_FNS = [total_variation, kl_divergence, js_divergence]


@pytest.mark.parametrize("fn", REFERENCE_FNS + [ratio_to_reference])
def test_reference_metrics_are_vectorized_over_rows_and_nan_for_empty_rows(fn):
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 6, size=(50, 3))
    counts[:, 0] += 1
    counts[0] = 0
    batch = fn(counts, REF3)
    rowwise = np.array([fn(row, REF3) for row in counts])
    np.testing.assert_allclose(batch, rowwise, atol=1e-12, equal_nan=True)
    assert np.isnan(batch[0]).all() and not np.isnan(batch[1:]).any()
    # leading axes are kept, and one reference per row broadcasts too
    np.testing.assert_allclose(fn(counts.reshape(5, 10, 3), REF3).reshape(batch.shape), batch, equal_nan=True)
    refs = proportions(rng.integers(1, 5, size=(50, 3)))
    per_row = fn(counts, refs)
    np.testing.assert_allclose(per_row, np.array([fn(c, r) for c, r in zip(counts, refs)]), atol=1e-12, equal_nan=True)


def test_max_min_gap_is_vectorized_and_nan_for_empty_rows():
    counts = np.random.default_rng(3).integers(0, 5, size=(30, 4))
    counts[:, 1] += 1
    counts[5] = 0
    batch = max_min_gap(counts)
    np.testing.assert_allclose(batch, [float(max_min_gap(r)) for r in counts], equal_nan=True)
    assert np.isnan(batch[5]) and np.isnan(batch).sum() == 1


def test_reference_with_the_wrong_number_of_groups_is_rejected():
    with pytest.raises(ValueError, match="last axis"):
        total_variation(np.array([1, 2, 3]), np.array([0.5, 0.5]))


def test_skew_metric_lists():
    assert [m.name for m in SKEW_METRICS] == ["total_variation_uniform", "normalized_entropy"]
    (gap,) = EXTRA_SKEW_METRICS
    assert gap.name == "max_min_gap" and gap.fn is max_min_gap and gap.higher_is_better is False


# -- reference validation --------------------------------------------------------------------------

LABELS = ["masc", "fem"]


def test_check_reference_returns_shares_in_label_order():
    out = check_reference({"fem": 0.47, "masc": 0.53}, LABELS, "configs/ref.yaml")
    np.testing.assert_array_equal(out, [0.53, 0.47])
    np.testing.assert_array_equal(check_reference([0.25, 0.75], LABELS, "x"), [0.25, 0.75])
    np.testing.assert_array_equal(check_reference(np.array([0.5, 0.5]), LABELS, "x"), [0.5, 0.5])
    check_reference({"masc": 0.5 + 5e-7, "fem": 0.5}, LABELS, "x")  # inside ±1e-6


@pytest.mark.parametrize(
    "ref, field, fix",
    [
        ({"masc": 0.5, "fem": 0.4}, "sum to 0.9", "rescale"),
        ({"masc": 1.1, "fem": -0.1}, "reference['fem']", "between 0 and 1"),
        ({"masc": float("nan"), "fem": 0.5}, "reference['masc'] is NaN", "between 0 and 1"),
        ({"masc": 1.0}, "no share for label 'fem'", "add 'fem'"),
        ({"masc": 0.5, "fem": 0.5, "femme": 0.0}, "'femme' is not one of", "spelling"),
        ([1.0], "1 shares but there are 2 labels", "one share per label"),
        ({"masc": "half", "fem": 0.5}, "not a number", "share"),
        ({"masc": 0.5, "fem": 0.5 + 2e-6}, "not 1", "rescale"),
    ],
)
def test_check_reference_errors_are_one_line_with_where_field_and_fix(ref, field, fix):
    with pytest.raises(UserError) as err:
        check_reference(ref, LABELS, "configs/ref.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("configs/ref.yaml: ")
    assert field in msg and fix in msg


# -- DALL-Eval --------------------------------------------------------------------------------------

def test_dalleval_check_value_male_90_female_55():
    counts = np.array([90, 55])
    # p = (90/145, 55/145); both deviations from the mean ½ are 90/145 − ½ = 35/290 = 0.120689...
    assert float(legacy.mad(counts)) == pytest.approx(35 / 290, abs=1e-15)
    assert float(legacy.std(counts)) == pytest.approx(35 / 290, abs=1e-15)
    assert round(float(legacy.mad(counts)), 4) == 0.1207
    assert round(float(legacy.std(counts)), 4) == 0.1207
    # the sample standard deviation would not reproduce the paper's number
    assert round(float(np.std(counts / 145, ddof=1)), 4) == 0.1707


def test_dalleval_mad_and_std_hand_values_for_four_groups():
    counts = np.array([4, 2, 1, 1])  # p = (.5, .25, .125, .125), mean .25
    # |p − .25| = (.25, 0, .125, .125) → MAD = .5 / 4 = .125
    assert float(legacy.mad(counts)) == pytest.approx(0.125)
    # squares (.0625, 0, .015625, .015625) → mean .0234375 → STD = 0.1530931...
    assert float(legacy.std(counts)) == pytest.approx(math.sqrt(0.0234375))
    # MAD = (2/K) · TV(p, uniform)
    many = np.random.default_rng(4).integers(0, 7, size=(30, 4)) + 1
    np.testing.assert_allclose(legacy.mad(many), 2 / 4 * total_variation_uniform(many))


def test_dalleval_per_prompt_then_averaged_ignoring_empty_prompts():
    prompts = np.array([[90, 55], [0, 0], [10, 10], [20, 0]])
    per_prompt = legacy.mad(prompts)
    assert np.isnan(per_prompt[1])
    np.testing.assert_allclose(per_prompt[[0, 2, 3]], [35 / 290, 0.0, 0.5])
    assert float(legacy.mean_over_prompts(per_prompt)) == pytest.approx((35 / 290 + 0 + 0.5) / 3)
    assert math.isnan(float(legacy.mean_over_prompts(np.array([np.nan, np.nan]))))
    for fn in (legacy.mad, legacy.std):
        batch = fn(prompts)
        np.testing.assert_allclose(batch, [float(fn(r)) for r in prompts], equal_nan=True)


# -- HEIM -------------------------------------------------------------------------------------------

def test_heim_gender_imbalance():
    assert float(legacy.heim_gender_imbalance(0.8)) == pytest.approx(0.3)
    np.testing.assert_allclose(legacy.heim_gender_imbalance(np.array([0.5, 0.0, 1.0, 0.35])), [0.0, 0.5, 0.5, 0.15])
    assert math.isnan(float(legacy.heim_gender_imbalance(np.nan)))


def _mst(**levels: int) -> np.ndarray:
    counts = np.zeros(10, dtype=int)
    for key, value in levels.items():
        counts[int(key[1:]) - 1] = value
    return counts


@pytest.mark.parametrize(
    "counts, unknown, expected",
    [
        (_mst(m3=7), 0, 0.18),  # (|1 − .1| + 9 · .1) / 10
        (np.ones(10, dtype=int), 0, 0.0),
        # 5 at MST 1, 5 at MST 2, 10 unknown → p1 = p2 = .25: (.15 + .15 + 8 · .1) / 10
        (_mst(m1=5, m2=5), 10, 0.11),
        (np.zeros(10, dtype=int), 4, 0.1),  # all unknown: every level is .1 short
        (_mst(m10=3), 1, (abs(0.75 - 0.1) + 9 * 0.1) / 10),
    ],
)
def test_heim_skin_tone_imbalance_hand_values(counts, unknown, expected):
    assert float(legacy.heim_skin_tone_imbalance(counts, unknown)) == pytest.approx(expected, abs=1e-12)


def test_heim_skin_tone_imbalance_is_vectorized_and_nan_without_images():
    counts = np.stack([_mst(m1=5, m2=5), np.zeros(10, dtype=int), _mst(m3=7)])
    unknown = np.array([10, 0, 0])
    np.testing.assert_allclose(legacy.heim_skin_tone_imbalance(counts, unknown), [0.11, np.nan, 0.18], equal_nan=True)
    with pytest.raises(ValueError, match="10 Monk Skin Tone levels"):
        legacy.heim_skin_tone_imbalance(np.ones(6), 0)


# -- OpenBias ---------------------------------------------------------------------------------------

def test_openbias_bias_adds_epsilon_to_every_share():
    eps = 1e-10
    # [3, 1]: p = (.75, .25) → 1 + Σ (p + ε) ln(p + ε) / ln 2
    expected = 1 + ((0.75 + eps) * math.log(0.75 + eps) + (0.25 + eps) * math.log(0.25 + eps)) / LN2
    assert float(legacy.openbias_bias(np.array([3, 1]))) == pytest.approx(expected, abs=1e-15)
    assert float(legacy.openbias_bias(np.array([3, 1]))) == pytest.approx(1 - 0.8112781244591328, abs=1e-9)
    # one-hot: 1 + ((1 + ε) ln(1 + ε) + ε ln ε) / ln 2 = 1 − 3.1776e-9, not exactly 1
    one_hot = float(legacy.openbias_bias(np.array([4, 0])))
    assert one_hot == pytest.approx(1 + ((1 + eps) * math.log(1 + eps) + eps * math.log(eps)) / LN2, abs=1e-15)
    assert 1 - one_hot == pytest.approx(3.1776e-9, rel=1e-3)
    # uniform K = 2: 2(½ + ε) ln(½ + ε) / ln 2 + 1 ≈ 2ε(1/ln 2 − 1) = 8.85e-11, not exactly 0
    assert float(legacy.openbias_bias(np.array([2, 2]))) == pytest.approx(2 * eps * (1 / LN2 - 1), rel=1e-4)


def test_openbias_bias_is_one_minus_normalized_entropy_up_to_epsilon_and_vectorized():
    counts = np.random.default_rng(5).integers(0, 8, size=(40, 5))
    counts[0] = 0
    bias = legacy.openbias_bias(counts)
    np.testing.assert_allclose(bias, 1 - normalized_entropy(counts), atol=1e-8, equal_nan=True)
    np.testing.assert_allclose(bias, [float(legacy.openbias_bias(r)) for r in counts], equal_nan=True)
    assert np.isnan(bias[0])


# -- TIBET ------------------------------------------------------------------------------------------

def test_tibet_cas_hand_values():
    # p = (3, 1, 0) → (.75, .25, 0); q = (1, 1, 2) → (.25, .25, .5)
    # Σ min = .25 + .25 + 0 = .5; Σ max = .75 + .25 + .5 = 1.5 → 1/3
    assert float(legacy.cas(np.array([3, 1, 0]), np.array([1, 1, 2]))) == pytest.approx(1 / 3)
    assert float(legacy.cas(np.array([0.2, 0.8]), np.array([2, 8]))) == pytest.approx(1.0)  # normalized first
    assert float(legacy.cas(np.array([1, 0]), np.array([0, 1]))) == 0.0
    assert math.isnan(float(legacy.cas(np.array([0, 0]), np.array([1, 1]))))
    p = np.array([[3, 1, 0], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_allclose(legacy.cas(p, np.array([1, 1, 2])), [1 / 3, float(legacy.cas(p[1], np.array([1, 1, 2]))), np.nan], equal_nan=True)


def test_tibet_mad_norm_hand_values():
    # x = (.5, .3, .2): mean 1/3, |x − x̄| = (1/6, 1/30, 2/15) → mean 1/9 → sqrt 1/3
    # one-hot of length 3: mean 1/3, |e − ē| = (2/3, 1/3, 1/3) → mean 4/9 → sqrt 2/3;  1/3 ÷ 2/3 = 0.5
    assert float(legacy.mad_norm(np.array([0.5, 0.3, 0.2]))) == pytest.approx(0.5)
    assert float(legacy.mad_norm(np.array([0.0, 0.0, 0.0, 1.0]))) == pytest.approx(1.0)
    assert float(legacy.mad_norm(np.array([0.25] * 4))) == 0.0
    assert math.isnan(float(legacy.mad_norm(np.array([1.0]))))
    rows = np.random.default_rng(6).random((20, 6))
    np.testing.assert_allclose(legacy.mad_norm(rows), [float(legacy.mad_norm(r)) for r in rows])


# -- vectorized bootstrap over many groups ---------------------------------------------------------

def test_resample_counts_many_keeps_each_groups_total_and_support():
    counts = np.array([[7, 0, 3], [0, 0, 0], [1, 1, 1], [50, 25, 25]])
    reps = resample_counts_many(counts, 3000, np.random.default_rng(0))
    assert reps.shape == (3000, 4, 3)
    np.testing.assert_array_equal(reps.sum(axis=-1), np.broadcast_to(counts.sum(axis=-1), (3000, 4)))
    assert (reps[:, 0, 1] == 0).all() and not reps[:, 1].any()
    np.testing.assert_allclose(reps.mean(axis=0)[3], [50, 25, 25], rtol=0.03)


def test_percentile_intervals_match_the_scalar_version_column_by_column():
    rng = np.random.default_rng(8)
    reps = rng.normal(size=(999, 6))
    reps[:100, 1] = np.nan
    reps[:5, 2] = np.inf
    reps[:, 3] = np.nan
    reps[:, 4] = 0.25
    lo, hi = percentile_intervals(reps, 0.9)
    for j in range(6):
        expected = percentile_interval(reps[:, j], 0.9)
        np.testing.assert_allclose([lo[j], hi[j]], expected, equal_nan=True, atol=1e-12)
    lo3, _ = percentile_intervals(reps.reshape(999, 2, 3))
    np.testing.assert_allclose(lo3.ravel(), percentile_intervals(reps)[0], equal_nan=True)


GROUPS = np.array([[30, 10, 0], [0, 0, 0], [5, 5, 5], [1, 0, 0], [60, 30, 10], [2, 9, 4]])


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_group_intervals_equal_the_one_group_path_on_the_same_draw(method):
    est, lo, hi = group_intervals(GROUPS, total_variation_uniform, 500, np.random.default_rng(5), method=method, chunk=64)
    # one chunk: its generator is the first child spawned from the caller's
    child = np.random.default_rng(5).spawn(1)[0]
    reps = total_variation_uniform(resample_counts_many(GROUPS, 500, child))
    np.testing.assert_allclose(est, total_variation_uniform(GROUPS), equal_nan=True)
    for g in range(len(GROUPS)):
        if method == "percentile":
            expected = percentile_interval(reps[:, g])
        else:
            expected = bca_interval(total_variation_uniform, GROUPS[g], reps[:, g], float(est[g]))
        np.testing.assert_allclose([lo[g], hi[g]], expected, equal_nan=True, atol=1e-12)
    assert np.isnan([est[1], lo[1], hi[1]]).all()


def test_group_intervals_do_not_depend_on_the_number_of_threads():
    counts = np.random.default_rng(6).integers(0, 40, size=(50, 4))
    one = group_intervals(counts, total_variation_uniform, 300, np.random.default_rng(7), chunk=8, workers=1)
    four = group_intervals(counts, total_variation_uniform, 300, np.random.default_rng(7), chunk=8, workers=4)
    for a, b in zip(one, four):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown interval method"):
        group_intervals(counts, total_variation_uniform, 10, np.random.default_rng(0), method="normal")


def test_pooled_replicates_have_the_two_stage_cluster_distribution():
    clusters = np.array([[10, 0], [0, 10], [7, 3], [1, 1], [0, 0], [25, 5]])
    new = pooled_replicates(clusters, 20000, np.random.default_rng(8), chunk=3000)
    old = resample_clusters(clusters, 20000, np.random.default_rng(9))
    assert new.shape == (20000, 2)
    sizes = clusters.sum(axis=1)
    assert new.sum(axis=1).mean() == pytest.approx(old.sum(axis=1).mean(), rel=0.02)
    assert new.sum(axis=1).std() == pytest.approx(old.sum(axis=1).std(), rel=0.03)
    possible = {0}
    for _ in range(len(sizes)):  # every total is the size of six clusters drawn with replacement
        possible = {t + int(s) for t in possible for s in sizes}
    assert set(new.sum(axis=1).tolist()) <= possible
    p_new, p_old = proportions(new)[:, 0], proportions(old)[:, 0]
    assert np.nanmean(p_new) == pytest.approx(np.nanmean(p_old), abs=0.005)
    assert np.nanstd(p_new) == pytest.approx(np.nanstd(p_old), rel=0.03)
    lo_n, hi_n = percentile_interval(p_new)
    lo_o, hi_o = percentile_interval(p_old)
    assert lo_n == pytest.approx(lo_o, abs=0.01) and hi_n == pytest.approx(hi_o, abs=0.01)
    # reproducible, and independent of the thread count
    np.testing.assert_array_equal(pooled_replicates(clusters, 500, np.random.default_rng(1), chunk=100, workers=1),
                                  pooled_replicates(clusters, 500, np.random.default_rng(1), chunk=100, workers=3))
    assert not pooled_replicates(np.zeros((0, 3), dtype=int), 5, np.random.default_rng(0)).any()


def test_pooled_replicates_of_one_cluster_resample_its_items():
    reps = pooled_replicates(np.array([[30, 70]]), 4000, np.random.default_rng(2))
    assert (reps.sum(axis=1) == 100).all()
    assert proportions(reps)[:, 0].std() == pytest.approx(math.sqrt(0.3 * 0.7 / 100), rel=0.05)


# -- BCa --------------------------------------------------------------------------------------------

def share_of_first(counts):
    return proportions(counts)[..., 0]


def _items(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_closed_form_jackknife_equals_leaving_each_item_out():
    counts = np.array([5, 0, 3, 2])
    values, weights = jackknife(total_variation_uniform, counts)
    items = _items(counts)
    brute = [float(total_variation_uniform(np.bincount(np.delete(items, i), minlength=4))) for i in range(len(items))]
    assert weights.sum() == len(items)
    np.testing.assert_allclose(np.sort(np.repeat(values, weights.astype(int))), np.sort(brute))
    # the acceleration from K weighted values equals the textbook one over all n items
    d = np.mean(brute) - np.array(brute)
    textbook = (d**3).sum() / (6 * ((d**2).sum()) ** 1.5)
    assert acceleration(total_variation_uniform, counts) == pytest.approx(textbook, rel=1e-10)


def test_cluster_jackknife_leaves_one_prompt_out():
    clusters = np.array([[3, 1], [0, 4], [2, 2]])
    values, weights = jackknife(share_of_first, clusters)
    np.testing.assert_allclose(values, [2 / 8, 5 / 8, 3 / 8])
    np.testing.assert_array_equal(weights, [1, 1, 1])


def _tv_of_items(k):
    def stat(x, axis=-1):
        x = np.moveaxis(x, axis, -1)
        return total_variation_uniform((x[..., None] == np.arange(k)).sum(axis=-2))

    return stat


@pytest.mark.parametrize(
    "counts, stat, scipy_stat",
    [
        (np.array([37, 63]), share_of_first, lambda x, axis=-1: np.mean(x == 0, axis=axis)),
        (np.array([4, 96]), share_of_first, lambda x, axis=-1: np.mean(x == 0, axis=axis)),
        (np.array([20, 50, 30]), total_variation_uniform, _tv_of_items(3)),
        (np.array([40, 25, 20, 15]), total_variation_uniform, _tv_of_items(4)),
    ],
    ids=["proportion", "rare-proportion", "tv3", "tv4"],
)
def test_bca_matches_scipy_within_monte_carlo_error(counts, stat, scipy_stat):
    b = 20000
    reps = stat(resample_counts(counts, b, np.random.default_rng(11)))
    estimate = float(stat(counts))
    ours = bca_interval(stat, counts, reps, estimate, 0.95)
    ref = scipy.stats.bootstrap((_items(counts),), scipy_stat, n_resamples=b, method="BCa", confidence_level=0.95,
                                vectorized=True, random_state=np.random.default_rng(12)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.012)
    assert ours[1] == pytest.approx(ref.high, abs=0.012)
    assert ours[0] <= estimate <= ours[1]


def test_bca_corrects_the_percentile_interval_for_a_skewed_statistic():
    # a proportion near 0 is right-skewed: BCa shifts the interval up relative to the percentile one
    counts = np.array([3, 97])
    reps = share_of_first(resample_counts(counts, 20000, np.random.default_rng(13)))
    pct = percentile_interval(reps)
    bca = bca_interval(share_of_first, counts, reps, 0.03)
    assert bca[0] >= pct[0] and bca[1] > pct[1]


def test_bca_degenerate_cases():
    counts = np.array([10, 0])
    reps = share_of_first(resample_counts(counts, 100, np.random.default_rng(0)))
    assert bca_interval(share_of_first, counts, reps, 1.0) == (1.0, 1.0)  # nothing varies
    above = np.linspace(0.3, 0.4, 100)
    assert all(math.isnan(x) for x in bca_interval(share_of_first, np.array([2, 8]), above, 0.2))
    assert all(math.isnan(x) for x in bca_interval(share_of_first, np.array([0, 0]), np.full(10, np.nan), math.nan))


def test_bca_over_clusters_uses_the_cluster_jackknife():
    clusters = np.array([[8, 2], [3, 7], [5, 5], [9, 1], [2, 8], [6, 4]] * 3)
    reps = share_of_first(resample_clusters(clusters, 4000, np.random.default_rng(2)))
    estimate = float(share_of_first(clusters.sum(axis=0)))
    lo, hi = bca_interval(share_of_first, clusters, reps, estimate)
    plo, phi = percentile_interval(reps)
    assert lo < estimate < hi
    assert (hi - lo) == pytest.approx(phi - plo, rel=0.2)


def test_interval_dispatch():
    counts = np.array([30, 70])
    reps = share_of_first(resample_counts(counts, 2000, np.random.default_rng(3)))
    assert interval("percentile", reps) == percentile_interval(reps)
    assert interval("bca", reps, stat_fn=share_of_first, data_counts=counts, estimate=0.3) == bca_interval(share_of_first, counts, reps, 0.3)
    with pytest.raises(ValueError, match="needs stat_fn"):
        interval("bca", reps)
    with pytest.raises(ValueError, match="unknown interval method"):
        interval("studentized", reps)


# -- FACET minimum-n policy -------------------------------------------------------------------------

def test_gap_or_nan_minimum_n_policy():
    assert MIN_N == 50
    assert gap_or_nan(0.8, 50, 0.6, 200) == (pytest.approx(0.2), "")
    value, note = gap_or_nan(0.8, 12, 0.6, 200, names=("X", "Y"))
    assert math.isnan(value) and note == "n=12 < 50 for group X"
    value, note = gap_or_nan(0.8, 12, 0.6, 3, names=("X", "Y"))
    assert math.isnan(value) and note == "n=12 < 50 for group X; n=3 < 50 for group Y"
    assert gap_or_nan(0.8, 12, 0.6, 30, min_n=10) == (pytest.approx(0.2), "")
    value, note = gap_or_nan(math.nan, 80, 0.6, 80, names=("X", "Y"))
    assert math.isnan(value) and note == "no value for group X"
