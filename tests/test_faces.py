"""Face gates on real photos, FairFace's chip geometry, and bad input to the gates.

The dlib and MTCNN gates need the ``t2ibias[faces]`` extra and the MTCNN weight files; their tests
skip, with the reason, where those are missing. dlib's CNN is slow on a CPU, so its tests run on
downscaled images and are marked ``slow``.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2ibias.core.errors import UserError
from t2ibias.measure.gate import Box, HaarFaceGate, create_face_detector, create_gate, face_detector_unavailable
from tests.test_cli import error_line, in_process

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DLIB_MISSING = face_detector_unavailable("dlib-cnn")
MTCNN_MISSING = face_detector_unavailable("mtcnn")
needs_dlib = pytest.mark.skipif(DLIB_MISSING is not None, reason=f"dlib-cnn unavailable: {DLIB_MISSING}")
needs_mtcnn = pytest.mark.skipif(MTCNN_MISSING is not None, reason=f"mtcnn unavailable: {MTCNN_MISSING}")

#: (x, y, w, h) of the one face in each photo, drawn by hand.
ASTRONAUT = Box(177, 66, 95, 95)
HOPPER = Box(165, 130, 200, 210)
CAMERA_PROFILE = Box(180, 105, 75, 95)


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def camera() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.camera()).convert("RGB")


def hopper() -> Image.Image:
    mpl = pytest.importorskip("matplotlib.cbook", reason="matplotlib (for grace_hopper.jpg) is not installed")
    with mpl.get_sample_data("grace_hopper.jpg") as fh:
        return Image.open(fh).convert("RGB")


def lfw(n: int, size: int = 250) -> tuple[list[Image.Image], list[Image.Image]]:
    from skimage import data

    crops = data.lfw_subset()
    up = [Image.fromarray((c * 255).round().astype(np.uint8)).convert("RGB").resize((size, size), Image.BILINEAR) for c in crops]
    return up[:n], up[100 : 100 + n]


def found(boxes: list[Box], truth: Box) -> bool:
    return any(b.iou(truth) >= 0.3 for b in boxes)


# ---------------------------------------------------------------- haar: the default, unchanged


def test_haar_stays_the_default_with_its_fingerprint() -> None:
    import cv2

    from t2ibias.core.fingerprint import fingerprint
    from t2ibias.measure.gate import PersonFaceGate

    recipe = {"gate": "haar", "cascade": "haarcascade_frontalface_default.xml", "scale_factor": 1.1, "min_neighbors": 5,
              "min_size_fraction": 0.08, "padding": 0.25, "opencv": cv2.__version__}
    assert HaarFaceGate().fingerprint() == fingerprint(recipe)
    assert create_gate().fingerprint() == PersonFaceGate().fingerprint() == fingerprint(recipe)
    assert create_face_detector("haar").config() == {"kind": "haar", **{k: v for k, v in recipe.items() if k not in ("gate", "opencv")}}


def test_haar_working_size_is_an_option_off_by_default() -> None:
    big = astronaut().resize((1024, 1024), Image.BILINEAR)
    fast = HaarFaceGate(max_size=512)
    assert fast.fingerprint() != HaarFaceGate().fingerprint() and fast.config()["max_size"] == 512
    assert "max_size" not in HaarFaceGate().config()
    truth = Box(ASTRONAUT.x * 2, ASTRONAUT.y * 2, ASTRONAUT.w * 2, ASTRONAUT.h * 2)
    boxes = fast.detect(big)
    assert found(boxes, truth) and all(b.clipped(1024, 1024) == b for b in boxes), boxes
    assert HaarFaceGate(max_size=2048).detect(big) == HaarFaceGate().detect(big)  # smaller images are left alone


def test_haar_misses_the_profile_and_finds_the_frontal_faces() -> None:
    gate = create_face_detector("haar")
    assert found(gate.detect(astronaut()), ASTRONAUT)
    assert not found(gate.detect(camera()), CAMERA_PROFILE)


# ---------------------------------------------------------------- mtcnn


@needs_mtcnn
@pytest.mark.slow
def test_mtcnn_finds_every_face_of_the_photos_and_the_profile() -> None:
    gate = create_face_detector("mtcnn")
    for image, truth in ((astronaut(), ASTRONAUT), (hopper(), HOPPER), (camera(), CAMERA_PROFILE)):
        boxes = gate.detect(image)
        assert found(boxes, truth), (truth, boxes)
        assert len(boxes) == 1, boxes  # no false positive beside it
    grey = Image.new("RGB", (256, 256), (128, 128, 128))
    assert gate.detect(grey) == []


@needs_mtcnn
@pytest.mark.slow
def test_mtcnn_recall_and_false_positives_on_lfw_crops() -> None:
    faces, others = lfw(15)
    gate = create_face_detector("mtcnn")
    hits = sum(bool(b) for b in gate.detect_many(faces))
    false = sum(bool(b) for b in gate.detect_many(others))
    assert hits >= 13, hits  # the full set: see benchmarks/bench_gates.py and docs/faces.md
    assert false <= 3, false


@needs_mtcnn
def test_mtcnn_working_size_maps_boxes_back() -> None:
    from t2ibias.measure.mtcnn import MtcnnFaceGate

    big = astronaut().resize((1024, 1024), Image.BILINEAR)
    boxes = MtcnnFaceGate(max_size=512).detect(big)
    truth = Box(ASTRONAUT.x * 2, ASTRONAUT.y * 2, ASTRONAUT.w * 2, ASTRONAUT.h * 2)
    assert found(boxes, truth), boxes
    assert MtcnnFaceGate(max_size=512).fingerprint() != MtcnnFaceGate().fingerprint()


@needs_mtcnn
def test_mtcnn_fingerprint_covers_weights_and_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from t2ibias.measure.mtcnn import MtcnnFaceGate, weights_folder

    base = MtcnnFaceGate().fingerprint()
    assert MtcnnFaceGate(thresholds=(0.6, 0.7, 0.8)).fingerprint() != base
    assert MtcnnFaceGate(device="meta").fingerprint() == base  # where it runs is not what it finds
    for name in ("pnet.pt", "rnet.pt", "onet.pt"):
        shutil.copyfile(weights_folder() / name, tmp_path / name)
    monkeypatch.setenv("T2IBIAS_MTCNN_WEIGHTS", str(tmp_path))
    assert MtcnnFaceGate().fingerprint() == base  # the same bytes elsewhere
    with open(tmp_path / "onet.pt", "ab") as fh:
        fh.write(b"\0")
    assert MtcnnFaceGate().fingerprint() != base


# ---------------------------------------------------------------- dlib-cnn: FairFace's pipeline


@needs_dlib
@pytest.mark.slow
def test_dlib_cnn_finds_the_photos_faces_and_cuts_fairface_chips() -> None:
    from t2ibias.measure.dlib_faces import DlibCnnFaceGate

    gate = DlibCnnFaceGate(max_size=400, upsample=0)  # downscaled: FairFace's 800 px take ~10 s a photo
    image = astronaut()
    boxes = gate.detect(image)
    assert len(boxes) == 1 and found(boxes, ASTRONAUT), boxes
    chip = gate.crop(image, boxes[0])
    assert chip.size == (300, 300)
    boxes = gate.detect(hopper())
    assert len(boxes) == 1 and found(boxes, HOPPER), boxes


@needs_dlib
@pytest.mark.slow
def test_dlib_cnn_chip_is_fairface_predict_py_chip() -> None:
    """The chip equals what FairFace's predict.py steps make of the same image, pixel for pixel."""
    import dlib

    from t2ibias.measure.dlib_faces import DlibCnnFaceGate, model_files, working_size

    gate = DlibCnnFaceGate(max_size=400, upsample=0)
    image = astronaut()
    box = gate.detect(image)[0]
    ours = np.asarray(gate.crop(image, box))
    det_path, marks_path = model_files()
    rgb = np.asarray(image)
    cols, rows = working_size(512, 512, 400)
    work = dlib.resize_image(rgb, rows=rows, cols=cols)
    dets = dlib.cnn_face_detection_model_v1(str(det_path))(work, 0)
    shapes = dlib.full_object_detections()
    shapes.append(dlib.shape_predictor(str(marks_path))(work, dets[0].rect))
    theirs = np.asarray(dlib.get_face_chips(work, shapes, size=300, padding=0.25)[0])
    assert np.array_equal(ours, theirs)


