"""The measure stage: classifier specs, the face gate on real photos, tiny CLIP, and caching."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2ibias.errors import UserError
from t2ibias.measure.classifier_spec import (
    CLASSIFIER_DIR,
    CLASSIFIERS,
    PERSON_ATTRIBUTE,
    load_classifier_spec_file,
    resolve_classifier_spec,
)
from t2ibias.measure.gate import Box, HaarFaceGate

skdata = pytest.importorskip("skimage.data")

TINY = "tiny-random-clip"
# where OpenCV's frontal-face cascade finds the astronaut's face (Eileen Collins, NASA photo)
ASTRONAUT_FACE = {"x": 177, "y": 66, "w": 95}


def _astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def _camera() -> Image.Image:
    return Image.fromarray(skdata.camera()).convert("RGB")


def _grey(size: int = 128) -> Image.Image:
    return Image.new("RGB", (size, size), (128, 128, 128))


def _noise(seed: int = 0, size: int = 96) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


# -- classifier specs ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny-random-clip", "clip-vit-l-14-openai", "clip-vit-b-32-openai"])
def test_shipped_classifier_specs_load(name):
    spec = resolve_classifier_spec(name)
    assert spec.id == name
    assert PERSON_ATTRIBUTE in spec.attributes
    assert set(spec.attributes) == {"person", "gender_presentation", "age_group", "race", "race4", "skin_tone"}
    assert list(spec.attributes["gender_presentation"].labels) == ["masc", "fem"]
    assert list(spec.attributes["age_group"].labels) == ["young", "middle", "older"]
    assert list(spec.attributes["race"].labels) == [
        "white", "black", "latino_hispanic", "east_asian", "southeast_asian", "indian", "middle_eastern"]
    assert list(spec.attributes["race4"].labels) == ["white", "black", "asian", "indian"]
    assert list(spec.attributes["skin_tone"].labels) == [str(i) for i in range(1, 11)]
    for axis in ("race", "race4", "skin_tone"):
        attr = spec.attributes[axis]
        assert "perceived" in attr.description.lower() and 0 < attr.abstain_margin < 1
        assert all(len(prompts) >= 3 and len(set(prompts)) == len(prompts) for prompts in attr.labels.values())
    assert all("{}" in t for t in spec.templates)
    assert set(spec.preprocess) == {"image_size", "mean", "std", "interpolation", "resize_mode"}
    assert len(spec.fingerprint()) >= 16
    summary = spec.summary()
    assert summary["id"] == name and summary["is_random"] == (name == TINY)


def test_all_shipped_files_are_registered():
    assert set(CLASSIFIERS.names()) == {p.stem for p in CLASSIFIER_DIR.glob("*.yaml")}


def test_include_takes_templates_and_attributes_but_not_the_model():
    base = resolve_classifier_spec("clip-vit-l-14-openai")
    for name in ("clip-vit-b-32-openai", TINY):
        child = resolve_classifier_spec(name)
        assert child.templates == base.templates
        assert child.attributes == base.attributes
        assert child.arch != base.arch
    tiny = resolve_classifier_spec(TINY)
    assert tiny.preprocess["image_size"] == 64 and tiny.random_weights and tiny.pretrained == "tiny:"
    assert resolve_classifier_spec("clip-vit-b-32-openai").quick_gelu is True
    assert tiny.quick_gelu is False


TINY_YAML = (CLASSIFIER_DIR / f"{TINY}.yaml").read_text()
OWN_ATTRIBUTES = """\
templates:
  - "a photo of {}."
attributes:
  person:
    abstain_margin: 0.2
    labels:
      person: ["a person"]
      no_person: ["an empty scene"]
  gender_presentation:
    abstain_margin: 0.2
    labels:
      masc: ["a man"]
      fem: ["a woman"]
