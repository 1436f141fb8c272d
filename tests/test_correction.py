"""Confusion-corrected proportions (Rogan-Gladen and k-class inversion) and agreement between measurers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from t2ibias.core.errors import UserError
from t2ibias.metrics.agreement import _kappa_from_tables, agreement_rows
from t2ibias.metrics.correction import corrected_proportions, simplex_inverse


def gender_confusion(scale: int = 1, abstain: tuple[int, int] = (0, 0)) -> dict:
    """Sensitivity 0.9 (masc read as masc), specificity 0.8 (fem read as fem), as audit.json writes it."""
    return {"true": ["masc", "fem", "non_binary", "na"], "pred": ["masc", "fem", "abstain"],
            "counts": [[90 * scale, 10 * scale, abstain[0]], [20 * scale, 80 * scale, abstain[1]], [3, 4, 0], [1, 0, 0]]}


def by_label(rows):
    return {r["label"]: r for r in rows}


def test_rogan_gladen_recovers_true_shares():
    # true 70 % masc: expected observed 0.7·0.9 + 0.3·0.2 = 0.69 masc
    rows = by_label(corrected_proportions({"masc": 690, "fem": 310}, gender_confusion(), n_boot=400))
    assert rows["masc"]["raw"] == pytest.approx(0.69)
    assert rows["masc"]["corrected"] == pytest.approx((0.69 + 0.8 - 1) / (0.9 + 0.8 - 1))
    assert rows["masc"]["corrected"] == pytest.approx(0.7)
    assert rows["fem"]["corrected"] == pytest.approx(0.3)
    assert rows["masc"]["recall"] == pytest.approx(0.9) and rows["fem"]["recall"] == pytest.approx(0.8)
    assert rows["masc"]["n"] == 690 and rows["masc"]["n_audit"] == 100
    for r in rows.values():
        assert r["ci_low"] <= r["corrected"] <= r["ci_high"]
        assert r["raw_ci_low"] <= r["raw"] <= r["raw_ci_high"]
        assert not r["clipped"] and not r["ill_conditioned"]
        # the correction divides by Youden's J = 0.7, so its interval is wider than the raw one
        assert r["ci_high"] - r["ci_low"] > r["raw_ci_high"] - r["raw_ci_low"]


def test_three_classes_recover_true_shares():
    conf = {"true": ["young", "middle", "older", "na"], "pred": ["young", "middle", "older", "abstain"],
            "counts": [[16, 4, 0, 3], [2, 16, 2, 0], [0, 5, 15, 1], [9, 9, 9, 0]]}
    # true (0.5, 0.3, 0.2) → observed 0.5·(.8,.2,0) + 0.3·(.1,.8,.1) + 0.2·(0,.25,.75) = (.43, .39, .18)
    rows = by_label(corrected_proportions({"young": 430, "middle": 390, "older": 180}, conf, n_boot=300))
    assert [rows[k]["corrected"] for k in ("young", "middle", "older")] == pytest.approx([0.5, 0.3, 0.2])
    assert sum(r["corrected"] for r in rows.values()) == pytest.approx(1.0)
    for r in rows.values():
        assert r["ci_low"] <= r["corrected"] <= r["ci_high"]


def test_identity_confusion_changes_nothing():
    conf = {"true": ["masc", "fem"], "pred": ["masc", "fem", "abstain"], "counts": [[50, 0, 5], [0, 40, 0]]}
    rows = corrected_proportions({"masc": 37, "fem": 63}, conf, n_boot=300, seed=4)
    for r in rows:
        assert r["corrected"] == pytest.approx(r["raw"])
        # the corrected interval is the resampled observed share's; the raw one is Clopper-Pearson's
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((r["raw_ci_low"], r["raw_ci_high"]), abs=0.02)
        assert r["raw_method"] == "clopper-pearson" and r["method"] == "percentile, audit rows and images resampled"


def test_small_audit_widens_intervals():
    obs = {"masc": 690, "fem": 310}
    small = by_label(corrected_proportions(obs, gender_confusion(scale=1), n_boot=600))["masc"]
    large = by_label(corrected_proportions(obs, gender_confusion(scale=50), n_boot=600))["masc"]
    assert small["corrected"] == pytest.approx(large["corrected"])
    assert small["ci_high"] - small["ci_low"] > 1.5 * (large["ci_high"] - large["ci_low"])
    # the raw interval depends on the observed counts only
    assert small["raw_ci_high"] - small["raw_ci_low"] == pytest.approx(large["raw_ci_high"] - large["raw_ci_low"], rel=0.2)


def test_abstentions_are_excluded_on_both_sides():
    plain = by_label(corrected_proportions({"masc": 690, "fem": 310}, gender_confusion(), n_boot=0))
    with_abstain = by_label(corrected_proportions({"masc": 690, "fem": 310, "abstain": 77},
                                                  gender_confusion(abstain=(30, 5)), n_boot=0))
    assert with_abstain["masc"]["corrected"] == pytest.approx(plain["masc"]["corrected"])
    assert with_abstain["masc"]["n_abstain"] == 77 and with_abstain["masc"]["n_answered"] == 1000
    assert np.isnan(plain["masc"]["ci_low"])  # no bootstrap asked for: NaN, not a made-up interval


def test_outside_the_simplex_is_clipped():
    # observed 10 % masc is below the 20 % that fem people alone produce: Rogan-Gladen gives < 0
    rows = by_label(corrected_proportions({"masc": 10, "fem": 90}, gender_confusion(), n_boot=200))
    assert rows["masc"]["corrected"] == pytest.approx(0.0, abs=1e-6)
    assert rows["fem"]["corrected"] == pytest.approx(1.0, abs=1e-6)
    assert rows["masc"]["clipped"] and "simplex" in rows["masc"]["note"]
    assert rows["masc"]["ci_low"] >= 0.0 and rows["fem"]["ci_high"] <= 1.0 + 1e-9


def test_singular_confusion_still_gives_a_simplex_estimate():
    conf = {"true": ["masc", "fem"], "pred": ["masc", "fem"], "counts": [[50, 50], [50, 50]]}
    rows = corrected_proportions({"masc": 60, "fem": 40}, conf, n_boot=100)
    values = [r["corrected"] for r in rows]
    assert sum(values) == pytest.approx(1.0) and min(values) >= 0.0
    assert all(r["ill_conditioned"] for r in rows) and "singular" in rows[0]["note"]


def test_simplex_inverse_matches_rogan_gladen_clip():
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    for q_masc in (0.05, 0.3, 0.69, 0.95):
        pi, _ = simplex_inverse(p, np.array([q_masc, 1 - q_masc]))
        assert pi[0] == pytest.approx(np.clip((q_masc + 0.8 - 1) / 0.7, 0, 1), abs=1e-6)


def test_correction_accepts_an_audit_attribute_entry(tmp_path):
    entry = {"labels": ["masc", "fem"], "confusion": gender_confusion()}
    path = tmp_path / "attr.json"
    path.write_text(json.dumps(entry))
    rows = corrected_proportions({"masc": 690, "fem": 310}, json.loads(path.read_text()), n_boot=0)
    assert by_label(rows)["masc"]["corrected"] == pytest.approx(0.7)


def _heterogeneous_prompts(rng, n_prompts=20, n_images=8):
    """Per prompt: its true masc share (Beta(1, 1): prompts differ a lot) and the labels a classifier
    with sensitivity 0.9 / specificity 0.8 reads off its images; and an audit of 200 people per class."""
    share = rng.beta(1.0, 1.0, n_prompts)
    masc = rng.binomial(n_images, share)
    read_masc = rng.binomial(masc, 0.9) + rng.binomial(n_images - masc, 0.2)
    observed = [{"masc": int(m), "fem": int(n_images - m)} for m in read_masc]
    a, b = rng.binomial(200, 0.9), rng.binomial(200, 0.8)
    audit = {"true": ["masc", "fem"], "pred": ["masc", "fem"], "counts": [[int(a), 200 - int(a)], [200 - int(b), int(b)]]}
    return observed, audit


def test_pooled_corrected_share_covers_the_prompt_population_share():
    # the truth is the mean share over the population of prompts (0.5); images of one prompt share
    # its share, so treating them as independent understates the interval
    rng = np.random.default_rng(2024)
    trials = 150
    covered = {"two-stage": 0, "images as independent": 0}
    for t in range(trials):
        observed, audit = _heterogeneous_prompts(rng)
        pooled = {k: sum(o[k] for o in observed) for k in ("masc", "fem")}
        for name, obs in (("two-stage", observed), ("images as independent", pooled)):
            r = by_label(corrected_proportions(obs, audit, n_boot=300, seed=t))["masc"]
            covered[name] += r["ci_low"] <= 0.5 <= r["ci_high"]
    two_stage, naive = covered["two-stage"] / trials, covered["images as independent"] / trials
    # nominal 95 %; Monte Carlo standard error about 0.018 at 150 trials
    assert two_stage >= 0.9, covered
    assert naive < 0.85 and two_stage - naive > 0.1, covered
    r = by_label(corrected_proportions(observed, audit, n_boot=50))["masc"]
    assert r["method"] == "percentile, audit rows, prompts, then images within prompts resampled"
    assert r["raw_method"] == "korn-graubard over prompts" and r["n_prompts"] == 20


def test_correction_bad_inputs():
    with pytest.raises(UserError, match="label 'woman' is not among the audit's labels masc, fem"):
        corrected_proportions({"woman": 3, "masc": 4}, gender_confusion())
    with pytest.raises(UserError, match="not a non-negative integer"):
        corrected_proportions({"masc": -1, "fem": 4}, gender_confusion())
    with pytest.raises(UserError, match=r"observed\[1\]: label 'masc': count 'x'"):
        corrected_proportions([{"masc": 1}, {"masc": "x"}], gender_confusion())
    with pytest.raises(UserError, match="no prompts to pool"):
        corrected_proportions([], gender_confusion())
    with pytest.raises(UserError, match=r"observed\[0\]: must map labels"):
        corrected_proportions([["masc", 3]], gender_confusion())
    with pytest.raises(UserError, match="no answered predictions"):
        corrected_proportions({"abstain": 5}, gender_confusion())
    with pytest.raises(UserError, match="counts must be"):
        corrected_proportions({"masc": 1}, {"true": ["masc", "fem"], "pred": ["masc", "fem"], "counts": [[1, 2]]})
    with pytest.raises(UserError, match="no true-class row"):
        corrected_proportions({"masc": 1}, {"true": ["masc"], "pred": ["masc", "fem"], "counts": [[1, 2]]})
    with pytest.raises(UserError, match="no answered audit example"):
        corrected_proportions({"masc": 1}, {"true": ["masc", "fem"], "pred": ["masc", "fem", "abstain"],
                                            "counts": [[5, 1, 0], [0, 0, 3]]})


# ----------------------------------------------------------------------------- agreement


def paired_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 240
    a = rng.choice(["masc", "fem"], size=n)
    flip = rng.random(n) < np.where(np.arange(n) < 120, 0.05, 0.35)  # family "nurse" agrees less
    b = np.where(flip, np.where(a == "masc", "fem", "masc"), a).astype(object)
    b[[3, 7]] = "abstain"
    a = a.astype(object)
    a[11] = None
    return pd.DataFrame({"unit": [f"img{i}" for i in range(n)], "label_a": a, "label_b": b,
                         "group": np.where(np.arange(n) < 120, "doctor", "nurse")})


def test_kappa_matches_sklearn_per_group():
    frame = paired_frame()
    rows = agreement_rows(frame, n_boot=400)
    keep = ~(frame["label_a"].isna() | frame["label_b"].eq("abstain"))
    overall = {r["metric"]: r for r in rows if r["group"] is None}
    assert overall["kappa"]["value"] == pytest.approx(cohen_kappa_score(frame["label_a"][keep].astype(str), frame["label_b"][keep].astype(str)))
    assert overall["agreement"]["value"] == pytest.approx(np.mean(frame["label_a"][keep] == frame["label_b"][keep]))
    assert overall["kappa"]["n"] == 237 and overall["kappa"]["n_excluded"] == 3
    for g in ("doctor", "nurse"):
        m = keep & (frame["group"] == g)
        r = {x["metric"]: x for x in rows if x["group"] == g}
        assert r["kappa"]["value"] == pytest.approx(cohen_kappa_score(frame["label_a"][m].astype(str), frame["label_b"][m].astype(str)))
        assert r["kappa"]["ci_low"] <= r["kappa"]["value"] <= r["kappa"]["ci_high"]
        assert r["agreement"]["ci_low"] <= r["agreement"]["value"] <= r["agreement"]["ci_high"]
    by_g = {r["group"]: r["value"] for r in rows if r["metric"] == "kappa"}
    assert by_g["doctor"] > by_g["nurse"] + 0.3


def test_kappa_from_tables_matches_sklearn():
    a = ["x"] * 30 + ["y"] * 20 + ["z"] * 10
    b = ["x"] * 25 + ["y"] * 8 + ["y"] * 17 + ["z"] * 3 + ["x"] * 2 + ["z"] * 5
    cats = ["x", "y", "z"]
    table = np.zeros((3, 3))
    for u, v in zip(a, b):
        table[cats.index(u), cats.index(v)] += 1
    assert float(_kappa_from_tables(table)) == pytest.approx(cohen_kappa_score(a, b))


def test_identical_labels_have_kappa_one():
    frame = pd.DataFrame({"unit": range(50), "label_a": ["a", "b"] * 25, "label_b": ["a", "b"] * 25})
    rows = {r["metric"]: r for r in agreement_rows(frame, n_boot=100)}
    assert rows["kappa"]["value"] == 1.0 and rows["agreement"]["value"] == 1.0
    assert rows["kappa"]["ci_low"] == 1.0 and "group" in rows["kappa"]


def test_single_label_kappa_is_nan_with_a_reason():
    frame = pd.DataFrame({"unit": range(10), "label_a": ["a"] * 10, "label_b": ["a"] * 10})
    rows = {r["metric"]: r for r in agreement_rows(frame, n_boot=50)}
    assert np.isnan(rows["kappa"]["value"]) and "undefined" in rows["kappa"]["note"]
    assert rows["agreement"]["value"] == 1.0


def test_agreement_resamples_images_and_prompts_not_faces():
    frame = paired_frame().dropna()
    frame = frame[frame["label_b"] != "abstain"].reset_index(drop=True)
    # every face copied three times inside its image: the same information, so no narrower interval
    copies = frame.loc[frame.index.repeat(3)].reset_index(drop=True)
    copies["image"] = copies["unit"]
    copies["unit"] = copies["unit"] + "#" + (copies.groupby("unit").cumcount()).astype(str)
    width = lambda rows, m: next(r["ci_high"] - r["ci_low"] for r in rows if r["group"] is None and r["metric"] == m)
    one = agreement_rows(frame, n_boot=1500)
    by_image = agreement_rows(copies, n_boot=1500)
    as_faces = agreement_rows(copies.drop(columns="image"), n_boot=1500)
    for m in ("agreement", "kappa"):
        assert width(by_image, m) == pytest.approx(width(one, m), rel=0.15)
        assert width(as_faces, m) < 0.75 * width(one, m)
    assert {r["method"] for r in by_image} == {"korn-graubard, images resampled", "percentile, images resampled"}
    # images of one prompt: prompts, then images within them
    frame["image"] = frame["unit"]
    frame["prompt"] = frame["group"] + "/" + (frame.index % 6).astype(str)
    two = agreement_rows(frame, n_boot=300)
    assert two[0]["method"] == "korn-graubard, prompts, then images within prompts resampled"
    assert two[0]["value"] == one[0]["value"] and two[0]["ci_low"] < two[0]["value"] < two[0]["ci_high"]


def test_agreement_bad_inputs():
    with pytest.raises(UserError, match="column label_b: missing"):
        agreement_rows(pd.DataFrame({"unit": [1], "label_a": ["a"]}))
    with pytest.raises(UserError, match="appears more than once"):
        agreement_rows(pd.DataFrame({"unit": [1, 1], "label_a": ["a", "b"], "label_b": ["a", "b"]}))
    two = {"unit": [1, 2], "label_a": ["a", "b"], "label_b": ["a", "b"]}
    with pytest.raises(UserError, match="column prompt: given without an image column"):
        agreement_rows(pd.DataFrame({**two, "prompt": ["p", "p"]}))
    with pytest.raises(UserError, match="column prompt: one image under two prompts"):
        agreement_rows(pd.DataFrame({**two, "image": ["i", "i"], "prompt": ["p", "q"]}))
    with pytest.raises(UserError, match="column image: empty cells"):
        agreement_rows(pd.DataFrame({**two, "image": ["i", None]}))
