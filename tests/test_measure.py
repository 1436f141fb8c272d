"""The measure stage: classifier specs, the face gate on real photos, tiny CLIP, and caching."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2ibias.core.errors import UserError
from t2ibias.models.classifier_spec import (
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

    from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier

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
    from t2ibias.models.clip_zeroshot import tiny_clip_checkpoint

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
    from t2ibias.models.clip_zeroshot import ABSTAIN

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
    from t2ibias.models.clip_zeroshot import ABSTAIN

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
    from t2ibias.models.clip_zeroshot import ABSTAIN

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
    from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier

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
    from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier

    spec = dataclasses.replace(tiny_spec, pretrained="no-such-tag", random_weights=False)
    with pytest.raises(UserError, match="`pretrained:`"):
        CLIPAttributeClassifier(spec, "cpu").load()


# -- the measure stage on a tiny run -------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A generated two-image run whose second image is replaced by the astronaut photo."""
    from tests.run_fixtures import make_face_run

    return make_face_run(tmp_path_factory.mktemp("measure") / "run")


@pytest.fixture(scope="module")
def measured(tiny_run):
    from t2ibias.store.rundir import MEASUREMENTS_FILE
    from t2ibias.measure.stage import measure_stage

    run, face_key = tiny_run
    first = measure_stage(run, device="cpu")
    data = (run / MEASUREMENTS_FILE).read_bytes()
    second = measure_stage(run, device="cpu")
    return run, face_key, first, second, data


def _default_measurer() -> str:
    from t2ibias.measure.stage import measurer_fingerprint

    return measurer_fingerprint(HaarFaceGate(), resolve_classifier_spec(TINY))


def test_second_measure_reuses_the_cache(measured):
    from t2ibias.store.rundir import MEASUREMENTS_FILE
    from t2ibias.store.rundir import read_measurements

    run, _, first, second, data = measured
    assert first["measured"] == 2 and first["cached"] == 0
    assert first["faces"] >= 1
    assert second == {"measured": 0, "cached": 2, "faces": 0, "people": 0, "nobody": 0}
    assert (run / MEASUREMENTS_FILE).read_bytes() == data
    meas = read_measurements(run)
    assert set(meas["measurer"]) == {_default_measurer()}


def test_measurements_have_one_image_row_per_attribute_per_image(measured, tiny_spec):
    from t2ibias.store.rundir import COLUMNS, read_measurements
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
    from t2ibias.store.rundir import read_measurements

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
    from t2ibias.store.rundir import RunDir

    run, face_key = measured[:2]
    labels = image_labels(RunDir(run))
    assert len(labels) == 2 * 5  # two images, five axes besides `person`
    mine = labels[labels["key"] == face_key]
    assert set(mine["person_source"]) == {"face"}
    assert set(mine["n_faces"]) == {1}
    other = labels[labels["key"] != face_key]
    assert set(other["person_source"]) <= {"clip", "none"}
    assert (other["n_faces"] == 0).all()


def test_another_classifier_measures_again_and_keeps_old_rows(measured, tmp_path):
    import shutil

    from t2ibias.measure.stage import measure_stage
    from t2ibias.store.rundir import read_measurements

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
    from t2ibias.models.classifier_spec import CLASSIFIERS
    from t2ibias.models.clip_zeroshot import ensure_classifier_weights

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
    from t2ibias.store.rundir import read_measurements
    from t2ibias.store.rundir import EMBEDDINGS_FILE

    run = measured[0]
    emb = read_measurements(run, EMBEDDINGS_FILE)
    assert sorted(emb["key"]) == sorted(read_measurements(run)["key"].unique())
    assert set(emb["measurer"]) == {_default_measurer()}
    for vec in emb["embedding"]:
        assert len(vec) == 32 and abs(float(np.linalg.norm(np.asarray(vec))) - 1.0) < 1e-5  # tiny CLIP: embed_dim 32


