"""Classifier audit on FACET-format people: exact confusion counts, per-group accuracy, MST
within-range vs exact, calibration, skipped people, outputs and their validation.

The fixture paints a colour patch in the middle of every person's box, on real photos
(scikit-image's astronaut, matplotlib's Grace Hopper) and synthetic images; a fake predictor
reads the colour of the crop's centre, so what it predicts for each person, and hence every
expected number below, is known by construction.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facet_eval.attributes import FACET_ATTRIBUTES, weighted_median_mst
from facet_fixtures import person, write_facet
from t2ibias.store.audit_file import SCHEMA, load_audit
from t2ibias.audit import run_audit
from t2ibias.audit.crops import crop_box
from t2ibias.audit.groupwise import calibration_table, metric_rows
from t2ibias.core.errors import UserError
from t2ibias.models.clip_zeroshot import ABSTAIN, Prediction
from t2ibias.report.audit_html import write_audit_html

GENDER_CODE = {"masc": 0, "fem": 120, ABSTAIN: 240}
AGE_CODE = {"young": 0, "middle": 120, "older": 240}
GENDER_SCORE = {"masc": 0.95, "fem": 0.75, ABSTAIN: 0.55}  # abstentions have top label fem
BOX = 160  # box side in pixels; crops are 1.5 × that (240) unless clipped at the image border
PATCH = 40

# block: (count, gender true, gender preds, age true, age pred, skin votes, skin pred)
BLOCKS = [
    ("A", 10, "masc", ["masc"], "young", "young", {2: 2, 3: 1}, 2),
    ("B", 8, "masc", ["masc"], "middle", "middle", {8: 1, 9: 2}, 8),
    ("C", 2, "masc", ["fem", ABSTAIN], "older", "middle", {9: 3, 10: 3}, 10),
    ("D", 12, "fem", ["fem"], "young", "young", {1: 1, 2: 2}, 3),
    ("E", 4, "fem", ["masc"], "middle", "older", {8: 2, 9: 1}, 8),
    ("F", 2, "non_binary", ["fem"], "na", "young", "na", 5),
    ("G", 1, "na", ["masc"], None, "young", None, 5),
]


def _decode(value: float, codes: dict[str, int]) -> str:
    return min(codes, key=lambda k: abs(codes[k] - value))


class PaintedPredictor:
    """Reads the mean colour of the 5×5 pixels at the crop's centre: R → gender, G → age, B → MST."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []
        self.calls = 0

    def measure(self, crops: list[Image.Image]) -> list[dict[str, Prediction]]:
        self.calls += 1
        out = []
        for crop in crops:
            self.sizes.append(crop.size)
            a = np.asarray(crop, dtype=float)
            cy, cx = a.shape[0] // 2, a.shape[1] // 2
            r, g, b = a[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3).mean(axis=0)
            gender = _decode(r, GENDER_CODE)
            top = "fem" if gender == ABSTAIN else gender
            s = GENDER_SCORE[gender]
            age = _decode(g, AGE_CODE)
            mst = str(int(round(b / 25.0)) + 1)
            out.append({
                "gender_presentation": Prediction(gender, top, s, 2 * s - 1, {top: s, ("masc" if top == "fem" else "fem"): 1 - s}),
                "age_group": Prediction(age, age, 0.8, 0.6, {"young": 0.8 if age == "young" else 0.1,
                                                             "middle": 0.8 if age == "middle" else 0.1,
                                                             "older": 0.8 if age == "older" else 0.1}),
                "skin_tone": Prediction(mst, mst, 0.5, 0.1, {str(k): (0.5 if str(k) == mst else 0.5 / 9) for k in range(1, 11)}),
                "person": Prediction("person", "person", 0.9, 0.8, {"person": 0.9, "no_person": 0.1}),
            })
        return out


def _backgrounds() -> list[np.ndarray]:
    import matplotlib.cbook
    import skimage.data

    astronaut = skimage.data.astronaut()
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = np.asarray(Image.open(fh).convert("RGB"))
    yy, xx = np.mgrid[0:1000, 0:1000]
    gradient = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, size=(1000, 1000, 3), dtype=np.uint8)
    return [astronaut, hopper, gradient, noise]


