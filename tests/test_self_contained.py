"""Self-contained runs: a run directory holds everything its later stages read. The classifier is
frozen into spec.json (a classifier given as a YAML file works end to end), the measurer is the one
measure.json recorded, the audit is the run's own audit.json. A finished run copied elsewhere, with
a fresh user cache and an edited classifier config, scores and reports to the same bytes."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from t2ibias.core.errors import UserError
from t2ibias.models.classifier_spec import CLASSIFIER_DIR, CLASSIFIERS, load_classifier_spec_file
from t2ibias.store.rundir import RunDir
from tests.test_cli import error_line, in_process
from tests.run_fixtures import audit_doc
from tests.test_run_integrity import SWEEP, copy_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = "tiny-random-clip"
TINY_YAML = (CLASSIFIER_DIR / f"{TINY}.yaml").read_text()
OTHER_ATTRIBUTES = """\
templates:
  - "a drawing of {}."
attributes:
  person:
    labels: {person: ["a person"], no_person: ["an empty scene"]}
  gender_presentation:
    labels: {masc: ["a man"], fem: ["a woman"]}
"""
#: What score and report write; all of it must come out the same from a copied run.
SCORED = ("image_labels.parquet", "metrics.json", "metrics.csv", "instrument.json", "report.html", "model_card.md")


def _audit_doc(classifier_fingerprint: str, counts: list[list[int]]) -> dict:
    return audit_doc(counts, "my-clip", classifier_fingerprint)


@pytest.fixture(scope="module")
def own_classifier(tmp_path_factory) -> Path:
    """``my-clip.yaml`` outside the registry (the tiny classifier under another name), naming an
    audit of itself in ``audit:``, relative to the YAML."""
    folder = tmp_path_factory.mktemp("own-classifier")
    path = folder / "my-clip.yaml"
    path.write_text(TINY_YAML)
    fp = load_classifier_spec_file(path).fingerprint()
    (folder / "audits").mkdir()
    (folder / "audits" / "audit.json").write_text(json.dumps(_audit_doc(fp, [[18, 2, 0], [4, 16, 0]])))
    path.write_text(TINY_YAML + "audit: audits/audit.json\n")
    assert load_classifier_spec_file(path).fingerprint() == fp  # where the audit is does not change the classifier
    return path


@pytest.fixture(scope="module")
def finished(own_classifier, tmp_path_factory, t2ibias_cache) -> Path:
    """A finished sweep with ``--classifier my-clip.yaml`` (every stage's files)."""
    run = tmp_path_factory.mktemp("self-contained") / "run"
    mp = pytest.MonkeyPatch()
    try:
        from t2ibias.cli import main

        mp.setattr(sys, "argv", ["t2ibias", *SWEEP, "--classifier", str(own_classifier), "--out", str(run)])
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
    finally:
        mp.undo()
    return run


def test_a_classifier_yaml_file_runs_end_to_end_and_is_frozen_into_the_spec(finished, own_classifier):
    spec = json.loads((finished / "spec.json").read_text())
    mine = load_classifier_spec_file(own_classifier)
    assert spec["classifier"]["id"] == "my-clip" and spec["classifier"]["fingerprint"] == mine.fingerprint()
    assert spec["classifier_spec"] == json.loads(json.dumps(mine.to_dict()))
    assert spec["defining"]["classifier_fingerprint"] == mine.fingerprint()
    assert RunDir(finished).classifier == mine
    measured = json.loads((finished / "measure.json").read_text())
    assert measured["classifier"] == {"id": "my-clip", "fingerprint": mine.fingerprint()}
    metrics = json.loads((finished / "metrics.json").read_text())
    assert measured["measurer"] == RunDir(finished).measurer
    assert {r["axis"] for r in metrics["rows"]} >= {"gender_presentation", "age_group"}
    assert (finished / "report.html").is_file() and (finished / "model_card.md").is_file()


def test_the_audit_the_classifier_config_names_is_copied_into_the_run(finished, own_classifier):
    source = own_classifier.parent / "audits" / "audit.json"
    copied = json.loads((finished / "audit.json").read_text())
    provenance = copied.pop("provenance")
    assert copied == json.loads(source.read_text())
    assert provenance == {"source": str(source.resolve()), "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
                          "attached_by": "classifier config", "config": str(own_classifier)}
    instrument = json.loads((finished / "instrument.json").read_text())
    assert instrument["audit"]["matches_run_classifier"] is True and instrument["audit"]["attached_by"] == "classifier config"
    assert instrument["corrected"], "the audit of the run's own classifier is applied"
    html = (finished / "report.html").read_text()
    assert "attached by <code>classifier config</code>" in html and provenance["sha256"][:12] in html


def test_a_copied_run_scores_and_reports_to_the_same_bytes(finished, own_classifier, tmp_path, monkeypatch, capsys):
    """Nothing outside the run directory changes its numbers: a copy elsewhere, with a fresh user
    cache holding a registered audit of its classifier, its classifier YAML and audit edited or gone,
    and the registry's tiny classifier changed, scores and reports to the bytes the original holds."""
    before = {name: (finished / name).read_bytes() for name in SCORED}
    run = copy_of(finished, tmp_path / "elsewhere" / "run")
    fp = json.loads((run / "spec.json").read_text())["classifier"]["fingerprint"]
    cache = tmp_path / "fresh-cache"
    (cache / "audits").mkdir(parents=True)
    (cache / "audits" / f"{fp}.json").write_text(json.dumps(_audit_doc(fp, [[2, 18, 0], [16, 4, 0]])))
    monkeypatch.setenv("T2IBIAS_CACHE", str(cache))
    # another temperature (so another fingerprint) and only one attribute besides `person`
    edited = TINY_YAML.replace("logit_scale: 100.0", "logit_scale: 7.0").replace("include: clip-vit-l-14-openai", OTHER_ATTRIBUTES)
    (tmp_path / "tiny-random-clip.yaml").write_text(edited)
    monkeypatch.setitem(CLASSIFIERS._factories, TINY, lambda: load_classifier_spec_file(tmp_path / "tiny-random-clip.yaml"))
    original = own_classifier.read_bytes()
    try:
        own_classifier.write_text(edited)  # the YAML the run was swept with, edited, and its audit: gone
        for stage in ("score", "report"):
            code, _, err = in_process(monkeypatch, capsys, stage, str(run))
            assert code == 0, err
    finally:
        own_classifier.write_bytes(original)
    for name in SCORED:
        assert (run / name).read_bytes() == before[name], name
    assert (run / "audit.json").read_bytes() == (finished / "audit.json").read_bytes()


def test_rescoring_keeps_the_runs_audit_and_score_audit_replaces_it(finished, tmp_path, monkeypatch, capsys):
    run = copy_of(finished, tmp_path / "run")
    other = tmp_path / "other-audit.json"
    other.write_text(json.dumps(_audit_doc("another-classifier", [[10, 10, 0], [10, 10, 0]])))
    code, _, err = in_process(monkeypatch, capsys, "score", str(run), "--audit", str(other))
    assert code == 0, err
    doc = json.loads((run / "instrument.json").read_text())
    assert doc["audit"]["attached_by"] == "t2ibias score --audit" and doc["audit"]["source"] == str(other.absolute())
    assert doc["corrected"] == [] and "no correction" in doc["audit"]["note"]
    assert json.loads((run / "audit.json").read_text())["provenance"]["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    other.unlink()
    code, _, err = in_process(monkeypatch, capsys, "score", str(run))
    assert code == 0, err
    assert json.loads((run / "instrument.json").read_text()) == doc


def test_sweeping_again_keeps_the_audit_a_run_holds(finished, own_classifier, tmp_path, monkeypatch, capsys):
    run = copy_of(finished, tmp_path / "run")
    other = tmp_path / "other-audit.json"
    other.write_text(json.dumps(_audit_doc("another-classifier", [[10, 10, 0], [10, 10, 0]])))
    code, _, err = in_process(monkeypatch, capsys, "score", str(run), "--audit", str(other))
    assert code == 0, err
    kept = (run / "audit.json").read_bytes()
    code, _, err = in_process(monkeypatch, capsys, *SWEEP, "--classifier", str(own_classifier), "--out", str(run))
    assert code == 0, err
    assert (run / "audit.json").read_bytes() == kept


def test_without_an_audit_none_is_attached_and_the_report_says_how_to_attach_one(tmp_path, monkeypatch, capsys):
    """The tiny classifier's registered audit in the user cache is never used: only --audit or `audit:` attach one."""
    from t2ibias.models.classifier_spec import resolve_classifier_spec

    fp = resolve_classifier_spec(TINY).fingerprint()
    cache = tmp_path / "cache"
    (cache / "audits").mkdir(parents=True)
    (cache / "audits" / f"{fp}.json").write_text(json.dumps(_audit_doc(fp, [[18, 2, 0], [4, 16, 0]])))
    monkeypatch.setenv("T2IBIAS_CACHE", str(cache))
    run = tmp_path / "run"
    code, _, err = in_process(monkeypatch, capsys, *SWEEP, "--out", str(run))
    assert code == 0, err
    assert not (run / "audit.json").exists() and json.loads((run / "instrument.json").read_text())["audit"] is None
    html = (run / "report.html").read_text()
    assert "has no audit" in html and "--audit DIR/audit.json" in html and "no audit is attached otherwise" in html


# ------------------------------------------------------------------------------ the readers


def test_a_run_swept_before_specs_froze_the_classifier_looks_it_up_by_id(finished, own_classifier, tmp_path, monkeypatch, capsys):
    """spec.json without ``classifier_spec`` (as runs swept before it was frozen): the one fallback
    resolves the id in the registry, and the run scores as before."""
    run = copy_of(finished, tmp_path / "run")
    spec = json.loads((run / "spec.json").read_text())
    spec.pop("classifier_spec")
    (run / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match="unknown classifier 'my-clip'"):
        RunDir(run).classifier
    monkeypatch.setitem(CLASSIFIERS._factories, "my-clip", lambda: load_classifier_spec_file(own_classifier))
    assert RunDir(run).classifier == load_classifier_spec_file(own_classifier)
    before = json.loads((finished / "metrics.json").read_text())
    code, _, err = in_process(monkeypatch, capsys, "score", str(run))
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["rows"] == before["rows"]


@pytest.mark.parametrize("damage", [{"attributes": []}, {"arch": None, "colour": "red"}, {"logit_scale": None, "id": None}],
                         ids=["attributes", "unknown-field", "missing-field"])
def test_a_damaged_frozen_classifier_is_one_line_naming_the_field(finished, tmp_path, damage, monkeypatch, capsys):
    run = copy_of(finished, tmp_path / "run")
    spec = json.loads((run / "spec.json").read_text())
    frozen = {k: v for k, v in {**spec["classifier_spec"], **damage}.items() if v is not None}
    (run / "spec.json").write_text(json.dumps({**spec, "classifier_spec": frozen}))
    with pytest.raises(UserError, match=r"spec\.json: field classifier_spec") as info:
        RunDir(run).classifier
    assert "\n" not in str(info.value)
    code, _, err = in_process(monkeypatch, capsys, "score", str(run))
    assert "classifier_spec" in error_line(code, err)


def test_score_reads_the_measurer_measure_recorded(finished, tmp_path, monkeypatch, capsys):
    """The measurer is read from measure.json, not recomputed: rows stored under the recorded
    fingerprint are the ones scored, whatever it is."""
    import pandas as pd

    run = copy_of(finished, tmp_path / "run")
    config = json.loads((run / "measure.json").read_text())
    old, new = config["measurer"], "recorded-elsewhere"
    for name in ("measurements.parquet", "embeddings.parquet"):
        frame = pd.read_parquet(run / name)
        frame["measurer"] = frame["measurer"].replace(old, new)
        frame.to_parquet(run / name, index=False)
    (run / "measure.json").write_text(json.dumps({**config, "measurer": new}))
    assert RunDir(run).measurer == new
    code, _, err = in_process(monkeypatch, capsys, "score", str(run))
    assert code == 0, err
    got = json.loads((run / "metrics.json").read_text())
    want = json.loads((finished / "metrics.json").read_text())
    assert got["rows"] == want["rows"]


def test_measured_with_another_classifier_score_keeps_the_runs_own_rows(finished, tmp_path, monkeypatch, capsys):
    """After `measure_stage(..., classifier=other)` measure.json names the other classifier; score
    finds the run classifier's rows behind the same gate in measurers.json and gives the same numbers."""
    from t2ibias.measure.stage import measure_stage

    run = copy_of(finished, tmp_path / "run")
    variant = tmp_path / "variant.yaml"
    variant.write_text(TINY_YAML.replace("logit_scale: 100.0", "logit_scale: 50.0"))
    measure_stage(run, device="cpu", classifier=str(variant))
    assert json.loads((run / "measure.json").read_text())["classifier"]["id"] == "variant"
    assert RunDir(run).measurer == json.loads((finished / "measure.json").read_text())["measurer"]
    code, _, err = in_process(monkeypatch, capsys, "score", str(run))
    assert code == 0, err
    assert (run / "metrics.json").read_bytes() == (finished / "metrics.json").read_bytes()


@pytest.mark.parametrize("value, message", [("[1, 2]", "audit must be the path"), ("nowhere/audit.json", "no such file")])
def test_a_bad_audit_field_in_a_classifier_config_is_one_line_with_its_line(tmp_path, value, message, monkeypatch, capsys):
    path = tmp_path / "bad-clip.yaml"
    path.write_text(TINY_YAML + f"audit: {value}\n")
    line_no = len(TINY_YAML.splitlines()) + 1
    with pytest.raises(UserError, match=message) as info:
        load_classifier_spec_file(path)
    assert str(info.value).startswith(f"{path}:{line_no}:") and "\n" not in str(info.value)
    code, _, err = in_process(monkeypatch, capsys, *SWEEP, "--classifier", str(path), "--out", str(tmp_path / "run"))
    assert f"{path}:{line_no}:" in error_line(code, err) and not (tmp_path / "run").exists()


def test_a_damaged_audit_copy_in_the_run_is_one_line(finished, tmp_path, monkeypatch, capsys):
    run = copy_of(finished, tmp_path / "run")
    doc = json.loads((run / "audit.json").read_text())
    doc.pop("provenance")
    (run / "audit.json").write_text(json.dumps(doc))
    code, _, err = in_process(monkeypatch, capsys, "score", str(run))
    line = error_line(code, err)
    assert "audit.json" in line and "provenance" in line and "--audit" in line


def test_validate_reads_a_run_through_the_same_reader(finished, monkeypatch, capsys):
    code, out, err = in_process(monkeypatch, capsys, "validate", str(finished))
    assert code == 0, err
    spec = json.loads((finished / "spec.json").read_text())
    assert f"run {spec['fingerprint']}: 2 of 2 images intact" in out
