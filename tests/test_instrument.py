"""The instrument beside the estimate, end to end through the CLI: a second measurer on the same
face crops, FairFace predictions imported from a CSV, a classifier audit on FACET people, and
instrument.json (audit, corrected proportions, agreement) in the scored run and its report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t2ibias.measure.fairface import AGE_BINS, CSV_COLUMNS
from tests.run_fixtures import audit_doc
from t2ibias.metrics.correction import corrected_proportions
from tests.test_cli import in_process as cli

TINY = "tiny-random-clip"


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    from tests.run_fixtures import make_face_run

    from t2ibias.measure.stage import measure_stage

    run_dir, key = make_face_run(tmp_path_factory.mktemp("instrument") / "run")
    measure_stage(run_dir, device="cpu")
    return run_dir, key


@pytest.fixture
def run(face_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(face_run[0], target)
    return target, face_run[1]


def _instrument(run_dir: Path) -> dict:
    return json.loads((run_dir / "instrument.json").read_text())


def _fairface_csv(path: Path, key: str, gender: str = "Female") -> Path:
    def onehot(n: int, i: int) -> str:
        v = np.full(n, 0.02 / (n - 1), dtype=np.float32)
        v[i] = 0.98
        return np.array2string(v)

    row = {"face_name_align": f"detected_faces/{key}_face0.jpg", "race": "East Asian", "race4": "Asian",
           "gender": gender, "age": "30-39", "race_scores_fair": onehot(7, 3), "race_scores_fair_4": onehot(4, 2),
           "gender_scores_fair": onehot(2, 1 if gender == "Female" else 0),
           "age_scores_fair": onehot(9, AGE_BINS.index("30-39"))}
    pd.DataFrame([row], columns=list(CSV_COLUMNS)).to_csv(path, index=False)
    return path


def test_second_measurer_on_the_same_crops_gives_agreement_rows(run, monkeypatch, capsys, one_torch_thread):
    run_dir, face_key = run
    code, _, err = cli(monkeypatch, capsys, "measure", str(run_dir), "--device", "cpu", "--also", "pixel-mst")
    assert code == 0, err
    measurers = json.loads((run_dir / "measurers.json").read_text())
    assert {m["id"] for m in measurers.values()} >= {TINY, "pixel-mst"}
    code, _, err = cli(monkeypatch, capsys, "score", str(run_dir))
    assert code == 0, err
    doc = _instrument(run_dir)
    rows = [r for r in doc["agreement"] if r["measurer_b"] == "pixel-mst"]
    assert {r["attribute"] for r in rows} == {"skin_tone"}
    overall = [r for r in rows if r["group"] is None]
    assert overall and all(r["pairing"] == "same face crops" for r in rows)
    # one face in the run (the astronaut): one pair, or none when either side abstained
    assert {r["n"] + r["n_excluded"] for r in overall} == {1}


def test_fairface_csv_import_and_agreement(run, monkeypatch, capsys, tmp_path, one_torch_thread):
    run_dir, face_key = run
    csv = _fairface_csv(tmp_path / "fairface.csv", face_key)
    code, _, err = cli(monkeypatch, capsys, "measure", str(run_dir), "--device", "cpu", "--fairface", str(csv))
    assert code == 0, err
    assert "imported 1 FairFace faces" in err
    from t2ibias.store.rundir import read_measurements, read_measurers

    info = {fp: m for fp, m in read_measurers(run_dir).items() if m.get("id") == "fairface-csv"}
    assert len(info) == 1
    meas = read_measurements(run_dir)
    ff = meas[meas["measurer"] == next(iter(info))]
    assert set(ff["key"]) == {face_key}
    assert ff.set_index("attribute").loc["gender_presentation", "label"] == "fem"
    code, _, err = cli(monkeypatch, capsys, "score", str(run_dir))
    assert code == 0, err
    rows = [r for r in _instrument(run_dir)["agreement"] if r["measurer_b"] == "fairface-csv"]
    assert {"gender_presentation", "age_group", "race", "race4"} <= {r["attribute"] for r in rows}
    assert all(r["pairing"] == "images with exactly one face on both sides" for r in rows)
    g = next(r for r in rows if r["attribute"] == "gender_presentation" and r["group"] is None and r["metric"] == "agreement")
    clip = meas[(meas["measurer"] != next(iter(info))) & (meas["unit"] == "face") & (meas["attribute"] == "gender_presentation")]
    clip_label = clip["label"].iloc[0]
    if clip_label == "abstain":
        assert g["n"] == 0
    else:
        assert g["n"] == 1 and g["value"] == float(clip_label == "fem")


def test_fairface_csv_without_race4_columns_is_imported(run, monkeypatch, capsys, tmp_path, one_torch_thread):
    """The 7-column CSV of DoFaiR's predict.py (no 4-race model) is accepted, as `factuality --faces` accepts it."""
    run_dir, face_key = run
    csv = _fairface_csv(tmp_path / "dofair.csv", face_key)
    pd.read_csv(csv).drop(columns=["race4", "race_scores_fair_4"]).to_csv(csv, index=False)
    code, _, err = cli(monkeypatch, capsys, "measure", str(run_dir), "--device", "cpu", "--fairface", str(csv))
    assert code == 0, err
    assert "imported 1 FairFace faces" in err
    from t2ibias.store.rundir import read_measurements, read_measurers

    fp, info = next((fp, m) for fp, m in read_measurers(run_dir).items() if m.get("id") == "fairface-csv")
    assert info["attributes"] == ["race", "gender_presentation", "age_fairface", "age_group"]
    meas = read_measurements(run_dir)
    ff = meas[meas["measurer"] == fp].set_index("attribute")["label"]
    assert ff["race"] == "east_asian" and ff["gender_presentation"] == "fem" and "race4" not in ff.index


