"""The report stage on a small fake run directory (offline, no models)."""

from __future__ import annotations

import base64
import html as htmllib
import io
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from t2ibias.core.errors import UserError
from t2ibias.report import fmt_estimate, write_model_card, write_report

NAN_NOTE = "fewer than 2 classified images"
PROMPTS = [
    # prompt_id, family, subject, template_id, intervention, text
    ("p1", "occupation", "doctor", "t-photo", "none", "a photo of a doctor"),
    ("p2", "occupation", "doctor", "t-photo", "ethnic-diversity",
     "a photo of a doctor <b>from any</b> background & place"),
    ("p3", "adjective", "kind", "t-portrait", "none", "a portrait of a kind person"),
]
# key, prompt_id, image_index, status, image size (None: no file written), labels per attribute
IMAGES = [
    ("k1", "p1", 0, "ok", (200, 150), {"gender_presentation": "masc", "age_group": "middle"}),
    ("k2", "p1", 1, "ok", (64, 64), {"gender_presentation": "fem", "age_group": "young"}),
    ("k3", "p1", 2, "blocked", None, {"gender_presentation": "blocked", "age_group": "blocked"}),
    ("k4", "p2", 0, "ok", (64, 64), {"gender_presentation": "masc", "age_group": "abstain"}),
    ("k5", "p2", 1, "failed", None, {"gender_presentation": "failed", "age_group": "failed"}),
    ("k6", "p2", 2, "ok", None, {"gender_presentation": "fem", "age_group": "older"}),  # file missing
    ("k7", "p3", 0, "ok", (64, 64), {"gender_presentation": "no_person", "age_group": "no_person"}),
    ("k8", "p3", 1, "ok", (64, 64), {"gender_presentation": "fem", "age_group": "young"}),
]
METRIC_DEFS = {
    "count": {"definition": "Number of images with the label.", "higher_is_better": None},
    "proportion": {"definition": "Share of all images of the group with the label.", "higher_is_better": None},
    "total_variation_uniform": {"definition": "Total variation distance to the uniform distribution.",
                                "higher_is_better": False},
    "normalized_entropy": {"definition": "Shannon entropy divided by its maximum.", "higher_is_better": True},
}


def _row(metric, axis, group_by, group, label=None, value=0.5, ci=(0.3, 0.7), n=8, note=None):
    return {"metric": metric, "axis": axis, "group_by": group_by, "group": group, "label": label,
            "value": value, "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None, "n": n,
            "higher_is_better": METRIC_DEFS[metric]["higher_is_better"], "note": note}


def _metric_rows() -> list[dict]:
    groups = [("all", "all", 8), ("family", "occupation", 6), ("family", "adjective", 2),
              ("prompt_id", "p1", 3), ("prompt_id", "p2", 3), ("prompt_id", "p3", 2)]
    labels = {"gender_presentation": ["masc", "fem", "no_person", "blocked", "failed"],
              "age_group": ["young", "middle", "older", "abstain", "no_person", "blocked", "failed"]}
    rows = []
    for group_by, group, n in groups:
        for axis, labs in labels.items():
            for lab in labs:
                rows.append(_row("proportion", axis, group_by, group, lab, 0.5, (0.3, 0.7), n))
                rows.append(_row("count", axis, group_by, group, lab, 4, None, n))
            if group == "p3":  # too few classified images: NaN with a note
                rows.append(_row("total_variation_uniform", axis, group_by, group, value=math.nan,
                                 ci=(math.nan, math.nan), n=1, note=NAN_NOTE))
            else:
                rows.append(_row("total_variation_uniform", axis, group_by, group, value=0.25, ci=(0.1, 0.4), n=n))
            rows.append(_row("normalized_entropy", axis, group_by, group, value=0.9, ci=(0.8, 1.0), n=n))
    return rows


