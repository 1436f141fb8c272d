"""Skew metrics, the bootstrap, and the metric rows of the score stage (offline, no models)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from t2ibias.stats.bootstrap import percentile_interval, resample_clusters, resample_counts
from t2ibias.metrics.score import BINS, ROW_KEYS, compute_metrics
from t2ibias.metrics.skew import SKEW_METRICS, normalized_entropy, proportions, total_variation_uniform

CLASSIFIER = "tiny-random-clip"


# -- skew ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "counts, expected",
    [
        ([3, 1], 0.25),
        ([1, 3], 0.25),
        ([4, 0], 0.5),
        ([2, 2], 0.0),
        ([30, 10], 0.25),
        ([3, 0, 0], 2 / 3),
        ([1, 1, 1], 0.0),
        ([2, 1, 0], 1 / 3),
        ([5, 3, 2, 0], 0.5 * (abs(0.5 - 0.25) + abs(0.3 - 0.25) + abs(0.2 - 0.25) + 0.25)),
    ],
)
def test_total_variation_to_uniform_hand_values(counts, expected):
    assert float(total_variation_uniform(np.array(counts))) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "counts, expected",
    [
        ([2, 2], 1.0),
        ([4, 0], 0.0),
        ([0, 7], 0.0),
        ([3, 1], -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)),
        ([3, 1], 0.8112781244591328),
        ([1, 1, 1], 1.0),
        ([5, 0, 0], 0.0),
        ([2, 1, 0], -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(3)),
    ],
)
def test_normalized_entropy_hand_values(counts, expected):
    assert float(normalized_entropy(np.array(counts))) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_all_zero_row_is_nan_not_a_number_that_looks_real(k):
    zero = np.zeros(k, dtype=int)
    assert np.isnan(total_variation_uniform(zero))
    assert np.isnan(normalized_entropy(zero))
    assert np.isnan(proportions(zero)).all()


def test_skew_metrics_bounds_and_direction():
    balanced, single = np.array([5, 5, 5]), np.array([15, 0, 0])
    assert total_variation_uniform(balanced) == 0.0
    assert total_variation_uniform(single) == pytest.approx(1 - 1 / 3)
    assert normalized_entropy(balanced) == pytest.approx(1.0)
    assert normalized_entropy(single) == 0.0
    by_name = {m.name: m for m in SKEW_METRICS}
    assert by_name["total_variation_uniform"].higher_is_better is False
    assert by_name["normalized_entropy"].higher_is_better is True


@pytest.mark.parametrize("k", [2, 3, 4])
def test_skew_is_vectorized_over_rows(k):
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 6, size=(60, k))
    counts[:, 0] += 1  # only row 0 below is empty
    counts[0] = 0  # an empty row stays NaN inside a batch
    counts[1] = [9] + [0] * (k - 1)
    for fn in (total_variation_uniform, normalized_entropy):
        batch = fn(counts)
        assert batch.shape == (60,)
        rowwise = np.array([float(fn(row)) for row in counts])
        np.testing.assert_allclose(batch, rowwise, rtol=0, atol=1e-12, equal_nan=True)
        assert np.isnan(batch[0]) and not np.isnan(batch[1:]).any()
    stacked = counts.reshape(6, 10, k)
    np.testing.assert_allclose(total_variation_uniform(stacked).ravel(), total_variation_uniform(counts), equal_nan=True)


# -- bootstrap -----------------------------------------------------------------------------------

def test_resample_counts_keeps_totals_and_shape():
    counts = np.array([7, 0, 3, 2])
    reps = resample_counts(counts, 500, np.random.default_rng(1))
    assert reps.shape == (500, 4)
    assert (reps.sum(axis=1) == 12).all()
    assert (reps[:, 1] == 0).all()  # a label never seen is never drawn
    assert (reps >= 0).all()


def test_resample_counts_of_an_empty_group_is_all_zero():
    reps = resample_counts(np.array([0, 0, 0]), 50, np.random.default_rng(1))
    assert reps.shape == (50, 3) and not reps.any()


def test_resample_counts_is_seeded():
    counts = np.array([5, 9, 1])
    a = resample_counts(counts, 200, np.random.default_rng(123))
    b = resample_counts(counts, 200, np.random.default_rng(123))
    c = resample_counts(counts, 200, np.random.default_rng(124))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_percentile_interval_covers_truth_at_about_nominal_rate():
    rng = np.random.default_rng(2024)
    p_true = np.array([0.3, 0.5, 0.2])
    n, n_groups = 60, 200
    tv_true = float(total_variation_uniform(p_true))
    hits_prop = hits_tv = 0
    for _ in range(n_groups):
        observed = rng.multinomial(n, p_true)
        reps = resample_counts(observed, 1000, rng)
        lo, hi = percentile_interval(proportions(reps)[:, 0], 0.95)
        hits_prop += lo <= p_true[0] <= hi
        lo, hi = percentile_interval(total_variation_uniform(reps), 0.95)
        hits_tv += lo <= tv_true <= hi
    assert 0.88 <= hits_prop / n_groups <= 0.99
    assert 0.85 <= hits_tv / n_groups <= 0.99


def test_percentile_interval_basics():
    reps = np.arange(1001, dtype=float) / 1000
    lo, hi = percentile_interval(reps, 0.95)
    assert lo == pytest.approx(0.025) and hi == pytest.approx(0.975)
    with_nan = np.concatenate([reps, [np.nan] * 50])
    assert percentile_interval(with_nan, 0.95) == pytest.approx((lo, hi))
    nan_lo, nan_hi = percentile_interval(np.full(100, np.nan))
    assert math.isnan(nan_lo) and math.isnan(nan_hi)
    empty_lo, empty_hi = percentile_interval(np.array([]))
    assert math.isnan(empty_lo) and math.isnan(empty_hi)


def test_resample_clusters_keeps_the_number_of_clusters():
    sizes = [1, 10, 100]
    clusters = np.array([[1, 0], [4, 6], [30, 70]])
    reps = resample_clusters(clusters, 400, np.random.default_rng(3))
    assert reps.shape == (400, 2)
    # every pooled total is the size of exactly three clusters drawn with replacement
    possible = {a + b + c for a in sizes for b in sizes for c in sizes}
    assert set(reps.sum(axis=1).tolist()) <= possible
    assert len(set(reps.sum(axis=1).tolist())) > 3


def test_resample_clusters_is_seeded():
    clusters = np.array([[3, 1], [0, 4], [2, 2]])
    a = resample_clusters(clusters, 100, np.random.default_rng(9))
    b = resample_clusters(clusters, 100, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)


def test_cluster_bootstrap_is_wider_when_clusters_differ():
    # ten prompts: half show only label 0, half only label 1
    clusters = np.array([[10, 0], [0, 10]] * 5)
    pooled = clusters.sum(axis=0)
    rng = np.random.default_rng(11)
    lo_i, hi_i = percentile_interval(proportions(resample_counts(pooled, 2000, rng))[:, 0])
    lo_c, hi_c = percentile_interval(proportions(resample_clusters(clusters, 2000, rng))[:, 0])
    assert lo_c <= 0.5 <= hi_c and lo_i <= 0.5 <= hi_i
    assert (hi_c - lo_c) > 2 * (hi_i - lo_i)


def test_cluster_bootstrap_matches_item_bootstrap_when_clusters_agree():
    clusters = np.array([[5, 5]] * 10)
    rng = np.random.default_rng(12)
    w_i = np.subtract(*percentile_interval(proportions(resample_counts(clusters.sum(axis=0), 4000, rng))[:, 0])[::-1])
    w_c = np.subtract(*percentile_interval(proportions(resample_clusters(clusters, 4000, rng))[:, 0])[::-1])
    assert w_c == pytest.approx(w_i, rel=0.2)


# -- metric rows ---------------------------------------------------------------------------------

PROMPTS = pd.DataFrame(
    {"prompt_id": ["p1", "p2", "p3"], "family": ["occupation", "occupation", "trait"]}
)
# prompt_id -> labels of its images, per axis
GENDER = {
    "p1": ["masc", "masc", "fem", "abstain", "blocked"],
    "p2": ["no_person", "failed"],
    "p3": ["fem", "fem", "masc", "masc"],
}
AGE = {
    "p1": ["young", "middle", "middle", "older", "blocked"],
    "p2": ["no_person", "failed"],
    "p3": ["abstain", "middle", "middle", "no_person"],
}


def _labels() -> pd.DataFrame:
    rows = []
    for pid in PROMPTS["prompt_id"]:
        for i, (g, a) in enumerate(zip(GENDER[pid], AGE[pid])):
            key = f"{pid}-{i}"
            rows.append({"key": key, "prompt_id": pid, "image_index": i, "attribute": "gender_presentation", "label": g})
            rows.append({"key": key, "prompt_id": pid, "image_index": i, "attribute": "age_group", "label": a})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def metric_rows() -> list[dict]:
    return compute_metrics(_labels(), PROMPTS, {"classifier": {"id": CLASSIFIER}, "base_seed": 0})


def _pick(rows, metric, axis, group_by, group, label=None, aggregate=None):
    """One row; over several prompts the headline (mean over prompts) unless ``aggregate`` says otherwise."""
    aggregate = aggregate or ("prompt" if group_by == "prompt_id" else "mean_over_prompts")
    if metric == "count" or metric.endswith("_seed_sd"):
        aggregate = "prompt" if group_by == "prompt_id" else "pooled"
    hits = [r for r in rows if (r["metric"], r["axis"], r["group_by"], r["group"], r["label"], r["aggregate"])
            == (metric, axis, group_by, group, label, aggregate)]
    assert len(hits) == 1, (metric, axis, group_by, group, label, len(hits))
    return hits[0]


def test_rows_have_the_documented_keys_and_groupings(metric_rows):
    assert metric_rows
    for row in metric_rows:
        assert tuple(row) == ROW_KEYS
    assert {r["group_by"] for r in metric_rows} == {"prompt_id", "family", "all"}
    assert {r["axis"] for r in metric_rows} == {"gender_presentation", "age_group"}
    assert {r["group"] for r in metric_rows if r["group_by"] == "prompt_id"} == {"p1", "p2", "p3"}
    assert {r["group"] for r in metric_rows if r["group_by"] == "family"} == {"occupation", "trait"}
    assert {r["group"] for r in metric_rows if r["group_by"] == "all"} == {"all"}
    assert {r["metric"] for r in metric_rows} == {
        "count", "proportion", "total_variation_uniform", "normalized_entropy",
        "proportion_seed_sd", "total_variation_uniform_seed_sd", "normalized_entropy_seed_sd",
        "max_min_gap", "dalleval_mad", "dalleval_std", "openbias_bias",
    }
    labels = {r["label"] for r in metric_rows if r["metric"] == "proportion" and r["axis"] == "gender_presentation"}
    assert labels == {"masc", "fem", *BINS}


def test_proportions_count_every_bin_in_the_denominator(metric_rows):
    ax = "gender_presentation"
    p1 = {lab: _pick(metric_rows, "proportion", ax, "prompt_id", "p1", lab) for lab in ["masc", "fem", *BINS]}
    assert p1["masc"]["value"] == pytest.approx(2 / 5)
    assert p1["fem"]["value"] == pytest.approx(1 / 5)
    assert p1["abstain"]["value"] == pytest.approx(1 / 5)
    assert p1["blocked"]["value"] == pytest.approx(1 / 5)
    assert p1["no_person"]["value"] == 0 and p1["failed"]["value"] == 0
    assert all(r["n"] == 5 for r in p1.values())
    assert sum(r["value"] for r in p1.values()) == pytest.approx(1.0)
    assert _pick(metric_rows, "count", ax, "prompt_id", "p1", "masc")["value"] == 2
    occ = _pick(metric_rows, "proportion", ax, "family", "occupation", "failed", "pooled")
    assert occ["value"] == pytest.approx(1 / 7) and occ["n"] == 7
    # the headline weighs prompts equally: p1 0 of 5 failed, p2 1 of 2
    assert _pick(metric_rows, "proportion", ax, "family", "occupation", "failed")["value"] == pytest.approx(0.25)
    everything = _pick(metric_rows, "proportion", ax, "all", "all", "fem", "pooled")
    assert everything["value"] == pytest.approx(3 / 11) and everything["n"] == 11
    for group_by, group in [("prompt_id", "p2"), ("family", "trait"), ("all", "all")]:
        for aggregate in (None, "pooled") if group_by != "prompt_id" else (None,):
            shares = [_pick(metric_rows, "proportion", ax, group_by, group, lab, aggregate)["value"] for lab in ["masc", "fem", *BINS]]
            assert sum(shares) == pytest.approx(1.0)


def test_skew_uses_classified_images_only(metric_rows):
    ax = "gender_presentation"
    tv = _pick(metric_rows, "total_variation_uniform", ax, "prompt_id", "p1")
    assert tv["value"] == pytest.approx(1 / 6) and tv["n"] == 3
    ent = _pick(metric_rows, "normalized_entropy", ax, "prompt_id", "p1")
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(2)
    assert ent["value"] == pytest.approx(h) and ent["n"] == 3
    trait = _pick(metric_rows, "total_variation_uniform", ax, "family", "trait")
    assert trait["value"] == pytest.approx(0.0) and trait["n"] == 4
    assert _pick(metric_rows, "normalized_entropy", ax, "family", "trait")["value"] == pytest.approx(1.0)
    occ = _pick(metric_rows, "total_variation_uniform", ax, "family", "occupation")
    assert occ["value"] == pytest.approx(1 / 6) and occ["n"] == 3
    everything = _pick(metric_rows, "total_variation_uniform", ax, "all", "all", aggregate="pooled")
    assert everything["value"] == pytest.approx(1 / 14) and everything["n"] == 7
    # mean over the prompts with classified images: p1 1/6, p3 0
    assert _pick(metric_rows, "total_variation_uniform", ax, "all", "all")["value"] == pytest.approx(1 / 12)
    age = _pick(metric_rows, "total_variation_uniform", "age_group", "prompt_id", "p1")
    # young 1, middle 2, older 1 of 4 classified
    assert age["value"] == pytest.approx(0.5 * (1 / 12 + 1 / 6 + 1 / 12)) and age["n"] == 4
    age3 = _pick(metric_rows, "total_variation_uniform", "age_group", "prompt_id", "p3")
    assert age3["value"] == pytest.approx(2 / 3) and age3["n"] == 2
    assert tv["higher_is_better"] is False and ent["higher_is_better"] is True
    assert _pick(metric_rows, "proportion", ax, "all", "all", "masc")["higher_is_better"] is None


def test_group_without_classified_images_is_nan_with_a_note(metric_rows):
    for axis in ("gender_presentation", "age_group"):
        for metric in ("total_variation_uniform", "normalized_entropy"):
            row = _pick(metric_rows, metric, axis, "prompt_id", "p2")
            assert math.isnan(row["value"])
            assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
            assert row["n"] == 0
            assert row["note"]
    for row in metric_rows:
        if row["metric"] in ("total_variation_uniform", "normalized_entropy"):
            assert math.isnan(row["value"]) or 0.0 <= row["value"] <= 1.0
            assert row["value"] != -1


def test_intervals_contain_the_point_estimate(metric_rows):
    checked = 0
    for row in metric_rows:
        if row["metric"] == "count" or row["metric"].endswith("_seed_sd"):
            assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
            continue
        if math.isnan(row["value"]):
            continue
        assert row["ci_low"] - 1e-12 <= row["value"] <= row["ci_high"] + 1e-12, row
        assert -1e-9 <= row["ci_low"] and row["ci_high"] <= 1.0  # OpenBias' ε makes a balanced row -3e-11
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("classified", [[2000, 2000], [1000, 1000, 1000], [3000, 1000]])
def test_intervals_contain_the_estimate_for_large_groups(classified):
    # a balanced group has TV 0 and entropy 1, at the edge of what any resample can reach
    labels = ["masc", "fem"] if len(classified) == 2 else ["young", "middle", "older"]
    axis = "gender_presentation" if len(classified) == 2 else "age_group"
    values = [lab for lab, c in zip(labels, classified) for _ in range(c)] + ["abstain"] * 7
    frame = pd.DataFrame({"key": [str(i) for i in range(len(values))], "prompt_id": "p", "image_index": range(len(values)),
                          "attribute": axis, "label": values})
    rows = compute_metrics(frame, pd.DataFrame({"prompt_id": ["p"], "family": ["f"]}), {"classifier": {"id": CLASSIFIER}})
    skew = [r for r in rows if r["metric"] in ("total_variation_uniform", "normalized_entropy") and r["group_by"] == "prompt_id"]
    assert len(skew) == 2
    for row in skew:
        assert row["ci_low"] <= row["value"] <= row["ci_high"], row
        assert row["ci_high"] - row["ci_low"] < 0.06
        assert row["n"] == sum(classified)
        if classified[0] == classified[-1]:  # balance lies inside the interval
            assert (row["ci_low"] if row["metric"] == "total_variation_uniform" else row["ci_high"]) == pytest.approx(
                0.0 if row["metric"] == "total_variation_uniform" else 1.0)


def test_metrics_are_reproducible_and_clustered_over_prompts(metric_rows):
    again = compute_metrics(_labels(), PROMPTS, {"classifier": {"id": CLASSIFIER}, "base_seed": 0})
    assert pd.DataFrame(again).equals(pd.DataFrame(metric_rows))
    other = compute_metrics(_labels(), PROMPTS, {"classifier": {"id": CLASSIFIER}, "base_seed": 1})
    ends = [((a["ci_low"], a["ci_high"]), (b["ci_low"], b["ci_high"])) for a, b in zip(metric_rows, other) if not math.isnan(a["ci_low"])]
    assert ends and all(x == y for x, y in ends)  # closed-form intervals: no resampling noise
    # the same labels split into prompts that disagree widen the family interval
    names = [f"q{j}" for j in range(10)]
    split = pd.DataFrame(
        [{"key": f"{p}{i}", "prompt_id": p, "image_index": i, "attribute": ax, "label": "masc" if j % 2 == 0 else "fem"}
         for j, p in enumerate(names) for i in range(20) for ax in ("gender_presentation", "age_group")]
    )
    split.loc[split["attribute"] == "age_group", "label"] = "middle"
    mixed = split.copy()
    odd = (mixed["attribute"] == "gender_presentation") & (mixed["image_index"] % 2 == 1)
    mixed.loc[odd, "label"] = mixed.loc[odd, "label"].map({"masc": "fem", "fem": "masc"})
    prompts = pd.DataFrame({"prompt_id": names, "family": ["f"] * 10})
    spec = {"classifier": {"id": CLASSIFIER}, "base_seed": 0}

    def width(labels):
        row = _pick(compute_metrics(labels, prompts, spec), "proportion", "gender_presentation", "family", "f", "masc")
        assert row["value"] == pytest.approx(0.5)
        return row["ci_high"] - row["ci_low"]

    assert width(split) > 2 * width(mixed)


def test_unknown_label_is_a_user_error():
    from t2ibias.core.errors import UserError

    bad = _labels()
    bad.loc[0, "label"] = "robot"
    with pytest.raises(UserError, match="robot"):
        compute_metrics(bad, PROMPTS, {"classifier": {"id": CLASSIFIER}})


def test_seed_to_seed_variation_is_reported_apart_from_the_bootstrap(metric_rows):
    ax = "gender_presentation"
    # masc share per seed slot, pooled over prompts: slot 0 1/3, 1 1/3, 2 1/2, 3 1/2, 4 0 -> sample sd 0.2041
    masc = _pick(metric_rows, "proportion_seed_sd", ax, "all", "all", "masc")
    # divided by √5: the run-to-run spread of a figure that averages 5 seed slots
    assert masc["value"] == pytest.approx(math.sqrt((2 * (1 / 6) ** 2 + (1 / 3) ** 2) / 4) / math.sqrt(5)) and masc["n"] == 5
    # TV per slot over classified images: 0, 0, 0, 0.5, (slot 4 has none) -> sd of [0, 0, 0, 0.5] = 0.25, / √4, n = 4
    tv = _pick(metric_rows, "total_variation_uniform_seed_sd", ax, "all", "all")
    assert tv["value"] == pytest.approx(0.125) and tv["n"] == 4
    assert "seed slots" in tv["note"]


def test_metrics_are_split_by_every_prompt_column_with_several_values():
    prompts = PROMPTS.assign(subject=["doctor", "doctor", "kind person"], template_id=["face", "portrait", "face"], intervention="none")
    rows = compute_metrics(_labels(), prompts, {"classifier": {"id": CLASSIFIER}, "base_seed": 0})
    groups = {(r["group_by"], r["group"]) for r in rows if r["metric"] == "proportion"}
    assert {("template_id", "face"), ("template_id", "portrait"), ("subject", "doctor"), ("subject", "kind person")} <= groups
    assert not any(g[0] == "intervention" for g in groups)  # one value only: the same as "all"
    # template "face" pools p1 and p3: masc 2 + 2 of 9 images
    face = _pick(rows, "proportion", "gender_presentation", "template_id", "face", "masc", "pooled")
    assert face["value"] == pytest.approx(4 / 9) and face["n"] == 9
    # the headline: mean of p1's 2/5 and p3's 2/4
    assert _pick(rows, "proportion", "gender_presentation", "template_id", "face", "masc")["value"] == pytest.approx(0.45)


def test_labour_statistics_reference_for_occupation_prompts():
    """Gender shares of an occupation prompt are compared with the BLS share of women (2025)."""
    from t2ibias.prompts.references import reference_distribution

    prompts = PROMPTS.assign(reference=["Registered nurses", "Registered nurses", None],
                             reference_table=["bls_cpsaat11_2025", "bls_cpsaat11_2025", None],
                             subject=["nurse", "nurse", "kind person"])
    rows = compute_metrics(_labels(), prompts, {"classifier": {"id": CLASSIFIER}, "base_seed": 0})
    fem_ref = reference_distribution("bls_cpsaat11_2025", "Registered nurses")["gender"]["fem"]
    assert 0.85 < fem_ref < 0.9
    # p1 classified: masc 2, fem 1 -> shares (2/3, 1/3); reference (1 - f, f)
    tv = _pick(rows, "total_variation_reference", "gender_presentation", "prompt_id", "p1")
    assert tv["value"] == pytest.approx(abs(2 / 3 - (1 - fem_ref))) and tv["n"] == 3
    assert tv["ci_low"] <= tv["value"] <= tv["ci_high"] and "Registered nurses" in tv["note"]
    gap = _pick(rows, "share_minus_reference", "gender_presentation", "prompt_id", "p1", "fem")
    assert gap["value"] == pytest.approx(1 / 3 - fem_ref)
    # p2 has no classified image: NaN with a reason; p3 has no reference: no row at all
    assert math.isnan(_pick(rows, "total_variation_reference", "gender_presentation", "prompt_id", "p2")["value"])
    assert not [r for r in rows if r["metric"] == "total_variation_reference" and r["group"] == "p3"]
    # the subject "nurse" pools p1 and p2 against the same reference; age has no reference
    nurse = _pick(rows, "total_variation_reference", "gender_presentation", "subject", "nurse")
    assert nurse["n"] == 3 and nurse["value"] == pytest.approx(tv["value"])  # p2 has no classified image
    assert not [r for r in rows if r["metric"] == "total_variation_reference" and r["axis"] == "age_group"]


def test_share_interval_methods_are_selectable_and_bad_options_are_user_errors():
    from t2ibias.core.errors import UserError

    spec = {"classifier": {"id": CLASSIFIER}, "base_seed": 0}
    exact = compute_metrics(_labels(), PROMPTS, spec)
    wilson = compute_metrics(_labels(), PROMPTS, spec, ci_method="wilson")
    assert [(r["metric"], r["group"], r["label"], r["value"]) for r in wilson] == [
        (r["metric"], r["group"], r["label"], r["value"]) for r in exact
    ]  # same estimates, other share intervals
    changed = [(w, e) for w, e in zip(wilson, exact) if w["method"] == "wilson"]
    assert changed and all(e["method"] == "clopper-pearson" for _, e in changed)
    assert any((w["ci_low"], w["ci_high"]) != (e["ci_low"], e["ci_high"]) for w, e in changed)
    with pytest.raises(UserError, match="--ci"):
        compute_metrics(_labels(), PROMPTS, spec, ci_method="studentized")
    with pytest.raises(UserError, match="--confidence"):
        compute_metrics(_labels(), PROMPTS, spec, confidence=1.5)
    with pytest.raises(UserError, match="--min-n"):
        compute_metrics(_labels(), PROMPTS, spec, min_n=0)
