"""FACET statistics: image-clustered intervals (Monte Carlo coverage against a known truth), joint
gaps between overlapping groups, BH q-values and selection-adjusted intervals, the confidence
level, and the one skin-tone bucket definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from facet_eval.attributes import ground_truth
from facet_eval.classification import evaluate_classification, largest_gaps
from facet_eval.data import FacetData, load_facet
from facet_eval.disaggregate import rows_from_values
from facet_eval.groups import group_membership, skin_tone_bucket_labels, skin_tone_bucket_masks
from t2ibias.core.errors import UserError
from t2ibias.stats.bootstrap import percentile_intervals
from t2ibias.stats.cluster_bootstrap import (
    bonferroni_intervals,
    group_replicates,
    percentile_columns,
    wald_pvalues,
)
from t2ibias.stats.cluster import resample_weights
from tests.facet_fixtures import FULL, person, write_facet

TRUE_AR50 = 0.6


def _row(rows, metric, attribute, group, cls=None):
    hits = [r for r in rows if r["metric"] == metric and r["attribute"] == attribute and r["group"] == group
            and r["class"] == cls]
    assert len(hits) == 1, (metric, attribute, group, cls, len(hits))
    return hits[0]


def clustered_scene(rng: np.random.Generator, n_images: int = 80, per_image: int = 4, kappa: float = 1.0,
                    one_person_per_image: bool = False) -> tuple[FacetData, np.ndarray]:
    """Images of ``per_image`` people whose detection probability is the image's own, drawn from
    Beta with mean TRUE_AR50 and intra-image correlation 1 / (kappa + 1). Skin tone: MST 3, 4 or
    both (overlapping groups), and gender, both independent of detection (no true gap).
    ``one_person_per_image`` gives every person their own image id: the person-level resample."""
    n = n_images * per_image
    img = np.repeat(np.arange(n_images), per_image)
    p = rng.beta(TRUE_AR50 * kappa, (1 - TRUE_AR50) * kappa, n_images)
    hits = (rng.random(n) < p[img]).astype(float)
    masc = rng.random(n) < 0.5
    u = rng.random(n)
    ids = np.arange(n) if one_person_per_image else img
    people = pd.DataFrame({"person_id": np.arange(n), "image_id": ids, "classes": [("nurse",)] * n,
                           "gender_presentation_masc": masc.astype(float),
                           "gender_presentation_fem": (~masc).astype(float),
                           "skin_tone_3": (u < 0.6).astype(float), "skin_tone_4": (u > 0.4).astype(float)})
    images = pd.DataFrame({"id": np.unique(ids)})
    return FacetData(root=Path("."), people=people, images=images), hits


def test_image_clustered_interval_covers_ar50_and_a_person_level_one_does_not():
    """Monte Carlo, 250 seeded scenes: nominal 95 %. With intra-image correlation 0.5 and 4 people
    per image, resampling people treats 320 correlated people as independent (design effect 2.5)."""
    reps, n_boot = 250, 300
    rng = np.random.default_rng(2024)
    covered = {"images": 0, "people": 0, "gap": 0, "rejected": 0}
    for r in range(reps):
        state = rng.bit_generator.state
        data, hits = clustered_scene(rng)
        rows = rows_from_values(data, {"AR50": hits}, np.ones(len(hits), bool), n_boot=n_boot, seed=r, per_class=False)
        ar = _row(rows, "AR50", "all", "all")
        covered["images"] += ar["ci_low"] <= TRUE_AR50 <= ar["ci_high"]
        gap = _row(rows, "disparity_AR50", "skin_tone", "3-4")
        covered["gap"] += gap["ci_low"] <= 0.0 <= gap["ci_high"]
        covered["rejected"] += gap["p_value"] < 0.05
        rng.bit_generator.state = state  # the same people, each alone in an image
        data, same = clustered_scene(rng, one_person_per_image=True)
        assert np.array_equal(same, hits)
        ar = _row(rows_from_values(data, {"AR50": same}, np.ones(len(same), bool), n_boot=n_boot, seed=r,
                                   per_class=False), "AR50", "all", "all")
        covered["people"] += ar["ci_low"] <= TRUE_AR50 <= ar["ci_high"]
    share = {k: v / reps for k, v in covered.items()}
    # MC standard error at 0.95 is 0.014
    assert 0.91 <= share["images"] <= 0.99, share
    assert share["people"] <= 0.90 and share["images"] - share["people"] >= 0.05, share
    assert 0.90 <= share["gap"] <= 0.99, share
    assert share["rejected"] <= 0.09, share


def test_gap_interval_holds_zero_for_equal_groups_sharing_images(tmp_path):
    """Each image holds one masc and one fem person with the same outcome: every joint replicate
    has gap 0, so the interval is [0, 0] and the test does not reject; resampled independently,
    the two groups would give an interval of width about 0.3."""
    people = []
    for i in range(1, 61):
        hit = i % 3 != 0
        people.append(person(2 * i, i, FULL, gender_presentation_masc=1, skin_tone_3=1))
        people.append(person(2 * i + 1, i, FULL, gender_presentation_fem=1, skin_tone_4=1, skin_tone_3=int(hit)))
    write_facet(tmp_path, people, list(range(1, 61)))
    data = load_facet(tmp_path)
    hits = np.array([1.0 if (int(p) // 2) % 3 != 0 else 0.0 for p in data.people["person_id"]])
    rows = rows_from_values(data, {"AR50": hits}, np.ones(len(hits), bool), n_boot=300, per_class=False)
    gap = _row(rows, "disparity_AR50", "gender_presentation", "masc-fem")
    assert gap["value"] == 0.0 and (gap["ci_low"], gap["ci_high"]) == (0.0, 0.0)
    assert gap["p_value"] == 1.0 and gap["q_value"] == 1.0 and gap["method"] == "joint image bootstrap percentile"
    # overlapping MST groups (the 40 hit fem people are in MST 3 and 4): still a joint draw, 0 inside
    mst = _row(rows, "disparity_AR50", "skin_tone", "3-4")
    assert mst["n_a"] == 100 and mst["n_b"] == 60
    assert mst["ci_low"] < mst["value"] < mst["ci_high"]
    for r in rows:
        if r["metric"] == "AR50" and r["n"]:
            assert r["n_images"] <= 60 and r["method"] == "korn-graubard (image bootstrap variance)"


def test_q_values_are_scipy_bh_within_each_family(tmp_path):
    rng = np.random.default_rng(5)
    classes = ["doctor", "farmer", "nurse"]
    people, preds = [], {}
    for i in range(1, 601):
        cls = classes[i % 3]
        masc = i % 2 == 0
        people.append(person(i, i, FULL, cls, **{("gender_presentation_masc" if masc else "gender_presentation_fem"): 1,
                                                  f"skin_tone_{1 + i % 10}": 1}))
        right = rng.random() < (0.8 if masc and cls == "doctor" else 0.6)
        preds[i] = cls if right else classes[(i + 1) % 3]
    write_facet(tmp_path, people, list(range(1, 601)))
    data = load_facet(tmp_path)
    rows = evaluate_classification(data, preds, n_boot=200)
    families: dict = {}
    for r in rows:
        if r["metric"] == "disparity_recall" and r["p_value"] is not None:
            families.setdefault((r["attribute"], r["class"] is None), []).append(r)
        elif r["metric"] == "recall":
            assert r["p_value"] is None and r["q_value"] is None
    per_class = families[("gender_presentation", False)]
    assert len(per_class) == 3 and all(r["n_tests"] == 3 for r in per_class)
    for members in families.values():
        p = np.array([r["p_value"] for r in members])
        assert np.allclose([r["q_value"] for r in members], stats.false_discovery_control(p, method="bh"))
        for r in members:
            assert r["adj_ci_low"] <= r["ci_low"] and r["ci_high"] <= r["adj_ci_high"]
            assert r["adj_method"].startswith(f"Bonferroni over {len(members)} gaps")
    assert len(families[("skin_tone", True)]) == 45  # all MST pairs have >= 50 people over all classes
    doctor = next(r for r in per_class if r["class"] == "doctor")
    assert doctor["value"] > 0.1 and doctor["q_value"] < 0.05  # the real gap is found
    # largest-gap rows carry the same test, flipped intervals for the other direction
    gaps = [g for g in largest_gaps(rows) if g["attribute"] == "gender_presentation"]
    top = next(g for g in gaps if g["class"] == "doctor")
    assert top["direction"] == "masc-fem" and top["q_value"] == doctor["q_value"] and top["n_tests"] == 3
    assert (top["adj_ci_low"], top["adj_ci_high"]) == (doctor["adj_ci_low"], doctor["adj_ci_high"])
    assert "inflated" in top["note"]
    other = [g for g in gaps if g["direction"] == "fem-masc"]
    for g in other:
        src = next(r for r in per_class if r["class"] == g["class"])
        assert (g["adj_ci_low"], g["adj_ci_high"]) == (-src["adj_ci_high"], -src["adj_ci_low"])


def test_confidence_level_is_honoured_and_checked(tmp_path):
    rng = np.random.default_rng(0)
    data, hits = clustered_scene(rng, n_images=40)
    ev = np.ones(len(hits), bool)
    wide = _row(rows_from_values(data, {"AR50": hits}, ev, n_boot=400, per_class=False), "AR50", "all", "all")
    narrow = _row(rows_from_values(data, {"AR50": hits}, ev, n_boot=400, per_class=False, confidence=0.8),
                  "AR50", "all", "all")
    assert wide["ci_low"] < narrow["ci_low"] < narrow["value"] < narrow["ci_high"] < wide["ci_high"]
    for bad in (0, 1, 1.5, -0.1, float("nan"), "0.9", True):
        with pytest.raises(UserError, match="confidence"):
            rows_from_values(data, {"AR50": hits}, ev, n_boot=10, per_class=False, confidence=bad)


# ------------------------------------------------------------------ the engine
def test_group_replicates_are_image_resamples():
    rng = np.random.default_rng(1)
    n, n_images = 50, 20
    clusters = rng.integers(0, n_images, n)
    values = np.column_stack([rng.integers(0, 2, n), rng.integers(0, 11, n) / 10, rng.random(n)])
    groups = rng.random((n, 3)) < 0.5
    weights = resample_weights(n_images, 40, rng, dtype=np.float32)
    assert weights.shape == (40, n_images) and np.all(weights.sum(axis=1) == n_images)
    res = group_replicates(values, groups, clusters, weights)
    for b in range(5):
        for j in range(3):
            w = weights[b, clusters[groups[:, j]]]
            expect = (w[:, None] * values[groups[:, j]]).sum(axis=0) / w.sum()
            assert np.allclose(res.replicates[b, j], expect)
            assert np.allclose(res.estimate[j], values[groups[:, j]].mean(axis=0))
    lo, hi = percentile_columns(res.replicates, 0.9)
    lo2, hi2 = percentile_intervals(res.replicates, 0.9)
    assert np.allclose(lo, lo2) and np.allclose(hi, hi2)
    # mAR-like values (tenths) are summed exactly: a group whose people all have 0.6 has replicates 0.6
    same = group_replicates(np.full((n, 1), 0.6), np.ones((n, 1), bool), clusters, weights)
    assert np.all(same.replicates == 0.6) and same.estimate[0, 0] == 0.6


def test_linearized_gap_variance_matches_the_bootstrap():
    rng = np.random.default_rng(3)
    data, hits = clustered_scene(rng, n_images=300)
    clusters = data.people["image_id"].to_numpy()
    m = group_membership(data.people)["skin_tone"]
    groups = np.column_stack([m["3"], m["4"]])
    res = group_replicates(hits, groups, clusters, resample_weights(300, 4000, rng, dtype=np.float32))
    boot = np.var(res.gap_replicates([0], [1])[:, 0, 0])
    assert res.gap_variance([0], [1])[0, 0] == pytest.approx(boot, rel=0.15)


def test_wald_and_bonferroni_edges():
    assert wald_pvalues(np.array([0.0, 0.1, 0.1, np.nan]), np.array([0.0, 0.0, 0.0025, 0.01])).tolist()[:3] == \
        [1.0, 0.0, pytest.approx(2 * stats.norm.sf(2.0))]
    lo, hi = bonferroni_intervals(np.array([0.1]), np.array([0.0025]), 10, 0.95)
    z = stats.norm.isf(0.05 / 20)
    assert (lo[0], hi[0]) == pytest.approx((0.1 - 0.05 * z, 0.1 + 0.05 * z))
    lo, hi = bonferroni_intervals(np.array([0.95]), np.array([0.01]), 5)
    assert hi[0] == 1.0  # a difference of shares stays in [-1, 1]


# ------------------------------------------------------------------ one skin-tone bucket definition
def test_skin_tone_buckets_any_vote_in_facet_eval_and_the_audit(tmp_path):
    votes = [{"skin_tone_3": 2, "skin_tone_4": 1},   # lighter: an annotator chose 3 (the median, 3, too)
             {"skin_tone_3": 1, "skin_tone_4": 2},   # lighter by any vote, though the median is 4
             {"skin_tone_7": 1, "skin_tone_8": 1},   # darker
             {"skin_tone_2": 1, "skin_tone_9": 1},   # both buckets
             {"skin_tone_5": 3},                     # neither
             {"skin_tone_na": 1}]                    # not annotated
    people = [person(i + 1, i + 1, FULL, **v) for i, v in enumerate(votes)]
    write_facet(tmp_path, people, list(range(1, len(votes) + 1)))
    data = load_facet(tmp_path)
    m = group_membership(data.people)["skin_tone_bucket"]
    assert m["lighter"].tolist() == [True, True, False, True, False, False]
    assert m["darker"].tolist() == [False, False, True, True, False, False]
    labels = ["lighter", "lighter", "darker", "na", "na", "na"]
    chosen = np.column_stack([data.people[f"skin_tone_{v}"].to_numpy() > 0 for v in range(1, 11)])
    assert list(skin_tone_bucket_labels(chosen)) == labels
    assert {k: v.tolist() for k, v in skin_tone_bucket_masks(chosen).items()} == {k: v.tolist() for k, v in m.items()}
    assert list(ground_truth(data.people)["groups"]["skin_tone_bucket"]) == labels  # the audit's groups