def make_run(root: Path, model_random: bool = False, classifier_random: bool = False) -> Path:
    run = root / "run"
    (run / "images").mkdir(parents=True)
    spec = {
        "fingerprint": "f" * 64, "t2ibias_version": "0.1.0", "created": "2025-01-02T03:04:05+00:00",
        "model": {"id": "tiny-random-sd", "source": "local", "revision": "abc123", "pipeline": "sd",
                  "dtype": "float32", "scheduler": "ddim", "steps": 2, "guidance": 7.5, "height": 64,
                  "width": 64, "licence": "mit"},
        "weights": "hub:tiny-random-sd@abc123", "generator_fingerprint": "g" * 64, "model_is_random": model_random,
        "prompt_sets": [{"id": "occupations", "version": "1.2", "sha256": "s" * 64}],
        "n_seeds": 3, "base_seed": 1234,
        "classifier": {"id": "tiny-clip", "arch": "clip", "pretrained": "none", "fingerprint": "c" * 64,
                       "is_random": classifier_random},
        "device": "cpu", "defining": {"generator_fingerprint": "g" * 64},
    }
    (run / "spec.json").write_text(json.dumps(spec))
    pd.DataFrame([{"prompt_id": p, "set_id": "occupations", "set_version": "1.2", "family": f, "subject": s,
                   "template_id": t, "intervention": i, "text": x} for p, f, s, t, i, x in PROMPTS]
                 ).to_parquet(run / "prompts.parquet")

    lines, labels = [], []
    for key, pid, idx, status, size, labs in IMAGES:
        path = f"images/{key}.png" if status == "ok" else None
        if size is not None:
            Image.new("RGB", size, (idx * 60, 120, 200)).save(run / path)
        lines.append(json.dumps({"key": key, "prompt_id": pid, "image_index": idx, "seed": 1234 + idx,
                                 "status": status, "path": path, "sha256": None, "width": 64, "height": 64,
                                 "seconds": 0.1, "error": "CUDA error: boom" if status == "failed" else None}))
        for attr, lab in labs.items():
            labels.append({"key": key, "prompt_id": pid, "image_index": idx, "attribute": attr, "label": lab,
                           "score": 0.9, "person_source": "none" if lab in ("no_person", "blocked", "failed")
                           else "face", "n_faces": 0 if lab in ("no_person", "blocked", "failed") else 1})
    # an earlier attempt at k8 that failed, superseded by the later ok line (the last line wins)
    early = json.dumps({"key": "k8", "prompt_id": "p3", "image_index": 1, "status": "failed", "path": None,
                        "error": "out of memory"})
    (run / "manifest-000.jsonl").write_text("\n".join([early, *lines[:4]]) + "\n")
    (run / "manifest-001.jsonl").write_text("\n".join([*lines[4:], '{"key": "k9", "status": "o']) + "\n")
    pd.DataFrame(labels).to_parquet(run / "image_labels.parquet")

    metrics = {"t2ibias_version": "0.1.0", "run_fingerprint": "f" * 64,
               "bootstrap": {"n_resamples": 200, "method": "percentile", "confidence": 0.95, "seed": 0},
               "metrics": METRIC_DEFS, "rows": _metric_rows()}
    (run / "metrics.json").write_text(json.dumps(metrics))  # NaN is written as a bare NaN literal
    return run


def _visible(html: str) -> str:
    """The page's text as a reader sees it: no tags, entities decoded, whitespace collapsed."""
    text = re.sub(r"<style.*?</style>|<[^>]+>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", htmllib.unescape(text))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


@pytest.fixture
def report(run: Path) -> str:
    path = write_report(run)
    assert path == run / "report.html"
    return path.read_text(encoding="utf-8")


def test_fmt_estimate() -> None:
    assert fmt_estimate(0.62, 0.41, 0.8, 8) == "0.62 [0.41, 0.80] n=8"
    assert fmt_estimate(0.5) == "0.50"
    assert fmt_estimate(0.5, math.nan, 0.7, None) == "0.50"
    assert fmt_estimate(math.nan, 0.1, 0.2, 8) == "—"
    assert fmt_estimate(None) == "—"
    assert fmt_estimate(4, None, None, None, digits=0) == "4"


def test_report_is_self_contained(report: str, run: Path) -> None:
    assert "http://" not in report and "https://" not in report
    assert "url(" not in report and "@import" not in report
    sources = re.findall(r'src="([^"]*)"', report)
    assert sources and all(s.startswith("data:") for s in sources)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing behind