def test_bad_fairface_csv_is_one_line_and_loses_nothing(run, monkeypatch, capsys, tmp_path):
    run_dir, face_key = run
    before = (run_dir / "measurements.parquet").read_bytes()
    csv = _fairface_csv(tmp_path / "bad.csv", face_key)
    pd.read_csv(csv).drop(columns=["age"]).to_csv(csv, index=False)
    code, _, err = cli(monkeypatch, capsys, "measure", str(run_dir), "--fairface", str(csv))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "bad.csv" in err and "age" in err
    assert (run_dir / "measurements.parquet").read_bytes() == before
    other = _fairface_csv(tmp_path / "other.csv", "0" * 32)
    code, _, err = cli(monkeypatch, capsys, "measure", str(run_dir), "--fairface", str(other))
    assert code == 2 and "not in this run" in err
    assert (run_dir / "measurements.parquet").read_bytes() == before


def test_unknown_second_measurer_is_refused(run, monkeypatch, capsys):
    run_dir, _ = run
    code, _, err = cli(monkeypatch, capsys, "measure", str(run_dir), "--also", "mst-by-eye")
    assert code == 2 and "pixel-mst" in err and len(err.strip().splitlines()) == 1


def _audit_file(path: Path, counts: list[list[int]]) -> Path:
    doc = audit_doc(counts)
    path.write_text(json.dumps(doc))
    return path


def test_explicit_audit_of_another_classifier_is_shown_but_not_applied(run, monkeypatch, capsys, tmp_path):
    run_dir, _ = run
    audit = _audit_file(tmp_path / "audit.json", [[18, 2, 0], [4, 16, 0]])
    code, _, err = cli(monkeypatch, capsys, "score", str(run_dir), "--audit", str(audit))
    assert code == 0, err
    doc = _instrument(run_dir)
    assert doc["audit"]["matches_run_classifier"] is False and doc["corrected"] == []
    assert "no correction" in doc["audit"]["note"]


