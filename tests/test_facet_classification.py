"""FACET person classification: single-person people, recall@1 with class2, disparities, largest
gaps, predictions validation, the zero-shot CLIP runner and submissions of its outputs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from facet_eval.classification import (
    correct_flags,
    evaluate_classification,
    largest_gaps,
    load_class_predictions,
    single_person_mask,
)
from facet_eval.data import load_facet
from facet_eval.runners.clip import class_prompts, encode_batch
from t2ibias.core.errors import UserError
from tests.facet_fixtures import FULL, person, write_facet, write_images
from tests.test_facet_cli import run

SMALL = [10, 10, 50, 50]


def _row(rows, metric, attribute, group, cls=None):
    hits = [r for r in rows if r["metric"] == metric and r["attribute"] == attribute and r["group"] == group
            and r["class"] == cls]
    assert len(hits) == 1, (metric, attribute, group, cls, len(hits))
    return hits[0]


# (class, gender column, people, of whom predicted correctly); the wrong ones are predicted as
# WRONG_AS[class], which is never their class.
KNOWN = [
    ("nurse", "gender_presentation_masc", 60, 45),   # 0.75
    ("nurse", "gender_presentation_fem", 60, 30),    # 0.5   → masc−fem 0.25, both >= 50
    ("doctor", "gender_presentation_masc", 50, 20),  # 0.4
    ("doctor", "gender_presentation_fem", 50, 40),   # 0.8   → masc−fem −0.4, exactly 50 each
    ("farmer", "gender_presentation_masc", 49, 49),  # 1.0
    ("farmer", "gender_presentation_fem", 60, 0),    # 0.0   → not compared: 49 masc farmers
    ("nurse", "gender_presentation_non_binary", 3, 3),
]
WRONG_AS = {"nurse": "doctor", "doctor": "farmer", "farmer": "nurse"}
N_SINGLE = sum(k[2] for k in KNOWN)  # 332


def known_classification(root: Path) -> tuple[Path, list[dict], dict]:
    """Single-person images with recall per (class, gender) known by construction (KNOWN), plus
    two-person images (masc nurses, predicted wrongly: they must not count) and an empty image."""
    people, preds, img = [], [], 0
    for cls, gender, n, right in KNOWN:
        for k in range(n):
            img += 1
            extra = {"skin_tone_2": 1} if gender.endswith("masc") else {"skin_tone_9": 1}
            people.append(person(img, img, FULL, cls, None, **{gender: 1}, **extra))
            preds.append({"person_id": img, "class": cls if k < right else WRONG_AS[cls]})
    for _ in range(5):
        img += 1
        for j in range(2):
            pid = 10_000 + 2 * img + j
            people.append(person(pid, img, FULL if j else SMALL, "nurse", None, gender_presentation_masc=1))
            preds.append({"person_id": pid, "class": "farmer"})
    img += 1  # no people
    write_facet(root, people, list(range(1, img + 1)))
    return root, preds, {"multi_image": img - 1, "multi_pid": 10_000 + 2 * (img - 1)}


@pytest.fixture
def known(tmp_path):
    root, preds, extra = known_classification(tmp_path / "facet")
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(preds))
    return root, path, preds, extra


# ------------------------------------------------------------------ metrics
def test_single_person_mask_excludes_multi_person_images(known):
    root, _, _, _ = known
    data = load_facet(root)
    single = single_person_mask(data)
    assert single.sum() == N_SINGLE and len(single) == N_SINGLE + 10
    assert not single[data.people["person_id"].to_numpy() >= 10_000].any()


def test_recall_per_class_and_group_is_exact(known):
    root, path, _, _ = known
    data = load_facet(root)
    rows = evaluate_classification(data, load_class_predictions(path, data), n_boot=200)
    assert {r["task"] for r in rows} == {"classification"}
    assert {r["metric"] for r in rows} == {"recall", "disparity_recall"}
    expect = {("nurse", "masc"): (0.75, 60), ("nurse", "fem"): (0.5, 60), ("doctor", "masc"): (0.4, 50),
              ("doctor", "fem"): (0.8, 50), ("farmer", "masc"): (1.0, 49), ("farmer", "fem"): (0.0, 60),
              ("nurse", "non_binary"): (1.0, 3)}
    for (cls, g), (value, n) in expect.items():
        r = _row(rows, "recall", "gender_presentation", g, cls)
        assert r["n"] == n and r["value"] == pytest.approx(value)
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
    overall = _row(rows, "recall", "all", "all")
    assert overall["n"] == N_SINGLE  # the 10 people of two-person images are not scored
    assert overall["value"] == pytest.approx((45 + 30 + 20 + 40 + 49 + 0 + 3) / N_SINGLE)
    masc = _row(rows, "recall", "gender_presentation", "masc")
    assert masc["n"] == 159 and masc["value"] == pytest.approx(114 / 159)
    assert _row(rows, "recall", "skin_tone_bucket", "lighter")["n"] == 159
    assert _row(rows, "recall", "all", "all", "nurse")["value"] == pytest.approx(78 / 123)


def test_disparity_only_with_50_people_in_both_groups(known):
    root, path, _, _ = known
    data = load_facet(root)
    rows = evaluate_classification(data, load_class_predictions(path, data), n_boot=200)
    nurse = _row(rows, "disparity_recall", "gender_presentation", "masc-fem", "nurse")
    assert nurse["value"] == pytest.approx(0.25) and (nurse["group_a"], nurse["group_b"]) == ("masc", "fem")
    assert (nurse["n_a"], nurse["n_b"]) == (60, 60) and nurse["ci_low"] <= 0.25 <= nurse["ci_high"]
    doctor = _row(rows, "disparity_recall", "gender_presentation", "masc-fem", "doctor")
    assert doctor["value"] == pytest.approx(-0.4) and (doctor["n_a"], doctor["n_b"]) == (50, 50)
    farmer = _row(rows, "disparity_recall", "gender_presentation", "masc-fem", "farmer")
    assert math.isnan(farmer["value"]) and math.isnan(farmer["ci_low"])
    assert "masc: 49" in farmer["note"] and ">= 50" in farmer["note"]
    nb = _row(rows, "disparity_recall", "gender_presentation", "masc-non_binary")
    assert math.isnan(nb["value"]) and nb["n_b"] == 3
    everyone = _row(rows, "disparity_recall", "gender_presentation", "masc-fem")
    assert everyone["value"] == pytest.approx(114 / 159 - 70 / 170)


def test_secondary_class_counts_as_correct(tmp_path):
    people = [person(1, 1, FULL, "nurse", "doctor"), person(2, 2, FULL, "nurse", "doctor"),
              person(3, 3, FULL, "nurse"), person(4, 4, FULL, "doctor", "nurse")]
    write_facet(tmp_path, people, [1, 2, 3, 4])
    data = load_facet(tmp_path)
    preds = {1: "doctor", 2: "farmer", 3: "doctor", 4: "nurse"}
    assert correct_flags(data, preds).tolist() == [1.0, 0.0, 0.0, 1.0]
    rows = evaluate_classification(data, preds, n_boot=50)
    assert _row(rows, "recall", "all", "all", "nurse")["value"] == pytest.approx(2 / 4)  # 1, 2, 3, 4
    assert _row(rows, "recall", "all", "all", "doctor")["value"] == pytest.approx(2 / 3)  # 1, 2, 4
    assert not [r for r in rows if r["class"] == "farmer"]  # not a class of this release: no rows


def _gap_rows(values: dict[str, float]) -> list[dict]:
    rows = []
    for cls, v in values.items():
        a, b = 0.5 + v / 2, 0.5 - v / 2
        for g, val, n in (("masc", a, 80), ("fem", b, 70)):
            rows.append({"task": "classification", "metric": "recall", "attribute": "gender_presentation",
                         "group": g, "class": cls, "value": val, "n": n, "ci_low": val - 0.1, "ci_high": val + 0.1})
        rows.append({"task": "classification", "metric": "disparity_recall", "attribute": "gender_presentation",
                     "group": "masc-fem", "class": cls, "group_a": "masc", "group_b": "fem", "value": v,
                     "n": 70, "n_a": 80, "n_b": 70, "ci_low": v - 0.05, "ci_high": v + 0.02})
    rows.append({"task": "classification", "metric": "disparity_recall", "attribute": "gender_presentation",
                 "group": "masc-fem", "class": "judge", "group_a": "masc", "group_b": "fem", "value": math.nan,
                 "n": 10, "n_a": 10, "n_b": 80, "ci_low": math.nan, "ci_high": math.nan})
    return rows


def test_largest_gaps_top_five_each_direction_sorted():
    values = {"gardener": 0.164, "craftsman": 0.136, "laborer": 0.103, "farmer": 0.05, "boatman": 0.05,
              "guard": 0.04, "lawman": 0.01, "dancer": -0.217, "retailer": -0.17, "reporter": -0.16,
              "nurse": -0.129, "judgeless": 0.0}
    gaps = largest_gaps(_gap_rows(values))
    m_f = [g for g in gaps if g["direction"] == "masc-fem"]
    f_m = [g for g in gaps if g["direction"] == "fem-masc"]
    assert [g["class"] for g in m_f] == ["gardener", "craftsman", "laborer", "boatman", "farmer"]  # tie by name
    assert [g["rank"] for g in m_f] == [1, 2, 3, 4, 5]
    assert [g["class"] for g in f_m] == ["dancer", "retailer", "reporter", "nurse"]
    assert f_m[0]["gap"] == pytest.approx(0.217) and (f_m[0]["group_a"], f_m[0]["group_b"]) == ("fem", "masc")
    assert (f_m[0]["ci_low"], f_m[0]["ci_high"]) == pytest.approx((0.217 - 0.02, 0.217 + 0.05))  # flipped
    assert (f_m[0]["n_a"], f_m[0]["n_b"]) == (70, 80)
    assert f_m[0]["recall_a"] == pytest.approx(0.5 + 0.217 / 2)
    assert m_f[0]["gap"] == pytest.approx(0.164) and (m_f[0]["n_a"], m_f[0]["n_b"]) == (80, 70)


# ------------------------------------------------------------------ predictions files
def test_csv_and_image_id_predictions_match_json(known, tmp_path):
    root, path, preds, _ = known
    data = load_facet(root)
    from_json = load_class_predictions(path, data)
    assert len(from_json) == N_SINGLE and max(from_json) < 10_000  # multi-person people ignored
    csv_path = tmp_path / "preds.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "class"])
        for p in preds:
            if p["person_id"] < 10_000:  # in this fixture image id = person id for single-person images
                w.writerow([p["person_id"], p["class"]])
    assert load_class_predictions(csv_path, data) == from_json


def _mutated(preds, how):
    items = [dict(p) for p in preds]
    if how == "no class":
        del items[3]["class"]
    elif how == "no id":
        del items[3]["person_id"]
    elif how == "unknown person":
        items[3]["person_id"] = 987654
    elif how == "unknown image":
        items[3] = {"image_id": 987654, "class": "nurse"}
    elif how == "unknown class":
        items[3]["class"] = "astronaut"
    elif how == "near class":
        items[3]["class"] = "nurses"
    elif how == "duplicate":
        items.append(dict(items[3]))
    elif how == "missing":
        del items[7]
    elif how == "string id":
        items[3]["person_id"] = "four"
    elif how == "not object":
        items[3] = [4, "nurse"]
    return items


@pytest.mark.parametrize("how, message", [
    ("no class", r"preds\.json: item 3: field class: missing \("),
    ("no id", r"preds\.json: item 3: field person_id: missing \("),
    ("unknown person", r"item 3: field person_id: 987654 is not a person of annotations\.csv \("),
    ("unknown image", r"item 3: field image_id: 987654 is not an image of coco_boxes\.json \("),
    ("unknown class", r"item 3: field class: 'astronaut' is not one of the 3 classes of this FACET release \("),
    ("near class", r"item 3: field class: 'nurses' .*did you mean 'nurse'"),
    ("duplicate", r"item 342: duplicate prediction for person 4 \(also item 3"),
    ("missing", r"preds\.json: 1 of 332 single-person people have no prediction, first person_id 8 \(image_id 8\)"),
    ("string id", r"item 3: field person_id: not an integer: 'four'"),
    ("not object", r"item 3: not an object"),
])
def test_bad_predictions_exit_2_with_one_line(known, tmp_path, monkeypatch, capsys, how, message):
    import re

    root, path, preds, _ = known
    path.write_text(json.dumps(_mutated(preds, how)))
    out = tmp_path / "out"
    code, stdout, err = run(monkeypatch, capsys, "classify", "--facet-root", str(root), "--predictions", str(path),
                            "--out", str(out))
    assert code == 2, (stdout, err)
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and re.search(message, err), err
    assert not out.exists()


@pytest.mark.parametrize("content, message", [
    (None, "file not found"), ("[{", "not valid JSON"), ('{"person_id": 1}', "expected a JSON list"),
])
def test_unreadable_predictions_file(known, tmp_path, content, message):
    root, _, _, _ = known
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_class_predictions(path, load_facet(root))


def test_unknown_model_and_bad_options_exit_2(known, tmp_path, monkeypatch, capsys):
    root, _, _, _ = known
    for extra, message in ((["--model", "clip-vit-b-32-opneai"], "clip-vit-b-32-openai"),
                           (["--model", "tiny-random-clip", "--device", "tpu"], "--device tpu"),
                           (["--model", "tiny-random-clip", "--batch-size", "0"], "--batch-size: 0"),
                           (["--model", "tiny-random-clip", "--intersect", "gender_presentation,shoe_size"],
                            "unknown attribute 'shoe_size'")):
        code, _, err = run(monkeypatch, capsys, "classify", "--facet-root", str(root), "--out", str(tmp_path / "o"),
                           *extra)
        assert code == 2 and message in err and err.startswith("error: "), (extra, err)
    assert not (tmp_path / "o").exists()


def test_both_model_and_predictions_refused(known, tmp_path, monkeypatch, capsys):
    root, path, _, _ = known
    code, _, err = run(monkeypatch, capsys, "classify", "--facet-root", str(root), "--predictions", str(path),
                       "--model", "tiny-random-clip", "--out", str(tmp_path / "o"))
    assert code == 2 and "not both" in err


# ------------------------------------------------------------------ CLI end to end
def test_classify_predictions_writes_outputs_and_gaps(known, tmp_path, monkeypatch, capsys):
    root, path, _, _ = known
    out = tmp_path / "out"
    code, stdout, err = run(monkeypatch, capsys, "classify", "--facet-root", str(root), "--predictions", str(path),
                            "--out", str(out), "--intersect", "gender_presentation,skin_tone_bucket")
    assert code == 0, err
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert _row(rows, "recall", "gender_presentation", "masc", "nurse")["value"] == pytest.approx(0.75)
    assert _row(rows, "recall", "gender_presentation&skin_tone_bucket", "fem&darker")["n"] == 170
    assert _row(rows, "disparity_recall", "gender_presentation", "masc-fem", "farmer")["value"] is None
    with open(out / "largest_gaps.csv") as fh:
        gaps = list(csv.DictReader(fh))
    gender = [(g["direction"], g["rank"], g["class"], float(g["gap"])) for g in gaps
              if g["attribute"] == "gender_presentation"]
    assert gender == [("masc-fem", "1", "nurse", pytest.approx(0.25)), ("fem-masc", "1", "doctor", pytest.approx(0.4))]
    assert "largest gaps: gender_presentation" in stdout and "person classification recall" in stdout
    assert "nurse" in stdout and "40.0" in stdout
    assert json.loads((out / "run.json").read_text())["task"] == "classification"
    assert not (out / "predictions.json").exists()


@pytest.fixture
def tiny_release(tmp_path):
    people = [person(i, i, FULL, ("nurse", "doctor", "farmer")[i % 3], None,
                     **{("gender_presentation_masc" if i % 2 else "gender_presentation_fem"): 1}) for i in range(1, 8)]
    people += [person(100, 8, FULL, "nurse"), person(101, 8, SMALL, "doctor")]  # a two-person image
    root = write_facet(tmp_path / "facet", people, list(range(1, 9)))
    write_images(root, list(range(1, 9)), size=(96, 72))
    return root


def test_model_run_round_trips_and_submits(tiny_release, tmp_path, monkeypatch, capsys, one_torch_thread):
    root = tiny_release
    out = tmp_path / "out"
    code, stdout, err = run(monkeypatch, capsys, "classify", "--facet-root", str(root), "--model", "tiny-random-clip",
                            "--out", str(out), "--device", "cpu", "--batch-size", "3", "--seed", "5")
    assert code == 0, err
    assert "random weights" in err
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["person_id"] for p in preds] == list(range(1, 8))  # single-person people only
    assert {p["class"] for p in preds} <= {"nurse", "doctor", "farmer"}
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    overall = _row(rows, "recall", "all", "all")
    expected = np.mean([p["class"] == ("nurse", "doctor", "farmer")[p["person_id"] % 3] for p in preds])
    assert overall["n"] == 7 and overall["value"] == pytest.approx(expected)
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["model"]["name"] == "tiny-random-clip" and run_info["device"] == "cpu"
    assert run_info["model"]["parameters"]["templates"][0] == "a photo of {a} {c}."

    again = tmp_path / "again"
    code, _, err = run(monkeypatch, capsys, "classify", "--facet-root", str(root), "--predictions",
                       str(out / "predictions.json"), "--out", str(again), "--seed", "5")
    assert code == 0, err
    assert (again / "metrics.json").read_text() == (out / "metrics.json").read_text()
    assert (again / "largest_gaps.csv").read_text() == (out / "largest_gaps.csv").read_text()

    sub = tmp_path / "sub.json"
    code, _, err = run(monkeypatch, capsys, "submit", str(out), "--out", str(sub))
    assert code == 0, err
    doc = json.loads(sub.read_text())
    assert doc["task"] == "classification" and doc["summary"]["metric"] == "recall"
    assert doc["summary"]["overall"]["value"] == pytest.approx(expected) and doc["data"]["annotation_checksums"]
    assert run(monkeypatch, capsys, "validate", str(sub))[0] == 0
    code, _, err = run(monkeypatch, capsys, "submit", str(again), "--out", str(tmp_path / "s2.json"))
    assert code == 2 and "--model-name" in err  # a predictions run does not know its model
    assert run(monkeypatch, capsys, "submit", str(again), "--out", str(tmp_path / "s2.json"),
               "--model-name", "rescored")[0] == 0
    page = tmp_path / "lb.html"
    assert run(monkeypatch, capsys, "leaderboard", str(sub), str(tmp_path / "s2.json"), "--out", str(page))[0] == 0
    html = page.read_text()
    assert "ranked by recall" in html and "tiny-random-clip" in html and "rescored" in html


def test_batched_prefetched_features_equal_encode_images(tiny_release, one_torch_thread):
    from PIL import Image

    from facet_eval.runners.clip import iter_image_batches
    from t2ibias.models.classifier_spec import resolve_classifier_spec
    from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier

    clf = CLIPAttributeClassifier(resolve_classifier_spec("tiny-random-clip"))
    clf.load()
    paths = sorted((tiny_release / "imgs_1").glob("sa_*.jpg"))
    batched = [encode_batch(clf, b) for b in iter_image_batches(paths, clf.preprocess, batch_size=3, workers=2)]
    assert [len(b) for b in batched] == [3, 3, 2]
    import torch

    direct = clf.encode_images([Image.open(p).convert("RGB") for p in paths])
    assert torch.allclose(torch.cat(batched), direct, atol=1e-6)
    assert torch.allclose(direct.norm(dim=1), torch.ones(len(paths)), atol=1e-5)


def test_unreadable_image_names_the_file(tiny_release, tmp_path, monkeypatch, capsys, one_torch_thread):
    bad = tiny_release / "imgs_1" / "sa_5.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    code, _, err = run(monkeypatch, capsys, "classify", "--facet-root", str(tiny_release), "--model",
                       "tiny-random-clip", "--out", str(out), "--device", "cpu", "--batch-size", "2")
    last = err.strip().splitlines()[-1]  # after progress lines, the error is one line
    assert code == 2 and last.startswith("error: ") and last.endswith("sa_5.jpg: cannot read image: not a format "
                                                                       "PIL can decode (re-download or replace the file)")
    assert not out.exists()


def test_class_prompts_use_articles():
    assert class_prompts("astronaut")[0] == "a photo of an astronaut."
    assert class_prompts("nurse")[2] == "a photo of a person who is a nurse."
    assert len(set(class_prompts("disk jockey"))) == len(class_prompts("disk jockey")) >= 3


# FACET's multi-word classes as scripts reading the release's annotations.csv spell them
UNDERSCORED = ["disk_jockey", "computer_user", "basketball_player", "soccer_player", "tennis_player"]


@pytest.fixture
def underscored_release(tmp_path):
    people = [person(i, i, FULL, cls, "tennis_player" if i == 1 else None) for i, cls in enumerate(UNDERSCORED[:4], 1)]
    people.append(person(5, 5, FULL, "disk jockey"))  # the same class, spelled with a space
    return write_facet(tmp_path / "facet", people, [1, 2, 3, 4, 5])


def test_underscored_classes_load_as_one_spelling(underscored_release):
    data = load_facet(underscored_release)
    assert data.classes == ["basketball player", "computer user", "disk jockey", "soccer player", "tennis player"]
    assert data.people["classes"].tolist()[0] == ("disk jockey", "tennis player")
    assert data.people["class1"].tolist()[-1] == "disk jockey"


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_predictions_with_either_spelling(underscored_release, tmp_path, suffix):
    data = load_facet(underscored_release)
    preds = [(1, "tennis_player"), (2, "computer user"), (3, "basketball_player"), (4, "disk_jockey"), (5, "disk  jockey")]
    path = tmp_path / f"preds{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps([{"person_id": p, "class": c} for p, c in preds]))
    else:
        path.write_text("person_id,class\n" + "".join(f"{p},{c}\n" for p, c in preds))
    got = load_class_predictions(path, data)
    assert got == {1: "tennis player", 2: "computer user", 3: "basketball player", 4: "disk jockey", 5: "disk jockey"}
    assert correct_flags(data, got).tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]  # person 1 by class2
    rows = evaluate_classification(data, got, n_boot=20)
    assert {r["class"] for r in rows if r["class"]} == set(data.classes)
    assert _row(rows, "recall", "all", "all", "disk jockey")["n"] == 2


def test_a_misspelled_class_still_fails_with_a_hint(underscored_release, tmp_path):
    path = tmp_path / "preds.json"
    path.write_text(json.dumps([{"person_id": 1, "class": "disk_jokey"}]))
    with pytest.raises(UserError, match="'disk jokey' is not one of the 5 classes .*did you mean 'disk jockey'"):
        load_class_predictions(path, load_facet(underscored_release))


def test_clip_prompts_never_hold_an_underscore(underscored_release):
    import torch

    from facet_eval.runners.clip import CLASS_TEMPLATES, class_text_embeddings

    seen: list[str] = []

    class Model:
        def encode_text(self, tokens):
            return torch.ones(len(tokens), 4)

    def tokenizer(prompts):
        seen.extend(prompts)
        return torch.zeros(len(prompts), 1)

    classes = load_facet(underscored_release).classes
    class_text_embeddings(Model(), tokenizer, classes, "cpu")
    assert len(seen) == len(classes) * len(CLASS_TEMPLATES)
    assert "a photo of a disk jockey." in seen and not [p for p in seen if "_" in p]
    assert class_prompts("disk_jockey") == class_prompts("disk jockey")