def build_fixture(root: Path) -> dict[int, dict]:
    """Nine people per 1000×1000 image on a 3×3 grid; returns person_id → what was painted."""
    specs = []
    for name, count, g_true, g_preds, a_true, a_pred, votes, mst in BLOCKS:
        for k in range(count):
            specs.append(dict(block=name, g_true=g_true, g_pred=g_preds[k % len(g_preds)], a_true=a_true,
                              a_pred=a_pred, votes=votes, mst=mst))
    specs.append(dict(block="skip_minimal", visible="minimal"))
    specs.append(dict(block="skip_empty", empty=True))
    bgs = _backgrounds()
    people, images = [], {}
    slots = [(x, y) for y in (125, 425, 725) for x in (125, 425, 725)]
    slots[0] = (5, 5)  # clipped at the top-left corner
    painted = {}
    for i, s in enumerate(specs):
        img_id, slot = i // 9 + 1, i % 9
        if img_id not in images:
            bg = bgs[(img_id - 1) % len(bgs)]
            images[img_id] = np.asarray(Image.fromarray(bg).resize((1000, 1000))).copy()
        x, y = slots[slot]
        box = [x, y, 0 if s.get("empty") else BOX, BOX]
        pid = i + 1
        attrs: dict[str, float] = {}
        if s.get("visible") == "minimal":
            attrs["visible_minimal"] = 1
        else:
            attrs["visible_face"] = 1
            attrs["lighting_well_lit" if i % 2 else "lighting_dimly_lit"] = 1
        if "g_true" in s:
            attrs[f"gender_presentation_{s['g_true']}"] = 1
            if s["a_true"] is not None:
                attrs[f"age_presentation_{s['a_true']}"] = 1
            if s["votes"] == "na":
                attrs["skin_tone_na"] = 1
            elif s["votes"] is not None:
                attrs.update({f"skin_tone_{v}": n for v, n in s["votes"].items()})
            cx, cy = x + BOX // 2, y + BOX // 2
            colour = (GENDER_CODE[s["g_pred"]], AGE_CODE[s["a_pred"]], (s["mst"] - 1) * 25)
            images[img_id][cy - PATCH:cy + PATCH, cx - PATCH:cx + PATCH] = colour
            painted[pid] = s
        people.append(person(pid, img_id, box, **attrs))
    write_facet(root, people, sorted(images))
    folder = root / "imgs_1"
    folder.mkdir(parents=True, exist_ok=True)
    for img_id, arr in images.items():
        Image.fromarray(arr).save(folder / f"sa_{img_id}.jpg", quality=95)
    return painted


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("facet")
    painted = build_fixture(root)
    out = tmp_path_factory.mktemp("audit")
    predictor = PaintedPredictor()
    seen = []
    result = run_audit(predictor, root, out, classifier_id="painted", fingerprint="abc123", batch_size=16,
                       n_boot=300, seed=1, engine="vectorized", progress=lambda done, total: seen.append((done, total)))
    return root, out, result, predictor, painted, seen


def _row(entry, group_attribute, group, metric):
    rows = [r for r in entry["by_group"] if (r["group_attribute"], r["group"], r["metric"]) == (group_attribute, group, metric)]
    assert len(rows) == 1, (group_attribute, group, metric)
    return rows[0]


def test_crop_box_pads_and_clips():
    assert crop_box((100, 200, 40, 80), (1000, 1000)) == (90, 180, 150, 300)
    assert crop_box((5, 5, 150, 150), (1000, 1000)) == (0, 0, 193, 193)
    assert crop_box((990, 0, 100, 50), (1000, 1000)) == (965, 0, 1000, 63)
    assert crop_box((10, 10, 0, 50), (1000, 1000)) is None
    assert crop_box((2000, 10, 10, 10), (1000, 1000)) is None


def test_weighted_median_mst():
    votes = np.zeros((4, 10))
    votes[0, [1, 2]] = [2, 1]  # MST 2:2, 3:1 → 2
    votes[1, [8, 9]] = [3, 3]  # tie 9:3, 10:3 → lower median 9
    votes[2, [0, 1, 2]] = [1, 1, 4]  # → 3
    assert weighted_median_mst(votes).tolist() == [2, 9, 3, 0]


