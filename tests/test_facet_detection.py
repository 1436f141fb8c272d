"""FACET person detection: loading, groups, matching (against pycocotools), metrics, CLI."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys

import numpy as np
import pytest

from facet_eval.data import load_facet
from facet_eval.detection import (
    IOU_THRESHOLDS,
    evaluate_detection,
    load_predictions,
    match_people,
)
from facet_eval.disaggregate import write_outputs
from facet_eval.groups import group_membership, intersect
from t2ibias.core.errors import UserError
from tests.facet_fixtures import (
    COLUMNS,
    FULL,
    det,
    known_dataset,
    person,
    write_facet,
    write_predictions,
)


def _row(rows, metric, attribute, group, cls=None):
    hits = [r for r in rows if r["metric"] == metric and r["attribute"] == attribute and r["group"] == group
            and r["class"] == cls]
    assert len(hits) == 1, (metric, attribute, group, cls, len(hits))
    return hits[0]


def _pycoco_direct(root, pred_path):
    """Standard pycocotools run on the release files: per-person flags (T, person_id) and the eval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(root / "annotations" / "coco_boxes.json"))
        preds = json.loads(pred_path.read_text())
        dt = gt.loadRes(preds) if preds else None
        if dt is None:
            return {}, None
        ev = COCOeval(gt, dt, "bbox")
        ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    flags = {}
    for e in ev.evalImgs:
        if e is None or e["aRng"] != [0, 1e10] or e["maxDet"] != 100:
            continue
        for j, gid in enumerate(e["gtIds"]):
            flags[gid] = np.asarray(e["gtMatches"])[:, j] > 0
    return flags, ev


@pytest.fixture
def known(tmp_path):
    root, dets, expected = known_dataset(tmp_path / "facet")
    pred_path = write_predictions(tmp_path / "preds.json", dets)
    data = load_facet(root)
    return root, pred_path, data, load_predictions(pred_path, data), expected


# ------------------------------------------------------------------ data / groups
def test_load_facet_reads_people_and_images(known):
    _, _, data, preds, _ = known
    assert len(data.people) == 126 and len(data.images) == 127
    assert data.people["class2"].iloc[0] == "farmer" and data.people["class2"].iloc[1] is None
    assert data.people["classes"].iloc[0] == ("doctor", "farmer")
    assert data.classes == ["doctor", "farmer", "nurse"]
    assert list(data.people.loc[0, ["box_x", "box_y", "box_w", "box_h"]]) == FULL
    assert len(preds) == 60 - 15 + 30 + 5 + 1 + 3