def test_an_audit_is_attached_only_by_name_and_then_kept_in_the_run(run, monkeypatch, capsys, tmp_path, one_torch_thread):
    """`t2ibias audit` on FACET people registers its audit in the user cache, yet a score of a run
    measured with that classifier does not pick it up; `score --audit` copies it into the run (with
    its source and sha256), corrects with it (the shares of inverting its confusion matrix), and a
    later score without --audit keeps using the run's copy."""
    import hashlib

    from tests.test_audit import build_fixture

    run_dir, _ = run
    facet = tmp_path / "facet"
    build_fixture(facet)
    out = tmp_path / "audit"
    code, stdout, err = cli(monkeypatch, capsys, "audit", "--classifier", TINY, "--facet-root", str(facet),
                            "--out", str(out), "--device", "cpu", "--n-boot", "50", "--crops", "person")
    assert code == 0, err
    assert (out / "audit.json").is_file() and (out / "audit.html").is_file()
    audit = json.loads((out / "audit.json").read_text())
    assert not (out / "registered.txt").exists()  # the audit is kept in --out only, nowhere else
    code, _, err = cli(monkeypatch, capsys, "score", str(run_dir))
    assert code == 0, err
    assert _instrument(run_dir)["audit"] is None and not (run_dir / "audit.json").exists()

    code, _, err = cli(monkeypatch, capsys, "score", str(run_dir), "--audit", str(out))
    assert code == 0, err
    doc = _instrument(run_dir)
    copied = json.loads((run_dir / "audit.json").read_text())
    provenance = copied.pop("provenance")
    assert copied == audit
    assert provenance == {"source": str((out / "audit.json").absolute()), "attached_by": "t2ibias score --audit",
                          "sha256": hashlib.sha256((out / "audit.json").read_bytes()).hexdigest()}
    assert doc["audit"]["matches_run_classifier"] is True
    assert {k: doc["audit"][k] for k in ("source", "sha256", "attached_by", "file")} == {**provenance, "file": "audit.json"}
    labels = pd.read_parquet(run_dir / "image_labels.parquet")
    sub = labels[labels["attribute"] == "gender_presentation"]
    observed = {lab: int((sub["label"] == lab).sum()) for lab in ("masc", "fem", "abstain")}
    got = [r for r in doc["corrected"] if r["attribute"] == "gender_presentation" and r["group_by"] == "all"]
    if sum(observed[k] for k in ("masc", "fem")) == 0:
        assert got == []
    else:
        try:
            want = corrected_proportions(observed, audit["attributes"]["gender_presentation"], n_boot=0)
        except Exception as exc:  # a random classifier can leave a true class without answers
            assert got and got[0]["label"] is None and str(exc) in got[0]["note"]
        else:
            assert [r["label"] for r in got] == [w["label"] for w in want]
            for r, w in zip(got, want):
                assert r["corrected"] == pytest.approx(w["corrected"]) and r["raw"] == pytest.approx(w["raw"])

    # the source may go away: the run keeps its copy, and a score without --audit gives the same file
    first = (run_dir / "instrument.json").read_bytes()
    shutil.rmtree(out)
    code, _, err = cli(monkeypatch, capsys, "score", str(run_dir))
    assert code == 0, err
    assert (run_dir / "instrument.json").read_bytes() == first
    code, _, err = cli(monkeypatch, capsys, "report", str(run_dir))
    assert code == 0, err
    html = (run_dir / "report.html").read_text()
    assert "attached by <code>t2ibias score --audit</code>" in html and provenance["sha256"][:12] in html


def test_a_bad_audit_fails_the_score_and_changes_nothing(run, monkeypatch, capsys, tmp_path):
    from tests.test_run_integrity import snapshot

    run_dir, _ = run
    code, _, err = cli(monkeypatch, capsys, "score", str(run_dir))
    assert code == 0, err
    before = snapshot(run_dir)
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "t2ibias-audit/1", "classifier": {}, "facet": {}}')
    code, _, err = cli(monkeypatch, capsys, "score", str(run_dir), "--audit", str(bad))
    assert code == 2 and "bad.json" in err and "attributes" in err and len(err.strip().splitlines()) == 1
    assert snapshot(run_dir) == before


