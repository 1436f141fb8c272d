"""FairFace: predict.py's CSV into measurement rows, and the ResNet-34 on our own face crops."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2ibias.core.errors import UserError
from t2ibias.measure.fairface import (
    AGE_BINS,
    AGE_GROUP_SHARES,
    ATTRIBUTE_LABELS,
    CSV_COLUMNS,
    FairFaceResNet34,
    fairface_csv_fingerprint,
    fairface_rows,
    read_fairface_csv,
)
from t2ibias.store.rundir import COLUMNS

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
skdata = pytest.importorskip("skimage.data")

RACE7 = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
RACE4 = ["White", "Black", "Asian", "Indian"]
GENDER = ["Male", "Female"]
KEYS = ["0a1b2c3d4e5f60718293a4b5c6d7e8f9", "ffeeddccbbaa99887766554433221100", "1234567890abcdef1234567890abcdef"]


def _softmax_peaked(n: int, top: int, rng: np.random.Generator, peak: float = 3.0) -> np.ndarray:
    logits = rng.normal(size=n).astype(np.float32)
    logits[top] = logits.max() + peak
    e = np.exp(logits - logits.max())
    return (e / e.sum()).astype(np.float32)


def _age_scores(shares: dict[str, float]) -> np.ndarray:
    return np.array([shares.get(b, 0.0) for b in AGE_BINS], dtype=np.float32)


# face name, race7 index, race4 index, gender index, age scores (or age index for a peaked softmax)
FACES = [
    (f"detected_faces/{KEYS[0]}_face0.jpg", 2, 2, 1, {"20-29": 0.8, "30-39": 0.15, "10-19": 0.05}),
    (f"detected_faces/{KEYS[0]}_face1.jpg", 0, 0, 0, {"60-69": 0.7, "70+": 0.3}),
    (f"detected_faces/{KEYS[1]}_face0.jpg", 3, 2, 0, {"60-69": 0.9, "70+": 0.1}),
    (f"detected_faces/{KEYS[2]}_face0.jpg", 5, 3, 1, 1),
]


def _predict_py_frame() -> pd.DataFrame:
    """A frame shaped like the one FairFace's predict.py saves: numpy arrays in the score cells."""
    rng = np.random.default_rng(7)
    rows = []
    for name, r7, r4, g, age in FACES:
        age_scores = _softmax_peaked(9, age, rng) if isinstance(age, int) else _age_scores(age)
        rows.append({
            "face_name_align": name,
            "race": RACE7[r7], "race4": RACE4[r4], "gender": GENDER[g], "age": AGE_BINS[int(np.argmax(age_scores))],
            "race_scores_fair": _softmax_peaked(7, r7, rng),
            "race_scores_fair_4": _softmax_peaked(4, r4, rng),
            "gender_scores_fair": _softmax_peaked(2, g, rng),
            "age_scores_fair": age_scores,
        })
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def _write(frame: pd.DataFrame, path: Path) -> Path:
    # str(ndarray) as predict.py gets it with numpy's default print options: wrapped over lines
    # (importing ultralytics widens numpy's line width for the whole process)
    with np.printoptions(linewidth=75, precision=8, suppress=False, floatmode="maxprec"):
        frame.to_csv(path, index=False)
    return path


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return _write(_predict_py_frame(), tmp_path / "test_outputs.csv")


def _image_keys() -> dict[str, str]:
    return {k: k for k in KEYS}


# ------------------------------------------------------------------------------------ CSV