def test_groups_several_mst_buckets_items_and_intersections(known):
    _, _, data, _, _ = known
    m = group_membership(data.people)
    assert list(m["gender_presentation"]) == ["masc", "fem", "non_binary", "na"]
    assert set(m) >= {"skin_tone", "hairtype", "has_eyeware", "skin_tone_bucket", "lighting", "visible"}
    assert m["skin_tone"]["1"].sum() == 30 and m["skin_tone"]["2"].sum() == 30
    assert (m["skin_tone"]["1"] & m["skin_tone"]["2"]).sum() == 30  # one person, several MST groups
    assert m["skin_tone_bucket"]["lighter"].sum() == 31  # MST 1-3
    assert m["skin_tone_bucket"]["darker"].sum() == 30  # MST 8-10
    assert m["has_eyeware"]["1"].sum() == 30 and m["has_eyeware"]["0"].sum() == 96
    assert m["hair_color"]["red"].sum() == 0
    x = intersect(m, "gender_presentation", "skin_tone_bucket")
    assert x["masc&lighter"].sum() == 30 and x["fem&darker"].sum() == 30 and x["fem&lighter"].sum() == 0
    with pytest.raises(UserError, match="unknown attribute"):
        intersect(m, "gender_presentation", "shoe_size")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows, cols: (rows, [c for c in cols if c != "bounding_box"]), r"annotations.csv:1: column bounding_box"),
        (lambda rows, cols: (rows[:1] + [{**rows[1], "bounding_box": "{'x': 1, 'y'"}] + rows[2:], cols),
         r"annotations.csv:3: column bounding_box: cannot parse"),
        (lambda rows, cols: ([{**rows[0], "bounding_box": str({"x": 0, "y": 0, "width": -5, "height": 3})}] + rows[1:], cols),
         r"annotations.csv:2: column bounding_box: negative"),
        (lambda rows, cols: ([{**rows[0], "skin_tone_3": "lots"}] + rows[1:], cols), r"annotations.csv:2: column skin_tone_3"),
    ],
)
def test_bad_annotations_are_user_errors(tmp_path, mutate, message):
    rows = [person(1, 1, FULL), person(2, 1, [50, 50, 10, 10])]
    rows, cols = mutate(rows, list(COLUMNS))
    write_facet(tmp_path, rows, [1], columns=cols)
    with pytest.raises(UserError, match=message):
        load_facet(tmp_path)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"image_id": 999, "bbox": FULL, "score": 0.5}, "image_id"),
        ({"image_id": 1, "bbox": FULL, "score": float("nan")}, "score"),
        ({"image_id": 1, "bbox": FULL, "score": -0.1}, "score"),
        ({"image_id": 1, "bbox": [0, 0, -1, 5], "score": 0.5}, "bbox"),
        ({"image_id": 1, "bbox": [0, 0, 5], "score": 0.5}, "bbox"),
        ({"image_id": 1, "bbox": FULL}, "score"),
    ],
)
def test_bad_predictions_are_user_errors(tmp_path, bad, field):
    root = write_facet(tmp_path / "f", [person(1, 1, FULL)], [1])
    path = tmp_path / "p.json"
    path.write_text(json.dumps([det(1, FULL, 0.9), bad]))
    with pytest.raises(UserError, match=rf"p\.json: item 1: field {field}"):
        load_predictions(path, load_facet(root))


# ------------------------------------------------------------------ matching vs pycocotools
def test_known_recall_per_group(known):
    _, _, data, preds, expected = known
    rows = evaluate_detection(data, preds, n_boot=200)
    for g, exp in expected.items():
        for metric in ("AR50", "AR75", "mAR"):
            r = _row(rows, metric, "gender_presentation", g)
            assert r["value"] == pytest.approx(exp[metric]), (g, metric)
            assert r["n"] == exp["n"]
            assert r["ci_low"] <= r["value"] + 1e-12 and r["value"] - 1e-12 <= r["ci_high"]
    overall = _row(rows, "mAR", "all", "all")
    assert overall["n"] == 126
    assert overall["value"] == pytest.approx((30 + 9 + 20 + 3 + 5 + 1) / 126)
    d = _row(rows, "disparity_mAR", "gender_presentation", "masc-fem")
    assert d["group_a"] == "masc" and d["group_b"] == "fem"
    assert d["value"] == pytest.approx(0.65 - 23 / 60) and d["ci_low"] < d["value"] < d["ci_high"]
    small = _row(rows, "disparity_mAR", "gender_presentation", "masc-non_binary")
    assert math.isnan(small["value"]) and "50" in small["note"]
    assert not [r for r in rows if r["metric"].startswith("disparity") and "na" in (r["group_a"], r["group_b"])]
    empty = _row(rows, "mAR", "hair_color", "red")
    assert empty["n"] == 0 and math.isnan(empty["value"])
    # per class: class1 or class2
    assert _row(rows, "mAR", "all", "all", "farmer")["n"] == 2
    assert _row(rows, "mAR", "all", "all", "doctor")["value"] == pytest.approx(1.0)
    # seeded bootstrap is reproducible
    again = evaluate_detection(data, preds, n_boot=200)
    assert _row(again, "mAR", "all", "all")["ci_low"] == overall["ci_low"]


