"""The face gate audited like the classifier: ``gate_recall`` among FACET people with a visible face,
per group, with clustered intervals and a test of equal rates.

The fixture release has one person per image; a person's image is white when the fake gate is to
find their face and black when it is not, so every detection, and every expected rate below, is
known by construction: masc faces are found 3 times in 4, fem faces once in 4, and within each
gender MST 2 and MST 8 people are found equally often. People without ``visible_face`` are all
missed and must not count.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facet_fixtures import person, write_facet
from t2ibias.audit import AuditOptions, run_audit
from t2ibias.audit.gate_recall import METRIC
from t2ibias.cli import main
from t2ibias.measure import gate as gate_module
from t2ibias.measure.gate import Box
from t2ibias.models.clip_zeroshot import Prediction
from t2ibias.report.audit_html import write_audit_html
from t2ibias.store.audit_file import load_audit

BOX = [100, 100, 600, 600]  # in FACET's 1000² pixels; the files are 100², so boxes are rescaled
#: (gender, MST, people, found by the gate)
BLOCKS = [("masc", 2, 40, 30), ("masc", 8, 40, 30), ("fem", 2, 40, 10), ("fem", 8, 40, 10)]
N_HIDDEN = 20  # visible_torso only: missed, and not in the gate's denominator


@dataclass
class WhiteFaceGate:
    """Finds one face, in the middle of the image, when the image's centre is white."""

    calls: int = 0

    def detect(self, image: Image.Image) -> list[Box]:
        self.calls += 1
        w, h = image.size
        if np.asarray(image.convert("L"))[h // 2, w // 2] < 128:
            return []
        return [Box(w // 4, h // 4, w // 2, h // 2)]

    def crop(self, image: Image.Image, box: Box) -> Image.Image:
        return image.crop((box.x, box.y, box.x + box.w, box.y + box.h))

    def fingerprint(self) -> str:
        return "white-face-gate/1"

    def config(self) -> dict:
        return {"kind": "white-face"}


class AllMasc:
    """A classifier that answers masc for every crop."""

    def measure(self, crops):
        return [{"gender_presentation": Prediction("masc", "masc", 0.9, 0.8, {"masc": 0.9, "fem": 0.1})} for _ in crops]


def release(root: Path) -> tuple[Path, dict[int, bool]]:
    people, found = [], {}
    img = 0
    for gender, mst, n, n_found in BLOCKS:
        for k in range(n):
            img += 1
            people.append(person(img, img, BOX, **{f"gender_presentation_{gender}": 1, f"skin_tone_{mst}": 3,
                                                   "visible_face": 1, "visible_torso": 1, "lighting_well_lit": 1}))
            found[img] = k < n_found
    for _ in range(N_HIDDEN):
        img += 1
        people.append(person(img, img, BOX, gender_presentation_fem=1, skin_tone_8=3, visible_torso=1, lighting_well_lit=1))
        found[img] = False
    write_facet(root, people, list(found))
    folder = root / "imgs_1"
    folder.mkdir()
    for i, hit in found.items():
        Image.new("RGB", (100, 100), (255, 255, 255) if hit else (0, 0, 0)).save(folder / f"sa_{i}.jpg", quality=95)
    return root, found


def rows(gate: dict, grouping: str) -> dict[str, dict]:
    return {r["group"]: r for r in gate["by_group"] if r["group_attribute"] == grouping and r["metric"] == METRIC}


def comparison(gate: dict, grouping: str) -> dict:
    (c,) = [c for c in gate["comparisons"] if c["group_attribute"] == grouping]
    return c


@pytest.mark.parametrize("crops", ["face", "person"])
def test_gate_recall_per_group_is_known_by_construction(crops, tmp_path):
    root, _ = release(tmp_path / "facet")
    gate = WhiteFaceGate()
    options = AuditOptions(n_boot=300, engine="vectorized", face_gate=gate if crops == "face" else None, recall_gate=gate)
    result = run_audit(AllMasc(), root, tmp_path / "out", classifier_id="all-masc", fingerprint="f", options=options)
    g = result["gate"]
    assert (g["n"], g["n_detected"], g["n_images"], g["n_not_visible"]) == (160, 80, 160, N_HIDDEN)
    # face crops ask the gate about everyone; with person crops it runs on the visible faces only
    assert gate.calls == (160 + N_HIDDEN if crops == "face" else 160)
    overall = g["overall"][METRIC]
    assert overall["value"] == pytest.approx(0.5) and overall["n"] == 160
    assert overall["ci_low"] < 0.5 < overall["ci_high"]
    by_gender = rows(g, "gender_presentation")
    assert {k: (v["value"], v["n"]) for k, v in by_gender.items()} == {"masc": (0.75, 80), "fem": (0.25, 80)}
    assert by_gender["fem"]["ci_high"] < by_gender["masc"]["ci_low"]
    by_tone = rows(g, "skin_tone")
    assert {k: (v["value"], v["n"]) for k, v in by_tone.items()} == {"2": (0.5, 80), "8": (0.5, 80)}
    assert {k: v["value"] for k, v in rows(g, "skin_tone_bucket").items()} == {"lighter": 0.5, "darker": 0.5}
    # equal rates: rejected across genders, not across skin tones; q-values over the groupings
    gender, tone = comparison(g, "gender_presentation"), comparison(g, "skin_tone")
    assert gender["difference"]["value"] == pytest.approx(0.5) and gender["q_value"] < 0.05
    assert tone["difference"]["value"] == 0 and tone["p_value"] > 0.5
    assert g["differs_across_groups"] and g["differs_by"] == ["gender_presentation"]
    assert "not missing-at-random" in g["warning"] and "gender_presentation" in g["warning"]
    # the rows are in audit.json (checked reading) and audit.csv
    doc = load_audit(tmp_path / "out")
    assert doc["gate"]["overall"][METRIC]["n"] == 160
    csv_text = (tmp_path / "out" / "audit.csv").read_text()
    assert "face_gate,overall,all,gate_recall,0.5,160" in csv_text
    assert "face_gate,gender_presentation,fem,gate_recall,0.25,80" in csv_text


def test_the_audit_page_shows_the_gate_and_its_warning(tmp_path):
    root, _ = release(tmp_path / "facet")
    gate = WhiteFaceGate()
    run_audit(AllMasc(), root, tmp_path / "out", classifier_id="all-masc", fingerprint="f",
              options=AuditOptions(n_boot=100, engine="vectorized", recall_gate=gate))
    page = write_audit_html(tmp_path / "out").read_text()
    section = page[page.index('id="gate-recall"'):]
    assert "white-face" in section and "not missing-at-random" in section
    assert "80 of 160 visible faces" in section and "n=80" in section or "n = 80" in section


def test_equal_rates_give_no_warning(tmp_path):
    root, found = release(tmp_path / "facet")
    for i in found:  # every visible face found
        if i <= 160:
            Image.new("RGB", (100, 100), (255, 255, 255)).save(root / "imgs_1" / f"sa_{i}.jpg", quality=95)
    result = run_audit(AllMasc(), root, tmp_path / "out", classifier_id="all-masc", fingerprint="f",
                       options=AuditOptions(n_boot=100, engine="vectorized", recall_gate=WhiteFaceGate()))
    g = result["gate"]
    assert g["overall"][METRIC]["value"] == 1.0 and not g["differs_across_groups"] and g["warning"] == ""


def test_a_release_without_visible_faces_says_why_the_gate_is_not_audited(tmp_path):
    import pandas as pd

    root, _ = release(tmp_path / "facet")
    ann = root / "annotations" / "annotations.csv"
    table = pd.read_csv(ann, dtype=str, keep_default_na=False)
    table["visible_face"] = "0"
    table.to_csv(ann, index=False)
    result = run_audit(AllMasc(), root, tmp_path / "out", classifier_id="all-masc", fingerprint="f",
                       options=AuditOptions(n_boot=0, engine="vectorized", recall_gate=WhiteFaceGate()))
    assert "none of the 180 audited people has visible_face marked" in result["gate"]["not_audited"]
    assert "gate_recall" not in (tmp_path / "out" / "audit.csv").read_text()


@pytest.mark.slow  # the CLI's imports and a pixel-MST audit: about 9 s on a loaded CPU
def test_cli_audits_a_registered_gate(tmp_path, monkeypatch, capsys):
    root, _ = release(tmp_path / "facet")
    monkeypatch.setitem(gate_module.FACE_DETECTORS._factories, "white-face", lambda: lambda device="cpu": WhiteFaceGate())
    monkeypatch.setenv("T2IBIAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", ["t2ibias", "audit", "--classifier", "pixel-mst", "--facet-root", str(root),
                                      "--out", str(tmp_path / "out"), "--face-detector", "white-face", "--n-boot", "100",
                                      "--crops", "person", "--device", "cpu"])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "face gate white-face: found 80 of 160 visible faces: gate_recall 50.0%" in out
    assert "not missing-at-random" in out
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert doc["gate"]["face_gate"] == {"kind": "white-face"} and doc["settings"]["gate_audited"] == {"kind": "white-face"}


@pytest.mark.slow  # makes, measures and scores a run: about 10 s
def test_the_run_instrument_carries_the_gate_audit_its_warning_and_no_face_rates(tmp_path, one_torch_thread):
    """A run measured with the Haar gate and scored with an audit of that gate: instrument.json holds
    the audited rates, says the audit is of the run's gate, carries the warning, and gives each
    prompt's no-face rate (the run's photo has a face, its random image has none)."""
    from facet_eval.data import load_facet
    from run_fixtures import audit_doc, make_face_run
    from t2ibias.api import open_run
    from t2ibias.core.files import dumps_strict
    from t2ibias.audit.gate_recall import gate_recall_audit
    from t2ibias.measure.gate import HaarFaceGate
    from t2ibias.measure.stage import measure_stage

    root, found = release(tmp_path / "facet")
    people = load_facet(root).people
    hits = np.array([found[int(i)] for i in people["image_id"]])
    haar = HaarFaceGate()
    block, _ = gate_recall_audit(people, hits, AuditOptions(n_boot=100, engine="vectorized"), haar)
    doc = audit_doc([[18, 2, 0], [4, 16, 0]])
    doc["gate"] = block
    (tmp_path / "audit.json").write_text(dumps_strict(doc))
    run_dir, photo = make_face_run(tmp_path / "run")
    measure_stage(run_dir, device="cpu")
    open_run(run_dir).score(audit=tmp_path / "audit.json")
    gate = json.loads((run_dir / "instrument.json").read_text())["gate"]
    assert gate["matches_run_gate"] is True and gate["run_gate"]["kind"] == "haar"
    assert gate["audit"]["overall"]["gate_recall"]["value"] == 0.5 and gate["audit"]["n"] == 160
    assert "not missing-at-random" in gate["warning"]
    by_prompt = {r["group"]: r for r in gate["no_face_by_prompt"] if r["group_by"] == "prompt_id"}
    labels = open_run(run_dir).image_labels.drop_duplicates("key").set_index("key")
    photo_prompt = labels.loc[photo, "prompt_id"]
    assert by_prompt[photo_prompt]["value"] == 0.0 and by_prompt[photo_prompt]["n"] == 1
    assert all(r["value"] == 1.0 for p, r in by_prompt.items() if p != photo_prompt)
    pooled = [r for r in gate["no_face_by_prompt"] if r["group_by"] == "all"][0]
    assert (pooled["value"], pooled["n"]) == (0.5, 2) and pooled["ci_low"] < 0.5 < pooled["ci_high"]
    # a later score keeps the run's copy of the audit; without any audit the instrument says what is unchecked
    open_run(run_dir).score()
    assert json.loads((run_dir / "instrument.json").read_text())["gate"]["matches_run_gate"] is True
    (run_dir / "audit.json").unlink()
    open_run(run_dir).score()
    assert "no audit of the face gate" in json.loads((run_dir / "instrument.json").read_text())["gate"]["note"]


def test_haar_gate_on_the_astronaut_photo(tmp_path):
    """The real Haar cascade finds the astronaut's face in her box and nothing on plain grey images."""
    from skimage import data as skdata

    from t2ibias.measure.gate import HaarFaceGate

    box = [234, 59, 430, 527]  # around her head and shoulders, in FACET's 1000² pixels (files are 512²)
    people = [person(i, i, box, **{f"gender_presentation_{'masc' if i <= 3 else 'fem'}": 1, "visible_face": 1})
              for i in range(1, 7)]
    root = write_facet(tmp_path / "facet", people, list(range(1, 7)))
    (root / "imgs_1").mkdir()
    for i in range(1, 7):
        image = Image.fromarray(skdata.astronaut()) if i <= 3 else Image.new("RGB", (512, 512), (128, 128, 128))
        image.save(root / "imgs_1" / f"sa_{i}.jpg", quality=95)
    result = run_audit(AllMasc(), root, tmp_path / "out", classifier_id="all-masc", fingerprint="f",
                       options=AuditOptions(n_boot=50, engine="vectorized", recall_gate=HaarFaceGate()))
    g = result["gate"]
    assert (g["n"], g["n_detected"]) == (6, 3) and g["face_gate"]["kind"] == "haar"
    assert {k: v["value"] for k, v in rows(g, "gender_presentation").items()} == {"masc": 1.0, "fem": 0.0}