def test_thumbnails_are_embedded_and_small(report: str) -> None:
    uris = re.findall(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', report)
    assert len(uris) == 5  # every ok image whose file exists: k1, k2, k4, k7, k8
    sizes = [Image.open(io.BytesIO(base64.b64decode(u))).size for u in uris]
    assert max(max(s) for s in sizes) <= 128
    assert (128, 96) in sizes  # the 200x150 image was shrunk, keeping its aspect


def test_header_spec_and_prompts(report: str) -> None:
    text = _visible(report)
    assert "tiny-random-sd" in text and "ffffffffffff" in text and "2025-01-02T03:04:05" in text
    assert "occupations" in text and "1.2" in text and "tiny-clip" in text and "1234" in text
    for _, family, subject, template, intervention, prompt in PROMPTS:
        assert prompt in text and family in text and subject in text and template in text
        assert intervention in text
    assert "<b>from any</b>" not in report and "&lt;b&gt;from any&lt;/b&gt;" in report  # escaped


def test_accounting_counts_every_image(report: str) -> None:
    text = _visible(report)
    assert "total images: 8" in text  # duplicate key counted once, malformed line skipped
    assert "ok: 6" in text
    assert "blocked by a safety checker: 1" in text
    assert "failed: 1" in text  # k8's earlier failure is superseded by its later ok line
    assert "no detected person: 1" in text
    assert "abstentions: 1" in text
    assert "image file missing: 1" in text
    assert "malformed manifest lines skipped: 1" in text


def test_grid_captions_and_placeholders(report: str) -> None:
    text = _visible(report)
    assert "masc · middle" in text and "fem · young" in text and "no_person" in text
    for word in ("blocked", "failed", "missing"):
        assert re.search(rf'<div class="placeholder {word}">{word}</div>', report)
    assert "CUDA error: boom" in report  # the failure reason is in the hover title


def test_nan_renders_as_dash_with_note(report: str) -> None:
    assert re.search(rf'title="{NAN_NOTE}">—</td>', report)
    assert "nan" not in _visible(report).lower().split()


def test_overall_table_with_definitions(report: str) -> None:
    text = _visible(report)
    assert "0.50 [0.30, 0.70] n=8" in text and "0.25 [0.10, 0.40] n=8" in text
    assert "Total variation distance to the uniform distribution." in text
    assert "↓ lower is better" in text and "↑ higher is better" in text


@pytest.mark.parametrize(("model_random", "classifier_random", "expect"),
                         [(False, False, None), (True, False, "generator has"),
                          (False, True, "classifier has"), (True, True, "generator and classifier have")])
def test_random_weights_banner(tmp_path: Path, model_random: bool, classifier_random: bool,
                               expect: str | None) -> None:
    run = make_run(tmp_path, model_random, classifier_random)
    html = write_report(run).read_text(encoding="utf-8")
    card = write_model_card(run).read_text(encoding="utf-8")
    if expect is None:
        assert 'role="alert"' not in html and "meaningless" not in html and "Warning" not in card
    else:
        assert 'role="alert"' in html and expect in _visible(html) and "meaningless by construction" in html
        assert "**Warning:**" in card and expect in card


def test_model_card(run: Path) -> None:
    path = write_model_card(run)
    assert path == run / "model_card.md"
    card = path.read_text(encoding="utf-8")
    assert card.startswith("---\n") and "model-index:" in card
    for heading in ("## Bias, Risks, and Limitations", "### Recommendations", "## Evaluation",
                    "### Testing Data, Factors & Metrics", "#### Testing Data", "#### Factors", "#### Metrics",
                    "### Results", "#### Summary"):
        assert f"\n{heading}\n" in card, heading
    assert "`tiny-random-sd`" in card and "`occupations` version 1.2" in card and "`tiny-clip`" in card
    assert "Images per prompt: 3" in card
    assert "8 total: 6 ok, 1 blocked by a safety checker, 1 failed; 1 with no detected person" in card
    assert "| Axis | Label shares [95% CI] | TV to uniform (↓ better) | normalized entropy (↑ better) |" in card
    row = next(line for line in card.splitlines() if line.startswith("| `gender_presentation`"))
    assert "masc 0.50 [0.30, 0.70]" in row and "n=8" in row and "| 0.25 [0.10, 0.40] n=8 |" in row
    assert "*perceived*" in card and "Full report: report.html" in card
    assert "Warning" not in card


def test_model_card_metadata_parses_back_with_the_metrics(run: Path) -> None:
    from huggingface_hub import ModelCard

    metrics = json.loads((run / "metrics.json").read_text())
    # a figure only the headline may show: make one axis differ so a mix-up of axes is caught
    for r in metrics["rows"]:
        if r["group_by"] == "all" and r["axis"] == "age_group" and r["metric"] == "total_variation_uniform":
            r.update(value=0.125, ci_low=0.05, ci_high=0.2)
    (run / "metrics.json").write_text(json.dumps(metrics))
    data = ModelCard(write_model_card(run).read_text(encoding="utf-8")).data
    assert data.model_name == "tiny-random-sd" and data.pipeline_tag == "text-to-image"
    got = {(e.metric_type, e.metric_config): e for e in data.eval_results}
    want = {(f"t2ibias/{r['metric']}", r["axis"]): r for r in metrics["rows"]
            if r["group_by"] == "all" and r["label"] is None}
    assert set(got) == set(want) and len(got) == 4
    for key, r in want.items():
        e = got[key]
        assert e.metric_value == pytest.approx(r["value"]) and e.task_type == "text-to-image"
        assert e.metric_args["ci_low"] == pytest.approx(r["ci_low"]) and e.metric_args["n"] == r["n"]
        assert e.dataset_type == "t2ibias/occupations" and e.dataset_name == "occupations v1.2"
    assert got[("t2ibias/total_variation_uniform", "age_group")].metric_value == pytest.approx(0.125)


def test_out_path_and_instrument(run: Path, tmp_path: Path) -> None:
    out = write_report(run, tmp_path / "elsewhere.html")
    assert out == tmp_path / "elsewhere.html"
    html = out.read_text(encoding="utf-8")
    assert "has no audit" in html and "t2ibias audit --classifier" in html and "Only one measurer" in html
    group = {"group": "darker", "value": 0.61, "n": 120, "ci_low": 0.52, "ci_high": 0.70}
    (run / "instrument.json").write_text(json.dumps({
        "audit": {"source": "a/audit.json", "classifier": {"id": "tiny-clip"}, "n_audited": 500,
                  "matches_run_classifier": True,
                  "attributes": {"gender_presentation": {
                      "accuracy": {"value": 0.8, "n": 500, "ci_low": 0.76, "ci_high": 0.84},
                      "worst_group": group, "best_group": {**group, "group": "lighter", "value": 0.9}}}},
        "corrected": [{"attribute": "gender_presentation", "group_by": "all", "group": "all", "label": "masc",
                       "raw": 0.7, "raw_ci_low": 0.6, "raw_ci_high": 0.8, "corrected": 0.75, "ci_low": 0.62,
                       "ci_high": 0.88, "n_answered": 6, "note": ""}],
        "agreement": [{"attribute": "skin_tone", "measurer_a": "tiny-clip", "measurer_b": "pixel-mst", "group": None,
                       "metric": "kappa", "value": 0.41, "ci_low": 0.2, "ci_high": 0.6, "n": 30, "n_excluded": 2,
                       "pairing": "same face crops"}],
    }))
    html = write_report(run, tmp_path / "again.html").read_text(encoding="utf-8")
    assert "darker: 0.61 [0.52, 0.70] n=120" in html and "0.29" in html  # worst group and the gap
    assert "0.75 [0.62, 0.88]" in html and "tiny-clip vs pixel-mst" in html and "0.41 [0.20, 0.60] n=30" in html
    card = write_model_card(run, tmp_path).read_text(encoding="utf-8")
    assert "darker" in card and "0.75 [0.62, 0.88]" in card and "pixel-mst" in card


@pytest.mark.parametrize(("name", "hint"), [("metrics.json", "t2ibias score"), ("spec.json", "t2ibias sweep"),
                                            ("image_labels.parquet", "t2ibias score")])
def test_missing_input_is_a_user_error(run: Path, name: str, hint: str) -> None:
    (run / name).unlink()
    for writer in (write_report, write_model_card):
        with pytest.raises(UserError, match=re.escape(name)) as err:
            writer(run)
        assert hint in str(err.value) and "\n" not in str(err.value)
    assert not (run / "report.html").exists()


def test_missing_manifest(run: Path) -> None:
    for f in run.glob("manifest*.jsonl"):
        f.unlink()
    with pytest.raises(UserError, match="manifest"):
        write_report(run)


def test_robust_to_odd_inputs(run: Path) -> None:
    (run / "images" / "k2.png").write_bytes(b"not a png")  # unreadable file
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["rows"].append({"metric": "max_min_ratio", "axis": "gender_presentation", "group_by": "all",
                            "group": "all", "label": None, "value": 1.25, "ci_low": 1.0, "ci_high": 1.5,
                            "n": 8, "higher_is_better": False, "note": None})
    metrics["rows"].append({"metric": "proportion", "axis": "gender_presentation", "group_by": "all",
                            "group": "all", "label": "masc", "value": None, "ci_low": None, "ci_high": None,
                            "n": 0, "higher_is_better": None, "note": "no images"})  # replaces the earlier row
    (run / "metrics.json").write_text(json.dumps(metrics))
    html = write_report(run).read_text(encoding="utf-8")
    assert '<div class="placeholder unreadable">unreadable</div>' in html
    assert "1.25 [1.00, 1.50] n=8" in html and 'max min ratio <span class="dir">↓' in html
    assert 'title="no images">—</td>' in html
    card = write_model_card(run).read_text(encoding="utf-8")
    assert "masc — (no images)" in card and "max min ratio" in card


def test_thumbnails_are_capped_per_prompt_and_the_rest_counted(run: Path, monkeypatch) -> None:
    import t2ibias.report.html as html

    monkeypatch.setattr(html, "THUMBS_PER_PROMPT", 1)
    report = write_report(run).read_text(encoding="utf-8")
    figures = re.findall(r"<figure title=", report)
    assert len(figures) == 3  # one per prompt
    assert "more images of this prompt are counted above" in report


# ------------------------------------------------------------------------------ charts


def _extra(metric, axis, group_by, group, label, value, ci, n, note=None, **kw):
    return {"metric": metric, "axis": axis, "group_by": group_by, "group": group, "label": label, "value": value,
            "ci_low": ci[0], "ci_high": ci[1], "n": n, "higher_is_better": None, "note": note,
            "aggregate": "mean_over_prompts", **kw}


def test_charts_show_the_reference_paired_and_location_rows(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    ref = "reference 0.400 (BLS CPS 2025)"
    metrics["rows"] += [
        # doctor: fem share − reference = +0.20 [0.10, 0.30] → share 0.60 [0.50, 0.70], clearly above y = x
        _extra("share_minus_reference", "gender_presentation", "prompt_id", "p1", "fem", 0.2, (0.1, 0.3), 2, ref),
        _extra("share_minus_reference", "gender_presentation", "subject", "doctor", "fem", 0.2, (0.1, 0.3), 3),
        # the diversity prompt lowers TV by 0.15 [-0.25, -0.05]: clearly below zero
        _extra("total_variation_uniform", "gender_presentation", "intervention_vs_none", "ethnic-diversity", None,
               -0.15, (-0.25, -0.05), 2),
        _extra("location_distance", "location", "all", "all", "Germany", 0.30, (0.2, 0.4), 5),
        _extra("location_distance", "location", "all", "all", "Nigeria", 0.10, (0.05, 0.2), 5),
        _extra("location_distance", "location", "prompt_id", "p3", "Nigeria", 0.12, (0.05, 0.2), 2),
        _extra("location_distance", "location", "prompt_id", "p3", "Germany", 0.35, (0.2, 0.5), 2),
    ]
    (run / "metrics.json").write_text(json.dumps(metrics))
    html = write_report(run).read_text(encoding="utf-8")
    text = _visible(html)
    for anchor in ("chart-skew", "chart-reference", "chart-interventions", "chart-location"):
        assert f'id="{anchor}"' in html and f'href="#{anchor}"' in html
    assert "1 occupation:" in text and "1 clearly above the line y = x, 0 clearly below" in text
    assert "doctor 0.400 0.60 [0.50, 0.70] n=3" in text  # occupation, reference, share = reference + difference
    assert "1 clearly below zero, 0 clearly above" in text
    assert "gender_presentation: ethnic-diversity -0.15 [-0.25, -0.05] n=2" in text
    assert "closest: Nigeria (0.10)" in text and "kind → Nigeria 0.12 [0.05, 0.20] n=2" in text
    svgs = re.findall(r"<svg\b[^>]*>", html)
    assert len(svgs) >= 5 and all('role="img"' in s and 'aria-label="' in s for s in svgs)
    assert html.count("<title id=") == len(svgs) and "http" not in "".join(re.findall(r"<svg.*?</svg>", html, re.S)).replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


def test_chart_api_sorts_escapes_and_keeps_every_number() -> None:
    from t2ibias.report import charts

    rows = [{"label": "<b>b</b>", "value": 0.3, "lo": 0.2, "hi": 0.4, "n": 10},
            {"label": "a", "value": 0.1, "lo": 0.0, "hi": 0.2, "n": 12},
            {"label": "c", "value": float("nan"), "lo": None, "hi": None, "n": 0}]
    fig = str(charts.dot_interval(rows, title="T <x>", alt="A", x_label="x", sort=True, highlight_min=True, reference=0.0))
    assert "<b>" not in fig and "&lt;b&gt;b&lt;/b&gt;" in fig and 'aria-label="T &lt;x&gt;"' in fig
    table = _visible(fig[fig.index("<details"):])
    assert table.index("a 0.10 [0.00, 0.20] n=12") < table.index("</b> 0.30 [0.20, 0.40] n=10") < table.index("c — n=0")
    assert fig.count(charts.HIGHLIGHT) == 1 and "no value" in fig
    many = [{"label": f"p{i}", "value": i / 2000, "lo": i / 2000 - 0.01, "hi": i / 2000 + 0.01, "n": 50} for i in range(2000)]
    ranked = str(charts.ranked_intervals(many, title="R", alt="A", y_label="TV"))
    bars = re.search(r'<path d="([^"]*)" stroke="' + charts.INTERVAL, ranked).group(1)
    assert bars.count("M") == 2000 and len(ranked) < 400_000  # one path for all intervals
    assert charts.nice_ticks(0, 1) == [0, 0.25, 0.5, 0.75, 1.0]
    scatter = str(charts.scatter_identity([{"label": "x", "x": 0.5, "value": 0.5, "lo": 0.4, "hi": 0.6, "n": 3}],
                                          title="S", alt="A", x_label="ref", y_label="obs"))
    assert "y = x" in scatter and scatter.count("<circle") == 1


# ------------------------------------------------------------------------------ scale


def test_thumbnails_are_made_once_and_reused(run: Path, monkeypatch) -> None:
    import t2ibias.report.html as html

    first = write_report(run).read_text(encoding="utf-8")
    cached = sorted(p.name for p in (run / "thumbs").iterdir())
    assert cached == ["k1.jpg", "k2.jpg", "k4.jpg", "k7.jpg", "k8.jpg"]  # ok images with a readable file
    with Image.open(run / "thumbs" / "k1.jpg") as im:
        assert max(im.size) <= html.THUMB_PX

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(html, "_thumbnail_bytes", no_decoding)
    assert write_report(run).read_text(encoding="utf-8") == first
    # an image newer than its thumbnail is thumbnailed again
    monkeypatch.undo()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(run / "images" / "k2.png")
    import os
    os.utime(run / "thumbs" / "k2.jpg", ns=(1, 1))
    assert write_report(run).read_text(encoding="utf-8") != first


def test_thumbnails_and_full_sections_are_capped_for_the_whole_report(run: Path, monkeypatch) -> None:
    import t2ibias.report.html as html

    monkeypatch.setattr(html, "DETAIL_PROMPTS", 2)
    monkeypatch.setattr(html, "MAX_THUMBNAILS", 2)
    report = write_report(run).read_text(encoding="utf-8")
    assert len(re.findall(r"<figure title=", report)) == 2
    # one full section per family (occupation, adjective), the first prompt of each
    assert re.findall(r'<div class="prompt" id="prompt-(\w+)"', report) == ["p1", "p3"]
    index = re.findall(r'<table class="index">.*?</table>', report, re.S)
    assert "p2" in index[0] and 'href="#prompt-p2"' not in report and 'href="#prompt-p1"' in report
    assert "The first 2 of them" in _visible(report)


def test_prompts_without_images_get_no_section(run: Path) -> None:
    prompts = pd.read_parquet(run / "prompts.parquet")
    extra = prompts.iloc[[0]].assign(prompt_id="p4", text="a photo of a never generated pilot")
    pd.concat([prompts, extra]).to_parquet(run / "prompts.parquet")
    report = write_report(run).read_text(encoding="utf-8")
    assert "never generated pilot" not in report and "No images in the manifest" not in report
    assert "3 of 4 prompts have images" in _visible(report)


def test_report_has_contents_and_summary_first(report: str) -> None:
    nav = re.search(r'<nav class="toc".*?</nav>', report, re.S).group(0)
    targets = re.findall(r'href="#([^"]+)"', nav)
    assert targets[0] == "overall" and {"instrument", "accounting", "prompts", "spec"} <= set(targets)
    assert all(f'id="{t}"' in report for t in targets)
    order = [report.index(f'id="{t}"') for t in ("overall", "instrument", "accounting", "prompts", "spec")]
    assert order == sorted(order)


def test_a_split_with_many_groups_is_one_compact_table(run: Path, monkeypatch) -> None:
    import t2ibias.report.html as html

    metrics = json.loads((run / "metrics.json").read_text())
    for subject, tv in (("doctor", 0.31), ("kind", 0.07)):
        metrics["rows"].append(_row("total_variation_uniform", "gender_presentation", "subject", subject, value=tv,
                                    ci=(tv - 0.05, tv + 0.05), n=4))
        metrics["rows"].append(_row("proportion", "gender_presentation", "subject", subject, "masc", n=4))
    (run / "metrics.json").write_text(json.dumps(metrics))
    full = _visible(write_report(run).read_text(encoding="utf-8"))
    assert "By subject (2)" in full and "2 groups: TV to uniform" not in full
    monkeypatch.setattr(html, "SPLIT_FULL_GROUPS", 1)
    compact = write_report(run).read_text(encoding="utf-8")
    table = _visible(re.search(r'<table class="compact">.*?</table>', compact, re.S).group(0))
    assert "doctor 0.31 [0.26, 0.36] n=4 kind 0.07 [0.02, 0.12] n=4" in table
    assert "2 groups: TV to uniform" in _visible(compact)


def test_force_clears_the_thumbnails_it_made_and_nothing_else(run: Path) -> None:
    from t2ibias.store.rundir import clear_run

    write_report(run)
    (run / "thumbs" / "notes.txt").write_text("mine")
    deleted = clear_run(run)
    assert run / "thumbs" / "k1.jpg" in deleted
    assert sorted(p.name for p in (run / "thumbs").iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------------------ face gate

GATE_WARNING = ("the face gate's detection rate differs across gender_presentation (q < 0.05): images of some groups "
                "lose their face more often, so classified-only skew is not missing-at-random")


def _gate_audit(masc: float = 0.75, fem: float = 0.25, kind: str = "haar") -> dict:
    """An audit.json ``gate`` block of known rates: 80 visible masc and 80 fem faces."""
    differs = masc != fem
    return {
        "face_gate": {"kind": kind}, "metric": "gate_recall", "definition": "share of visible faces found",
        "n": 160, "n_detected": int(80 * masc + 80 * fem), "n_images": 150, "alpha": 0.05,
        "overall": {"gate_recall": {"value": (masc + fem) / 2, "ci_low": 0.42, "ci_high": 0.58, "n": 160}},
        "by_group": [{"group_attribute": "gender_presentation", "group": g, "metric": "gate_recall", "value": v,
                      "ci_low": v - 0.1, "ci_high": v + 0.1, "n": 80, "note": ""} for g, v in (("fem", fem), ("masc", masc))]
        + [{"group_attribute": "age_presentation", "group": "na", "metric": "gate_recall", "value": 0.5, "ci_low": 0.42,
            "ci_high": 0.58, "n": 160, "note": "na group: not compared"}],
        "comparisons": [{"group_attribute": "gender_presentation", "metric": "gate_recall", "groups": ["fem", "masc"],
                         "difference": {"value": abs(masc - fem), "ci_low": 0.37 if differs else 0.0,
                                        "ci_high": 0.63 if differs else 0.12},
                         "ratio": {"value": min(masc, fem) / max(masc, fem), "ci_low": 0.17 if differs else 0.8,
                                   "ci_high": 0.55 if differs else 1.0},
                         "p_value": 0.0099 if differs else 1.0, "q_value": 0.0297 if differs else 1.0, "note": ""}],
        "differs_across_groups": differs, "differs_by": ["gender_presentation"] if differs else [],
        "warning": GATE_WARNING if differs else "",
    }


def _with_gate(run: Path, audit_gate: dict | None, run_kind: str = "haar") -> None:
    """instrument.json with the ``gate`` block the score stage writes (t2ibias.metrics.gate_rows),
    from the run's own labels: made images k1 k2 (p1), k4 k6 (p2) have a face, k7 (p3) has none."""
    from t2ibias.metrics.gate_rows import gate_doc

    labels = pd.read_parquet(run / "image_labels.parquet")
    gate = gate_doc(None if audit_gate is None else {"gate": audit_gate}, {"gate": {"face": {"kind": run_kind}}}, labels)
    (run / "instrument.json").write_text(json.dumps({"audit": None, "corrected": [], "agreement": [], "gate": gate}))


def _section(html: str, anchor: str, end: str) -> str:
    return _visible(html[html.index(f'id="{anchor}"'):html.index(f'id="{end}"')])


def test_gate_warning_is_one_banner_and_a_mark_on_every_estimate_table(run: Path) -> None:
    _with_gate(run, _gate_audit())
    html = write_report(run).read_text(encoding="utf-8")
    assert html.count('class="banner"') == 1 and html.count('id="gate-warning"') == 1
    banner = re.search(r'<div class="banner" role="alert" id="gate-warning">.*?</div>', html, re.S).group(0)
    assert "not missing-at-random" in _visible(banner) and 'href="#face-gate"' in banner
    assert html.index('id="gate-warning"') < html.index('<table class="metrics">')  # above the headline table
    # every estimate table (headline, families, splits, prompts, indexes) and every chart caption carries the mark
    captions = re.findall(r'<table class="(?:metrics|index|compact)">\s*<caption>(.*?)</caption>', html, re.S)
    figcaptions = re.findall(r'<figcaption>([^<]*<a class="gate-mark".*?)</figcaption>', html, re.S)
    n_tables = len(re.findall(r'<table class="(?:metrics|index|compact)">', html))
    n_charts = html.count('<figure class="chart"')
    assert n_tables >= 10 and n_charts >= 1 and len(captions) == n_tables and len(figcaptions) == n_charts
    assert all('<a class="gate-mark" href="#face-gate"' in c for c in captions)
    assert html.count('class="gate-mark"') == n_tables + n_charts
    nav = re.search(r'<nav class="toc".*?</nav>', html, re.S).group(0)
    assert 'href="#face-gate">Face gate (haar)</a>' in nav


def test_gate_section_shows_recall_groups_and_tests(run: Path) -> None:
    _with_gate(run, _gate_audit())
    html = write_report(run).read_text(encoding="utf-8")
    text = _section(html, "face-gate", "accounting")
    assert "Face gate (haar)" in text
    assert "0.50 [0.42, 0.58] (160 people, 150 images; 80 found)" in text
    assert "gender_presentation fem 0.25 [0.15, 0.35] 80" in text and "gender_presentation masc 0.75 [0.65, 0.85] 80" in text
    assert "age_presentation na 0.50 [0.42, 0.58] 160 na group: not compared" in text
    assert "gender_presentation fem, masc 0.50 [0.37, 0.63] 0.33 [0.17, 0.55] 0.0099 0.03 (differs)" in text
    assert "not missing-at-random" in text and "another gate" not in text
    # the run's own no-face rate: k7 of the 6 made images
    assert "no face on 1 of 6 made images" in text


def test_equal_gate_rates_give_no_warning(run: Path) -> None:
    _with_gate(run, _gate_audit(masc=0.5, fem=0.5))
    html = write_report(run).read_text(encoding="utf-8")
    assert 'id="gate-warning"' not in html and 'class="gate-mark"' not in html and 'role="alert"' not in html
    text = _section(html, "face-gate", "accounting")
    assert "No difference in detection rate across groups was found (every q ≥ 0.05)" in text
    assert "0.00 [0.00, 0.12]" in text and "1.00 [0.80, 1.00]" in text
    card = write_model_card(run).read_text(encoding="utf-8")
    assert "Face-gate warning" not in card and "No difference in detection rate" in card


def test_gate_without_audit_says_recall_is_unknown(run: Path) -> None:
    _with_gate(run, None)
    html = write_report(run).read_text(encoding="utf-8")
    assert 'id="gate-warning"' not in html and 'class="gate-mark"' not in html
    text = _section(html, "face-gate", "accounting")
    assert "No audit of the face gate" in text and "The gate's per-group recall is unknown" in text
    assert "assume that faces are missed at random" in text and "t2ibias audit --face-detector haar" in text
    section = html[html.index('id="face-gate"'):html.index('id="accounting"')]
    assert "<code>t2ibias score --audit</code>" in section and "`" not in section  # commands as code, no raw backticks
    card = write_model_card(run).read_text(encoding="utf-8")
    line = next(x for x in card.splitlines() if x.startswith("**Face gate.**"))
    assert "No audit of the face gate" in line and "missed at random" in line and "no face on 1 of 6" in line
    # a run scored before the gate was recorded: the section still says what is unknown
    (run / "instrument.json").unlink()
    text = _section(write_report(run).read_text(encoding="utf-8"), "face-gate", "accounting")
    assert "no face-gate record" in text and "per-group recall is unknown" in text


def test_an_audit_of_another_gate_is_named(run: Path) -> None:
    _with_gate(run, _gate_audit(kind="mtcnn"), run_kind="haar")
    html = write_report(run).read_text(encoding="utf-8")
    text = _section(html, "face-gate", "accounting")
    assert "Face gate (mtcnn)" in text and "This audit is of another gate than the run's" in text
    assert "run measured with haar" in text and "audited for another face gate than the run's" in text
    card = write_model_card(run).read_text(encoding="utf-8")
    assert "this audit is of another gate than the run's (`haar`)" in card


def test_index_has_abstain_no_person_and_no_face_per_prompt(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    for r in metrics["rows"]:
        if r["group_by"] == "prompt_id" and r["metric"] == "proportion":
            if r["label"] == "abstain" and r["group"] == "p2":
                r.update(value=1 / 3, ci_low=0.01, ci_high=0.9, n=3)
            if r["label"] == "no_person" and r["group"] == "p3":
                r.update(value=0.5, ci_low=0.01, ci_high=0.99, n=2)
    (run / "metrics.json").write_text(json.dumps(metrics))
    _with_gate(run, None)
    html = write_report(run).read_text(encoding="utf-8")
    heads, rows = {}, {}
    for table in re.findall(r'<table class="index">.*?</table>', html, re.S):
        heads = [_visible(h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", table)]
        for tr in re.findall(r"<tr><td.*?</tr>", table, re.S):
            cells = [_visible(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            rows[cells[0]] = dict(zip(heads, cells))
    # abstain only on age_group; no_person equal on both axes: one column each
    assert heads[-3:] == ["abstain [95% CI] n", "no person [95% CI] n", "no face [95% CI] n"]
    assert rows["p2"]["abstain [95% CI] n"] == "0.33 [0.01, 0.90] n=3"
    assert rows["p3"]["no person [95% CI] n"] == "0.50 [0.01, 0.99] n=2"
    # no face: Clopper–Pearson over each prompt's made images (blocked and failed left out)
    assert rows["p1"]["no face [95% CI] n"] == "0.00 [0.00, 0.84] n=2"
    assert rows["p3"]["no face [95% CI] n"] == "0.50 [0.01, 0.99] n=2"
    # a no-person share that differs between axes gets a column per axis
    for r in metrics["rows"]:
        if r["group_by"] == "prompt_id" and r["label"] == "no_person" and r["axis"] == "age_group" and r["group"] == "p3":
            r.update(value=0.25)
    (run / "metrics.json").write_text(json.dumps(metrics))
    html = write_report(run).read_text(encoding="utf-8")
    assert "no person (gender_presentation) [95% CI] n" in _visible(html) and "no person (age_group) [95% CI] n" in _visible(html)


def test_model_card_gate_line_parses_back(run: Path) -> None:
    _with_gate(run, _gate_audit())
    card = write_model_card(run).read_text(encoding="utf-8")
    m = re.search(r"Face gate `(\w+)`: recall among FACET visible faces (\S+) \[(\S+), (\S+)\] \(n=(\d+), (\d+) images\)", card)
    assert m is not None, card
    assert (m.group(1), float(m.group(2)), float(m.group(3)), float(m.group(4)), int(m.group(5)), int(m.group(6))) \
        == ("haar", 0.5, 0.42, 0.58, 160, 150)
    line = next(x for x in card.splitlines() if x.startswith("**Face gate.**"))
    assert "**Warning:** the face gate's detection rate differs across gender_presentation (q &lt; 0.05)" in line
    assert "> **Face-gate warning:**" in card[card.index("### Results"):]
    # the card is still a hub card with its model-index intact
    from huggingface_hub import ModelCard
    assert len(ModelCard(card).data.eval_results) == 4


def test_gate_text_from_run_files_is_escaped(run: Path) -> None:
    audit = _gate_audit()
    audit["warning"] = "rates differ <script>alert(1)</script> [x](javascript:alert(1))"
    audit["face_gate"] = {"kind": "<b>haar</b>"}
    _with_gate(run, audit, run_kind="<b>haar</b>")
    html = write_report(run).read_text(encoding="utf-8")
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "<b>haar</b>" not in html
    card = write_model_card(run).read_text(encoding="utf-8")
    assert "<script>" not in card and "[x](javascript" not in card and "&lt;script&gt;" in card
    assert "Face gate `<b>haar</b>`:" in card  # a code span: shown literally