def test_flags_and_overall_ar_equal_pycocotools(known):
    root, pred_path, data, preds, _ = known
    matched, _evaluated = match_people(data, preds)
    flags, ev = _pycoco_direct(root, pred_path)
    for i, pid in enumerate(data.people["person_id"]):
        assert np.array_equal(matched[i], flags[int(pid)]), pid
    rows = evaluate_detection(data, preds, n_boot=10)
    recall = ev.eval["recall"][:, 0, 0, -1]  # T, K=1 (class-agnostic), area all, maxDets 100
    assert _row(rows, "mAR", "all", "all")["value"] == pytest.approx(ev.stats[8])
    assert _row(rows, "mAR", "all", "all")["value"] == pytest.approx(recall.mean())
    assert _row(rows, "AR50", "all", "all")["value"] == pytest.approx(recall[0])
    assert _row(rows, "AR75", "all", "all")["value"] == pytest.approx(recall[5])


def _reference_flags(gt_boxes, dets):
    """Plain greedy matching as pycocotools does it (one image, no crowd)."""
    def iou(a, b):
        ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
        inter = ix * iy
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    order = sorted(range(len(dets)), key=lambda k: -dets[k][1])[:100]  # stable, like mergesort
    out = np.zeros((len(IOU_THRESHOLDS), len(gt_boxes)), dtype=bool)
    for t, thr in enumerate(IOU_THRESHOLDS):
        for k in order:
            best, m = min(thr, 1 - 1e-10), -1
            for g, gb in enumerate(gt_boxes):
                if out[t, g]:
                    continue
                v = iou(dets[k][0], gb)
                if v < best:
                    continue
                best, m = v, g
            if m >= 0:
                out[t, m] = True
    return out.T


def test_random_scenes_equal_pycocotools_and_reference(tmp_path):
    rng = np.random.default_rng(3)
    people, dets, pid = [], [], 0
    boxes_by_img = {}
    n_img = 40
    for img in range(1, n_img + 1):
        n_people = int(rng.integers(0, 5))
        boxes = []
        for _ in range(n_people):
            pid += 1
            b = [float(v) for v in np.round(rng.uniform([0, 0, 20, 20], [60, 60, 80, 80]))]
            boxes.append(b)
            people.append(person(pid, img, b, gender_presentation_masc=int(rng.integers(0, 2))))
        boxes_by_img[img] = boxes
        for _ in range(int(rng.integers(0, 8))):
            if boxes and rng.random() < 0.7:  # jittered copy of a person's box
                b = np.array(boxes[int(rng.integers(len(boxes)))]) + rng.normal(0, 6, 4)
                b[2:] = np.maximum(b[2:], 1)
            else:
                b = rng.uniform([0, 0, 5, 5], [80, 80, 80, 80])
            score = float(np.round(rng.uniform(), 1))  # coarse scores: many ties
            dets.append(det(img, [float(v) for v in b], score))
    # one image with 120 detections (maxDets 100 cuts the lowest scores)
    pid += 1
    people.append(person(pid, n_img + 1, FULL))
    boxes_by_img[n_img + 1] = [FULL]
    dets += [det(n_img + 1, [200, 200, 10, 10], 0.9) for _ in range(100)] + [det(n_img + 1, FULL, 0.1)] * 20
    root = write_facet(tmp_path / "f", people, list(range(1, n_img + 2)))
    pred_path = write_predictions(tmp_path / "p.json", dets)
    data = load_facet(root)
    matched, _ = match_people(data, load_predictions(pred_path, data))
    flags, _ev = _pycoco_direct(root, pred_path)
    row_of = {int(p): i for i, p in enumerate(data.people["person_id"])}
    for gid, f in flags.items():
        assert np.array_equal(matched[row_of[gid]], f), gid
    assert not matched[row_of[pid]].any()  # beyond maxDets
    for img, boxes in boxes_by_img.items():
        if not boxes:
            continue
        img_dets = [(d["bbox"], d["score"]) for d in dets if d["image_id"] == img]
        ref = _reference_flags(boxes, img_dets) if img_dets else np.zeros((len(boxes), 10), bool)
        rows = data.people.index[data.people["image_id"] == img]
        assert np.array_equal(matched[rows], ref), img
    assert matched.sum() > 20


