"""Pixel skin-tone measurer: MST swatches recovered, ITA, abstention, a real photo, batching, errors."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from t2ibias.core.errors import UserError
from t2ibias.measure import skin_tone
from t2ibias.models.clip_zeroshot import ABSTAIN, Prediction
from t2ibias.measure.skin_tone import (
    MST_HEX,
    MST_LABELS,
    PixelSkinTone,
    hex_to_rgb,
    ita_category,
    ita_degrees,
    load_mst_swatches,
)

skdata = pytest.importorskip("skimage.data")

BLUE = (20, 60, 200)
# where OpenCV's frontal-face cascade finds the astronaut's face (Eileen Collins, NASA photo)
ASTRONAUT_FACE = (177, 66, 95, 95)


def _swatch_crop(mst: int, size: int = 100, border: int = 12, background=BLUE) -> Image.Image:
    """A crop painted with one MST swatch, inside a border of another colour."""
    arr = np.empty((size, size, 3), np.uint8)
    arr[:] = background
    arr[border : size - border, border : size - border] = hex_to_rgb(MST_HEX[mst - 1])
    return Image.fromarray(arr)


def _synthetic_face(mst: int, size: int = 112, seed: int = 0, shade: float = 0.12) -> Image.Image:
    """A padded-face-crop lookalike: grey background, swatch-coloured face ellipse with noise and
    light from above (dimming by ``shade`` towards the bottom), dark-brown hair over the top, dark
    eyes and red lips."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), (150, 155, 160))
    draw = ImageDraw.Draw(img)
    s = size / 112
    draw.ellipse([24 * s, 26 * s, 88 * s, 108 * s], fill=hex_to_rgb(MST_HEX[mst - 1]))  # face
    draw.chord([18 * s, 8 * s, 94 * s, 70 * s], 180, 360, fill=(45, 30, 22))  # hair
    for x in (42, 64):
        draw.ellipse([x * s, 58 * s, (x + 7) * s, 63 * s], fill=(25, 20, 20))  # eyes
    draw.ellipse([47 * s, 88 * s, 65 * s, 94 * s], fill=(170, 50, 60))  # lips
    arr = np.asarray(img).astype(np.float64)
    yy = np.linspace(1.0, 1.0 - shade, size)[:, None, None]  # light from above
    arr = arr * yy + rng.normal(0, 3.0, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _astronaut_face() -> Image.Image:
    x, y, w, h = ASTRONAUT_FACE
    px, py = round(0.25 * w), round(0.25 * h)
    return Image.fromarray(skdata.astronaut()).crop((x - px, y - py, x + w + px, y + h + py))


# -- swatches --------------------------------------------------------------------------------------

def test_embedded_swatches_equal_the_annotations_csv():
    path = skin_tone.annotations_dir() / "monk_skin_tone.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["mst"] for r in rows] == list(MST_LABELS)
    assert tuple(r["hex"].lower() for r in rows) == MST_HEX
    assert load_mst_swatches() == MST_HEX
    assert PixelSkinTone().swatches == dict(zip(MST_LABELS, MST_HEX))


def test_swatches_fall_back_to_the_constant_only_when_the_csv_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(skin_tone, "annotations_dir", lambda: tmp_path)
    assert load_mst_swatches() == MST_HEX
    (tmp_path / "monk_skin_tone.csv").write_text("mst,hex,r,g,b\n1,#f6ede4,246,237,228\n")
    with pytest.raises(UserError, match="1..10"):
        load_mst_swatches()
    lines = ["mst,hex,r,g,b"] + [f"{i},{h},{','.join(map(str, hex_to_rgb(h)))}" for i, h in enumerate(MST_HEX, 1)]
    lines[3] = "3,#f7ead0,1,2,3"  # hex and r,g,b disagree
    (tmp_path / "monk_skin_tone.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="mst=3"):
        PixelSkinTone()


@pytest.mark.parametrize("mst", range(1, 11))
def test_swatch_painted_crop_recovers_its_label(mst):
    pred = PixelSkinTone().measure([_swatch_crop(mst)])[0]["skin_tone"]
    assert isinstance(pred, Prediction)
    assert pred.label == pred.top_label == str(mst)
    assert set(pred.probs) == set(MST_LABELS)
    assert sum(pred.probs.values()) == pytest.approx(1.0)
    assert pred.score == pytest.approx(max(pred.probs.values())) == pytest.approx(pred.probs[str(mst)])
    assert 0 < pred.margin <= pred.score


@pytest.mark.parametrize("mst", range(1, 11))
def test_swatch_crop_survives_jpeg_and_a_larger_crop(mst):
    buf = io.BytesIO()
    _swatch_crop(mst, size=300, border=40).save(buf, format="JPEG", quality=90)
    buf.seek(0)
    result = PixelSkinTone().measure_one(Image.open(buf))
    assert result.label == str(mst)
    assert result.delta_e[str(mst)] < 1.5


def test_classic_rgb_ycrcb_rule_misses_the_darkest_swatches():
    """Why the CIELAB rule is the default: the classic rules reject MST 9 and 10 outright."""
    classic = PixelSkinTone(rule="rgb-ycrcb")
    labels = [classic.measure_one(_swatch_crop(m)).label for m in range(1, 11)]
    assert labels[:8] == [str(m) for m in range(1, 9)]
    assert labels[8:] == [ABSTAIN, ABSTAIN]


# -- ITA -------------------------------------------------------------------------------------------

def test_ita_of_known_lab_values():
    assert ita_degrees(50.0, 10.0) == pytest.approx(0.0)
    assert ita_degrees(60.0, 10.0) == pytest.approx(45.0)
    assert ita_degrees(40.0, 10.0) == pytest.approx(-45.0)
    assert ita_degrees(50.0 + 20.0 * math.sqrt(3), 20.0) == pytest.approx(60.0)
    assert math.isnan(ita_degrees(70.0, 0.0)) and math.isnan(ita_degrees(70.0, -3.0))
    assert np.allclose(ita_degrees(np.array([60.0, 40.0]), np.array([10.0, 10.0])), [45.0, -45.0])


@pytest.mark.parametrize(
    "ita,category",
    [(70, "very light"), (55.01, "very light"), (55, "light"), (41.5, "light"), (41, "intermediate"),
     (30, "intermediate"), (20, "tan"), (10, "brown"), (0, "brown"), (-29.9, "brown"), (-30, "dark"),
     (-80, "dark"), (math.nan, None)],
)
def test_ita_categories(ita, category):
    assert ita_category(ita) == category


def test_measured_ita_matches_the_swatch_lab():
    from skimage.color import rgb2lab

    for mst, category in ((1, "very light"), (5, "light"), (6, "tan"), (7, "brown"), (10, "dark")):
        lab = rgb2lab(np.array(hex_to_rgb(MST_HEX[mst - 1]), float)[None, None] / 255)[0, 0]
        result = PixelSkinTone().measure_one(_swatch_crop(mst))
        assert result.lab == pytest.approx(tuple(lab), abs=1e-6)
        assert result.ita == pytest.approx(math.degrees(math.atan((lab[0] - 50) / lab[2])))
        assert result.ita_category == category


# -- abstention ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "colour", [(0, 0, 255), (0, 200, 0), BLUE, (128, 128, 128), (255, 255, 255), (0, 0, 0), (170, 50, 60), (255, 128, 0),
                (150, 100, 110), (120, 140, 60)]  # red lips, vivid orange, mauve, olive: hue or chroma out of range
)
def test_crop_without_skin_coloured_pixels_abstains(colour):
    crop = Image.new("RGB", (96, 96), colour)
    result = PixelSkinTone().measure_one(crop)
    assert result.label == ABSTAIN and result.nearest is None and result.n_skin == 0
    assert result.abstain_reason and result.ita_category is None and math.isnan(result.ita)
    pred = PixelSkinTone().measure([crop])[0]["skin_tone"]
    assert pred.label == pred.top_label == ABSTAIN and pred.probs == {}
    assert math.isnan(pred.score) and math.isnan(pred.margin)