def test_a_crash_between_the_two_writes_remeasures_without_duplicates(tiny_run, tmp_path):
    import shutil

    from t2ibias.measure.stage import measure_stage
    from t2ibias.store.rundir import read_measurements
    from t2ibias.store.rundir import EMBEDDINGS_FILE

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    measure_stage(run, device="cpu")
    rows = len(read_measurements(run))
    (run / EMBEDDINGS_FILE).unlink()  # measurements written, embeddings lost
    assert measure_stage(run, device="cpu")["measured"] == 2
    assert len(read_measurements(run)) == rows and len(read_measurements(run, EMBEDDINGS_FILE)) == 2


# -- label vocabularies and the temperature ------------------------------------------------------

@pytest.mark.parametrize("old, new, label, allowed", [
    ('      fem: ["a woman"]', '      female: ["a woman"]', "female", "masc, fem"),
    ('      masc: ["a man"]', '      male: ["a man"]', "male", "masc, fem"),
])
def test_unknown_label_of_a_known_attribute_points_at_its_line(tmp_path, old, new, label, allowed):
    text = _own_yaml().replace(old, new)
    line = text.splitlines().index(new) + 1
    path = _own(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_classifier_spec_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert f"unknown label {label!r}" in message and allowed in message and "\n" not in message


def test_unknown_skin_tone_label_and_unquoted_numbers(tmp_path):
    tones = "".join(f'      "{i}": ["skin tone {i}"]\n' for i in range(1, 11))
    good = _own_yaml() + "  skin_tone:\n    labels:\n" + tones
    spec = load_classifier_spec_file(_own(tmp_path, good, "tones"))
    assert list(spec.attributes["skin_tone"].labels) == [str(i) for i in range(1, 11)]
    unquoted = load_classifier_spec_file(_own(tmp_path, good.replace('"3":', "3:"), "tones2"))
    assert "3" in unquoted.attributes["skin_tone"].labels  # YAML ints become the same label names
    bad = good.replace('"10":', '"11":')
    path = _own(tmp_path, bad, "tones3")
    with pytest.raises(UserError, match=r"unknown label '11' of attribute 'skin_tone' \(use one of: 1, 2, .*10"):
        load_classifier_spec_file(path)


def test_unknown_label_in_an_included_file_names_that_file(tmp_path):
    _own(tmp_path, _own_yaml().replace('      fem: ["a woman"]', '      woman: ["a woman"]'), "parent")
    child = _own(tmp_path, TINY_YAML.replace("include: clip-vit-l-14-openai", "include: parent"), "child")
    with pytest.raises(UserError, match=rf"^{tmp_path / 'parent.yaml'}:\d+: unknown label 'woman'"):
        load_classifier_spec_file(child)


def test_attributes_without_a_known_vocabulary_take_any_labels(tmp_path):
    text = _own_yaml() + '  hair:\n    labels:\n      short: ["short hair"]\n      long: ["long hair"]\n'
    assert list(load_classifier_spec_file(_own(tmp_path, text)).attributes["hair"].labels) == ["short", "long"]


@pytest.mark.parametrize("value", ["0", "-5", "hot"])
def test_logit_scale_must_be_positive(tmp_path, value):
    path = _own(tmp_path, _own_yaml().replace("logit_scale: 100.0", f"logit_scale: {value}"))
    with pytest.raises(UserError, match=rf"^{path}:\d+: logit_scale must be a positive number"):
        load_classifier_spec_file(path)


# -- cached text embeddings ----------------------------------------------------------------------

def test_text_embeddings_are_cached_on_disk_and_reused(classifier, tiny_spec, monkeypatch):
    from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier, text_cache_path, tiny_clip_checkpoint

    path = text_cache_path(tiny_spec, str(tiny_clip_checkpoint(tiny_spec)), "cpu")
    assert path.is_file()  # written by the module's first load
    calls = []

    def no_text(self, *args, **kwargs):
        calls.append(args)
        raise AssertionError("encode_text called although the embeddings are cached")

    monkeypatch.setattr(type(classifier.model), "encode_text", no_text)
    again = CLIPAttributeClassifier(tiny_spec, "cpu")
    again.load()
    assert calls == []
    assert set(again._text) == set(tiny_spec.attributes)
    for name, emb in classifier._text.items():
        assert again._text[name].dtype == emb.dtype
        assert bool((again._text[name] == emb).all())
    assert [p["gender_presentation"].probs for p in again.classify(_images())] == \
        [p["gender_presentation"].probs for p in classifier.classify(_images())]


def test_text_cache_key_follows_prompts_weights_and_device(tiny_spec, tmp_path):
    from t2ibias.models.clip_zeroshot import text_cache_path, tiny_clip_checkpoint

    weights = str(tiny_clip_checkpoint(tiny_spec))
    base = text_cache_path(tiny_spec, weights, "cpu")
    other_prompts = dataclasses.replace(tiny_spec, templates=["a picture of {}."])
    assert text_cache_path(other_prompts, weights, "cpu") != base
    assert text_cache_path(tiny_spec, weights, "cuda:1") != base
    assert text_cache_path(tiny_spec, "openai", "cpu") != base
    copy_ = tmp_path / "copy.safetensors"
    copy_.write_bytes(Path(weights).read_bytes())
    assert text_cache_path(tiny_spec, str(copy_), "cpu") == base  # same bytes, same key
    copy_.write_bytes(Path(weights).read_bytes() + b" ")
    assert text_cache_path(tiny_spec, str(copy_), "cpu") != base


def test_a_changed_prompt_is_encoded_again(classifier, tiny_spec, monkeypatch):
    from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier

    real = type(classifier.model).encode_text
    calls = []

    def spy(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(classifier.model), "encode_text", spy)
    attrs = dict(tiny_spec.attributes)
    attrs["person"] = dataclasses.replace(attrs["person"], labels={"person": ["someone"], "no_person": ["nothing"]})
    changed = CLIPAttributeClassifier(dataclasses.replace(tiny_spec, attributes=attrs), "cpu")
    changed.load()
    assert calls
    assert not bool((changed._text["person"] == classifier._text["person"]).all())


# -- the YOLO person gate ------------------------------------------------------------------------

TINY_CONF = 1e-4  # random weights score every box near 1e-4: a tiny threshold makes them find "people"


@pytest.fixture(scope="module")
def tiny_yolo(tmp_path_factory) -> Path:
    """A random-weight YOLO11n whose class 0 is "person", saved to a .pt file (built from config, offline)."""
    root = tmp_path_factory.mktemp("yolo")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "config"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch

    from t2ibias.measure.gate import ultralytics_yolo

    YOLO = ultralytics_yolo()
    torch.manual_seed(0)
    model = YOLO("yolo11n.yaml")
    model.model.names = {0: "person", **{i: f"class{i}" for i in range(1, 80)}}
    path = root / "person-yolo.pt"
    model.save(str(path))
    return path


def _gated_astronaut() -> Image.Image:
    """The astronaut at the left of a grey canvas."""
    canvas = Image.new("RGB", (768, 512), (128, 128, 128))
    canvas.paste(_astronaut(), (0, 0))
    return canvas


def test_yolo_gate_loads_a_local_file_and_finds_people_boxes(tiny_yolo):
    from t2ibias.measure.gate import YoloPersonGate

    gate = YoloPersonGate(str(tiny_yolo), conf=TINY_CONF)
    image = _gated_astronaut()
    boxes = gate.detect(image)
    assert boxes and all(isinstance(b, Box) for b in boxes)
    assert all(b.w > 0 and b.h > 0 and b.x >= 0 and b.y >= 0 and b.x + b.w <= 768 and b.y + b.h <= 512 for b in boxes)
    assert [b.area for b in boxes] == sorted((b.area for b in boxes), reverse=True)
    assert all(a.iou(b) <= gate.iou for i, a in enumerate(boxes) for b in boxes[i + 1 :])  # duplicates suppressed
    assert len(boxes) <= gate.max_people
    assert gate.detect(image) == boxes  # deterministic
    batch = gate.detect_many([_grey(64), image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert batch[1] == boxes  # batch-mates of other sizes change nothing
    assert YoloPersonGate(str(tiny_yolo), conf=1.0).detect(image) == []
    crop = gate.crop(image, boxes[0])
    assert crop.size == (boxes[0].w, boxes[0].h)
    # ultralytics' process-wide Image.open patch is undone: unreadable files raise PIL's own error
    with pytest.raises(Exception) as info:
        Image.open(io.BytesIO(b"not an image"))
    assert type(info.value).__module__.startswith("PIL")


def test_yolo_gate_fingerprint_follows_settings_and_weight_bytes(tiny_yolo, tmp_path):
    from t2ibias.measure.gate import YoloPersonGate

    base = YoloPersonGate(str(tiny_yolo), conf=TINY_CONF)
    assert base.fingerprint() == YoloPersonGate(str(tiny_yolo), conf=TINY_CONF, device="cuda").fingerprint()
    assert YoloPersonGate(str(tiny_yolo), conf=0.5).fingerprint() != base.fingerprint()
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(tiny_yolo.read_bytes())
    assert YoloPersonGate(str(moved), conf=TINY_CONF).weights_identity() == base.weights_identity()
    assert base.config() == {"kind": "yolo", "weights": str(tiny_yolo), "conf": TINY_CONF, "iou": 0.7,
                             "imgsz": 640, "max_people": 20}


def test_yolo_gate_bad_weights_are_user_errors(tiny_yolo, tmp_path, monkeypatch):
    import torch

    from t2ibias.measure.gate import YoloPersonGate, ultralytics_yolo

    YOLO = ultralytics_yolo()

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    with pytest.raises(UserError, match=r"yolo11n\.pt: not a local file and ultralytics is offline"):
        YoloPersonGate("yolo11n.pt").detect(_grey())
    with pytest.raises(UserError, match="no such file"):
        YoloPersonGate(str(tmp_path / "missing" / "w.pt")).detect(_grey())
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.pt: cannot load YOLO weights"):
        YoloPersonGate(str(junk)).detect(_grey())
    torch.manual_seed(0)
    cars = YOLO("yolo11n.yaml")
    cars.model.names = {i: f"car{i}" for i in range(80)}
    path = tmp_path / "cars.pt"
    cars.save(str(path))
    with pytest.raises(UserError, match="no 'person' class"):
        YoloPersonGate(str(path)).detect(_grey())
    with pytest.raises(UserError, match=r"confidence 1\.5"):
        YoloPersonGate(str(tiny_yolo), conf=1.5)


def test_person_face_gate_searches_faces_inside_people(tiny_yolo, gate):
    from t2ibias.measure.gate import PersonFaceGate, YoloPersonGate

    assert PersonFaceGate().fingerprint() == gate.fingerprint()  # runs measured before person gates keep their rows
    combined = PersonFaceGate(person=YoloPersonGate(str(tiny_yolo), conf=TINY_CONF))
    assert combined.fingerprint() != gate.fingerprint()
    image = _gated_astronaut()
    (people, faces), = combined.detect_many([image])
    assert people == combined.person.detect(image)
    assert all(any(p.contains(f) for p in people) for f in faces)
    assert len({(f.x, f.y) for f in faces}) == len(faces)
    assert all(a.iou(b) <= 0.5 for i, a in enumerate(faces) for b in faces[i + 1 :])
    nobody = PersonFaceGate(person=YoloPersonGate(str(tiny_yolo), conf=1.0))
    assert nobody.detect_many([image]) == [([], [])]  # no person box: no face search either


# -- the stage with a person gate, crop measurers and imported rows --------------------------------

def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    import shutil

    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def test_person_gate_measures_people_and_is_recorded_for_score(measured, tiny_yolo, tmp_path, tiny_spec):
    from t2ibias.measure.gate import PersonFaceGate, YoloPersonGate
    from t2ibias.store.rundir import MEASURE_FILE
    from t2ibias.measure.stage import measure_stage, measurer_fingerprint
    from t2ibias.store.rundir import read_measurements, read_measurers
    from t2ibias.metrics.score import image_labels
    from t2ibias.store.rundir import RunDir

    run = _copy(measured[0], tmp_path)
    face_key = measured[1]
    result = measure_stage(run, device="cpu", person_detector=str(tiny_yolo), person_conf=TINY_CONF)
    assert result["measured"] == 2 and result["people"] >= 1
    gate = PersonFaceGate(person=YoloPersonGate(str(tiny_yolo), conf=TINY_CONF))
    fp = measurer_fingerprint(gate, tiny_spec)
    assert fp != _default_measurer()
    recorded = json.loads((run / MEASURE_FILE).read_text())
    assert recorded["gate"]["person"]["weights"] == str(tiny_yolo) and recorded["gate"]["person"]["conf"] == TINY_CONF
    assert recorded["measurer"] == fp and RunDir(run).measurer == fp
    info = read_measurers(run)[fp]
    assert info["kind"] == "clip" and info["id"] == TINY and info["gate"] == gate.config()
    meas = read_measurements(run)
    mine = meas[meas["measurer"] == fp]
    people = mine[mine["unit"] == "person"]
    assert len(people) and people[["box_w", "box_h"]].gt(0).all().all()
    assert set(people["attribute"]) == set(tiny_spec.attributes)
    faces = mine[mine["unit"] == "face"].drop_duplicates("face_index")
    boxes = [Box(int(r.box_x), int(r.box_y), int(r.box_w), int(r.box_h)) for r in people.drop_duplicates(["key", "face_index"]).itertuples()]
    for f in faces.itertuples():
        assert any(p.contains(Box(int(f.box_x), int(f.box_y), int(f.box_w), int(f.box_h))) for p in boxes)
    assert len(mine[mine["unit"] == "image"]) == 2 * len(tiny_spec.attributes)  # every image still counted
    # the old rows stay; score reads the measurer that was used
    assert len(meas[meas["measurer"] == _default_measurer()]) == len(read_measurements(measured[0]))
    labels = image_labels(RunDir(run))
    assert len(labels) == 2 * 5
    assert set(labels["person_source"]) <= {"face", "person", "none"}  # no CLIP fallback behind a person gate
    n_people = people.groupby("key")["face_index"].nunique()
    for row in labels.itertuples():
        assert row.n_people == n_people.get(row.key, 0)
        assert (row.person_source == "none") == (row.n_people == 0 and row.n_faces == 0)
    assert labels.loc[labels["key"] == face_key, "n_people"].iloc[0] >= 1
    # worker threads and batch size change no box
    threaded = _copy(measured[0], tmp_path, "threaded")
    measure_stage(threaded, device="cpu", person_detector=str(tiny_yolo), person_conf=TINY_CONF, batch_size=1, workers=2)
    other = read_measurements(threaded).query("measurer == @fp")
    cols = ["key", "unit", "face_index", "attribute", "box_x", "box_y", "box_w", "box_h", "top_label"]
    pd.testing.assert_frame_equal(other[cols].sort_values(cols[:4]).reset_index(drop=True),
                                  mine[cols].sort_values(cols[:4]).reset_index(drop=True))
    # the gate is sticky: a plain re-run uses it and finds everything cached; "none" goes back to Haar
    assert measure_stage(run, device="cpu")["measured"] == 0
    assert RunDir(run).measurer == fp
    assert measure_stage(run, device="cpu", person_detector="none")["measured"] == 0
    assert RunDir(run).measurer == _default_measurer()


def test_images_with_nobody_are_counted_as_no_person(measured, tiny_yolo, tmp_path):
    from t2ibias.measure.stage import measure_stage
    from t2ibias.metrics.score import NO_PERSON, image_labels
    from t2ibias.store.rundir import RunDir

    run = _copy(measured[0], tmp_path)
    result = measure_stage(run, device="cpu", person_detector=str(tiny_yolo), person_conf=1.0)
    assert result == {"measured": 2, "cached": 0, "faces": 0, "people": 0, "nobody": 2}
    labels = image_labels(RunDir(run))
    assert len(labels) == 2 * 5
    assert set(labels["label"]) == {NO_PERSON} and set(labels["person_source"]) == {"none"}


class _Brightness:
    """A deterministic crop measurer: is the crop's mean grey level above 128?"""

    id = "brightness"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def fingerprint(self) -> str:
        return "brightness-v1"

    def measure(self, crops):
        from t2ibias.models.clip_zeroshot import Prediction

        out = []
        for crop in crops:
            self.seen.append(crop.size)
            light = float(np.asarray(crop.convert("L"), dtype=float).mean()) / 255.0
            probs = {"light": light, "dark": 1.0 - light}
            top = max(probs, key=probs.get)
            out.append({"brightness": Prediction(top, top, probs[top], abs(2 * light - 1), probs)})
        return out


def test_extra_measurers_run_on_every_face_crop_under_their_own_fingerprint(measured, tmp_path, gate):
    from t2ibias.measure.gate import PersonFaceGate
    from t2ibias.store.rundir import MEASUREMENTS_FILE
    from t2ibias.measure.stage import crop_measurer_fingerprint, measure_stage
    from t2ibias.store.rundir import read_measurements, read_measurers

    run = _copy(measured[0], tmp_path)
    face_key = measured[1]
    fake = _Brightness()
    before = read_measurements(run)
    result = measure_stage(run, device="cpu", extra_measurers=[fake])
    assert result["measured"] == 1 and result["cached"] == 1  # CLIP rows cached; only the image with a face is opened
    fp = crop_measurer_fingerprint(PersonFaceGate(), fake)
    assert fp == crop_measurer_fingerprint(gate, fake) and fp != _default_measurer()
    meas = read_measurements(run)
    rows = meas[meas["measurer"] == fp]
    clip_faces = before[(before["unit"] == "face")].drop_duplicates("face_index")
    assert set(rows["key"]) == {face_key} and set(rows["unit"]) == {"face"}
    assert sorted(rows["face_index"]) == sorted(clip_faces["face_index"])
    for r in rows.itertuples():
        c = clip_faces[clip_faces["face_index"] == r.face_index].iloc[0]
        assert (r.box_x, r.box_y, r.box_w, r.box_h) == (c.box_x, c.box_y, c.box_w, c.box_h)
        pad = round(r.box_w * 0.25)
        assert (r.box_w + 2 * pad, r.box_h + 2 * round(r.box_h * 0.25)) in fake.seen
        assert r.label in ("light", "dark") and json.loads(r.probs)[r.label] == pytest.approx(r.score)
    info = read_measurers(run)[fp]
    assert info == {"id": "brightness", "kind": "crop", "measurer_fingerprint": "brightness-v1", "units": ["face"],
                    "gate": PersonFaceGate().config(), "gate_fingerprint": gate.fingerprint()}
    pd.testing.assert_frame_equal(meas[meas["measurer"] != fp].reset_index(drop=True), before.reset_index(drop=True))
    data = (run / MEASUREMENTS_FILE).read_bytes()
    assert measure_stage(run, device="cpu", extra_measurers=[fake])["measured"] == 0
    assert (run / MEASUREMENTS_FILE).read_bytes() == data
    # a fresh run measures CLIP and the crop measurer in one pass, with the same answers
    fresh = _copy(measured[0], tmp_path, "fresh")
    (fresh / MEASUREMENTS_FILE).unlink()
    measure_stage(fresh, device="cpu", extra_measurers=[_Brightness()], batch_size=1, workers=2)
    again = read_measurements(fresh)
    pd.testing.assert_frame_equal(again[again["measurer"] == fp].reset_index(drop=True), rows.reset_index(drop=True))
    clip_again = again[again["measurer"] == _default_measurer()].sort_values(["key", "unit", "face_index", "attribute"])
    clip_before = before.sort_values(["key", "unit", "face_index", "attribute"])
    assert list(clip_again["top_label"]) == list(clip_before["top_label"])  # batch size and threads change nothing
    np.testing.assert_allclose(clip_again["score"], clip_before["score"], atol=1e-5)


def test_append_measurements_merges_rows_atomically_and_records_the_measurer(measured, tmp_path):
    from t2ibias.store.rundir import COLUMNS, read_measurements, read_measurers
    from t2ibias.measure.table import append_measurements
    from t2ibias.store.rundir import MEASUREMENTS_FILE

    run = _copy(measured[0], tmp_path)
    key = measured[1]
    before = read_measurements(run)
    rows = pd.DataFrame([{
        "key": key, "measurer": "", "unit": "face", "face_index": 0, "box_x": 10, "box_y": 20, "box_w": 30, "box_h": 40,
        "attribute": "race", "label": "white", "top_label": "white", "score": 0.7, "margin": 0.5,
        "probs": {"white": 0.7, "black": 0.2, "indian": 0.1},
    }])
    info = {"id": "fairface-csv", "source": "fairface_predictions.csv"}
    assert append_measurements(run, rows, "fairface-import", info) == 1
    meas = read_measurements(run)
    assert list(meas.columns) == COLUMNS
    got = meas[meas["measurer"] == "fairface-import"]
    assert len(got) == 1 and got.iloc[0]["label"] == "white" and json.loads(got.iloc[0]["probs"])["white"] == 0.7
    assert read_measurers(run)["fairface-import"] == {"kind": "external", **info}
    pd.testing.assert_frame_equal(meas[meas["measurer"] != "fairface-import"].reset_index(drop=True), before.reset_index(drop=True))
    # the same row again replaces, never duplicates
    append_measurements(run, rows.assign(label="black", top_label="black"), "fairface-import", info)
    got = read_measurements(run).query("measurer == 'fairface-import'")
    assert list(got["label"]) == ["black"]
    data = (run / MEASUREMENTS_FILE).read_bytes()
    with pytest.raises(UserError, match=r"^faces\.csv: missing column 'margin'"):
        append_measurements(run, rows.drop(columns=["margin"]), "fairface-import", info, source="faces.csv")
    with pytest.raises(UserError, match=r"key: 1 rows name images not in"):
        append_measurements(run, rows.assign(key="f" * 64), "fairface-import", info)
    with pytest.raises(UserError, match=r"unit: unknown value 'body'"):
        append_measurements(run, rows.assign(unit="body"), "fairface-import", info)
    assert (run / MEASUREMENTS_FILE).read_bytes() == data  # nothing written by a refused import


# -- bad input -------------------------------------------------------------------------------------

def test_an_unreadable_image_is_named_after_the_rest_is_checkpointed(measured, tmp_path):
    from t2ibias.store.rundir import MEASUREMENTS_FILE
    from t2ibias.measure.stage import measure_stage
    from t2ibias.store.rundir import read_measurements
    from t2ibias.store.image_store import ImageStore

    run = _copy(measured[0], tmp_path)
    (run / MEASUREMENTS_FILE).unlink()
    face_key = measured[1]
    records = ImageStore(run).records()
    bad_key = next(k for k in records if k != face_key)
    png = run / records[bad_key]["path"]
    png.write_bytes(b"not a png at all")
    with pytest.raises(UserError) as info:
        measure_stage(run, device="cpu", batch_size=1)
    message = str(info.value)
    assert message.startswith(f"{png}: cannot read image") and f"t2ibias generate {run}" in message
    assert "\n" not in message
    assert set(read_measurements(run)["key"]) == {face_key}  # the readable image was measured and kept


def test_zero_size_crops_are_skipped(measured, tmp_path, monkeypatch):
    from t2ibias.store.rundir import MEASUREMENTS_FILE
    from t2ibias.measure.stage import measure_stage
    from t2ibias.store.rundir import read_measurements

    run = _copy(measured[0], tmp_path)
    (run / MEASUREMENTS_FILE).unlink()
    monkeypatch.setattr(HaarFaceGate, "detect", lambda self, image: [Box(4, 4, 20, 20), Box(5000, 5000, 10, 10)])
    result = measure_stage(run, device="cpu")
    assert result["faces"] == 2  # one face per image; the box outside the image gave an empty crop
    faces = read_measurements(run).query("unit == 'face'")
    assert set(faces["face_index"]) == {0} and set(faces["box_x"]) == {4.0}
