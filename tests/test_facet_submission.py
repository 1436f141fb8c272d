"""FACET submissions: building, validating and ranking them on a leaderboard."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from facet_eval.leaderboard import render_leaderboard, write_leaderboard
from facet_eval.submission import (
    compute_summary,
    make_submission,
    validate_document,
    validate_or_raise,
    validate_submission,
    write_submission,
)
from t2ibias.core.errors import UserError


def _row(metric, attribute, group, value, n=100, ci=0.02, task="detection", cls=None, **extra):
    lo = None if value is None else max(0.0, value - ci)
    hi = None if value is None else min(1.0, value + ci)
    return {"task": task, "metric": metric, "attribute": attribute, "group": group, "class": cls,
            "value": value, "n": n, "ci_low": lo, "ci_high": hi, **extra}


def _rows(overall=0.74, masc=0.744, fem=0.722, light=0.75, dark=0.73):
    return [
        _row("mAR", "all", "all", overall, n=1000),
        _row("AR50", "all", "all", 0.98, n=1000),
        _row("mAR", "gender_presentation", "masc", masc),
        _row("mAR", "gender_presentation", "fem", fem),
        _row("mAR", "skin_tone_bucket", "lighter", light),
        _row("mAR", "skin_tone_bucket", "darker", dark),
        _row("mAR", "gender_presentation", "masc", 0.9, cls="nurse", n=60),
        _row("disparity_mAR", "gender_presentation", "masc-fem", masc - fem, group_a="masc", group_b="fem"),
    ]


def _eval_dir(tmp_path: Path, name: str = "run", rows=None, run=None) -> Path:
    out = tmp_path / name
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"rows": rows if rows is not None else _rows()}))
    if run is not None:
        (out / "run.json").write_text(json.dumps(run))
    return out


def _facet_root(tmp_path: Path) -> Path:
    ann = tmp_path / "facet" / "annotations"
    ann.mkdir(parents=True)
    (ann / "annotations.csv").write_text("person_id,filename\n1,sa_1.jpg\n")
    (ann / "coco_boxes.json").write_text('{"annotations": []}')
    (ann / "readme.txt").write_text("not an annotation file")
    return tmp_path / "facet"


def _write(tmp_path: Path, doc: dict, name: str = "submission.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture()
def sub(tmp_path):
    return make_submission(_eval_dir(tmp_path), model_name="faster_rcnn_r50", model_params={"score_thr": 0.0},
                           facet_root=_facet_root(tmp_path))


def _fields(problems: list[str]) -> list[str]:
    return [re.match(r".*?: field (\S+):", p).group(1) for p in problems]


def test_round_trip_has_no_problems(tmp_path, sub):
    path = write_submission(sub, tmp_path / "out" / "submission.json")
    assert validate_submission(path) == []
    doc = validate_or_raise(path)
    assert doc["schema"] == "facet-eval-submission" and doc["schema_version"] == 2
    assert doc["task"] == "detection" and doc["model"]["name"] == "faster_rcnn_r50"
    assert len(doc["rows"]) == len(_rows())
    assert doc["created"].endswith("Z")
    assert {"facet_eval", "python", "numpy", "pycocotools", "platform"} <= set(doc["software"])


def test_summary_worst_group_and_gap(sub):
    s = sub["summary"]
    assert s["metric"] == "mAR" and s["overall"]["value"] == 0.74 and s["overall"]["n"] == 1000
    g = s["attributes"]["gender_presentation"]
    assert g["worst_group"] == "fem" and g["best_group"] == "masc"  # the per-class nurse row is not a group row
    assert g["gap"] == pytest.approx(0.022)
    assert s["attributes"]["skin_tone_bucket"]["worst_group"] == "darker"
    assert compute_summary(sub["rows"], "detection") == s


def test_checksums_from_annotations_folder(tmp_path, sub):
    ann = tmp_path / "facet" / "annotations"
    sums = sub["data"]["annotation_checksums"]
    assert set(sums) == {"annotations.csv", "coco_boxes.json"}
    assert sums["annotations.csv"] == hashlib.sha256((ann / "annotations.csv").read_bytes()).hexdigest()
    assert sub["data"]["name"] == "FACET"


def test_no_root_gives_empty_checksums_with_note(tmp_path):
    doc = make_submission(_eval_dir(tmp_path), model_name="m")
    assert doc["data"]["annotation_checksums"] == {} and doc["data"]["note"]


def test_run_json_supplies_model_and_root(tmp_path):
    root = _facet_root(tmp_path)
    out = _eval_dir(tmp_path, run={"model": {"name": "detr_r50", "parameters": {"topk": 100}}, "facet_root": str(root)})
    doc = make_submission(out)
    assert doc["model"] == {"name": "detr_r50", "parameters": {"topk": 100}}
    assert len(doc["data"]["annotation_checksums"]) == 2


def test_missing_model_name_and_bad_root_are_user_errors(tmp_path):
    out = _eval_dir(tmp_path)
    with pytest.raises(UserError, match="model-name"):
        make_submission(out)
    with pytest.raises(UserError, match="annotations"):
        make_submission(out, model_name="m", facet_root=tmp_path / "nowhere")


def test_other_schema_version_is_refused_with_one_problem(tmp_path, sub):
    sub["schema_version"] = 3
    problems = validate_submission(_write(tmp_path, sub))
    assert len(problems) == 1
    assert "field schema_version" in problems[0] and "version 3" in problems[0] and "facet-eval submit" in problems[0]


def test_tampered_summary_is_detected(tmp_path, sub):
    sub["summary"]["attributes"]["gender_presentation"]["gap"] = 0.001
    problems = validate_submission(_write(tmp_path, sub))
    assert _fields(problems) == ["summary.attributes.gender_presentation.gap"]
    assert problems[0].startswith(str(tmp_path / "submission.json") + ": field ")
    # differences below the tolerance are accepted
    sub["summary"]["attributes"]["gender_presentation"]["gap"] = 0.022 + 1e-12
    sub["summary"]["overall"]["value"] = 0.74 + 1e-12
    assert validate_document(sub) == []


def test_tampered_row_breaks_the_summary(sub):
    sub["rows"][0]["value"] = 0.5
    sub["rows"][0]["ci_low"], sub["rows"][0]["ci_high"] = 0.4, 0.6
    assert set(_fields(validate_document(sub))) == {"summary.overall.value", "summary.overall.ci_low", "summary.overall.ci_high"}


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["rows"][2].update(value=1.5, ci_high=None), "rows[2].value"),
        (lambda d: d["rows"][2].update(value=-0.1, ci_low=None), "rows[2].value"),
        (lambda d: d["rows"][2].update(n=-3), "rows[2].n"),
        (lambda d: d["rows"][2].update(n=2.5), "rows[2].n"),
        (lambda d: d["rows"][2].update(ci_low=0.8, ci_high=0.9), "rows[2].value"),
        (lambda d: d["rows"][2].update(ci_low=0.9, ci_high=0.8), "rows[2].ci_low"),
        (lambda d: d["rows"][1].pop("n"), "rows[1].n"),
        (lambda d: d["rows"][1].update(task="classification"), "rows[1].task"),
        (lambda d: d["rows"][7].pop("group_b"), "rows[7].group_b"),
        (lambda d: d["rows"][7].update(group="fem-masc"), "rows[7].group"),
        (lambda d: d["rows"].append(dict(d["rows"][1])), "rows[8]"),
        (lambda d: d["data"]["annotation_checksums"].update({"annotations.csv": "abc"}), "data.annotation_checksums.annotations.csv"),
        (lambda d: d["model"].pop("name"), "model.name"),
        (lambda d: d["model"].update(parameters=[1]), "model.parameters"),
        (lambda d: d.update(task="tracking"), "task"),
        (lambda d: d["data"].update(name="COCO"), "data.name"),
        (lambda d: d.update(created="yesterday"), "created"),
        (lambda d: d.pop("software"), "software"),
        (lambda d: d.update(rows=[]), "rows"),
    ],
)
def test_each_problem_names_its_field(tmp_path, sub, edit, field):
    edit(sub)
    problems = validate_submission(_write(tmp_path, sub))
    assert field in _fields(problems), problems
    for p in problems:
        assert "\n" not in p and re.match(r".+: field \S+: .+ \(.+\)$", p), p


def test_disparity_rows_may_be_negative(sub):
    sub["rows"][7].update(value=-0.2, ci_low=-0.25, ci_high=-0.15)
    # the gap interval of the summary comes from this row, so it moves with it
    assert _fields(validate_document(sub)) == ["summary.attributes.gender_presentation.gap_ci_high",
                                               "summary.attributes.gender_presentation.gap_ci_low"]
    sub["summary"] = compute_summary(sub["rows"], "detection")
    assert validate_document(sub) == []


def test_schema_name_unreadable_and_missing_files(tmp_path, sub):
    sub["schema"] = "something-else"
    assert _fields(validate_submission(_write(tmp_path, sub))) == ["schema"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not valid JSON" in validate_submission(bad)[0]
    assert "not found" in validate_submission(tmp_path / "missing.json")[0]


def test_validate_or_raise_joins_all_problems(tmp_path, sub):
    sub["rows"][2]["n"] = -1
    sub["model"]["name"] = ""
    with pytest.raises(UserError) as e:
        validate_or_raise(_write(tmp_path, sub))
    msg = str(e.value)
    assert "\n" not in msg and "rows[2].n" in msg and "model.name" in msg


def _sub_file(tmp_path, name, root, rows):
    i = len(list(tmp_path.glob("eval_*")))
    doc = make_submission(_eval_dir(tmp_path, f"eval_{i}", rows=rows), model_name=name, facet_root=root)
    return write_submission(doc, tmp_path / f"submission_{i}.json")


def test_leaderboard_ranks_and_escapes(tmp_path):
    root = _facet_root(tmp_path)
    a = _sub_file(tmp_path, "<b>evil</b> & co", root, _rows(overall=0.70, masc=0.72, fem=0.60))  # big gap
    b = _sub_file(tmp_path, "detr_r50", root, _rows(overall=0.84, masc=0.85, fem=0.84))          # best overall, small gap
    c = _sub_file(tmp_path, "faster_rcnn", root, _rows(overall=0.74, masc=0.745, fem=0.744))     # smallest gap
    out = write_leaderboard([a, b, c], tmp_path / "board" / "index.html")
    html = out.read_text()
    assert not re.search(r"https?://", html)
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt; &amp; co" in html
    overall, gender = html.split("<h3>Overall</h3>")[1].split("<h3>gender_presentation")[:2]
    assert overall.index("detr_r50") < overall.index("faster_rcnn") < overall.index("evil")
    gender = gender.split("</table>")[0]
    assert gender.index("faster_rcnn") < gender.index("detr_r50") < gender.index("evil")
    assert "Warning" not in html
    assert "[0.820, 0.860]" in html  # CI of the best overall model is shown


def test_leaderboard_separates_tasks_and_data(tmp_path):
    root = _facet_root(tmp_path)
    a = _sub_file(tmp_path, "with_root", root, _rows())
    b = _sub_file(tmp_path, "without_root", None, _rows())
    cls_rows = [_row("recall@1", "all", "all", 0.5, task="classification"),
                _row("recall@1", "gender_presentation", "masc", 0.55, task="classification"),
                _row("recall@1", "gender_presentation", "fem", 0.45, task="classification")]
    c = _sub_file(tmp_path, "clip_vit_b32", root, cls_rows)
    html = render_leaderboard([a, b, c])
    assert html.count("<section>") == 3 and "Warning:" in html
    assert "ranked by recall@1" in html and "data they were evaluated on is not verified" in html


def test_leaderboard_refuses_invalid_submission(tmp_path, sub):
    good = write_submission(sub, tmp_path / "good.json")
    sub["summary"]["overall"]["value"] = 0.99
    bad = _write(tmp_path, sub, "bad.json")
    with pytest.raises(UserError, match=r"bad\.json: field summary\.overall\.value"):
        write_leaderboard([good, bad], tmp_path / "index.html")
    assert not (tmp_path / "index.html").exists()


def test_documented_example_is_valid():
    text = (Path(__file__).resolve().parent.parent / "docs" / "facet_submission.md").read_text()
    example = text.split("## Example")[1].split("```json")[1].split("```")[0]
    assert validate_document(json.loads(example)) == []
    assert json.loads(example)["schema_version"] == 2 and "best_n" in example


# ------------------------------------------------------------------ schema v2 summaries and the old version
V1_DOCUMENT = {
    "schema": "facet-eval-submission", "schema_version": 1,
    "model": {"name": "faster_rcnn_r50_fpn", "parameters": {"weights": "COCO"}},
    "task": "detection",
    "data": {"name": "FACET", "version": "1.0", "annotation_checksums": {}, "note": "no FACET root given"},
    "rows": [
        {"task": "detection", "metric": "mAR", "attribute": "all", "group": "all", "class": None,
         "value": 0.741, "n": 49551, "ci_low": 0.737, "ci_high": 0.745},
        {"task": "detection", "metric": "mAR", "attribute": "gender_presentation", "group": "masc", "class": None,
         "value": 0.744, "n": 31012, "ci_low": 0.739, "ci_high": 0.749},
        {"task": "detection", "metric": "mAR", "attribute": "gender_presentation", "group": "na", "class": None,
         "value": 0.5, "n": 300, "ci_low": 0.45, "ci_high": 0.55},
        {"task": "detection", "metric": "mAR", "attribute": "gender_presentation", "group": "fem", "class": None,
         "value": 0.722, "n": 12603, "ci_low": 0.714, "ci_high": 0.73},
    ],
    # version 1 rules: every group, na included, no best_n or gap interval
    "summary": {"metric": "mAR", "overall": {"value": 0.741, "n": 49551, "ci_low": 0.737, "ci_high": 0.745},
                "attributes": {"gender_presentation": {
                    "n_groups": 3, "worst_group": "na", "worst_value": 0.5, "worst_n": 300, "worst_ci_low": 0.45,
                    "worst_ci_high": 0.55, "best_group": "masc", "best_value": 0.744, "gap": 0.244}}},
    "software": {"facet_eval": "0.1.0", "python": "3.11.7"},
    "created": "2024-05-01T12:00:00Z",
}


def test_old_version_file_still_validates(tmp_path, monkeypatch, capsys):
    from tests.test_facet_cli import run

    path = _write(tmp_path, V1_DOCUMENT, "v1.json")
    assert validate_submission(path) == []
    code, out, err = run(monkeypatch, capsys, "validate", str(path))
    assert code == 0 and out.startswith("ok") and not err
    # a version-1 file is checked by version-1 rules: a version-2 summary in it is a problem
    doc = json.loads(json.dumps(V1_DOCUMENT))
    doc["summary"] = compute_summary(doc["rows"], "detection")
    assert "summary.attributes.gender_presentation.worst_group" in _fields(validate_document(doc))


def _gap_rows_small_and_na(real_gap: float, na_value: float, tiny_value: float, darker_n: int = 49) -> list[dict]:
    rows = [_row("mAR", "all", "all", 0.7, n=2000),
            _row("mAR", "gender_presentation", "masc", 0.7 + real_gap, n=900),
            _row("mAR", "gender_presentation", "fem", 0.7, n=800),
            _row("mAR", "gender_presentation", "non_binary", tiny_value, n=1),
            _row("mAR", "gender_presentation", "na", na_value, n=300),
            _row("disparity_mAR", "gender_presentation", "masc-fem", real_gap, n=800, n_a=900, n_b=800,
                 group_a="masc", group_b="fem"),
            _row("mAR", "skin_tone_bucket", "lighter", 0.7, n=600),
            _row("mAR", "skin_tone_bucket", "darker", 0.1, n=darker_n)]  # 49: too small to rank
    rows[5]["ci_low"], rows[5]["ci_high"] = real_gap - 0.01, real_gap + 0.03
    return rows


def test_summary_uses_non_na_groups_with_50_people_and_carries_gap_interval():
    s = compute_summary(_gap_rows_small_and_na(0.05, na_value=0.1, tiny_value=0.0), "detection")
    g = s["attributes"]["gender_presentation"]
    assert (g["worst_group"], g["best_group"], g["n_groups"]) == ("fem", "masc", 2)  # not na, not the group of one
    assert g["gap"] == pytest.approx(0.05) and (g["worst_n"], g["best_n"]) == (800, 900)
    assert (g["gap_ci_low"], g["gap_ci_high"]) == pytest.approx((0.04, 0.08))
    assert "skin_tone_bucket" not in s["attributes"]  # one group with n >= 50 leaves nothing to compare
    assert s["min_n"] == 50
    # the interval is taken from the pair's row in either order
    rows = _gap_rows_small_and_na(-0.05, na_value=0.1, tiny_value=0.0)
    g = compute_summary(rows, "detection")["attributes"]["gender_presentation"]
    assert (g["worst_group"], g["best_group"]) == ("masc", "fem")
    assert (g["gap_ci_low"], g["gap_ci_high"]) == pytest.approx((0.02, 0.06))


def test_leaderboard_ranks_gaps_without_na_or_tiny_groups(tmp_path):
    root = _facet_root(tmp_path)
    # "tiny" has the smallest real gap but a worthless na group and a group of one person
    a = _sub_file(tmp_path, "tiny", root, _gap_rows_small_and_na(0.01, na_value=0.0, tiny_value=0.0))
    b = _sub_file(tmp_path, "solid", root, _gap_rows_small_and_na(0.08, na_value=0.7, tiny_value=0.78, darker_n=60))
    html = render_leaderboard([a, b])
    gender = html.split("<h3>gender_presentation")[1].split("</table>")[0]
    assert gender.index("tiny") < gender.index("solid")
    assert "[0.000, 0.040]" in gender  # the gap's interval
    assert ">na<" not in gender and "non_binary" not in gender
    bucket = html.split("<h3>skin_tone_bucket")[1].split("</table>")[0]
    assert bucket.index("solid") < bucket.index("tiny")
    assert bucket.count("not ranked: fewer than two groups") == 1 and "not ranked" in bucket.split("tiny")[1]


def test_leaderboard_ranks_old_version_files_by_the_current_rule(tmp_path):
    root = _facet_root(tmp_path)
    old = json.loads(json.dumps(V1_DOCUMENT))
    path = _write(tmp_path, old, "v1.json")
    new = _sub_file(tmp_path, "current", root, _rows())
    html = render_leaderboard([path, new])
    assert "schema v1: intervals resample people" in html
    tables = [t.split("</table>")[0] for t in html.split("<h3>gender_presentation")[1:]]
    gender = next(t for t in tables if "faster_rcnn_r50_fpn" in t)
    old_row = gender.split("faster_rcnn_r50_fpn")[1].split("</tr>")[0]
    assert "<td>fem</td>" in old_row and ">na<" not in old_row  # worst group by the current rule