def test_dlib_cnn_registered_with_fairface_settings() -> None:
    cfg = create_face_detector("dlib-cnn").config()
    assert cfg == {"kind": "dlib-cnn", "max_size": 800, "upsample": 1, "min_confidence": 0.0, "chip_size": 300,
                   "chip_padding": 0.25, "crop": "fairface-chip"}


def test_fairface_working_size() -> None:
    from t2ibias.measure.dlib_faces import working_size

    assert working_size(1024, 768, 800) == (800, 600)
    assert working_size(512, 512, 800) == (800, 800)  # smaller images are enlarged, as predict.py does
    assert working_size(300, 1000, 800) == (240, 800)
    assert working_size(333, 1000, 800) == (266, 800)  # truncated, not rounded


# ---------------------------------------------------------------- FairFace chip geometry


def _similar(points: np.ndarray, scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return points @ (scale * rot).T + np.asarray(shift)


def test_chip_template_is_dlibs_mean_face_padded() -> None:
    from t2ibias.measure.fairface import chip_template

    t = chip_template(300, 0.25)
    # the first point of the unit-square template (0.8596, 0.2135), padded 0.25 and scaled: (0.25 + x) / 1.5 * 300
    assert t[0] == pytest.approx([(0.25 + 0.8595674595992) * 200, (0.25 + 0.2134981538014) * 200])
    assert chip_template(100, 0.0)[4] == pytest.approx([49.01123135679, 62.77975316475])


def test_chip_transform_recovers_a_known_similarity() -> None:
    """Landmarks that are the chip template turned 30°, scaled 2× and shifted: the fit gives back
    exactly that map, and the chip's footprint is the 600 px square about the mapped chip centre."""
    from t2ibias.measure.fairface import chip_square, chip_template, chip_transform

    angle, scale, shift = math.radians(30), 2.0, (500.0, 400.0)
    marks = _similar(chip_template(), scale, angle, shift)
    t = chip_transform(marks)
    expected = np.hstack([scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]),
                          np.array([[500.0], [400.0]])])
    assert t == pytest.approx(expected, abs=1e-9)
    cx, cy, side, theta = chip_square(marks)
    # centre: the chip centre (150, 150) through the map, worked by hand
    hand_x = 500 + 2 * (150 * math.cos(angle) - 150 * math.sin(angle))
    hand_y = 400 + 2 * (150 * math.sin(angle) + 150 * math.cos(angle))
    assert (cx, cy, side, theta) == pytest.approx((hand_x, hand_y, 600.0, angle), abs=1e-9)