def test_read_fairface_csv_parses_wrapped_score_arrays(csv_path: Path) -> None:
    text = csv_path.read_text()
    assert "\n 0." in text or "\n 1." in text or "e-" in text  # numpy wrapped a score array over lines
    df = read_fairface_csv(csv_path)
    assert len(df) == len(FACES)
    assert list(df["image_stem"]) == [KEYS[0], KEYS[0], KEYS[1], KEYS[2]]
    assert list(df["face_index"]) == [0, 1, 0, 0]
    assert list(df["race"]) == ["Latino_Hispanic", "White", "East Asian", "Indian"]
    lines = text.splitlines()
    for name, line in zip(df["face_name_align"], df["line"]):  # line numbers of multi-line records
        assert lines[line - 1].startswith(name)
    for column, n in (("race_scores_fair", 7), ("race_scores_fair_4", 4), ("gender_scores_fair", 2), ("age_scores_fair", 9)):
        for scores in df[column]:
            assert len(scores) == n
            assert sum(scores) == pytest.approx(1.0, abs=1e-9)
    assert df.loc[0, "age_scores_fair"][AGE_BINS.index("20-29")] == pytest.approx(0.8, abs=1e-6)


def test_fairface_rows_format_and_mapping(csv_path: Path) -> None:
    rows = fairface_rows(read_fairface_csv(csv_path), _image_keys(), "m1")
    assert list(rows.columns) == COLUMNS
    assert len(rows) == len(FACES) * 5
    assert set(rows["unit"]) == {"face"} and set(rows["measurer"]) == {"m1"}
    assert rows[["box_x", "box_y", "box_w", "box_h"]].isna().all().all()
    assert set(rows["attribute"]) == {"race", "race4", "gender_presentation", "age_fairface", "age_group"}
    for _, row in rows.iterrows():
        probs = json.loads(row["probs"])
        assert set(probs) == set(ATTRIBUTE_LABELS[row["attribute"]])
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
        assert row["label"] == row["top_label"]
        assert row["score"] == pytest.approx(probs[row["top_label"]])
        assert row["margin"] >= 0
    label = rows.set_index(["key", "face_index", "attribute"])["label"]
    assert label[KEYS[0], 0, "race"] == "latino_hispanic"
    assert label[KEYS[0], 0, "race4"] == "asian"
    assert label[KEYS[0], 0, "gender_presentation"] == "fem"
    assert label[KEYS[0], 1, "gender_presentation"] == "masc"
    assert label[KEYS[1], 0, "race"] == "east_asian"
    assert label[KEYS[2], 0, "race4"] == "indian"
    assert label[KEYS[0], 0, "age_fairface"] == "20-29"
    # 20-29 at 0.8 is half young, half middle: young 0.4 + 0.05, middle 0.4 + 0.15
    probs = json.loads(rows[(rows["key"] == KEYS[0]) & (rows["face_index"] == 0) & (rows["attribute"] == "age_group")]["probs"].iloc[0])
    assert probs == pytest.approx({"young": 0.45, "middle": 0.55, "older": 0.0}, abs=1e-6)
    assert label[KEYS[0], 0, "age_group"] == "middle"
    # 60-69 is 0.6 middle / 0.4 older (FACET's middle band ends at 65)
    assert label[KEYS[0], 1, "age_group"] == "older"  # middle 0.42, older 0.28 + 0.3
    assert label[KEYS[1], 0, "age_group"] == "middle"  # middle 0.54, older 0.36 + 0.1
    assert label[KEYS[2], 0, "age_fairface"] == "3-9" and label[KEYS[2], 0, "age_group"] == "young"
    buf = io.BytesIO()  # the stage keeps rows in measurements.parquet
    rows.to_parquet(buf, index=False)
    back = pd.read_parquet(io.BytesIO(buf.getvalue()))
    assert list(back.columns) == COLUMNS and back["probs"].tolist() == rows["probs"].tolist()


