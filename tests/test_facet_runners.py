"""Model runners: tiny random-weight models loaded by path, exactly as a user loads real weights,
produce COCO results lists that the FACET loaders accept and the evaluators score."""

from __future__ import annotations

import hashlib
import json
import math
import time

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from facet_eval.data import load_facet
from facet_eval.detection import evaluate_detection, load_predictions, match_people, rows_from_matches
from facet_eval.runners import predict_people, write_predictions
from facet_eval.runners.coco import MAX_DETS, encode_mask
from facet_eval.runners.torchvision import parse_torchvision_id
from facet_eval.segmentation import evaluate_segmentation, load_segm_predictions
from t2ibias.core.errors import UserError
from tests.facet_fixtures import person, write_facet, write_images

SIZES = {1: (128, 96), 2: (96, 128), 3: (112, 112)}  # image id → (width, height)


@pytest.fixture(scope="module")
def facet(tmp_path_factory):
    """Three images of different sizes (one with no people), person masks for two people."""
    root = tmp_path_factory.mktemp("facet")
    people = [
        person(1, 1, [10, 10, 40, 60], "nurse", gender_presentation_masc=1, skin_tone_2=1),
        person(2, 1, [60, 20, 30, 50], "doctor", gender_presentation_fem=1, skin_tone_9=1),
        person(3, 2, [5, 5, 80, 100], "farmer", gender_presentation_fem=1, skin_tone_5=1),
    ]
    write_facet(root, people, [1, 2, 3])
    ann = root / "annotations"
    coco = json.loads((ann / "coco_boxes.json").read_text())
    for im in coco["images"]:
        im["width"], im["height"] = SIZES[im["id"]]
    (ann / "coco_boxes.json").write_text(json.dumps(coco))
    masks = []
    for p in people[:2]:  # person 3 has no person mask
        w, h = SIZES[p["_image_id"]]
        m = np.zeros((h, w), dtype=np.uint8)
        x, y, bw, bh = p["_box"]
        m[y:y + bh, x:x + bw] = 1
        r = mask_utils.encode(np.asfortranarray(m))
        masks.append({"id": 100 + p["person_id"], "person_id": p["person_id"], "image_id": p["_image_id"],
                      "category_id": 1, "iscrowd": 0,
                      "segmentation": {"size": [h, w], "counts": r["counts"].decode("ascii")}})
    (ann / "coco_masks.json").write_text(json.dumps({"images": coco["images"], "annotations": masks,
                                                     "categories": [{"id": 1, "name": "person"}]}))
    for i, size in SIZES.items():
        write_images(root, [i], size=size, seed=i)
    return load_facet(root)


def _yolo_checkpoint(path, cfg, person_name="person"):
    """A random-weight checkpoint saved as ultralytics saves trained ones (names, train args)."""
    from ultralytics import YOLO

    model = YOLO(cfg)
    model.model.names = {i: (person_name if i == 0 else f"thing{i}") for i in range(len(model.names))}
    model.ckpt = {"train_args": {"imgsz": 128}}  # trained at 128 px: predictions run at 128 px (fast)
    model.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def yolo_models(yolo_env, tmp_path_factory):
    d = tmp_path_factory.mktemp("yolo")
    return {
        "det": _yolo_checkpoint(d / "det.pt", "yolo11n.yaml"),
        "seg": _yolo_checkpoint(d / "seg.pt", "yolo11n-seg.yaml"),
        "noperson": _yolo_checkpoint(d / "noperson.pt", "yolo11n.yaml", person_name="pedestrian"),
    }


def check_results(preds, data, task):
    """What a user relies on: known images, <= 100 per image, boxes inside, scores finite >= 0,
    sorted by image then score, masks at the image size."""
    sizes = {int(i): (int(w), int(h)) for i, w, h in zip(data.images["id"], data.images["width"], data.images["height"])}
    per_image: dict[int, int] = {}
    keys = []
    for d in preds:
        assert d["image_id"] in sizes
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
        w, h = sizes[d["image_id"]]
        x, y, bw, bh = d["bbox"]
        assert 0 <= x and 0 <= y and bw >= 0 and bh >= 0
        assert x + bw <= w + 1e-6 and y + bh <= h + 1e-6
        assert isinstance(d["score"], float) and math.isfinite(d["score"]) and d["score"] >= 0
        keys.append((d["image_id"], -d["score"]))
        if task == "segmentation":
            seg = d["segmentation"]
            assert isinstance(seg["counts"], str) and seg["size"] == [h, w]
            assert mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).shape == (h, w)
    assert keys == sorted(keys)
    assert all(n <= MAX_DETS for n in per_image.values())
    return per_image