@pytest.mark.parametrize("grey", [40, 90, 128, 230])
def test_noisy_grey_is_not_skin(grey):
    """Grey walls, white eyes, black or grey hair with sensor noise: hardly a pixel passes."""
    noise = np.random.default_rng(grey).normal(0, 3.0, (64, 64, 3))
    crop = Image.fromarray(np.clip(grey + noise, 0, 255).astype(np.uint8))
    result = PixelSkinTone().measure_one(crop)
    assert result.label == ABSTAIN and result.skin_fraction < 0.06


def test_too_few_skin_pixels_abstain_by_count_and_by_fraction():
    arr = np.zeros((64, 64, 3), np.uint8)  # not shrunk (max_side=64)
    arr[:] = BLUE
    arr[33:39, 29:35] = hex_to_rgb(MST_HEX[5])  # 36 skin pixels in the middle of the face ellipse
    crop = Image.fromarray(arr)
    few = PixelSkinTone().measure_one(crop)
    assert few.n_skin == 36 and few.label == ABSTAIN and "min_skin_pixels" in few.abstain_reason
    assert few.nearest == "6"  # still reported for inspection
    assert PixelSkinTone().measure([crop])[0]["skin_tone"].top_label == "6"
    by_fraction = PixelSkinTone(min_skin_pixels=10).measure_one(crop)
    assert by_fraction.label == ABSTAIN and "min_skin_fraction" in by_fraction.abstain_reason
    assert 0 < by_fraction.skin_fraction < 0.15
    assert PixelSkinTone(min_skin_pixels=10, min_skin_fraction=0.01).measure_one(crop).label == "6"


