"""FACET person segmentation: masked people only, matching equal to pycocotools segm, CLI."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from facet_eval.data import load_facet
from facet_eval.segmentation import (
    evaluate_segmentation,
    load_segm_predictions,
    match_people_segm,
)
from t2ibias.core.errors import UserError
from tests.facet_fixtures import person, write_facet, write_predictions

H = W = 32


def rle(y0: int, y1: int, x0: int, x1: int) -> dict:
    """RLE (JSON-ready) of the rectangle rows y0..y1-1, columns x0..x1-1 of an H x W image."""
    m = np.zeros((H, W), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    r = mask_utils.encode(np.asfortranarray(m))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


GT = (0, 20, 0, 10)  # 200 px
IOU_075 = (0, 15, 0, 10)  # 150/200: matched at 0.50 ... 0.75 (6 of 10)
IOU_060 = (0, 12, 0, 10)  # 120/200: matched at 0.50, 0.55, 0.60 (3 of 10)


def sdet(image_id: int, box: tuple[int, int, int, int], score: float) -> dict:
    return {"image_id": image_id, "segmentation": rle(*box), "score": score, "category_id": 1}


def write_masks(root, people, masked_pids, extra=()):
    """coco_masks.json: person masks for ``masked_pids`` (from ``_mask``), plus ``extra`` annotations."""
    ann = root / "annotations"
    coco = json.loads((ann / "coco_boxes.json").read_text())
    for im in coco["images"]:
        im["width"], im["height"] = W, H
    (ann / "coco_boxes.json").write_text(json.dumps(coco))
    anns = [{"id": 10_000 + p["person_id"], "person_id": p["person_id"], "image_id": p["_image_id"],
             "segmentation": rle(*p["_mask"]), "category_id": 1, "iscrowd": 0}
            for p in people if p["person_id"] in masked_pids]
    anns += list(extra)
    doc = {"images": coco["images"], "annotations": anns,
           "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "hair"}]}
    (ann / "coco_masks.json").write_text(json.dumps(doc))


def known_segm(root):
    """masc (60 masked): 30 exact, 15 at IoU 0.75, 15 missed → AR50 .75, AR75 .75, mAR .65.
    fem (60 masked): 20 exact, 10 at IoU 0.6, 30 missed → .5, 1/3, 23/60.
    25 more masc people have no person mask (perfect or no predictions): excluded everywhere;
    one of them has only a hair mask."""
    people, dets, masked, img = [], [], set(), 0

    def add(kind, attrs, has_mask=True):
        nonlocal img
        img += 1
        p = person(img, img, [0, 0, 10, 20], **attrs)
        p["_mask"] = GT
        people.append(p)
        if has_mask:
            masked.add(img)
        if kind == "exact":
            dets.append(sdet(img, GT, 0.9))
        elif kind == "075":
            dets.append(sdet(img, IOU_075, 0.8))
        elif kind == "060":
            dets.append(sdet(img, IOU_060, 0.7))

    for k in range(60):
        add("exact" if k < 30 else "075" if k < 45 else "miss", {"gender_presentation_masc": 1, "skin_tone_2": 1})
    for k in range(60):
        add("exact" if k < 20 else "060" if k < 30 else "miss", {"gender_presentation_fem": 1, "skin_tone_9": 1})
    for k in range(25):
        add("exact" if k < 10 else "miss", {"gender_presentation_masc": 1, "skin_tone_2": 1}, has_mask=False)
    write_facet(root, people, list(range(1, img + 1)))
    hair = {"id": 99_999, "person_id": img, "image_id": img, "segmentation": rle(0, 5, 0, 5), "category_id": 2}
    write_masks(root, people, masked, extra=[hair])
    return root, dets


def _pycoco_segm(root, preds):
    """Direct pycocotools segm COCOeval on the person masks: flags per person_id."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    doc = json.loads((root / "annotations" / "coco_masks.json").read_text())
    doc["annotations"] = [dict(a, area=float(mask_utils.area(a["segmentation"])), iscrowd=0)
                          for a in doc["annotations"] if a["category_id"] == 1]
    pid_of = {a["id"]: a["person_id"] for a in doc["annotations"]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = doc
        gt.createIndex()
        dt = gt.loadRes([dict(d, category_id=1) for d in preds])
        ev = COCOeval(gt, dt, "segm")
        ev.params.useCats = 0
        ev.evaluate()
    flags = {}
    for e in ev.evalImgs:
        if e is None or e["aRng"] != [0, 1e10] or e["maxDet"] != 100:
            continue
        for j, gid in enumerate(e["gtIds"]):
            flags[pid_of[gid]] = np.asarray(e["gtMatches"])[:, j] > 0
    return flags


def _row(rows, metric, attribute, group, cls=None):
    hits = [r for r in rows if r["metric"] == metric and r["attribute"] == attribute and r["group"] == group
            and r["class"] == cls]
    assert len(hits) == 1
    return hits[0]


@pytest.fixture
def known(tmp_path):
    root, dets = known_segm(tmp_path / "facet")
    path = write_predictions(tmp_path / "preds.json", dets)
    data = load_facet(root)
    return root, path, data, load_segm_predictions(path, data), dets


def test_known_recall_masked_people_only(known):
    _, _, data, preds, _ = known
    assert len(data.masks) == 120  # the hair mask is not a person mask
    rows = evaluate_segmentation(data, preds, n_boot=100)
    assert {r["task"] for r in rows} == {"segmentation"}
    exp = {"masc": (0.75, 0.75, 0.65), "fem": (0.5, 1 / 3, 23 / 60)}
    for g, vals in exp.items():
        for metric, v in zip(("AR50", "AR75", "mAR"), vals):
            r = _row(rows, metric, "gender_presentation", g)
            assert r["value"] == pytest.approx(v) and r["n"] == 60, (g, metric)
    assert _row(rows, "mAR", "all", "all")["n"] == 120
    assert _row(rows, "mAR", "skin_tone", "2")["n"] == 60
    d = _row(rows, "disparity_mAR", "gender_presentation", "masc-fem")
    assert d["value"] == pytest.approx(0.65 - 23 / 60)
    assert math.isnan(_row(rows, "mAR", "gender_presentation", "non_binary")["value"])


def test_flags_equal_pycocotools_segm(known):
    root, _, data, preds, dets = known
    matched, evaluated = match_people_segm(data, preds)
    flags = _pycoco_segm(root, dets)
    assert len(flags) == 120
    for i, pid in enumerate(data.people["person_id"]):
        if int(pid) in flags:
            assert evaluated[i] and np.array_equal(matched[i], flags[int(pid)]), pid
        else:
            assert not evaluated[i] and not matched[i].any()


def test_random_overlapping_scenes_equal_pycocotools(tmp_path):
    rng = np.random.default_rng(7)
    people, dets, masked, pid = [], [], set(), 0
    n_img = 30
    for img in range(1, n_img + 1):
        rects = []
        for _ in range(int(rng.integers(0, 4))):
            pid += 1
            y0, x0 = (int(v) for v in rng.integers(0, 16, 2))
            r = (y0, y0 + int(rng.integers(6, 16)), x0, x0 + int(rng.integers(6, 16)))
            p = person(pid, img, [r[2], r[0], r[3] - r[2], r[1] - r[0]], gender_presentation_fem=int(rng.integers(0, 2)))
            p["_mask"] = r
            people.append(p)
            rects.append(r)
            if rng.random() < 0.7:
                masked.add(pid)
        for _ in range(int(rng.integers(0, 6))):
            if rects and rng.random() < 0.8:
                r = np.array(rects[int(rng.integers(len(rects)))]) + rng.integers(-3, 4, 4)
                r = np.clip(r, 0, H)
            else:
                r = np.sort(rng.integers(0, H, 2)).tolist() + np.sort(rng.integers(0, W, 2)).tolist()
            dets.append(sdet(img, tuple(int(v) for v in r), float(np.round(rng.uniform(), 1))))
    root = write_facet(tmp_path / "f", people, list(range(1, n_img + 1)))
    write_masks(root, people, masked)
    path = write_predictions(tmp_path / "p.json", dets)
    data = load_facet(root)
    matched, evaluated = match_people_segm(data, load_segm_predictions(path, data))
    flags = _pycoco_segm(root, dets)
    row_of = {int(p): i for i, p in enumerate(data.people["person_id"])}
    assert set(flags) == masked and evaluated.sum() == len(masked)
    for p, f in flags.items():
        assert np.array_equal(matched[row_of[p]], f), p
    assert matched.sum() > 20


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"image_id": 999, "segmentation": rle(*GT), "score": 0.5}, "field image_id"),
        ({"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, "field segmentation: missing"),
        ({"image_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]], "score": 0.5}, "not an RLE dict"),
        ({"image_id": 1, "segmentation": {"size": [H, W], "counts": "\x01\x02"}, "score": 0.5}, "not a valid compressed"),
        ({"image_id": 1, "segmentation": {"size": [H, W], "counts": [5, 3]}, "score": 0.5}, "run lengths cover 8"),
        ({"image_id": 1, "segmentation": {"size": [H], "counts": "0"}, "score": 0.5}, "size must be"),
        ({"image_id": 1, "segmentation": {"size": [8, 8], "counts": [64]}, "score": 0.5}, "differs from image 1"),
        ({"image_id": 1, "segmentation": rle(*GT), "score": float("nan")}, "field score"),
    ],
)
def test_bad_predictions_are_user_errors(known, tmp_path, bad, message):
    _, _, data, _, _ = known
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([sdet(1, GT, 0.9), bad]))
    with pytest.raises(UserError, match=rf"bad\.json: item 1: .*{message}") as info:
        load_segm_predictions(path, data)
    assert "\n" not in str(info.value)


def test_uncompressed_rle_is_accepted(known, tmp_path):
    _, _, data, _, _ = known
    m = np.zeros((H, W), dtype=np.uint8)
    m[0:20, 0:10] = 1
    runs = [0] + [20, 12] * 9 + [20, H * W - 20 * 10 - 12 * 9]  # column-major runs of the GT rectangle
    assert sum(runs) == H * W
    path = write_predictions(tmp_path / "u.json", [{"image_id": 1, "segmentation": {"size": [H, W], "counts": runs},
                                                     "score": 1.0}])
    (pred,) = load_segm_predictions(path, data)
    assert np.array_equal(mask_utils.decode(pred["segmentation"]), m)


def _cli(monkeypatch, *args):
    from facet_eval.cli import main

    monkeypatch.setattr(sys, "argv", ["facet-eval", *args])
    try:
        main()
    except SystemExit as exc:
        return exc.code or 0
    return 0


def test_cli_segment(known, tmp_path, monkeypatch, capsys):
    root, path, _, _, _ = known
    out = tmp_path / "out"
    code = _cli(monkeypatch, "segment", "--facet-root", str(root), "--predictions", str(path), "--out", str(out),
                "--intersect", "gender_presentation,skin_tone_bucket")
    assert code == 0, capsys.readouterr()
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    r = next(r for r in rows if r["metric"] == "mAR" and r["attribute"] == "gender_presentation&skin_tone_bucket"
             and r["group"] == "masc&lighter" and r["class"] is None)
    assert r["task"] == "segmentation" and r["n"] == 60 and r["value"] == pytest.approx(0.65)
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "segmentation": {"size": [H, W], "counts": "!!"}, "score": 1}]))
    assert _cli(monkeypatch, "segment", "--facet-root", str(root), "--predictions", str(bad), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "segmentation" in err and len(err.strip().splitlines()) == 1