def test_encode_mask_equals_pycocotools():
    rng = np.random.default_rng(0)
    h, w = 7, 9
    cases = [np.zeros((h, w), bool), np.ones((h, w), bool), rng.random((h, w)) > 0.5]
    for y0, y1, x0, x1 in [(0, 1, 0, 1), (6, 7, 8, 9), (0, 7, 3, 4), (2, 5, 0, 9), (3, 4, 8, 9), (0, 3, 0, 2)]:
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = True
        cases.append(m)
    cases += [rng.random((h, w)) > t for t in (0.9, 0.97, 0.1)]
    for m in cases:
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        got = encode_mask(m)
        assert got == {"size": [h, w], "counts": ref["counts"].decode("ascii")}
        assert (mask_utils.decode({"size": [h, w], "counts": got["counts"].encode()}) == m).all()


# ---------------------------------------------------------------- ultralytics
def test_yolo_detection_by_path_is_scored(facet, yolo_models, tmp_path):
    calls, info = [], {}
    preds = predict_people(facet, yolo_models["det"], "detection", device="cpu", batch_size=2,
                           progress=lambda done, total: calls.append((done, total)), info=info)
    per_image = check_results(preds, facet, "detection")
    assert preds, "random weights with no confidence threshold still give person boxes"
    assert set(per_image) <= {1, 2, 3}
    assert calls == [(2, 3), (3, 3)]
    p = info["parameters"]
    assert info["name"] == yolo_models["det"] and info["device"] == "cpu" and info["n_images"] == 3
    assert p["person_class"] == 0 and p["person_class_name"] == "person" and p["conf"] == 0.0
    assert p["weights_sha256"] == hashlib.sha256(open(yolo_models["det"], "rb").read()).hexdigest()
    path = write_predictions(preds, tmp_path / "out" / "preds.json")
    loaded = load_predictions(path, facet)
    assert [(d["image_id"], d["bbox"], d["score"]) for d in loaded] == [(d["image_id"], d["bbox"], d["score"]) for d in preds]
    rows = evaluate_detection(facet, loaded, n_boot=20)
    overall = next(r for r in rows if r["metric"] == "mAR" and r["attribute"] == "all" and r["class"] is None)
    assert overall["n"] == 3 and 0 <= overall["value"] <= 1
    # same model, same images: the same list (deterministic order and values)
    again = predict_people(facet, yolo_models["det"], "detection", device="cpu", batch_size=3)
    assert again == preds


def test_yolo_segmentation_masks_at_image_size(facet, yolo_models, tmp_path):
    preds = predict_people(facet, yolo_models["seg"], "segmentation", device="cpu", batch_size=4)
    per_image = check_results(preds, facet, "segmentation")
    assert set(per_image) <= {1}, "only images with a person mask are run"
    assert preds
    path = write_predictions(preds, tmp_path / "segm.json")
    loaded = load_segm_predictions(path, facet)
    assert len(loaded) == len(preds)
    rows = evaluate_segmentation(facet, loaded, n_boot=20)
    overall = next(r for r in rows if r["metric"] == "mAR" and r["attribute"] == "all" and r["class"] is None)
    assert overall["n"] == 2
    # box recall over the same (masked) people from the same run, as docs/facet_reproduce.md does
    boxes = load_predictions(path, facet)
    matched, evaluated = match_people(facet, boxes)
    has_mask = facet.people["person_id"].isin(list(facet.masks)).to_numpy()
    box_rows = rows_from_matches(facet, matched, evaluated & has_mask, n_boot=20, per_class=False)
    assert next(r for r in box_rows if r["metric"] == "mAR" and r["attribute"] == "all")["n"] == 2