# -- faces -----------------------------------------------------------------------------------------

def test_astronaut_face_reads_light():
    result = PixelSkinTone().measure_one(_astronaut_face())
    assert result.label != ABSTAIN and result.skin_fraction > 0.8
    assert int(result.label) <= 5  # MST 5 measured: photo skin under studio light is darker than swatches 1-4
    assert result.ita_category in ("very light", "light", "intermediate")
    assert result.lab[0] > 65 and result.lab[2] > 5


@pytest.mark.parametrize("mst", range(1, 11))
def test_synthetic_face_with_hair_eyes_and_lips_reads_its_swatch(mst):
    tone = PixelSkinTone()
    assert tone.measure_one(_synthetic_face(mst, seed=mst, shade=0.0)).label == str(mst)
    # shading darkens the face: MST 1-4 lie within a few ΔE00 of each other, so allow one step
    assert abs(int(tone.measure_one(_synthetic_face(mst, seed=mst)).label) - mst) <= 1


def test_darker_synthetic_face_reads_darker():
    tone = PixelSkinTone()
    light, dark = tone.measure_results([_synthetic_face(2), _synthetic_face(7)])
    assert int(dark.label) > int(light.label)
    assert dark.lab[0] < light.lab[0] and dark.ita < light.ita
    assert dark.probs["7"] > dark.probs["2"] and light.probs["2"] > light.probs["7"]
    itas = [r.ita for r in tone.measure_results([_synthetic_face(m, seed=m) for m in range(1, 11)])]
    assert all(a > b for a, b in zip(itas, itas[1:]))
    astronaut = tone.measure_one(_astronaut_face())
    assert astronaut.ita > dark.ita and int(astronaut.label) < int(dark.label)


# -- API, batching, errors -------------------------------------------------------------------------

