"""The cluster bootstrap of per-unit values and the seeded generators of t2ibias.stats."""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest

from t2ibias.stats.cluster import cluster_group_means, compare_groups, resample_weights, share_interval_clustered
from t2ibias.stats.rng import seeded


def test_seeded_is_the_crc32_keyed_generator_the_score_stage_uses():
    key = zlib.crc32("gender\x1fprompt_id\x1fp1".encode())
    assert seeded(3, "gender", "prompt_id", "p1").integers(0, 10**9, 5).tolist() == \
        np.random.default_rng([3, key]).integers(0, 10**9, 5).tolist()
    assert seeded(3).random() == np.random.default_rng(3).random()
    assert seeded(3, "a").random() != seeded(3, "b").random()


def test_one_stage_weights_draw_every_cluster_count_once_in_expectation():
    w = resample_weights(7, 4000, np.random.default_rng(0))
    assert w.shape == (4000, 7) and (w.sum(axis=1) == 7).all()
    assert w.mean(axis=0) == pytest.approx(np.ones(7), abs=0.06)


def test_two_stage_weights_stay_inside_the_drawn_outer_units():
    outer = np.array(["p", "p", "p", "q", "r", "r"])
    w = resample_weights(6, 3000, np.random.default_rng(1), outer=outer)
    # an outer unit drawn m times contributes m × its number of clusters
    assert (w[:, :3].sum(axis=1) % 3 == 0).all() and (w[:, 4:].sum(axis=1) % 2 == 0).all()
    assert (w[:, :3].sum(axis=1) // 3 + w[:, 3] + w[:, 4:].sum(axis=1) // 2 == 3).all()
    assert w.mean(axis=0) == pytest.approx(np.ones(6), abs=0.08)


def test_group_means_count_only_finite_values_and_keep_clusters_together():
    values = np.array([[1.0, 2.0], [0.0, np.nan], [1.0, 4.0], [1.0, 0.0]])
    res = cluster_group_means(values, np.array(["a", "a", "b", "b"]), [10, 10, 11, 12], 500, np.random.default_rng(2))
    assert res["levels"] == ["a", "b"]
    assert res["estimate"].tolist() == [[0.5, 1.0], [2.0, 2.0]]
    assert res["n"].tolist() == [[2, 2], [1, 2]] and res["n_clusters"].tolist() == [[1, 2], [1, 2]]
    reps = res["replicates"]
    # group a lives in one image: whenever it is drawn its mean is exactly its own
    a = reps[:, 0, 0]
    assert set(np.unique(a[np.isfinite(a)])) == {0.5} and np.isnan(a).any()
    # overlapping groups through a membership matrix
    member = np.array([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=bool)
    both = cluster_group_means(values[:, 0], member, [1, 2, 3, 4], 10, np.random.default_rng(0))
    assert both["estimate"].tolist() == [[2 / 3, 1.0]]


def test_two_stage_group_means_need_one_outer_unit_per_cluster():
    with pytest.raises(ValueError, match="outer unit"):
        cluster_group_means(np.ones(3), np.zeros(3, int), [1, 1, 2], 5, np.random.default_rng(0), outer=["p", "q", "q"])


def test_clustered_share_interval_is_never_zero_width():
    lo, hi = share_interval_clustered(np.array(1.0), np.ones((100, 1)), np.array(40), np.array(20))
    assert hi == 1.0 and 0.85 < lo < 1.0


def test_gap_between_equal_groups_covers_zero_at_the_nominal_rate():
    rng = np.random.default_rng(7)
    holds, p_small = 0, 0
    trials = 400
    for _ in range(trials):
        est = 0.5 + 0.05 * rng.standard_normal(4)  # four equal groups, se 0.05 each
        reps = est + 0.05 * rng.standard_normal((400, 4))
        c = compare_groups(est, reps)
        holds += c["difference"][1] == 0.0
        p_small += c["p_value"] < 0.05
        assert (c["difference"][1] == 0.0) == (c["p_value"] >= 0.05) or abs(c["p_value"] - 0.05) < 0.01
    assert holds / trials >= 0.93 and p_small / trials <= 0.07


def test_a_real_gap_is_found_and_its_interval_holds_the_truth():
    rng = np.random.default_rng(8)
    est = np.array([0.9, 0.6])
    c = compare_groups(est, est + 0.03 * rng.standard_normal((2000, 2)))
    gap, lo, hi = c["difference"]
    assert gap == pytest.approx(0.3) and lo < 0.3 < hi and lo > 0.15 and c["p_value"] < 0.001
    ratio, rlo, rhi = c["ratio"]
    assert ratio == pytest.approx(2 / 3) and rlo < 2 / 3 < rhi < 1.0
    assert np.isnan(compare_groups(np.array([0.5]), np.ones((5, 1)))["p_value"])


def test_few_clusters_widen_the_gap_interval_on_the_t_scale():
    from scipy import stats

    rng = np.random.default_rng(9)
    est = np.array([0.8, 0.7])
    reps = est + 0.04 * rng.standard_normal((4000, 2))
    plain = compare_groups(est, reps)
    few = compare_groups(est, reps, n_clusters=10)
    c = (plain["difference"][2] - 0.1) / (reps[:, 0] - reps[:, 1]).std(ddof=1)  # the bootstrap's critical value
    expected = stats.t.ppf(stats.norm.cdf(c), 9) * np.sqrt(10 / 9) / c
    assert (few["difference"][2] - 0.1) / (plain["difference"][2] - 0.1) == pytest.approx(expected)
    assert few["p_value"] > plain["p_value"]


def test_groups_that_differ_with_no_bootstrap_spread_get_the_smallest_p_without_a_warning():
    # every replicate repeats the estimate: the difference has se 0 and no replicate reaches it
    est = np.array([1.0, 0.0])
    reps = np.tile(est, (199, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare_groups(est, reps)
    assert out["p_value"] == pytest.approx(1 / 200)
    assert out["difference"] == pytest.approx((1.0, 1.0, 1.0))