def test_seven_column_csv_of_dofair_predict_py(csv_path: Path, tmp_path: Path) -> None:
    """DoFaiR's copy of predict.py runs the 7-race model only: no race4, no race_scores_fair_4."""
    seven = _write(_predict_py_frame().drop(columns=["race4", "race_scores_fair_4"]), tmp_path / "dofair_faces.csv")
    assert seven.read_text().splitlines()[0] == "face_name_align,race,gender,age,race_scores_fair,gender_scores_fair,age_scores_fair"
    df = read_fairface_csv(seven)
    assert len(df) == len(FACES) and df["race4"].isna().all() and df["race_scores_fair_4"].isna().all()
    rows = fairface_rows(df, _image_keys(), "m")
    assert set(rows["attribute"]) == {"race", "gender_presentation", "age_fairface", "age_group"}
    full = fairface_rows(read_fairface_csv(csv_path), _image_keys(), "m")
    same = full[full["attribute"] != "race4"].reset_index(drop=True)
    assert rows["label"].tolist() == same["label"].tolist() and rows["probs"].tolist() == same["probs"].tolist()


@pytest.mark.parametrize("dropped", ["race4", "race_scores_fair_4"])
def test_half_of_the_race4_columns_is_a_damaged_file(tmp_path: Path, dropped: str) -> None:
    path = _write(_predict_py_frame().drop(columns=[dropped]), tmp_path / "half.csv")
    with pytest.raises(UserError, match=rf"half.csv: columns: missing {dropped} \(use the CSV FairFace's predict.py writes\)"):
        read_fairface_csv(path)


def test_seven_column_csv_is_read_alike_by_measure_and_factuality(tmp_path: Path) -> None:
    from t2ibias.metrics.factuality import load_faces

    seven = _write(_predict_py_frame().drop(columns=["race4", "race_scores_fair_4"]), tmp_path / "faces.csv")
    ff, faces = read_fairface_csv(seven), load_faces(seven)
    assert list(faces["image"]) == list(ff["image_stem"])
    assert [g.lower() for g in ff["gender"]] == list(faces["gender"])


def test_fairface_rows_maps_stems_to_run_keys(csv_path: Path) -> None:
    keys = {k: f"run-{i}" for i, k in enumerate(KEYS)}
    rows = fairface_rows(read_fairface_csv(csv_path), keys, "m")
    assert set(rows["key"]) == {"run-0", "run-1", "run-2"}


def test_age_group_mapping_is_complete_and_states_the_straddling_bins() -> None:
    assert set(AGE_GROUP_SHARES) == set(AGE_BINS)
    for shares in AGE_GROUP_SHARES.values():
        assert set(shares) <= {"young", "middle", "older"}
        assert sum(shares.values()) == pytest.approx(1.0)
    for b in ("0-2", "3-9", "10-19"):
        assert AGE_GROUP_SHARES[b] == {"young": 1.0}
    for b in ("30-39", "40-49", "50-59"):
        assert AGE_GROUP_SHARES[b] == {"middle": 1.0}
    assert AGE_GROUP_SHARES["70+"] == {"older": 1.0}
    assert AGE_GROUP_SHARES["20-29"] == {"young": 0.5, "middle": 0.5}
    assert AGE_GROUP_SHARES["60-69"] == {"middle": 0.6, "older": 0.4}