def test_chip_transform_refuses_other_landmark_sets() -> None:
    from t2ibias.measure.fairface import chip_transform

    with pytest.raises(UserError, match="five finite"):
        chip_transform(np.zeros((68, 2)))
    with pytest.raises(UserError, match="five finite"):
        chip_transform(np.full((5, 2), np.nan))


@needs_dlib
def test_chip_geometry_agrees_with_dlib() -> None:
    import dlib

    from t2ibias.measure.fairface import chip_square, chip_template

    marks = np.round(_similar(chip_template(), 1.37, math.radians(-12), (211.0, 143.0)))
    det = dlib.full_object_detection(dlib.rectangle(0, 0, 10, 10), [dlib.point(int(x), int(y)) for x, y in marks])
    d = dlib.get_face_chip_details(det, size=300, padding=0.25)
    cx, cy, side, theta = chip_square(marks)
    r = d.rect
    assert theta == pytest.approx(d.angle, abs=1e-9)
    assert ((r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2) == pytest.approx((cx, cy), abs=1e-6)
    assert r.right() - r.left() == pytest.approx(side - 1, abs=1e-6)  # dlib's rectangles include both edges


@needs_dlib
def test_face_chip_puts_the_landmarks_on_the_template() -> None:
    """Five bright dots drawn where the landmarks are land, in the 300 px chip, where the template says."""
    from t2ibias.measure.fairface import chip_template, face_chip

    angle, scale, shift = math.radians(20), 1.6, (260.0, 240.0)
    marks = np.round(_similar(chip_template(), scale, angle, shift))
    canvas = np.zeros((700, 700, 3), dtype=np.uint8)
    for x, y in marks.astype(int):
        canvas[y - 3 : y + 4, x - 3 : x + 4] = 255
    chip = np.asarray(face_chip(Image.fromarray(canvas), marks)).max(axis=2)
    assert chip.shape == (300, 300)
    for px, py in chip_template():
        i, j = int(round(py)), int(round(px))
        assert chip[i - 1 : i + 2, j - 1 : j + 2].max() > 200, (px, py)
    assert chip.mean() < 20  # and nothing else is bright


# ---------------------------------------------------------------- ls gates and bad input


def test_ls_gates_says_what_each_needs_and_whether_it_runs(monkeypatch, capsys) -> None:
    code, out, err = in_process(monkeypatch, capsys, "ls", "gates", "--json")
    assert code == 0, err
    items = {i["id"]: i for i in json.loads(out)}
    assert {"haar", "dlib-cnn", "mtcnn"} <= set(items)
    assert items["haar"]["available"] is True and items["haar"]["default"] is True
    assert "t2ibias[faces]" in items["dlib-cnn"]["needs"] and "facenet-pytorch" in items["mtcnn"]["needs"]
    monkeypatch.setitem(sys.modules, "dlib", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # find_spec answers None for these
    monkeypatch.delenv("T2IBIAS_MTCNN_WEIGHTS", raising=False)
    code, out, err = in_process(monkeypatch, capsys, "ls", "gates", "--json")
    items = {i["id"]: i for i in json.loads(out)}
    assert code == 0 and items["dlib-cnn"]["available"] is False and "dlib is not installed" in items["dlib-cnn"]["unavailable"]
    assert items["mtcnn"]["available"] is False and items["haar"]["available"] is True


@pytest.fixture(scope="module")
def face_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.run_fixtures import make_face_run

    return make_face_run(tmp_path_factory.mktemp("faces") / "run")[0]


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "t2ibias.lock"}


def test_unknown_face_detector_is_one_line_with_a_hint(face_run: Path, monkeypatch, capsys) -> None:
    before = _files(face_run)
    line = error_line(*in_process(monkeypatch, capsys, "measure", str(face_run), "--device", "cpu", "--face-detector", "mtcn")[::2])
    assert line.startswith("error: --face-detector: unknown face detector 'mtcn'") and "did you mean 'mtcnn'" in line, line
    assert _files(face_run) == before


def test_missing_extra_is_one_line_naming_the_install(face_run: Path, monkeypatch, capsys) -> None:
    before = _files(face_run)
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
    line = error_line(*in_process(monkeypatch, capsys, "measure", str(face_run), "--device", "cpu", "--face-detector", "dlib-cnn")[::2])
    assert "dlib-cnn: needs dlib, which is not installed" in line and "pip install 't2ibias[faces]'" in line, line
    assert _files(face_run) == before


@needs_dlib
def test_corrupt_landmark_file_is_one_line_naming_it(face_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from t2ibias.measure.dlib_faces import model_files

    det, _ = model_files()
    shutil.copyfile(det, tmp_path / det.name)
    (tmp_path / "shape_predictor_5_face_landmarks.dat").write_bytes(b"not a shape predictor" * 50)
    monkeypatch.setenv("T2IBIAS_DLIB_MODELS", str(tmp_path))
    before = _files(face_run)
    line = error_line(*in_process(monkeypatch, capsys, "measure", str(face_run), "--device", "cpu", "--face-detector", "dlib-cnn")[::2])
    assert f"{tmp_path / 'shape_predictor_5_face_landmarks.dat'}: not a dlib shape predictor file" in line, line
    assert _files(face_run) == before


def test_missing_mtcnn_weights_is_one_line(face_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("T2IBIAS_MTCNN_WEIGHTS", str(tmp_path))
    line = error_line(*in_process(monkeypatch, capsys, "measure", str(face_run), "--device", "cpu", "--face-detector", "mtcnn")[::2])
    assert "pnet.pt: no such file" in line and "pip install --no-deps facenet-pytorch" in line, line


@needs_mtcnn
def test_corrupt_mtcnn_weights_are_one_line(face_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from t2ibias.measure.mtcnn import weights_folder

    for name in ("pnet.pt", "rnet.pt"):
        shutil.copyfile(weights_folder() / name, tmp_path / name)
    (tmp_path / "onet.pt").write_bytes(b"\x80\x02garbage")
    monkeypatch.setenv("T2IBIAS_MTCNN_WEIGHTS", str(tmp_path))
    before = _files(face_run)
    line = error_line(*in_process(monkeypatch, capsys, "measure", str(face_run), "--device", "cpu", "--face-detector", "mtcnn")[::2])
    assert str(tmp_path / "onet.pt") in line, line
    assert _files(face_run) == before


def test_audit_unknown_face_detector(tmp_path: Path, monkeypatch, capsys) -> None:
    line = error_line(*in_process(monkeypatch, capsys, "audit", "--classifier", "tiny-random-clip", "--facet-root", str(tmp_path),
                                  "--out", str(tmp_path / "out"), "--device", "cpu", "--face-detector", "harr")[::2])
    assert "--face-detector: unknown face detector 'harr'" in line and "did you mean 'haar'" in line, line


# ---------------------------------------------------------------- --face-detector through the measure stage


@needs_mtcnn
@pytest.mark.slow
def test_measure_with_mtcnn_records_the_gate_and_keeps_it(face_run: Path, monkeypatch, capsys) -> None:
    from t2ibias.store.rundir import read_measurements

    code, _, err = in_process(monkeypatch, capsys, "measure", str(face_run), "--device", "cpu", "--face-detector", "mtcnn")
    assert code == 0, err
    config = json.loads((face_run / "measure.json").read_text())
    assert config["gate"]["face"]["kind"] == "mtcnn"
    assert config["gate_fingerprint"] == create_face_detector("mtcnn").fingerprint()
    rows = read_measurements(face_run)
    faces = rows[(rows["measurer"] == config["measurer"]) & (rows["unit"] == "face")]
    assert faces["key"].nunique() == 1  # the astronaut photo, and not the random-weights image
    code, _, err = in_process(monkeypatch, capsys, "measure", str(face_run), "--device", "cpu")
    assert code == 0 and json.loads((face_run / "measure.json").read_text())["gate"]["face"]["kind"] == "mtcnn"
    assert "0 images measured" in err


@needs_dlib
@pytest.mark.slow
def test_fairface_measurer_sees_fairface_chips_with_the_dlib_gate(face_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """`--face-detector dlib-cnn --also fairface:PATH`: FairFace's ResNet-34 gets 300 px aligned chips."""
    import torch
    import torchvision

    from t2ibias.measure.fairface import FairFaceResNet34
    from t2ibias.store.rundir import read_measurements

    model = torchvision.models.resnet34(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, 18)
    ckpt = tmp_path / "fairface_random.pt"
    torch.save(model.state_dict(), ckpt)
    seen: list[tuple[int, int]] = []
    measure = FairFaceResNet34.measure
    monkeypatch.setattr(FairFaceResNet34, "measure", lambda self, crops: (seen.extend(c.size for c in crops), measure(self, crops))[1])
    code, _, err = in_process(monkeypatch, capsys, "measure", str(face_run), "--device", "cpu", "--face-detector", "dlib-cnn",
                              "--also", f"fairface:{ckpt}")
    assert code == 0, err
    assert seen == [(300, 300)]  # the astronaut's one face, as FairFace's chip
    config = json.loads((face_run / "measure.json").read_text())
    assert config["gate"]["face"]["kind"] == "dlib-cnn"
    rows = read_measurements(face_run)
    fair = rows[rows["measurer"] == config["extra_measurers"]["fairface-resnet34"]]
    assert set(fair["attribute"]) >= {"race", "gender_presentation", "age_fairface"} and fair["key"].nunique() == 1