def test_yolo_detector_cannot_segment(facet, yolo_models):
    with pytest.raises(UserError, match="'detect' model cannot do FACET segmentation"):
        predict_people(facet, yolo_models["det"], "segmentation", device="cpu")


def test_yolo_without_person_class(facet, yolo_models):
    with pytest.raises(UserError, match="no class is named 'person'.*person_class"):
        predict_people(facet, yolo_models["noperson"], device="cpu")
    with pytest.raises(UserError, match="person class 999 is not one of its 80 classes"):
        predict_people(facet, yolo_models["noperson"], device="cpu", person_class=999)
    preds = predict_people(facet, yolo_models["noperson"], device="cpu", person_class=0, batch_size=3)
    check_results(preds, facet, "detection")
    assert preds


def test_yolo_missing_file_and_offline_release_fail_fast(facet, yolo_env, tmp_path):
    t = time.monotonic()
    with pytest.raises(UserError, match="no such model file"):
        predict_people(facet, str(tmp_path / "nope" / "yolo.pt"), device="cpu")
    with pytest.raises(UserError, match=r"cannot load the ultralytics model.*download it where there is network"):
        predict_people(facet, "yolo11n-seg.pt", "segmentation", device="cpu")
    with pytest.raises(UserError, match="cannot load the ultralytics model"):
        predict_people(facet, "no_such_release_v0.pt", device="cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"cannot load the ultralytics model.*pass an ultralytics \.pt"):
        predict_people(facet, str(bad), device="cpu")
    assert time.monotonic() - t < 20


def test_bad_arguments(facet):
    with pytest.raises(UserError, match="unknown task"):
        predict_people(facet, "x.pt", task="classification")
    with pytest.raises(UserError, match="batch size"):
        predict_people(facet, "x.pt", batch_size=0)
    with pytest.raises(UserError, match="person class"):
        predict_people(facet, "x.pt", person_class=-1)
    with pytest.raises(UserError, match="empty id"):
        predict_people(facet, " ")


def test_resized_images_are_refused(tmp_path, yolo_models):
    root = write_facet(tmp_path, [person(1, 1, [0, 0, 10, 10])], [1])  # coco_boxes.json says 1000x1000
    write_images(root, [1], size=(64, 64))
    data = load_facet(root)
    with pytest.raises(UserError, match=r"sa_1.jpg: image is 64x64 but coco_boxes.json says 1000x1000"):
        predict_people(data, yolo_models["det"], device="cpu")


def test_unreadable_image_is_named(tmp_path, yolo_models):
    root = write_facet(tmp_path, [person(1, 1, [0, 0, 10, 10])], [1])
    write_images(root, [1], size=(1000, 1000))
    (root / "imgs_1" / "sa_1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"sa_1.jpg: cannot read the image"):
        predict_people(load_facet(root), yolo_models["det"], device="cpu")


def test_missing_images_are_named(tmp_path, yolo_models):
    root = write_facet(tmp_path, [person(1, 1, [0, 0, 10, 10])], [1, 2])
    write_images(root, [1], size=(1000, 1000))
    with pytest.raises(UserError, match=r"image 'sa_2.jpg' \(id 2\) not found"):
        predict_people(load_facet(root), yolo_models["det"], device="cpu")


# ---------------------------------------------------------------- torchvision
def test_parse_torchvision_ids(tmp_path):
    assert parse_torchvision_id("torchvision:fasterrcnn_resnet50_fpn") == ("fasterrcnn_resnet50_fpn", None)
    name, path = parse_torchvision_id(f"torchvision:maskrcnn_resnet50_fpn={tmp_path}/w.pth")
    assert name == "maskrcnn_resnet50_fpn" and path == tmp_path / "w.pth"
    with pytest.raises(UserError, match="did you mean torchvision:fasterrcnn_resnet50_fpn"):
        parse_torchvision_id("torchvision:fasterrcnn_resnet50")
    with pytest.raises(UserError, match="empty weights path"):
        parse_torchvision_id("torchvision:fasterrcnn_resnet50_fpn=")


def tiny_rcnn(masks: bool):
    """A builder with torchvision's signature that makes a tiny Faster/Mask R-CNN (fast on a CPU);
    the runner's own code (thresholds, person filter, state_dict loading, masks) is unchanged."""
    from torch import nn
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    def build(weights=None, weights_backbone=None, num_classes=91, **kwargs):
        assert weights is None and weights_backbone is None
        backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
        backbone.out_channels = 8
        extra = {"mask_roi_pool": MultiScaleRoIAlign(["0"], 14, 2), "mask_head": MaskRCNNHeads(8, (8,), 1),
                 "mask_predictor": MaskRCNNPredictor(8, 8, num_classes)} if masks else {}
        cls = MaskRCNN if masks else FasterRCNN
        return cls(backbone, min_size=96, max_size=128,
                   rpn_anchor_generator=AnchorGenerator(((16, 32, 64),), ((0.5, 1.0, 2.0),)),
                   box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), box_head=TwoMLPHead(8 * 7 * 7, 32),
                   box_predictor=FastRCNNPredictor(32, num_classes), **extra, **kwargs)

    return build


@pytest.fixture
def tiny_torchvision(monkeypatch, tmp_path, one_torch_thread):
    import torch
    import torchvision.models.detection as tvd

    monkeypatch.setattr(tvd, "fasterrcnn_resnet50_fpn", tiny_rcnn(False))
    monkeypatch.setattr(tvd, "maskrcnn_resnet50_fpn", tiny_rcnn(True))
    paths = {}
    for name, n in (("fasterrcnn_resnet50_fpn", 91), ("maskrcnn_resnet50_fpn", 91), ("fasterrcnn_resnet50_fpn", 5)):
        torch.manual_seed(0)
        net = getattr(tvd, name)(weights=None, weights_backbone=None, num_classes=n)
        paths[(name, n)] = tmp_path / f"{name}-{n}.pth"
        torch.save(net.state_dict(), paths[(name, n)])
    return paths


def test_torchvision_state_dict_detection_and_segmentation(facet, tiny_torchvision, tmp_path):
    frcnn = tiny_torchvision[("fasterrcnn_resnet50_fpn", 91)]
    preds = predict_people(facet, f"torchvision:fasterrcnn_resnet50_fpn={frcnn}", device="cpu", batch_size=2)
    per_image = check_results(preds, facet, "detection")
    # score threshold 0 and the cap applied to person boxes only: a random head gives 100 people per image
    assert per_image == {1: MAX_DETS, 2: MAX_DETS, 3: MAX_DETS}
    rows = evaluate_detection(facet, load_predictions(write_predictions(preds, tmp_path / "d.json"), facet), n_boot=20)
    assert any(r["metric"] == "AR50" and r["attribute"] == "gender_presentation" for r in rows)

    mrcnn = tiny_torchvision[("maskrcnn_resnet50_fpn", 91)]
    info = {}
    segm = predict_people(facet, f"torchvision:maskrcnn_resnet50_fpn={mrcnn}", "segmentation", device="cpu",
                          batch_size=1, info=info)
    assert info["parameters"]["weights_sha256"] == hashlib.sha256(mrcnn.read_bytes()).hexdigest()
    assert info["parameters"]["person_label"] == 1 and info["parameters"]["box_score_thresh"] == 0.0
    assert info["n_images"] == 1
    check_results(segm, facet, "segmentation")
    assert {d["image_id"] for d in segm} == {1}
    loaded = load_segm_predictions(write_predictions(segm, tmp_path / "s.json"), facet)
    evaluate_segmentation(facet, loaded, n_boot=20)
    boxes = predict_people(facet, f"torchvision:maskrcnn_resnet50_fpn={mrcnn}", "detection", device="cpu", batch_size=1)
    assert [d["bbox"] for d in boxes if d["image_id"] == 1] == [d["bbox"] for d in segm]


def test_torchvision_errors(facet, tiny_torchvision, tmp_path, monkeypatch):
    five = tiny_torchvision[("fasterrcnn_resnet50_fpn", 5)]
    with pytest.raises(UserError, match="5-class head is not COCO's.*person_class"):
        predict_people(facet, f"torchvision:fasterrcnn_resnet50_fpn={five}", device="cpu")
    with pytest.raises(UserError, match="person class 7 is not an object class of a 5-class head"):
        predict_people(facet, f"torchvision:fasterrcnn_resnet50_fpn={five}", device="cpu", person_class=7)
    preds = predict_people(facet, f"torchvision:fasterrcnn_resnet50_fpn={five}", device="cpu", person_class=3)
    check_results(preds, facet, "detection")
    frcnn = tiny_torchvision[("fasterrcnn_resnet50_fpn", 91)]
    with pytest.raises(UserError, match="has no mask head"):
        predict_people(facet, f"torchvision:fasterrcnn_resnet50_fpn={frcnn}", "segmentation", device="cpu")
    with pytest.raises(UserError, match="does not fit torchvision's maskrcnn_resnet50_fpn"):
        predict_people(facet, f"torchvision:maskrcnn_resnet50_fpn={frcnn}", device="cpu")
    with pytest.raises(UserError, match="weights file .* not found"):
        predict_people(facet, f"torchvision:fasterrcnn_resnet50_fpn={tmp_path}/missing.pth", device="cpu")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read"):
        predict_people(facet, f"torchvision:fasterrcnn_resnet50_fpn={junk}", device="cpu")


def test_torchvision_coco_weights_offline_fail_fast(facet, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached weights
    t = time.monotonic()
    with pytest.raises(UserError, match="cannot load torchvision's COCO weights.*where there is network"):
        predict_people(facet, "torchvision:fasterrcnn_resnet50_fpn", device="cpu")
    assert time.monotonic() - t < 30


@pytest.mark.slow
def test_real_fasterrcnn_architecture_from_state_dict(facet, tmp_path, one_torch_thread):
    """The paper's architecture (random weights) through the same loading path as COCO weights."""
    import torch
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    path = tmp_path / "frcnn.pth"
    torch.save(fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict(), path)
    preds = predict_people(facet, f"torchvision:fasterrcnn_resnet50_fpn={path}", device="cpu", batch_size=2)
    per_image = check_results(preds, facet, "detection")
    assert set(per_image) == {1, 2, 3}
    load_predictions(write_predictions(preds, tmp_path / "p.json"), facet)


def test_cli_detect_and_segment_with_model(facet, yolo_models, tmp_path, monkeypatch, capsys):
    """`facet-eval detect|segment --model PATH` runs the model, keeps its predictions, and scores
    exactly what re-scoring those predictions with --predictions gives; then it submits."""
    from tests.test_facet_cli import run

    root = str(facet.root)
    for task, cmd, key in (("detection", "detect", "det"), ("segmentation", "segment", "seg")):
        a, b = tmp_path / f"{cmd}-model", tmp_path / f"{cmd}-file"
        code, _, err = run(monkeypatch, capsys, cmd, "--facet-root", root, "--model", yolo_models[key], "--out", str(a),
                           "--batch-size", "2", "--device", "cpu")
        assert code == 0, err
        run_info = json.loads((a / "run.json").read_text())
        assert run_info["task"] == task and run_info["model"]["name"] == yolo_models[key]
        assert run_info["predictions"] == "predictions.json"
        code, _, err = run(monkeypatch, capsys, cmd, "--facet-root", root, "--predictions", str(a / "predictions.json"),
                           "--out", str(b))
        assert code == 0, err
        assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()
        code, _, err = run(monkeypatch, capsys, "submit", str(a), "--out", str(tmp_path / f"{cmd}.json"))
        assert code == 0, err


def test_cli_model_and_predictions_are_exclusive(facet, yolo_models, tmp_path, monkeypatch, capsys):
    from tests.test_facet_cli import run

    root = str(facet.root)
    code, _, err = run(monkeypatch, capsys, "detect", "--facet-root", root, "--out", str(tmp_path / "x"))
    assert code == 2 and "exactly one of --model" in err
    preds = write_predictions([], tmp_path / "p.json")
    code, _, err = run(monkeypatch, capsys, "detect", "--facet-root", root, "--out", str(tmp_path / "x"),
                       "--model", yolo_models["det"], "--predictions", str(preds))
    assert code == 2 and "exactly one of --model" in err
    code, _, err = run(monkeypatch, capsys, "detect", "--facet-root", root, "--out", str(tmp_path / "y"),
                       "--model", yolo_models["noperson"])
    assert code == 2 and "--person-class" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "y" / "metrics.json").exists()