def test_fairface_csv_fingerprint_is_content_hash(csv_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere.csv"
    shutil.copy(csv_path, copy)
    assert fairface_csv_fingerprint(csv_path) == fairface_csv_fingerprint(copy)
    frame = _predict_py_frame()
    frame.loc[0, "gender"], frame.at[0, "gender_scores_fair"] = "Male", np.array([0.7, 0.3], dtype=np.float32)
    assert fairface_csv_fingerprint(_write(frame, tmp_path / "other.csv")) != fairface_csv_fingerprint(csv_path)


def test_header_only_csv_gives_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(",".join(CSV_COLUMNS) + "\n")
    rows = fairface_rows(read_fairface_csv(path), _image_keys(), "m")
    assert rows.empty and list(rows.columns) == COLUMNS


def _bad(frame: pd.DataFrame, edit: str) -> pd.DataFrame:
    frame = frame.astype(object)
    if edit == "missing_columns":
        return frame.drop(columns=["race4", "age_scores_fair"])
    if edit == "unknown_label":
        frame.loc[2, "race"] = "Asian"
    elif edit == "unknown_gender":
        frame.loc[1, "gender"] = "male"
    elif edit == "bad_score_array":
        frame.loc[1, "gender_scores_fair"] = "[0.5 oops]"
    elif edit == "not_an_array":
        frame.loc[1, "gender_scores_fair"] = "0.5 0.5"
    elif edit == "wrong_length":
        frame.loc[3, "race_scores_fair_4"] = "[0.25 0.25 0.5]"
    elif edit == "not_summing_to_one":
        frame.loc[0, "age_scores_fair"] = "[0.5 0.5 0.5 0. 0. 0. 0. 0. 0.]"
    elif edit == "label_not_top_score":
        frame.loc[0, "gender"] = "Male"  # face 0 is scored Female
    elif edit == "bad_face_name":
        frame.loc[0, "face_name_align"] = "detected_faces/portrait.jpg"
    elif edit == "duplicate_face":
        frame.loc[1, "face_name_align"] = frame.loc[0, "face_name_align"]
    return frame


@pytest.mark.parametrize(
    ("edit", "row", "expected"),
    [
        ("missing_columns", 0, "columns: missing race4, age_scores_fair (use the CSV FairFace's predict.py writes)"),
        ("unknown_label", 2, "race: line {line}: unknown label 'Asian'"),
        ("unknown_gender", 1, "gender: line {line}: unknown label 'male'"),
        ("bad_score_array", 1, "gender_scores_fair: line {line}: '[0.5 oops]' is not an array of numbers"),
        ("not_an_array", 1, "gender_scores_fair: line {line}: '0.5 0.5' is not a score array"),
        ("wrong_length", 3, "race_scores_fair_4: line {line}: 3 scores, expected 4"),
        ("not_summing_to_one", 0, "age_scores_fair: line {line}: scores sum to 1.5, not 1"),
        ("label_not_top_score", 0, "gender: line {line}: label 'Male' is not the top score of gender_scores_fair"),
        ("bad_face_name", 0, "face_name_align: line {line}: 'detected_faces/portrait.jpg' is not named <image>_face<N>.<ext>"),
        ("duplicate_face", 0, "face_name_align: line {next}: face 0 of image '" + KEYS[0] + "' already on line {line}"),
    ],
)
def test_bad_csv_raises_one_line_user_error(tmp_path: Path, edit: str, row: int, expected: str) -> None:
    frame = _bad(_predict_py_frame(), edit)
    path = _write(frame, tmp_path / f"{edit}.csv")
    lines = path.read_text().splitlines()
    starts = [i + 1 for i, text in enumerate(lines) if text.startswith("detected_faces/")]
    assert len(starts) == len(FACES) and len(lines) > len(FACES) + 1  # some records span lines
    with pytest.raises(UserError) as info:
        read_fairface_csv(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected.format(line=starts[row], next=starts[min(row + 1, len(starts) - 1)]) in message
    assert "\n" not in message


def test_missing_or_unreadable_csv(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.csv", tmp_path):
        with pytest.raises(UserError, match="^" + str(path).replace("\\", "\\\\") + ": "):
            read_fairface_csv(path)
    with pytest.raises(UserError, match="nope.csv: "):
        fairface_csv_fingerprint(tmp_path / "nope.csv")
    empty = tmp_path / "blank.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="blank.csv: columns: missing face_name_align, race, gender, age, race_scores_fair, "):
        read_fairface_csv(empty)
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(",".join(CSV_COLUMNS).encode() + b"\ncaf\xe9_face0.jpg\n")
    with pytest.raises(UserError, match="latin1.csv: not UTF-8"):
        read_fairface_csv(latin)


def test_faces_of_images_outside_the_run(csv_path: Path) -> None:
    df = read_fairface_csv(csv_path)
    with pytest.raises(UserError) as info:
        fairface_rows(df, {KEYS[1]: KEYS[1]}, "m")
    message = str(info.value)
    assert message.startswith(f"{csv_path}: face_name_align: 3 of 4 faces are of images not in this run")
    assert f"first 'detected_faces/{KEYS[0]}_face0.jpg' (line 2)" in message
    assert message.endswith("(run FairFace on this run's images/ folder)")


# ------------------------------------------------------------------------------ ResNet-34


def _resnet(out_features: int = 18, seed: int = 0):
    torch.manual_seed(seed)
    model = torchvision.models.resnet34(weights=None)
    model.fc = torch.nn.Linear(512, out_features)
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fairface-ckpt")
    state = _resnet().state_dict()
    paths = {"raw": folder / "res34_fair_align_multi_7_random.pt", "wrapped": folder / "wrapped.pt"}
    torch.save(state, paths["raw"])
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, paths["wrapped"])
    # fc that ignores the image: outputs = bias, so each slice's softmax is known in advance
    fixed = {k: v.clone() for k, v in state.items()}
    fixed["fc.weight"].zero_()
    bias = torch.zeros(18)
    bias[2], bias[7 + 1], bias[9 + 7] = 4.0, 3.0, 5.0  # Latino_Hispanic / Asian(4), Female, 60-69
    bias[0] = 1.0
    fixed["fc.bias"] = bias
    paths["fixed"] = folder / "fixed.pt"
    torch.save(fixed, paths["fixed"])
    return paths


def _crops() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    astronaut = Image.fromarray(skdata.astronaut()).crop((150, 30, 320, 240))  # her face, padded
    noise = Image.fromarray(rng.integers(0, 256, size=(60, 40, 3), dtype=np.uint8))
    wide = Image.fromarray(rng.integers(0, 256, size=(120, 300, 3), dtype=np.uint8))
    gray = Image.fromarray(rng.integers(0, 256, size=(23, 17), dtype=np.uint8), mode="L")
    return [astronaut, noise, wide, gray]


def test_resnet34_measures_crops_from_both_checkpoint_layouts(checkpoints: dict[str, Path]) -> None:
    raw = FairFaceResNet34(checkpoints["raw"])
    assert raw.id == "fairface-resnet34"
    assert list(raw.attributes) == ["race", "gender_presentation", "age_fairface", "age_group"]
    crops = _crops()
    preds = raw.measure(crops)
    assert len(preds) == len(crops)
    for pred in preds:
        assert list(pred) == list(raw.attributes)
        for attr, p in pred.items():
            assert list(p.probs) == list(ATTRIBUTE_LABELS[attr])
            assert sum(p.probs.values()) == pytest.approx(1.0, abs=1e-5)
            assert p.label == p.top_label == max(p.probs, key=p.probs.get)
            assert p.score == p.probs[p.top_label] and p.margin >= 0
    assert len({json.dumps(p["race"].probs, sort_keys=True) for p in preds}) == len(crops)  # the pixels matter
    again = FairFaceResNet34(checkpoints["wrapped"], batch_size=3).measure(crops)
    for a, b in zip(preds, again):
        for attr in a:
            assert a[attr].top_label == b[attr].top_label
            assert a[attr].probs == pytest.approx(b[attr].probs, abs=1e-5)
    assert raw.measure(crops[:1])[0]["age_fairface"].probs == pytest.approx(preds[0]["age_fairface"].probs, abs=1e-5)
    assert raw.measure([]) == []


def test_resnet34_slices_outputs_like_fairface(checkpoints: dict[str, Path]) -> None:
    crops = _crops()[:2]
    seven = FairFaceResNet34(checkpoints["fixed"], variant=7).measure(crops)
    four = FairFaceResNet34(checkpoints["fixed"], variant=4).measure(crops)
    bias = torch.zeros(18)
    bias[2], bias[8], bias[16], bias[0] = 4.0, 3.0, 5.0, 1.0
    race7, race4 = bias[:7].softmax(0), bias[:4].softmax(0)
    gender, age = bias[7:9].softmax(0), bias[9:18].softmax(0)
    for p in seven:
        assert p["race"].top_label == "latino_hispanic"
        assert list(p["race"].probs.values()) == pytest.approx(race7.tolist(), abs=1e-6)
        assert p["gender_presentation"].top_label == "fem"
        assert list(p["gender_presentation"].probs.values()) == pytest.approx(gender.tolist(), abs=1e-6)
        assert p["age_fairface"].top_label == "60-69"
        assert list(p["age_fairface"].probs.values()) == pytest.approx(age.tolist(), abs=1e-6)
        a = dict(zip(AGE_BINS, age.tolist()))
        young = sum(a[b] for b in ("0-2", "3-9", "10-19")) + 0.5 * a["20-29"]
        older = a["70+"] + 0.4 * a["60-69"]
        assert p["age_group"].probs == pytest.approx({"young": young, "middle": 1 - young - older, "older": older}, abs=1e-6)
        assert p["age_group"].top_label == "middle"
    for p in four:  # FairFace reads race only from its 4-race model; gender and age come from the 7-race one
        assert list(p) == ["race4"]
        assert list(p["race4"].probs) == ["white", "black", "asian", "indian"]
        assert list(p["race4"].probs.values()) == pytest.approx(race4.tolist(), abs=1e-6)
        assert p["race4"].top_label == "asian"
    assert list(FairFaceResNet34(checkpoints["fixed"], variant=4).attributes) == ["race4"]


def test_checkpoint_hints_name_the_files_fairface_loads(tmp_path: Path) -> None:
    from t2ibias.measure.measurers import resolve_crop_measurer

    for name, file in (("fairface:", "fairface_alldata_20191111.pt"), ("fairface4:", "fairface_alldata_4race_20191111.pt")):
        with pytest.raises(UserError, match=re.escape(f"write {name}PATH/TO/{file})")):
            resolve_crop_measurer(name)
    with pytest.raises(UserError) as info:
        FairFaceResNet34(tmp_path / "nope.pt", variant=4)
    assert "fairface_alldata_20191111.pt" in str(info.value) and "fairface_alldata_4race_20191111.pt" in str(info.value)
    assert "20190809" not in str(info.value)


def test_resnet34_fingerprint(checkpoints: dict[str, Path]) -> None:
    a = FairFaceResNet34(checkpoints["raw"]).fingerprint()
    assert a == FairFaceResNet34(checkpoints["raw"]).fingerprint()
    assert a != FairFaceResNet34(checkpoints["raw"], variant=4).fingerprint()
    assert a != FairFaceResNet34(checkpoints["fixed"]).fingerprint()


def test_resnet34_bad_checkpoints_and_crops(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "res34_fair_align_multi_7_20190809.pt"
    with pytest.raises(UserError, match=r"res34_fair_align_multi_7_20190809\.pt: no such checkpoint file \(download "):
        FairFaceResNet34(missing)
    wrong_fc = tmp_path / "seven_outputs.pt"
    torch.save(_resnet(out_features=7).state_dict(), wrong_fc)
    with pytest.raises(UserError) as info:
        FairFaceResNet34(wrong_fc).measure(_crops()[:1])
    message = str(info.value)
    assert message.startswith(f"{wrong_fc}: not a FairFace ResNet-34 with 18 outputs")
    assert "fc.weight (7, 512) not (18, 512)" in message and "\n" not in message
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="garbage.pt: not a readable PyTorch state_dict"):
        FairFaceResNet34(garbage).load()
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in _resnet().state_dict().items() if not k.startswith("layer4")}, partial)
    with pytest.raises(UserError, match=r"partial.pt: .*missing \d+: layer4"):
        FairFaceResNet34(partial).load()
    with pytest.raises(UserError, match="variant: 5 is not 7 or 4"):
        FairFaceResNet34(checkpoints["raw"], variant=5)
    model = FairFaceResNet34(checkpoints["raw"])
    with pytest.raises(UserError, match=r"crop 1: zero size 0×12"):
        model.measure([_crops()[0], Image.new("RGB", (0, 12))])