def test_people_crops_and_skips(audited):
    _, _, result, predictor, painted, seen = audited
    facet = result["facet"]
    assert facet["n_people"] == len(painted) + 2
    assert facet["n_audited"] == len(painted) == 39
    assert facet["n_skipped"] == 2
    assert facet["skipped"] == {"visible_minimal": 1, "empty_box": 1, "box_outside_image": 0}
    assert len(facet["annotations_sha256"]) == 64
    assert result["classifier"] == {"id": "painted", "fingerprint": "abc123"}
    assert result["schema"] == SCHEMA
    # the first person of each of the 5 images is clipped at the corner; every other crop is the
    # padded 160-px box (240 px)
    assert sorted(predictor.sizes).count((205, 205)) == 5
    assert sorted(predictor.sizes).count((240, 240)) == 34
    assert seen[-1] == (39, 39) and all(d <= t for d, t in seen)
    # person is not a FACET attribute: not audited
    assert set(result["attributes"]) == {"gender_presentation", "age_group", "skin_tone"}


def test_gender_confusion_and_accuracy(audited):
    g = audited[2]["attributes"]["gender_presentation"]
    assert g["labels"] == ["masc", "fem"]
    assert g["true_classes"] == ["masc", "fem", "non_binary", "na"]
    assert g["confusion"]["pred"] == ["masc", "fem", ABSTAIN]
    assert g["confusion"]["counts"] == [[18, 1, 1], [4, 12, 0], [0, 2, 0], [1, 0, 0]]
    assert g["accuracy"]["value"] == pytest.approx(30 / 36)
    assert g["accuracy"]["n"] == 36
    assert g["accuracy_answered"]["value"] == pytest.approx(30 / 35)
    assert g["accuracy_answered"]["n"] == 35
    assert g["abstain_rate"]["value"] == pytest.approx(1 / 39)
    assert g["accuracy"]["ci_low"] <= g["accuracy"]["value"] <= g["accuracy"]["ci_high"]
    assert g["accuracy"]["ci_high"] - g["accuracy"]["ci_low"] > 0


def test_gender_accuracy_by_group(audited):
    g = audited[2]["attributes"]["gender_presentation"]
    assert _row(g, "gender_presentation", "masc", "accuracy")["value"] == pytest.approx(18 / 20)
    assert _row(g, "gender_presentation", "fem", "accuracy")["value"] == pytest.approx(12 / 16)
    lighter = _row(g, "skin_tone_bucket", "lighter", "accuracy")
    darker = _row(g, "skin_tone_bucket", "darker", "accuracy")
    assert (lighter["value"], lighter["n"]) == (1.0, 22)
    assert darker["value"] == pytest.approx(8 / 14) and darker["n"] == 14
    assert _row(g, "age_presentation", "older", "accuracy")["value"] == 0.0
    assert _row(g, "age_presentation", "middle", "accuracy")["value"] == pytest.approx(8 / 12)
    # non-binary people have no accuracy row, but their abstention rate is reported
    assert not [r for r in g["by_group"] if r["group"] == "non_binary" and r["metric"] == "accuracy"]
    assert _row(g, "gender_presentation", "non_binary", "abstain_rate")["n"] == 2
    for r in g["by_group"]:
        if r["ci_low"] is not None and r["value"] is not None:
            assert r["ci_low"] - 1e-12 <= r["value"] <= r["ci_high"] + 1e-12, r
        assert r["note"].startswith("n=") or r["group"] == "na"  # every group here is below FACET's 50
    comp = [c for c in g["comparisons"] if c["group_attribute"] == "skin_tone_bucket" and c["metric"] == "accuracy"][0]
    assert math.isnan(comp["difference"]["value"]) and "fewer than two" in comp["note"]


def test_comparisons_with_small_min_n(tmp_path, audited):
    root = audited[0]
    result = run_audit(PaintedPredictor(), root, tmp_path, classifier_id="painted", fingerprint="x", n_boot=300, min_n=5,
                        engine="vectorized")
    g = result["attributes"]["gender_presentation"]
    comp = [c for c in g["comparisons"] if c["group_attribute"] == "skin_tone_bucket" and c["metric"] == "accuracy"][0]
    assert comp["groups"] == ["darker", "lighter"]
    assert comp["difference"]["value"] == pytest.approx(1 - 8 / 14)
    assert comp["ratio"]["value"] == pytest.approx(8 / 14)
    assert comp["difference"]["ci_low"] <= comp["difference"]["value"] <= comp["difference"]["ci_high"]
    assert 0.0 <= comp["p_value"] <= 1.0 and comp["p_value"] <= comp["q_value"] <= 1.0
    on_disk = json.loads((tmp_path / "audit.json").read_text())["attributes"]["gender_presentation"]
    assert set(on_disk["comparisons"][0]) >= {"difference", "ratio", "groups", "note", "p_value", "q_value", "method"}
    assert on_disk["accuracy"]["method"] == "korn-graubard, images resampled"