def test_batch_equals_one_by_one_across_sizes_modes_and_chunks(monkeypatch):
    crops = [
        _synthetic_face(3, shade=0.0),
        _synthetic_face(8, size=400, shade=0.0),  # shrunk to max_side first
        _swatch_crop(5, size=20, border=2),
        Image.new("RGB", (1, 1), hex_to_rgb(MST_HEX[6])),
        Image.new("RGB", (40, 40), (0, 200, 0)),
        _synthetic_face(6, shade=0.0).convert("RGBA"),
        _astronaut_face(),
    ]
    tone = PixelSkinTone(min_skin_pixels=1)
    batch = tone.measure_results(crops)
    single = [tone.measure_one(c) for c in crops]
    monkeypatch.setattr(skin_tone, "_CHUNK_PIXELS", 500)  # forces many chunks
    chunked = tone.measure_results(crops)
    for a, b, c in zip(batch, single, chunked):
        assert a.label == b.label == c.label and a.n_skin == b.n_skin == c.n_skin
        assert np.allclose(a.lab, b.lab, equal_nan=True) and np.allclose(a.lab, c.lab, equal_nan=True)
    assert [r.label for r in batch] == ["3", "8", "5", "7", ABSTAIN, "6", batch[-1].label]
    assert tone.measure([]) == []


def test_delta_e_is_ciede2000_to_each_swatch():
    from skimage.color import deltaE_ciede2000, rgb2lab

    result = PixelSkinTone().measure_one(_astronaut_face())
    swatch_lab = rgb2lab(np.array([hex_to_rgb(h) for h in MST_HEX], float) / 255)
    expected = deltaE_ciede2000(np.array(result.lab)[None, :], swatch_lab)
    assert np.allclose([result.delta_e[k] for k in MST_LABELS], expected)
    assert result.nearest == MST_LABELS[int(np.argmin(expected))]


def test_temperature_sharpens_or_flattens_probabilities():
    crop = _astronaut_face()
    sharp = PixelSkinTone(temperature=0.5).measure([crop])[0]["skin_tone"]
    flat = PixelSkinTone(temperature=20.0).measure([crop])[0]["skin_tone"]
    assert sharp.top_label == flat.top_label
    assert sharp.score > flat.score and sharp.margin > flat.margin
    result = PixelSkinTone(temperature=3.0).measure_one(crop)
    d = np.array([result.delta_e[k] for k in MST_LABELS])
    expected = np.exp(-d / 3.0) / np.exp(-d / 3.0).sum()
    assert np.allclose([result.probs[k] for k in MST_LABELS], expected)


def test_identity_and_fingerprint():
    tone = PixelSkinTone()
    assert PixelSkinTone(ellipse_axes=[0.30, 0.33]) == tone  # a list from a config file is fine
    assert hash(PixelSkinTone(ellipse_axes=[0.30, 0.33])) == hash(tone)
    assert tone.id == "pixel-mst" and tone.attributes == ("skin_tone",)
    assert tone.fingerprint() == PixelSkinTone().fingerprint()
    assert tone.fingerprint() != PixelSkinTone(temperature=3.0).fingerprint()
    assert tone.fingerprint() != PixelSkinTone(rule="rgb-ycrcb").fingerprint()
    with pytest.raises(AttributeError):
        tone.temperature = 1.0  # frozen


@pytest.mark.parametrize("bad", [Image.new("RGB", (0, 0)), Image.new("RGB", (0, 30)), np.zeros((10, 10, 3)), None, "face.png"])
def test_zero_size_or_non_image_crop_is_a_user_error(bad):
    with pytest.raises(UserError) as err:
        PixelSkinTone().measure([_swatch_crop(4), bad])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("skin tone crop 1:") and "(" in msg


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": 0}, {"temperature": -1.0}, {"rule": "hsv"}, {"min_skin_pixels": 0}, {"min_skin_fraction": 1.5},
     {"trim_dark": 0.6, "trim_bright": 0.5}, {"ellipse_axes": (0.0, 0.3)}, {"ellipse_axes": "wide"},
     {"ellipse_center": (0.5,)}, {"temperature": "2"}, {"max_side": 4}],
)
def test_bad_parameters_are_user_errors(kwargs):
    with pytest.raises(UserError, match="PixelSkinTone"):
        PixelSkinTone(**kwargs)