"""


def _own(tmp_path: Path, text: str, name: str = "mine") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _own_yaml() -> str:
    return TINY_YAML.replace("include: clip-vit-l-14-openai", OWN_ATTRIBUTES)


def test_local_file_with_include_and_own_file(tmp_path):
    included = load_classifier_spec_file(_own(tmp_path, TINY_YAML, "viaInclude"))
    assert included.id == "viaInclude"
    assert included.attributes == resolve_classifier_spec(TINY).attributes
    own = resolve_classifier_spec(str(_own(tmp_path, _own_yaml())))
    assert own.templates == ["a photo of {}."]
    assert list(own.attributes) == ["person", "gender_presentation"]
    assert own.attributes["gender_presentation"].labels == {"masc": ["a man"], "fem": ["a woman"]}


def test_include_of_a_sibling_file(tmp_path):
    _own(tmp_path, _own_yaml(), "parent")
    child = TINY_YAML.replace("include: clip-vit-l-14-openai", "include: parent")
    spec = load_classifier_spec_file(_own(tmp_path, child, "child"))
    assert spec.templates == ["a photo of {}."]


def test_include_of_a_missing_classifier(tmp_path):
    path = _own(tmp_path, TINY_YAML.replace("include: clip-vit-l-14-openai", "include: nowhere"))
    with pytest.raises(UserError, match=r"not found") as info:
        load_classifier_spec_file(path)
    assert str(path) in str(info.value) and "'nowhere'" in str(info.value)


def test_fingerprint_follows_what_changes_answers(tmp_path):
    ref = load_classifier_spec_file(_own(tmp_path, _own_yaml(), "a"))
    same = load_classifier_spec_file(_own(tmp_path, "# a comment\n" + _own_yaml(), "a2"))
    assert dataclasses.replace(same, id=ref.id).fingerprint() == ref.fingerprint()  # path is not part of it
    template = load_classifier_spec_file(_own(tmp_path, _own_yaml().replace("a photo of {}.", "a picture of {}."), "a"))
    assert template.fingerprint() != ref.fingerprint()
    margin = load_classifier_spec_file(_own(tmp_path, _own_yaml().replace("abstain_margin: 0.2\n    labels:\n      masc",
                                                                          "abstain_margin: 0.3\n    labels:\n      masc"), "a"))
    assert margin.attributes["gender_presentation"].abstain_margin == 0.3
    assert margin.attributes["person"].abstain_margin == 0.2
    assert margin.fingerprint() != ref.fingerprint()
    prompt = load_classifier_spec_file(_own(tmp_path, _own_yaml().replace('["a man"]', '["a man", "a boy"]'), "a"))
    assert prompt.fingerprint() != ref.fingerprint()
    gelu = dataclasses.replace(ref, quick_gelu=True)
    assert gelu.fingerprint() != ref.fingerprint()
    size = dataclasses.replace(ref, preprocess={**ref.preprocess, "image_size": 96})
    assert size.fingerprint() != ref.fingerprint()


@pytest.mark.parametrize(
    "old, new, words",
    [
        ("logit_scale: 100.0", "logit_scale: 100.0\ntemperature: 0.5", ["unknown key 'temperature'"]),
        ("  resize_mode: shortest\n", "", ["preprocess must pin", "resize_mode"]),
        ("      fem: [\"a woman\"]\n", "", ["'gender_presentation'", "at least two labels"]),
        ("arch: t2ibias-tiny-clip\n", "", ["missing key 'arch'"]),
        ('      masc: ["a man"]', "      masc: []", ["label 'masc' needs a non-empty list"]),
        ("abstain_margin: 0.2\n    labels:\n      masc", "abstain_margin: 1.5\n    labels:\n      masc", ["abstain_margin"]),
        ('  - "a photo of {}."', '  - "a photo of a person."', ["one {}"]),
        ("  person:\n    abstain_margin: 0.2\n    labels:\n      person: [\"a person\"]\n      no_person: [\"an empty scene\"]\n",
         "", ["'person' is required"]),
        ("    abstain_margin: 0.2\n    labels:\n      masc", "    colour: blue\n    labels:\n      masc", ["unknown key 'colour'"]),
    ],
)
def test_bad_classifier_files_are_user_errors_naming_the_file(tmp_path, old, new, words):
    text = _own_yaml()
    assert old in text
    path = _own(tmp_path, text.replace(old, new, 1))
    with pytest.raises(UserError) as info:
        load_classifier_spec_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    for word in words:
        assert word in message, (word, message)


def test_unknown_key_points_at_its_line(tmp_path):
    text = _own_yaml().replace("logit_scale: 100.0", "logit_scale: 100.0\ntemperature: 0.5")
    line = text.splitlines().index("temperature: 0.5") + 1
    path = _own(tmp_path, text)
    with pytest.raises(UserError, match=rf"^{path}:{line}: "):
        load_classifier_spec_file(path)


# -- the face gate -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gate() -> HaarFaceGate:
    return HaarFaceGate()


def test_gate_finds_the_astronaut_face(gate):
    boxes = gate.detect(_astronaut())
    assert len(boxes) == 1
    box = boxes[0]
    assert abs(box.x - ASTRONAUT_FACE["x"]) <= 15
    assert abs(box.y - ASTRONAUT_FACE["y"]) <= 15
    assert abs(box.w - ASTRONAUT_FACE["w"]) <= 15
    assert abs(box.h - box.w) <= 15


def test_gate_is_deterministic_and_works_on_grey_and_photos(gate):
    assert gate.detect(_astronaut()) == gate.detect(_astronaut())
    assert gate.detect(_grey()) == []
    assert gate.detect(_grey(512)) == []
    found = gate.detect(_camera())  # a man behind a camera: may or may not count as frontal
    assert all(isinstance(b, Box) for b in found)
    assert len(gate.detect(_astronaut().convert("L"))) == 1


def test_gate_returns_largest_face_first(gate):
    big = _astronaut()
    canvas = Image.new("RGB", (1024, 640), (128, 128, 128))
    canvas.paste(big, (0, 0))
    canvas.paste(big.resize((384, 384)), (600, 100))
    boxes = gate.detect(canvas)
    assert len(boxes) == 2
    assert boxes[0].area > boxes[1].area
    assert boxes[0].x < 512 <= boxes[1].x


def test_crop_is_padded_and_clipped(gate):
    image = _astronaut()
    box = gate.detect(image)[0]
    crop = gate.crop(image, box)
    pad = round(box.w * gate.padding)
    assert crop.size == (box.w + 2 * pad, box.h + 2 * round(box.h * gate.padding))
    assert crop.width > box.w and crop.height > box.h
    small = _grey(100)
    corner = gate.crop(small, Box(0, 0, 40, 40))
    assert corner.size == (50, 50)
    edge = gate.crop(small, Box(70, 80, 30, 20))
    assert edge.size == (100 - 70 + round(30 * 0.25), 100 - 80 + 5)
    whole = gate.crop(small, Box(0, 0, 100, 100))
    assert whole.size == (100, 100)


def test_gate_fingerprint_changes_with_settings(gate):
    assert gate.fingerprint() == HaarFaceGate().fingerprint()
    assert HaarFaceGate(min_neighbors=3).fingerprint() != gate.fingerprint()
    assert HaarFaceGate(padding=0.5).fingerprint() != gate.fingerprint()


# -- CLIP zero-shot ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_spec():
    return resolve_classifier_spec(TINY)


@pytest.fixture(scope="module")
def loaded(tiny_spec):
    """The tiny classifier, loaded once, and the calls it made to open_clip."""
    import open_clip

    from t2ibias.measure.clip_zeroshot import CLIPAttributeClassifier

    calls = []
    real = open_clip.create_model_and_transforms

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(open_clip, "create_model_and_transforms", spy)
        clf = CLIPAttributeClassifier(tiny_spec, "cpu")
        clf.load()
    return clf, calls


@pytest.fixture(scope="module")
def classifier(loaded):
    return loaded[0]


def _with_spec(clf, spec):
    """The loaded classifier answering under another spec with the same labels (no reload)."""
    other = copy.copy(clf)
    other.spec = spec
    return other


def _images() -> list[Image.Image]:
    return [_astronaut(), _camera(), _grey(), _noise(1)]


def test_tiny_clip_loads_a_local_safetensors_through_open_clip(loaded, tiny_spec, t2ibias_cache):
    from t2ibias.measure.clip_zeroshot import tiny_clip_checkpoint

    _, calls = loaded
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert args[0] == "t2ibias-tiny-clip"
    pretrained = Path(kwargs["pretrained"])
    assert pretrained.suffix == ".safetensors"
    assert pretrained.is_file()
    cache = Path(os.environ["T2IBIAS_CACHE"]).resolve()
    assert cache == t2ibias_cache.resolve()
    assert pretrained.resolve().is_relative_to(cache)
    assert pretrained == tiny_clip_checkpoint(tiny_spec)
    assert kwargs["force_image_size"] == 64 and kwargs["force_quick_gelu"] is False
    # the weights are a real file: loading its state dict gives a working CLIP state
    from safetensors.torch import load_file

    state = load_file(str(pretrained))
    assert "logit_scale" in state and any(k.startswith("visual.") for k in state)


def test_classify_returns_a_prediction_per_attribute(classifier, tiny_spec):
    from t2ibias.measure.clip_zeroshot import ABSTAIN

    images = _images()
    out = classifier.classify(images)
    assert len(out) == len(images)
    for preds in out:
        assert set(preds) == set(tiny_spec.attributes)
        for name, p in preds.items():
            labels = list(tiny_spec.attributes[name].labels)
            assert list(p.probs) == labels
            assert p.label in labels + [ABSTAIN]
            assert p.top_label in labels
            assert sum(p.probs.values()) == pytest.approx(1.0, abs=1e-5)
            assert all(0.0 <= v <= 1.0 for v in p.probs.values())
            ordered = sorted(p.probs.values(), reverse=True)
            assert p.score == pytest.approx(ordered[0])
            assert p.margin == pytest.approx(ordered[0] - ordered[1])
            assert p.probs[p.top_label] == pytest.approx(p.score)
            assert (p.label == ABSTAIN) == (p.margin < tiny_spec.attributes[name].abstain_margin)
    assert classifier.classify([]) == []


def test_abstains_exactly_below_the_margin(classifier, tiny_spec):
    from t2ibias.measure.clip_zeroshot import ABSTAIN

    images = _images() + [_noise(s) for s in range(2, 8)]
    margins = {name: [p[name].margin for p in classifier.classify(images)] for name in tiny_spec.attributes}
    # a threshold inside the observed margins: some images abstain, some do not
    thresholds = {name: float(np.median(m)) for name, m in margins.items()}
    attrs = {n: dataclasses.replace(a, abstain_margin=thresholds[n]) for n, a in tiny_spec.attributes.items()}
    out = _with_spec(classifier, dataclasses.replace(tiny_spec, attributes=attrs)).classify(images)
    for name in tiny_spec.attributes:
        got = [p[name] for p in out]
        assert [p.margin for p in got] == pytest.approx(margins[name], abs=1e-6)
        for p in got:
            assert (p.label == ABSTAIN) == (p.margin < thresholds[name])
            assert p.top_label != ABSTAIN
        assert any(p.label == ABSTAIN for p in got) and any(p.label != ABSTAIN for p in got)


def test_margin_099_at_low_temperature_abstains_on_everything(classifier, tiny_spec):
    from t2ibias.measure.clip_zeroshot import ABSTAIN

    # with logit_scale 1 a cosine gap is at most 2, so no margin can reach 0.99
    attrs = {n: dataclasses.replace(a, abstain_margin=0.99) for n, a in tiny_spec.attributes.items()}
    out = _with_spec(classifier, dataclasses.replace(tiny_spec, attributes=attrs, logit_scale=1.0)).classify(_images())
    assert all(p.label == ABSTAIN for preds in out for p in preds.values())
    assert all(p.top_label != ABSTAIN and p.margin < 0.99 for preds in out for p in preds.values())


def test_classify_is_deterministic_and_batch_independent(classifier):
    images = _images()[:3]
    batch = classifier.classify(images)
    again = classifier.classify(images)
    singles = [classifier.classify([img])[0] for img in images]
    for b, a, s in zip(batch, again, singles):
        assert set(b) == set(a) == set(s)
        for name in b:
            assert b[name].label == a[name].label
            np.testing.assert_array_equal(list(b[name].probs.values()), list(a[name].probs.values()))
            np.testing.assert_allclose(list(b[name].probs.values()), list(s[name].probs.values()), atol=1e-5, rtol=0)
            assert b[name].top_label == s[name].top_label


def test_missing_local_checkpoint_is_a_user_error(tiny_spec, tmp_path):
    from t2ibias.measure.clip_zeroshot import CLIPAttributeClassifier

    missing = tmp_path / "weights" / "clip.safetensors"
    spec = dataclasses.replace(tiny_spec, pretrained=str(missing), random_weights=False)
    with pytest.raises(UserError) as info:
        CLIPAttributeClassifier(spec, "cpu").load()
    message = str(info.value)
    assert "'tiny-random-clip'" in message
    assert "`pretrained:`" in message
    assert str(missing) in message
    assert "\n" not in message


def test_unknown_pretrained_tag_is_a_user_error(tiny_spec):
    from t2ibias.measure.clip_zeroshot import CLIPAttributeClassifier

    spec = dataclasses.replace(tiny_spec, pretrained="no-such-tag", random_weights=False)
    with pytest.raises(UserError, match="`pretrained:`"):
        CLIPAttributeClassifier(spec, "cpu").load()


# -- the measure stage on a tiny run -------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A generated two-image run whose second image is replaced by the astronaut photo."""
    from t2ibias.run import SweepRequest, generate_stage, prepare_run
    from t2ibias.store.image_store import ImageStore

    run = tmp_path_factory.mktemp("measure") / "run"
    req = SweepRequest(model="tiny-random-sd", prompt_sets=["demo"], n_seeds=1, limit=2, device="cpu")
    prepare_run(run, req)
    result = generate_stage(run, device="cpu")
    assert result.total == 2 and result.generated == 2
    store = ImageStore(run)
    records = store.records()
    assert len(records) == 2
    key, row = sorted(records.items())[1]
    path = run / row["path"]
    buf = io.BytesIO()
    _astronaut().save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    fixed = {**row, "sha256": _sha256(path), "width": 512, "height": 512}
    with open(run / "manifest-0.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(fixed, sort_keys=True) + "\n")
    assert ImageStore(run).records()[key]["sha256"] == fixed["sha256"]
    assert ImageStore(run).is_intact(fixed)
    return run, key


@pytest.fixture(scope="module")
def measured(tiny_run):
    from t2ibias.measure.stage import MEASUREMENTS_FILE, measure_stage

    run, face_key = tiny_run
    first = measure_stage(run, device="cpu")
    data = (run / MEASUREMENTS_FILE).read_bytes()
    second = measure_stage(run, device="cpu")
    return run, face_key, first, second, data


def _default_measurer() -> str:
    from t2ibias.measure.stage import measurer_fingerprint

    return measurer_fingerprint(HaarFaceGate(), resolve_classifier_spec(TINY))


def test_second_measure_reuses_the_cache(measured):
    from t2ibias.measure.stage import MEASUREMENTS_FILE, read_measurements

    run, _, first, second, data = measured
    assert first["measured"] == 2 and first["cached"] == 0
    assert first["faces"] >= 1
    assert second == {"measured": 0, "cached": 2, "faces": 0, "people": 0, "nobody": 0}
    assert (run / MEASUREMENTS_FILE).read_bytes() == data
    meas = read_measurements(run)
    assert set(meas["measurer"]) == {_default_measurer()}


def test_measurements_have_one_image_row_per_attribute_per_image(measured, tiny_spec):
    from t2ibias.measure.stage import COLUMNS, read_measurements
    from t2ibias.store.image_store import ImageStore

    run = measured[0]
    meas = read_measurements(run)
    assert list(meas.columns) == COLUMNS
    whole = meas[meas["unit"] == "image"]
    keys = set(ImageStore(run).records())
    assert len(whole) == len(keys) * len(tiny_spec.attributes)
    assert set(whole["key"]) == keys
    counts = whole.groupby(["key", "attribute"]).size()
    assert (counts == 1).all() and len(counts) == 2 * len(tiny_spec.attributes)
    assert (whole["face_index"] == -1).all()
    assert whole["box_x"].isna().all()
    for row in meas.itertuples():
        probs = json.loads(row.probs)
        assert list(probs) == sorted(tiny_spec.attributes[row.attribute].labels)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert row.label in [*probs, "abstain"]
        assert row.score == pytest.approx(max(probs.values()))


def test_the_astronaut_image_gets_a_face_row_with_its_box(measured, tiny_spec):
    from t2ibias.measure.stage import read_measurements

    run, face_key = measured[:2]
    meas = read_measurements(run)
    faces = meas[meas["unit"] == "face"]
    assert set(faces["key"]) == {face_key}
    face0 = faces[faces["face_index"] == 0]
    assert sorted(face0["attribute"]) == sorted(tiny_spec.attributes)
    for row in face0.itertuples():
        assert abs(row.box_x - ASTRONAUT_FACE["x"]) <= 15
        assert abs(row.box_y - ASTRONAUT_FACE["y"]) <= 15
        assert abs(row.box_w - ASTRONAUT_FACE["w"]) <= 15
        assert row.box_h > 0


def test_score_labels_the_astronaut_from_its_face(measured):
    from t2ibias.metrics.score import image_labels
    from t2ibias.run import read_spec

    run, face_key = measured[:2]
    labels = image_labels(run, read_spec(run))
    assert len(labels) == 2 * 5  # two images, five axes besides `person`
    mine = labels[labels["key"] == face_key]
    assert set(mine["person_source"]) == {"face"}
    assert set(mine["n_faces"]) == {1}
    other = labels[labels["key"] != face_key]
    assert set(other["person_source"]) <= {"clip", "none"}
    assert (other["n_faces"] == 0).all()


def test_another_classifier_measures_again_and_keeps_old_rows(measured, tmp_path):
    import shutil

    from t2ibias.measure.stage import measure_stage, read_measurements

    run = tmp_path / "copy"
    shutil.copytree(measured[0], run)
    text = TINY_YAML.replace("logit_scale: 100.0", "logit_scale: 50.0")
    path = tmp_path / "tiny-variant.yaml"
    path.write_text(text)
    before = read_measurements(run)
    result = measure_stage(run, device="cpu", classifier=str(path))
    assert result["measured"] == 2 and result["cached"] == 0
    after = read_measurements(run)
    assert len(set(after["measurer"])) == 2
    old = after[after["measurer"] == _default_measurer()].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before.reset_index(drop=True))
    assert measure_stage(run, device="cpu", classifier=str(path))["measured"] == 0
    assert measure_stage(run, device="cpu")["measured"] == 0