def test_fairlearn_and_vectorized_engines_give_the_same_intervals():
    rng = np.random.default_rng(3)
    groups = np.array(["a"] * 120 + ["b"] * 80, dtype=object)
    hit = np.concatenate([rng.random(120) < 0.9, rng.random(80) < 0.6]).astype(float)
    per_row = {"accuracy": hit, "abs_error": rng.integers(0, 4, 200).astype(float)}
    kw = dict(ece_inputs=(rng.random(200), hit), seed=0, confidence=0.95, min_n=50, clusters=np.arange(200) // 3)
    fl = metric_rows(per_row, groups, n_boot=40, engine="fairlearn", **kw)
    vec = metric_rows(per_row, groups, n_boot=40, engine="vectorized", **kw)
    assert [r["value"] for r in fl[1]] == [r["value"] for r in vec[1]]
    for a, b in zip(fl[1] + list(fl[0].values()), vec[1] + list(vec[0].values())):
        assert (a["ci_low"], a["ci_high"]) == pytest.approx((b["ci_low"], b["ci_high"]), abs=1e-9), (a, b)
    for a, b in zip(fl[2], vec[2]):
        assert a["difference"] == pytest.approx(b["difference"], abs=1e-9) and a["p_value"] == b["p_value"]
    with pytest.raises(UserError, match="engine"):
        metric_rows(per_row, groups, n_boot=10, engine="jackknife", **kw)


def test_people_of_one_image_are_resampled_together():
    # every person copied three times inside their own image: no new information, so the interval
    # must not narrow; resampling people as if independent would narrow it by about √3
    rng = np.random.default_rng(4)
    hit = (rng.random(120) < 0.8).astype(float)
    images = np.arange(120)
    groups = np.where(np.arange(120) < 60, "a", "b")
    kw = dict(ece_inputs=None, n_boot=2000, seed=1, confidence=0.95, min_n=10, engine="vectorized")
    one = metric_rows({"accuracy": hit}, groups, clusters=images, **kw)
    copied = metric_rows({"accuracy": np.repeat(hit, 3)}, np.repeat(groups, 3), clusters=np.repeat(images, 3), **kw)
    naive = metric_rows({"accuracy": np.repeat(hit, 3)}, np.repeat(groups, 3), **kw)
    width = lambda res: res[0]["accuracy"]["ci_high"] - res[0]["accuracy"]["ci_low"]
    assert copied[0]["accuracy"]["value"] == one[0]["accuracy"]["value"]
    assert width(copied) == pytest.approx(width(one), rel=0.1)
    assert width(naive) < 0.75 * width(one)
    assert copied[0]["accuracy"]["method"] == "korn-graubard, images resampled"
    assert naive[0]["accuracy"]["method"] == "korn-graubard, rows resampled"
    assert copied[2][0]["method"].startswith("max-t simultaneous, images")


def test_gap_between_equal_groups_holds_zero_and_a_real_gap_is_significant():
    rng = np.random.default_rng(5)
    n = 600
    images = np.arange(n) // 2
    groups = np.array(["g1", "g2", "g3"])[rng.integers(0, 3, n)]
    equal = (rng.random(n) < 0.7).astype(float)
    apart = (rng.random(n) < np.where(groups == "g1", 0.95, 0.6)).astype(float)
    _, _, comps = metric_rows({"accuracy": equal, "within_range": apart}, groups, ece_inputs=None, n_boot=1000, seed=0,
                              confidence=0.95, min_n=50, engine="vectorized", clusters=images)
    by = {c["metric"]: c for c in comps}
    eq, ap = by["accuracy"], by["within_range"]
    assert eq["difference"]["ci_low"] == 0.0 <= eq["difference"]["value"] <= eq["difference"]["ci_high"]
    assert eq["ratio"]["ci_high"] == 1.0 and eq["p_value"] > 0.05
    assert ap["difference"]["ci_low"] > 0.2 and ap["p_value"] < 0.01 and ap["q_value"] < 0.05
    from scipy.stats import false_discovery_control

    assert [c["q_value"] for c in comps] == pytest.approx(list(false_discovery_control([c["p_value"] for c in comps])))


def test_perfect_group_still_has_an_interval():
    groups = np.array(["a"] * 60 + ["b"] * 60)
    hit = np.r_[np.ones(60), np.zeros(10), np.ones(50)]
    overall, rows, _ = metric_rows({"accuracy": hit}, groups, ece_inputs=None, n_boot=500, seed=0, confidence=0.95,
                                   min_n=50, engine="vectorized", clusters=np.arange(120) // 2)
    a = [r for r in rows if r["group"] == "a"][0]
    assert a["value"] == 1.0 == a["ci_high"] and 0.85 < a["ci_low"] < 1.0  # never [1, 1]


def test_age_confusion(audited):
    a = audited[2]["attributes"]["age_group"]
    assert a["labels"] == ["young", "middle", "older"]
    assert a["confusion"]["pred"] == ["young", "middle", "older", ABSTAIN]
    assert a["confusion"]["counts"] == [[22, 0, 0, 0], [0, 8, 4, 0], [0, 2, 0, 0], [2, 0, 0, 0]]
    assert a["n_unannotated"] == 1  # the person with no age annotation
    assert a["accuracy"]["value"] == pytest.approx(30 / 36)


def test_skin_tone_exact_within_range_and_error(audited):
    s = audited[2]["attributes"]["skin_tone"]
    assert s["labels"] == [str(i) for i in range(1, 11)]
    assert s["n"] == 38 and s["n_in_labels"] == 36  # two people annotated skin_tone_na
    assert s["accuracy"]["value"] == pytest.approx(14 / 36)
    assert s["within_range"]["value"] == pytest.approx(24 / 36)
    assert s["abs_error"]["value"] == pytest.approx(22 / 36)
    assert s["within_range"]["value"] > s["accuracy"]["value"]
    counts = dict(zip(s["confusion"]["true"], s["confusion"]["counts"]))
    assert counts["2"][s["confusion"]["pred"].index("2")] == 10
    assert counts["2"][s["confusion"]["pred"].index("3")] == 12
    assert counts["na"][s["confusion"]["pred"].index("5")] == 2
    assert _row(s, "skin_tone_bucket", "darker", "within_range")["value"] == 1.0
    assert _row(s, "skin_tone_bucket", "lighter", "accuracy")["value"] == pytest.approx(10 / 22)


def test_calibration_constructed():
    ece, bins = calibration_table([0.55, 0.75, 0.75, 0.95, 0.95, 1.0], [0, 1, 0, 1, 1, 1])
    # bins: 0.5-0.6 conf .55 acc 0; 0.7-0.8 conf .75 acc .5; 0.9-1.0 conf .9667 acc 1
    expected = (1 * 0.55 + 2 * 0.25 + 3 * abs(1 - (0.95 + 0.95 + 1.0) / 3)) / 6
    assert ece == pytest.approx(expected)
    assert [b["n"] for b in bins] == [0, 0, 0, 0, 0, 1, 0, 2, 0, 3]
    assert math.isnan(calibration_table([], [])[0])
    assert calibration_table([0.9] * 10, [1] * 9 + [0])[0] == pytest.approx(0.0)


def test_gender_calibration(audited):
    cal = audited[2]["attributes"]["gender_presentation"]["calibration"]
    # top masc (0.95): 22 people, 18 right; top fem (0.75): 13, 12 right; abstained (fem, 0.55): 1, wrong
    assert cal["ece"] == pytest.approx((0.55 + abs(12 - 13 * 0.75) + abs(18 - 22 * 0.95)) / 36)
    assert cal["n"] == 36
    assert [b["n"] for b in cal["bins"]][5:] == [1, 0, 13, 0, 22]
    g = audited[2]["attributes"]["gender_presentation"]
    assert g["ece"]["value"] == pytest.approx(cal["ece"])
    darker = [c for c in cal["by_group"] if (c["group_attribute"], c["group"]) == ("skin_tone_bucket", "darker")][0]
    # darker: B 8 masc right (0.95), C fem wrong (0.75) + abstain (0.55), E 4 masc wrong (0.95)
    assert darker["ece"] == pytest.approx((abs(8 - 12 * 0.95) + 0.75 + 0.55) / 14)


def test_output_files(audited):
    _, out, result, *_ = audited
    on_disk = json.loads((out / "audit.json").read_text())
    assert on_disk["attributes"]["gender_presentation"]["confusion"] == result["attributes"]["gender_presentation"]["confusion"]
    with open(out / "confusion_gender_presentation.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["true", "masc", "fem", ABSTAIN]
    assert rows[1] == ["masc", "18", "1", "1"]
    with open(out / "audit.csv") as fh:
        long = list(csv.DictReader(fh))
    assert {"attribute", "group_attribute", "group", "metric", "value", "n", "ci_low", "ci_high"} <= set(long[0])
    darker = [r for r in long if (r["attribute"], r["group_attribute"], r["group"], r["metric"])
              == ("gender_presentation", "skin_tone_bucket", "darker", "accuracy")]
    assert len(darker) == 1 and float(darker[0]["value"]) == pytest.approx(8 / 14)
    with open(out / "predictions.csv") as fh:
        preds = list(csv.DictReader(fh))
    assert len([p for p in preds if p["attribute"] == "gender_presentation"]) == 39
    assert load_audit(out)["facet"]["n_audited"] == 39
    html = write_audit_html(out).read_text()
    assert "Classifier audit: painted" in html and "skin_tone_bucket" in html
    assert "<td>masc</td><td>18</td><td>1</td><td>1</td>" in html


def test_limit_samples_people(tmp_path, audited):
    root = audited[0]
    result = run_audit(PaintedPredictor(), root, tmp_path, classifier_id="p", fingerprint="f", limit=10, n_boot=0)
    assert result["facet"]["n_audited"] == 10
    assert result["facet"]["n_not_sampled"] == 29
    assert sum(map(sum, result["attributes"]["gender_presentation"]["confusion"]["counts"])) == 10


def test_load_audit_rejects_bad_files(tmp_path):
    bad = tmp_path / "audit.json"
    bad.write_text(json.dumps({"schema": "t2ibias-audit/0", "classifier": {}, "facet": {}, "attributes": {}}))
    with pytest.raises(UserError, match="schema"):
        load_audit(bad)
    with pytest.raises(UserError, match="not found"):
        load_audit(tmp_path / "missing.json")
    bad.write_text(json.dumps({"schema": SCHEMA, "classifier": {}, "facet": {},
                               "attributes": {"x": {"confusion": {"true": ["a"], "pred": ["a", "b"], "counts": [[1]]}}}}))
    with pytest.raises(UserError, match="counts"):
        load_audit(bad)


def test_predictor_without_audited_attributes(tmp_path, audited):
    class PersonOnly:
        def measure(self, crops):
            return [{"person": Prediction("person", "person", 0.9, 0.8, {})} for _ in crops]

    with pytest.raises(UserError, match="returns none of the audited attributes"):
        run_audit(PersonOnly(), audited[0], tmp_path, classifier_id="p", fingerprint="f", n_boot=0)


def test_missing_answers_are_abstentions(tmp_path, audited):
    class NoSkinForFem(PaintedPredictor):
        """Like PaintedPredictor, but finds no skin (no skin_tone at all) on crops it reads as fem."""

        def measure(self, crops):
            out = super().measure(crops)
            return [{k: v for k, v in p.items() if not (k == "skin_tone" and p["gender_presentation"].label == "fem")}
                    for p in out]

    s = run_audit(NoSkinForFem(), audited[0], tmp_path, classifier_id="p", fingerprint="f", n_boot=0)["attributes"]["skin_tone"]
    # fem-read people with skin annotations: C (1), D (12), F (2, skin na)
    assert s["n_no_prediction"] == 15
    assert s["labels"] == [str(i) for i in range(1, 11)]  # FACET's label space even if some are never predicted
    assert s["abstain_rate"]["value"] == pytest.approx(15 / 38)
    assert s["accuracy"]["value"] == pytest.approx(14 / 36)  # D and C were not exact anyway
    assert s["within_range"]["value"] == pytest.approx(23 / 36)  # C's fem-read person was within range


def test_labels_unlike_facet_are_rejected(tmp_path, audited):
    class Renamed(PaintedPredictor):
        def measure(self, crops):
            names = {"masc": "Male", "fem": "Female", ABSTAIN: ABSTAIN}
            out = super().measure(crops)
            for p in out:
                g = p["gender_presentation"]
                p["gender_presentation"] = Prediction(names[g.label], names[g.top_label], g.score, g.margin,
                                                      {names[k]: v for k, v in g.probs.items()})
            return out

    with pytest.raises(UserError, match="gender_presentation: labels .* match none of FACET's classes"):
        run_audit(Renamed(), audited[0], tmp_path, classifier_id="p", fingerprint="f", n_boot=0)


def test_agreement_and_correction_from_audits(tmp_path, audited):
    from t2ibias.metrics.agreement import agreement_rows, paired_predictions
    from t2ibias.metrics.correction import corrected_from_audit

    class AlwaysMasc(PaintedPredictor):
        def measure(self, crops):
            out = super().measure(crops)
            for p in out:
                p["gender_presentation"] = Prediction("masc", "masc", 0.9, 0.8, {"masc": 0.9, "fem": 0.1})
            return out

    out_a = audited[1]
    run_audit(AlwaysMasc(), audited[0], tmp_path, classifier_id="masc", fingerprint="m", n_boot=0)
    frame = paired_predictions(out_a, tmp_path, "gender_presentation")
    assert len(frame) == 39
    rows = agreement_rows(frame, n_boot=200)
    overall = {r["metric"]: r for r in rows if r["group"] is None}
    # painted reads 23 masc, 15 fem, 1 abstention; the other always says masc
    assert overall["agreement"]["value"] == pytest.approx(23 / 38) and overall["agreement"]["n_excluded"] == 1
    assert overall["kappa"]["value"] == pytest.approx(0.0)
    fem = {r["metric"]: r for r in rows if r["group"] == "fem"}
    assert fem["agreement"]["value"] == pytest.approx(4 / 16)

    corrected = {r["label"]: r for r in corrected_from_audit({"masc": 60, "fem": 40}, out_a, "gender_presentation", n_boot=0)}
    # audit rows masc (18, 1 | 1 abstain) and fem (4, 12): P = [[18/19, 1/19], [1/4, 3/4]]
    p = np.array([[18 / 19, 1 / 19], [0.25, 0.75]])
    expected = np.linalg.solve(p.T, [0.6, 0.4])
    assert [corrected["masc"]["corrected"], corrected["fem"]["corrected"]] == pytest.approx(expected.tolist())
    assert corrected["masc"]["audit_classifier"] == "painted"
    with pytest.raises(UserError, match="no audit of 'race'"):
        corrected_from_audit({"masc": 1}, out_a, "race")


def test_missing_facet_root(tmp_path):
    with pytest.raises(UserError, match="annotations.csv"):
        run_audit(PaintedPredictor(), tmp_path / "nowhere", tmp_path / "out", classifier_id="p", fingerprint="f")


def test_clip_predictor_end_to_end(tmp_path, audited, one_torch_thread):
    from t2ibias.measure.measurers import resolve_measurer
    from t2ibias.models.classifier_spec import resolve_classifier_spec

    spec = resolve_classifier_spec("tiny-random-clip")
    predictor = resolve_measurer("tiny-random-clip", "cpu")
    result = run_audit(predictor, audited[0], tmp_path, classifier_id=predictor.id, fingerprint=predictor.fingerprint(),
                       limit=12, n_boot=5)  # default engine: fairlearn MetricFrame bootstrap
    assert {"gender_presentation", "age_group"} <= set(result["attributes"]) <= set(FACET_ATTRIBUTES)
    g = load_audit(tmp_path / "audit.json")["attributes"]["gender_presentation"]
    assert g["labels"] == ["masc", "fem"]
    assert sum(map(sum, g["confusion"]["counts"])) == 12
    assert 0.0 <= g["calibration"]["ece"] <= 1.0
    assert result["classifier"]["fingerprint"] == spec.fingerprint()