def test_greedy_detection_between_two_people(tmp_path):
    # A and B overlap; the top detection fits A best, B gets only the lower one
    a, b = [0, 0, 100, 100], [0, 20, 100, 100]
    root = write_facet(tmp_path / "f", [person(1, 1, a), person(2, 1, b)], [1])
    data = load_facet(root)
    top = det(1, [0, 5, 100, 100], 0.9)  # IoU 0.905 with A, 0.74 with B
    low = det(1, [0, 10, 100, 100], 0.5)  # IoU 0.82 with A, 0.82 with B
    matched, _ = match_people(data, [top, low])
    assert list(matched[0]) == [t <= 0.9 + 1e-9 for t in IOU_THRESHOLDS]  # A: top det (IoU 0.905)
    # B: low det (IoU 0.818) at thresholds <= 0.8
    assert list(matched[1]) == [t <= 0.8 + 1e-9 for t in IOU_THRESHOLDS]
    flags, _ = _pycoco_direct(root, write_predictions(tmp_path / "p.json", [top, low]))
    assert np.array_equal(matched[0], flags[1]) and np.array_equal(matched[1], flags[2])


def test_no_detections(known):
    _, _, data, _, _ = known
    rows = evaluate_detection(data, [], n_boot=50)
    r = _row(rows, "mAR", "all", "all")
    # nothing found: 0, with an interval that still has width (a finite sample never proves 0)
    assert r["value"] == 0.0 and r["ci_low"] == 0.0 and 0.0 < r["ci_high"] < 0.1


# ------------------------------------------------------------------ outputs / CLI
def test_write_outputs(known, tmp_path):
    _, _, data, preds, _ = known
    rows = evaluate_detection(data, preds, n_boot=20, per_class=False)
    write_outputs(rows, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(doc["rows"]) == len(rows)
    red = next(r for r in doc["rows"] if r["attribute"] == "hair_color" and r["group"] == "red")
    assert red["value"] is None and red["class"] is None
    head = (tmp_path / "out" / "metrics.csv").read_text().splitlines()[0]
    assert head.startswith("task,metric,attribute,group,class,value,n,ci_low,ci_high")


def _cli(monkeypatch, *args):
    from facet_eval.cli import main

    monkeypatch.setattr(sys, "argv", ["facet-eval", *args])
    try:
        main()
    except SystemExit as exc:
        return exc.code or 0
    return 0


def test_cli_detect_ok_and_errors(known, tmp_path, monkeypatch, capsys):
    root, pred_path, _, _, _ = known
    out = tmp_path / "out"
    code = _cli(monkeypatch, "detect", "--facet-root", str(root), "--predictions", str(pred_path), "--out", str(out),
                "--intersect", "gender_presentation,skin_tone_bucket")
    assert code == 0, capsys.readouterr()
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert any(r["attribute"] == "gender_presentation&skin_tone_bucket" and r["group"] == "masc&lighter" for r in rows)
    capsys.readouterr()
    assert _cli(monkeypatch, "detect", "--facet-root", str(root), "--out", str(out)) == 2  # --predictions is required
    assert "--predictions" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 99999, "bbox": FULL, "score": 1}]))
    assert _cli(monkeypatch, "detect", "--facet-root", str(root), "--predictions", str(bad), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "image_id" in err and len(err.strip().splitlines()) == 1
    assert _cli(monkeypatch, "detect", "--facet-root", str(tmp_path / "nowhere"), "--predictions", str(pred_path),
                "--out", str(out)) == 2
    assert _cli(monkeypatch, "--version") == 0
    assert "facet-eval" in capsys.readouterr().out