def test_correction_rows_match_the_inverse_of_a_given_audit(tmp_path):
    from t2ibias.metrics.instrument import corrected_rows

    audit = json.loads(_audit_file(tmp_path / "a.json", [[18, 2, 0], [4, 16, 0]]).read_text())
    labels = pd.DataFrame({"key": ["a", "b", "c", "d"], "prompt_id": ["p"] * 4, "attribute": ["gender_presentation"] * 4,
                           "label": ["masc", "masc", "fem", "abstain"]})
    prompts = pd.DataFrame({"prompt_id": ["p"], "family": ["occupation"], "intervention": ["none"]})
    rows = corrected_rows(labels, prompts, audit, n_boot=200)
    allrows = {r["label"]: r for r in rows if r["group_by"] == "all"}
    # P(pred|true) = [[.9,.1],[.2,.8]]; q = (2/3, 1/3): masc = (q_m - 0.2) / 0.7
    assert allrows["masc"]["corrected"] == pytest.approx((2 / 3 - 0.2) / 0.7)
    assert allrows["masc"]["n_abstain"] == 1 and allrows["masc"]["raw"] == pytest.approx(2 / 3)
    assert allrows["masc"]["ci_low"] <= allrows["masc"]["corrected"] <= allrows["masc"]["ci_high"]
    assert {r["group_by"] for r in rows} == {"all", "intervention"}  # one family: no family split


def test_report_shows_the_instrument(run, monkeypatch, capsys, tmp_path):
    run_dir, _ = run
    audit = _audit_file(tmp_path / "audit.json", [[18, 2, 0], [4, 16, 0]])
    code, _, err = cli(monkeypatch, capsys, "score", str(run_dir), "--audit", str(audit))
    assert code == 0, err
    code, _, err = cli(monkeypatch, capsys, "report", str(run_dir))
    assert code == 0, err
    html = (run_dir / "report.html").read_text()
    assert "Measurement instrument" in html and "audit of another classifier" in html


def test_audit_on_face_crops_sees_the_face_the_measure_stage_would(tmp_path, monkeypatch, capsys):
    """With face crops the classifier sees the largest face in each person box (padded as the
    measure stage pads it); a person with no face found is an abstention, not a skip."""
    import json as _json

    from PIL import Image
    from skimage import data as skdata

    from t2ibias.audit import run_audit
    from t2ibias.models.clip_zeroshot import Prediction
    from t2ibias.measure.gate import HaarFaceGate
    from tests.facet_fixtures import person, write_facet

    root = tmp_path / "facet"
    people = [person(1, 1, [100, 20, 300, 490], gender_presentation_fem=1),
              person(2, 2, [10, 10, 200, 200], gender_presentation_masc=1),
              # a neighbour right of the astronaut's face: her face is in the padded box, not in his
              person(3, 1, [240, 40, 260, 400], gender_presentation_masc=1)]
    write_facet(root, people, [1, 2])
    coco = _json.loads((root / "annotations" / "coco_boxes.json").read_text())
    for im in coco["images"]:
        im["width"], im["height"] = 512, 512
    (root / "annotations" / "coco_boxes.json").write_text(_json.dumps(coco))
    (root / "imgs_1").mkdir()
    Image.fromarray(skdata.astronaut()).save(root / "imgs_1" / "sa_1.jpg")
    Image.new("RGB", (512, 512), (40, 120, 200)).save(root / "imgs_1" / "sa_2.jpg")

    class Recorder:
        id, fingerprint, seen = "recorder", "rec", []

        def measure(self, crops):
            self.seen.extend(c.size for c in crops)
            return [{"gender_presentation": Prediction("fem", "fem", 0.9, 0.8, {"masc": 0.1, "fem": 0.9})} for _ in crops]

    rec = Recorder()
    result = run_audit(rec, root, tmp_path / "out", classifier_id="recorder", fingerprint="rec", n_boot=0,
                       face_gate=HaarFaceGate())
    assert len(rec.seen) == 1  # only the astronaut's face
    w, h = rec.seen[0]
    assert 120 <= w <= 160 and 120 <= h <= 160  # a ~93 px face padded by 0.25 on each side
    assert result["facet"]["n_no_face"] == 2 and result["facet"]["n_audited"] == 3
    g = result["attributes"]["gender_presentation"]
    assert g["n_no_prediction"] == 2
    assert g["confusion"]["counts"][:2] == [[0, 0, 2], [0, 1, 0]]  # masc people: no own face → abstain
    assert result["settings"]["crops"].startswith("largest face")