def test_classifier_weights_are_checked_before_a_sweep_generates(tmp_path, monkeypatch):
    """Missing CLIP weights stop the sweep up front with one line, not after hours of generation."""
    from t2ibias.measure.classifier_spec import CLASSIFIERS
    from t2ibias.measure.clip_zeroshot import ensure_classifier_weights

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    real = CLASSIFIERS.get("clip-vit-b-32-openai")
    with pytest.raises(UserError, match="clip-vit-b-32-openai.*local .pt/.safetensors"):
        ensure_classifier_weights(real)
    with pytest.raises(UserError, match="not found.*pretrained:"):
        ensure_classifier_weights(dataclasses.replace(real, pretrained=str(tmp_path / "missing.pt")))
    with pytest.raises(UserError, match="no pretrained tag 'nonsense'"):
        ensure_classifier_weights(dataclasses.replace(real, pretrained="nonsense"))
    ensure_classifier_weights(CLASSIFIERS.get("tiny-random-clip"))  # built locally: nothing to fetch


def test_measure_keeps_one_unit_length_embedding_per_image(measured):
    from t2ibias.measure.stage import EMBEDDINGS_FILE, read_measurements

    run = measured[0]
    emb = read_measurements(run, EMBEDDINGS_FILE)
    assert sorted(emb["key"]) == sorted(read_measurements(run)["key"].unique())
    assert set(emb["measurer"]) == {_default_measurer()}
    for vec in emb["embedding"]:
        assert len(vec) == 32 and abs(float(np.linalg.norm(np.asarray(vec))) - 1.0) < 1e-5  # tiny CLIP: embed_dim 32


def test_a_crash_between_the_two_writes_remeasures_without_duplicates(tiny_run, tmp_path):
    import shutil

    from t2ibias.measure.stage import EMBEDDINGS_FILE, measure_stage, read_measurements

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    measure_stage(run, device="cpu")
    rows = len(read_measurements(run))
    (run / EMBEDDINGS_FILE).unlink()  # measurements written, embeddings lost
    assert measure_stage(run, device="cpu")["measured"] == 2
    assert len(read_measurements(run)) == rows and len(read_measurements(run, EMBEDDINGS_FILE)) == 2
