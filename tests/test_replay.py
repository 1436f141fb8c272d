"""``--model replay:DIR``: images made elsewhere enter the run layout (content keys, manifest, spec
with the index's checksum) and go through measure → score → report like generated ones; rows the
index cannot give are counted and named; paths out of the folder are refused."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from t2ibias.api import open_run, prepare
from t2ibias.core.errors import UserError
from t2ibias.prompts.bank import expand, resolve_prompt_set
from t2ibias.store.image_store import ImageStore
from tests.test_cli import _exit_code as exit_code

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLOURS = {"red.png": (220, 20, 20), "green.png": (20, 200, 40), "blue.png": (30, 40, 230), "grey.png": (128, 128, 128)}
DEMO = {r.text: r for r in expand(resolve_prompt_set("demo"))}
DOCTOR, NURSE = "a portrait photo of a doctor", "a photo of the face of a nurse"




def error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def make_folder(root: Path, rows: list[dict], fmt: str = "csv", extra: dict[str, bytes] | None = None) -> Path:
    """A replay folder: the known-colour PNGs, the astronaut as a JPEG, ``extra`` files and an index."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rgb in COLOURS.items():
        Image.new("RGB", (48, 40), rgb).save(root / name)
    Image.fromarray(skdata.astronaut()).save(root / "astronaut.jpg", quality=90)
    for name, content in (extra or {}).items():
        (root / name).write_bytes(content)
    if fmt == "csv":
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with open(root / "index.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def stored(run_dir: Path) -> dict[str, dict]:
    """source file → its manifest row."""
    return {r["source"]: r for r in ImageStore(run_dir).records().values() if r.get("source")}


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


TEXT_ROWS = [
    {"image": "red.png", "prompt_text": DOCTOR},
    {"image": "green.png", "prompt_text": DOCTOR},
    {"image": "blue.png", "prompt_text": NURSE},
    {"image": "astronaut.jpg", "prompt_text": "an astronaut in a white suit"},
]


def test_prompt_text_index_fills_the_store_with_the_images_as_given(tmp_path):
    folder = make_folder(tmp_path / "imgs", TEXT_ROWS)
    run = prepare(f"replay:{folder}", None, out=tmp_path / "run", classifier="tiny-random-clip", device="cpu")
    spec = run.spec
    assert spec["replay"]["index_sha256"] == hashlib.sha256((folder / "index.csv").read_bytes()).hexdigest()
    assert spec["replay"]["index_sha256"][:16] in spec["weights"]
    assert (spec["replay"]["rows"], spec["replay"]["images"], spec["replay"]["prompts"]) == (4, 4, 3)
    # the prompts are the index's own texts, in order of first appearance, with as many images as it gives
    prompts = run.prompts
    assert list(prompts["text"]) == [DOCTOR, NURSE, "an astronaut in a white suit"]
    assert [list(i) for i in prompts["image_indices"]] == [[0, 1], [0], [0]]
    result = run.generate(device="cpu")
    assert (result.total, result.generated, result.failed) == (4, 4, 0)
    rows = stored(run.path)
    for name, rgb in COLOURS.items():
        if name in rows:  # a PNG is copied pixel for pixel, and its source is recorded
            assert rows[name]["source_sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
            got = pixels(run.path / rows[name]["path"])
            assert got.shape == (40, 48, 3) and (got == rgb).all()
    # the JPEG is stored as PNG holding exactly the pixels PIL decodes from it
    astro = run.path / rows["astronaut.jpg"]["path"]
    assert astro.suffix == ".png" and Image.open(astro).format == "PNG"
    assert (pixels(astro) == pixels(folder / "astronaut.jpg")).all()
    images = run.images
    assert set(images["status"]) == {"ok"} and len(images) == 4
    # re-running makes nothing new, and planning again gives the same keys
    again = run.generate(device="cpu")
    assert (again.generated, again.already_done) == (0, 4)
    run2 = prepare(f"replay:{folder}", None, out=tmp_path / "run", classifier="tiny-random-clip", device="cpu")
    assert run2.spec["fingerprint"] == spec["fingerprint"] and list(run2.images["key"]) == list(images["key"])


def test_a_replaced_file_changes_the_keys_and_never_reuses_the_stored_image(tmp_path):
    folder = make_folder(tmp_path / "imgs", TEXT_ROWS)
    run = prepare(f"replay:{folder}", None, out=tmp_path / "run", classifier="tiny-random-clip", device="cpu")
    keys = set(run.images["key"])
    Image.new("RGB", (48, 40), (0, 0, 0)).save(folder / "red.png")
    with pytest.raises(UserError, match="another spec"):
        prepare(f"replay:{folder}", None, out=tmp_path / "run", classifier="tiny-random-clip", device="cpu")
    other = prepare(f"replay:{folder}", None, out=tmp_path / "run2", classifier="tiny-random-clip", device="cpu")
    assert set(other.images["key"]).isdisjoint(keys)
    # a file replaced after planning fails (and says so) instead of being copied
    Image.new("RGB", (48, 40), (9, 9, 9)).save(folder / "green.png")
    result = other.generate(device="cpu")
    assert result.failed == 1 and "changed since the run was planned" in " ".join(result.errors)


def test_prompt_id_jsonl_index_matches_the_set_and_compares_with_generated_runs(tmp_path):
    doctor, nurse = DEMO[DOCTOR], DEMO[NURSE]
    rows = [{"image": "red.png", "prompt_id": doctor.prompt_id, "image_index": 0},
            {"image": "green.png", "prompt_id": doctor.prompt_id, "image_index": 3},
            {"image": "blue.png", "prompt_id": nurse.prompt_id, "image_index": 1}]
    folder = make_folder(tmp_path / "imgs", rows, fmt="jsonl")
    run = prepare(f"replay:{folder}", "demo", out=tmp_path / "run", classifier="tiny-random-clip", device="cpu")
    prompts = run.prompts
    assert list(prompts["prompt_id"]) == [doctor.prompt_id, nurse.prompt_id]
    assert list(prompts["family"]) == ["occupation", "occupation"] and list(prompts["set_id"]) == ["demo", "demo"]
    assert [list(i) for i in prompts["image_indices"]] == [[0, 3], [1]]
    assert run.spec["prompt_sets"][0]["id"] == "demo"
    run.generate(device="cpu")
    by_slot = {(r.prompt_id, r.image_index): r for r in run.images.itertuples()}
    assert set(by_slot) == {(doctor.prompt_id, 0), (doctor.prompt_id, 3), (nurse.prompt_id, 1)}
    assert (pixels(by_slot[(doctor.prompt_id, 3)].file) == COLOURS["green.png"]).all()


def test_prompt_text_matched_to_a_set_by_text_and_unknown_prompts_named(tmp_path):
    rows = [{"image": "red.png", "prompt_text": "  a portrait   photo of a doctor "},  # spacing does not matter
            {"image": "blue.png", "prompt_text": "a photo of a dragon"}]
    folder = make_folder(tmp_path / "imgs", rows)
    run = prepare(f"replay:{folder}", "demo", out=tmp_path / "run", classifier="tiny-random-clip", device="cpu")
    assert list(run.prompts["prompt_id"]) == [DEMO[DOCTOR].prompt_id]
    doc = json.loads((run.path / "replay_problems.json").read_text())
    assert doc["counts"]["unknown_prompt"] == 1
    (problem,) = doc["problems"]
    assert (problem["line"], problem["image"], problem["problem"]) == (3, "blue.png", "unknown_prompt")
    assert "a photo of a dragon" in problem["detail"] and "--prompts demo" in problem["detail"]


def truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, format="PNG")
    return buf.getvalue()[:4000]  # the header is whole, the pixel data cut short


def bomb_png() -> bytes:
    """A few kilobytes that decode to 20,000² pixels."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    return buf.getvalue()


def test_missing_corrupt_and_duplicate_rows_are_counted_named_and_kept_as_failed(tmp_path, monkeypatch, capsys):
    rows = [{"image": "red.png", "prompt_text": DOCTOR},
            {"image": "missing.png", "prompt_text": DOCTOR},
            {"image": "notes.png", "prompt_text": NURSE},      # not an image at all
            {"image": "cut.png", "prompt_text": NURSE},        # header fine, data cut short
            {"image": "bomb.png", "prompt_text": NURSE},       # decompression bomb
            {"image": "red.png", "prompt_text": NURSE},        # the same file again
            {"image": "red-copy.png", "prompt_text": NURSE},   # the same bytes under another name
            {"image": "green.png", "prompt_text": ""}]         # malformed: no prompt
    folder = make_folder(tmp_path / "imgs", rows, extra={"notes.png": b"shopping list", "cut.png": truncated_png(),
                                                         "bomb.png": bomb_png(), "red-copy.png": b""})
    (folder / "red-copy.png").write_bytes((folder / "red.png").read_bytes())
    out = tmp_path / "run"
    code = exit_code("sweep", "--model", f"replay:{folder}", "--out", str(out), "--classifier", "tiny-random-clip",
                     "--device", "cpu")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "replay: 8 index rows → 5 images of 2 prompts" in err
    # planning reads headers only; the file cut short is found when it is decoded, and joins the file
    assert "1 missing, 2 unreadable, 2 duplicate, 1 malformed" in err
    doc = json.loads((out / "replay_problems.json").read_text())
    assert doc["counts"] == {"missing": 1, "unreadable": 3, "unknown_prompt": 0, "duplicate": 2, "bad_row": 1}
    named = {(p["line"], p["image"], p["problem"]) for p in doc["problems"]}
    assert named == {(3, "missing.png", "missing"), (4, "notes.png", "unreadable"), (5, "cut.png", "unreadable"),
                     (6, "bomb.png", "unreadable"), (7, "red.png", "duplicate"), (8, "red-copy.png", "duplicate"),
                     (9, "green.png", "bad_row")}
    details = {p["image"]: p["detail"] for p in doc["problems"]}
    assert "decompression bomb" in details["bomb.png"] or "more than" in details["bomb.png"]
    # missing and unreadable images stay in the run as failed images, each with its reason
    records = stored(out)
    assert records["red.png"]["status"] == "ok"
    for name in ("missing.png", "notes.png", "cut.png", "bomb.png"):
        assert records[name]["status"] == "failed" and records[name]["error"]
    assert "no such file" in records["missing.png"]["error"]
    labels = open_run(out).image_labels
    assert (labels.drop_duplicates("key")["label"] == "failed").sum() == 4
    assert (out / "report.html").is_file()


@pytest.mark.parametrize("image, link", [("../outside.png", None), ("/etc/hostname", None), ("link.png", "out")])
def test_paths_out_of_the_folder_are_refused(image, link, tmp_path, monkeypatch, capsys):
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "outside.png")
    folder = make_folder(tmp_path / "imgs", [{"image": "red.png", "prompt_text": DOCTOR}, {"image": image, "prompt_text": DOCTOR}])
    if link:
        (folder / "link.png").symlink_to(tmp_path / "outside.png")
    code = exit_code("sweep", "--model", f"replay:{folder}", "--out", str(tmp_path / "run"), "--classifier", "tiny-random-clip")
    line = error_line(code, capsys.readouterr().err)
    assert "index.csv: line 3" in line and repr(image) in line and "outside" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("rows, needle", [
    ([{"picture": "red.png", "prompt_text": DOCTOR}], "need image and prompt_text"),
    ([{"image": "red.png", "prompt_id": "x"}], "need image and prompt_text"),
    ([{"image": "gone.png", "prompt_text": DOCTOR}, {"image": "also-gone.png", "prompt_text": NURSE}], "none of its 2 rows"),
    ([], "columns (none)"),
])
def test_an_index_that_gives_nothing_is_one_error_line(rows, needle, tmp_path, monkeypatch, capsys):
    folder = make_folder(tmp_path / "imgs", rows)
    code = exit_code("sweep", "--model", f"replay:{folder}", "--out", str(tmp_path / "run"), "--classifier", "tiny-random-clip")
    assert needle in error_line(code, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_prompt_ids_without_a_set_and_a_folder_without_index_are_refused(tmp_path):
    folder = make_folder(tmp_path / "imgs", [{"image": "red.png", "prompt_id": "abc", "image_index": 0}], fmt="jsonl")
    with pytest.raises(UserError, match="pass --prompts SET"):
        prepare(f"replay:{folder}", None, out=tmp_path / "run", classifier="tiny-random-clip")
    (folder / "index.jsonl").unlink()
    with pytest.raises(UserError, match="no index.csv or index.jsonl"):
        prepare(f"replay:{folder}", None, out=tmp_path / "run", classifier="tiny-random-clip")
    with pytest.raises(UserError, match="is not a folder"):
        prepare(f"replay:{tmp_path / 'nope'}", None, out=tmp_path / "run", classifier="tiny-random-clip")


def test_replayed_astronaut_goes_through_measure_score_and_report(tmp_path, monkeypatch, capsys):
    """The Haar gate finds the astronaut's face in the replayed copy, as in the original photo."""
    folder = make_folder(tmp_path / "imgs", [{"image": "astronaut.jpg", "prompt_text": DOCTOR},
                                             {"image": "grey.png", "prompt_text": DOCTOR}])
    out = tmp_path / "run"
    code = exit_code("sweep", "--model", f"replay:{folder}", "--prompts", "demo", "--out", str(out),
                     "--classifier", "tiny-random-clip", "--device", "cpu")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "1 face found" in err
    labels = open_run(out).image_labels.drop_duplicates("key").set_index("image_index")
    assert (labels.loc[0, "person_source"], labels.loc[0, "n_faces"]) == ("face", 1)
    assert labels.loc[1, "person_source"] != "face" and labels.loc[1, "n_faces"] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics and (out / "report.html").is_file() and (out / "model_card.md").is_file()
    spec = json.loads((out / "spec.json").read_text())
    assert spec["model"]["id"] == "replay:imgs" and "made elsewhere" in spec["model"]["licence"]
