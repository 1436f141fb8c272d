"""facet-eval end to end: detect → submit → validate → leaderboard, and the exit codes."""

from __future__ import annotations

import json
import sys

import pytest

from tests.facet_fixtures import known_dataset, write_predictions


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from facet_eval.cli import main

    monkeypatch.setattr(sys, "argv", ["facet-eval", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_detect_submit_validate_leaderboard(tmp_path, monkeypatch, capsys):
    root, dets, _ = known_dataset(tmp_path / "facet")
    preds = write_predictions(tmp_path / "preds.json", dets)
    out = tmp_path / "out"
    assert run(monkeypatch, capsys, "detect", "--facet-root", str(root), "--predictions", str(preds), "--out", str(out))[0] == 0
    (out / "run.json").write_text(json.dumps({"model": {"name": "synthetic", "parameters": {"conf": 0.001}}}))
    sub = tmp_path / "submission.json"
    code, stdout, _ = run(monkeypatch, capsys, "submit", str(out), "--out", str(sub), "--facet-root", str(root))
    assert code == 0 and sub.is_file()
    doc = json.loads(sub.read_text())
    assert doc["schema_version"] == 2 and doc["model"]["name"] == "synthetic" and doc["data"]["annotation_checksums"]
    assert run(monkeypatch, capsys, "validate", str(sub))[0] == 0
    page = tmp_path / "leaderboard.html"
    assert run(monkeypatch, capsys, "leaderboard", str(sub), "--out", str(page))[0] == 0
    assert "synthetic" in page.read_text() and "http" not in page.read_text()

    doc["summary"]["overall"]["value"] = 0.123456  # tampered: the rows say otherwise
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, _, err = run(monkeypatch, capsys, "validate", str(bad))
    assert code == 2 and "summary" in err
    code, _, err = run(monkeypatch, capsys, "leaderboard", str(sub), str(bad), "--out", str(tmp_path / "lb2.html"))
    assert code == 2 and err.startswith("error:") and not (tmp_path / "lb2.html").exists()


@pytest.mark.parametrize("version", [3, 0])
def test_other_schema_versions_exit_2(tmp_path, monkeypatch, capsys, version):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"schema": "facet-eval-submission", "schema_version": version}))
    code, _, err = run(monkeypatch, capsys, "validate", str(path))
    assert code == 2 and f"version {version}" in err
