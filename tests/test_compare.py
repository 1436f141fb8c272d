"""`t2ibias compare`: runs matched on prompt text and seed index, paired differences, ranks, the
leaderboard file and its validation, and the pages. The runs are written file by file with labels
the tests choose, so every figure is known: without intervention the skewed model shows 8, 7, 8, 7
masculine images of 8 where the fair one shows 4, 5, 3, 4 (twice over: eight subjects) (total variation to uniform 0.4375 against
0.0625 on average, a paired difference of exactly 0.375); with the intervention both are the fair one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from t2ibias.comparison.leaderboard import validate_leaderboard
from t2ibias.comparison.report import compare_document
from tests.compare_fixtures import fair, prompt_records, skewed, write_run
from tests.run_fixtures import audit_doc
from tests.test_cli import error_line, in_process

FAMILY = "occupations"


def _rows(rows, **where):
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def _one(rows, **where):
    got = _rows(rows, **where)
    assert len(got) == 1, (where, got)
    return got[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """fair (8 seeds, one extra prompt only it has), skewed (10 seeds, other prompt ids, same texts),
    and the fair model measured by another gate."""
    root = tmp_path_factory.mktemp("compare")
    extra = prompt_records(subjects=("judge",), interventions=("none",))
    audit = {**audit_doc([[18, 2, 0], [4, 16, 0]], "tiny-random-clip"), "provenance": {"source": "audit.json", "sha256": "1" * 64}}
    out = {
        "fair": write_run(root / "fair", "fair-model", lambda r, i: "fem" if r["subject"] == "judge" else fair(r, i),
                          records=prompt_records() + extra, audit=audit),
        "skewed": write_run(root / "skewed", "skewed-model", skewed, records=prompt_records(prefix="x-"), seeds=10),
        "other_gate": write_run(root / "other", "other-model", fair, gate="gate-2"),
        "disjoint": write_run(root / "disjoint", "disjoint-model", fair,
                              records=prompt_records(subjects=("astronaut", "farmer"))),
    }
    return out


@pytest.fixture(scope="module")
def doc(runs):
    return compare_document([runs["fair"], runs["skewed"]])[0]


def test_only_shared_prompts_and_seed_indices_enter(doc):
    m = doc["matching"]
    assert m["n_prompts"] == 16 and m["prompts_per_run"] == [17, 16]  # the judge prompt is the fair run's only
    assert m["n_images"] == 16 * 8  # the skewed run's seed indices 8 and 9 have no partner
    tv = _one(doc["rows"]["models"], model="skewed-model", metric="total_variation_uniform", group_by="intervention", group="none")
    assert tv["n"] == 8 * 8 and tv["n_prompts"] == 8


def test_the_more_skewed_model_has_the_larger_skew_and_ranks_second(doc):
    models = doc["rows"]["models"]
    for name, none_value in (("fair-model", 0.0625), ("skewed-model", 0.4375)):
        r = _one(models, model=name, metric="total_variation_uniform", group_by="intervention", group="none")
        assert r["value"] == pytest.approx(none_value) and r["ci_low"] <= r["value"] <= r["ci_high"]
        d = _one(models, model=name, metric="total_variation_uniform", group_by="intervention", group="diverse")
        assert d["value"] == pytest.approx(0.0625)
    ranks = doc["rows"]["ranks"]
    for group_by, group in (("all", "all"), ("family", FAMILY), ("intervention", "none"), ("family/intervention", f"{FAMILY}/none")):
        f = _one(ranks, model="fair-model", group_by=group_by, group=group)
        s = _one(ranks, model="skewed-model", group_by=group_by, group=group)
        assert (f["value"], s["value"]) == (1, 2)
    # without intervention every prompt is more skewed under the skewed model: no resample reorders them
    f = _one(ranks, model="fair-model", group_by="intervention", group="none")
    assert (f["ci_low"], f["ci_high"]) == (1, 1)
    # with the intervention the models tie and share rank 1
    assert {r["value"] for r in _rows(ranks, group_by="intervention", group="diverse")} == {1}


def test_paired_differences_have_the_constructed_size_and_sign(runs, doc):
    diffs = doc["rows"]["differences"]
    none = _one(diffs, metric="total_variation_uniform", group_by="intervention", group="none")
    assert (none["model_a"], none["model_b"]) == ("fair-model", "skewed-model")
    # 8 prompts of 8 images: the plug-in-bias-robust interval is wide, the paired test still rejects
    assert none["value"] == pytest.approx(0.375) and none["ci_low"] < 0.375 < none["ci_high"]
    assert none["method"] == "difference of mean-over-prompts bounds"
    assert none["q_value"] < 0.05 and none["n_prompts"] == 8
    share = _one(diffs, metric="proportion", label="masc", group_by="intervention", group="none")
    assert share["value"] == pytest.approx((4 + 2 + 5 + 3) / 8 / 4) and share["ci_low"] > 0  # 0.4375
    diverse = _one(diffs, metric="total_variation_uniform", group_by="intervention", group="diverse")
    # identical labels: no difference, and still an interval of sampling error around it
    assert diverse["value"] == 0 and diverse["p_value"] == 1 and diverse["ci_low"] < -0.05 and diverse["ci_high"] > 0.05
    overall = _one(diffs, metric="total_variation_uniform", group_by="all")
    assert overall["value"] == pytest.approx(0.375 / 2)
    # the other order flips the sign
    flipped = compare_document([runs["skewed"], runs["fair"]])[0]["rows"]["differences"]
    again = _one(flipped, metric="total_variation_uniform", group_by="intervention", group="none")
    assert (again["model_a"], again["model_b"]) == ("skewed-model", "fair-model")
    assert again["value"] == pytest.approx(-0.375) and again["ci_low"] < -0.375 < again["ci_high"]
    assert (again["ci_low"], again["ci_high"]) == pytest.approx((-none["ci_high"], -none["ci_low"]))
    for r in diffs:
        assert r["q_value"] is None or r["q_value"] >= (r["p_value"] or 0) - 1e-12


def test_the_cli_writes_the_pages_and_a_leaderboard_that_validates(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp" / "compare.html"
    code, stdout, err = in_process(monkeypatch, capsys, "compare", str(runs["fair"]), str(runs["skewed"]), "--out", str(out),
                                   "--json", str(tmp_path / "cmp" / "compare.json"))
    assert code == 0, err
    board = out.parent / "leaderboard.json"
    for path in (out, board, out.parent / "leaderboard.html", tmp_path / "cmp" / "compare.json"):
        assert str(path) in stdout and path.is_file()
    assert "16 shared prompts, 128 images per model" in stdout and "1 [1, 1] fair-model 0.06" in stdout
    doc = json.loads(board.read_text())
    assert doc["schema"] == "t2ibias-leaderboard" and doc["schema_version"] == 1
    fair_m, skewed_m = doc["models"]
    assert skewed_m["weights"] == "hub:skewed-model@r1" and fair_m["measurer"]["gate_fingerprint"] == "gate-1"
    assert fair_m["audit"]["accuracy"]["gender_presentation"]["value"] == 0.85 and skewed_m["audit"] is None
    assert fair_m["prompt_sets"] == [{"id": "occ", "version": 1, "sha256": "0" * 64}]
    top = _one(doc["rows"], model="fair-model", metric="total_variation_uniform", axis="gender_presentation", group_by="all")
    assert (top["rank"], top["n"], top["n_prompts"]) == (1, 128, 16) and top["ci_low"] <= top["value"] <= top["ci_high"]
    code, stdout, err = in_process(monkeypatch, capsys, "validate", str(board))
    assert code == 0 and stdout.startswith("ok") and "2 models" in stdout, err


def test_a_corrupted_leaderboard_fails_validation_naming_the_fields(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "compare.html"
    assert in_process(monkeypatch, capsys, "compare", str(runs["fair"]), str(runs["skewed"]), "--out", str(out))[0] == 0
    doc = json.loads((tmp_path / "leaderboard.json").read_text())
    doc["rows"][0]["n"] = -3
    del doc["models"][1]["weights"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, _, err = in_process(monkeypatch, capsys, "validate", str(bad))
    line = error_line(code, err)
    assert "field rows[0].n" in line or "field models[1].weights" in line
    assert "field rows[0].n" in err and "field models[1].weights" in err and "2 problem" not in line
    assert validate_leaderboard(bad) and len(validate_leaderboard(bad)) == 2
    doc["schema_version"] = 9
    bad.write_text(json.dumps(doc))
    assert "field schema_version" in error_line(*in_process(monkeypatch, capsys, "validate", str(bad))[::2])


def test_runs_with_no_shared_prompt_are_refused_in_one_line_and_nothing_is_written(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "compare.html"
    code, _, err = in_process(monkeypatch, capsys, "compare", str(runs["fair"]), str(runs["disjoint"]), "--out", str(out))
    assert "share no prompt" in error_line(code, err)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, needle", [
    (("fair",), "two or more"),
    (("fair", "fair"), "given twice"),
])
def test_fewer_than_two_runs_are_refused(runs, tmp_path, monkeypatch, capsys, args, needle):
    code, _, err = in_process(monkeypatch, capsys, "compare", *(str(runs[a]) for a in args), "--out", str(tmp_path / "c.html"))
    assert needle in error_line(code, err)


def test_runs_measured_differently_are_refused_unless_allowed_and_then_every_figure_says_so(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "compare.html"
    code, _, err = in_process(monkeypatch, capsys, "compare", str(runs["fair"]), str(runs["other_gate"]), "--out", str(out))
    line = error_line(code, err)
    assert "--allow-different-measurers" in line and "gate-2" in line and not out.exists()
    code, _, err = in_process(monkeypatch, capsys, "compare", str(runs["fair"]), str(runs["other_gate"]), "--out", str(out),
                              "--allow-different-measurers")
    assert code == 0, err
    for page in (out, tmp_path / "leaderboard.html"):
        html = page.read_text()
        figures = re.findall(r"<figure>.*?</figure>", html, flags=re.S)
        assert figures and all('class="warning"' in f and "different instruments" in f for f in figures), page
        assert all("different instruments" in label for label in re.findall(r'aria-label="([^"]*)"', html))
    doc = json.loads((tmp_path / "leaderboard.json").read_text())
    assert doc["matching"]["allow_different_measurers"] and "different instruments" in doc["matching"]["warning"]
    assert validate_leaderboard(tmp_path / "leaderboard.json") == []


def test_the_pages_are_self_contained_accessible_and_fit_a_phone(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "compare.html"
    assert in_process(monkeypatch, capsys, "compare", str(runs["fair"]), str(runs["skewed"]), "--out", str(out))[0] == 0
    for page in (out, tmp_path / "leaderboard.html"):
        html = page.read_text()
        assert not re.search(r"https?://|<script|<link|<img|@import|url\(", html), page
        assert 'name="viewport"' in html and "max-width:100%" in html
        svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
        assert svgs and all('role="img"' in s and "aria-label=" in s and "<title>" in s and "viewBox" in s for s in svgs)
        tables = html.count("<table>")
        assert tables and html.count('<div class="scroll"><table>') == tables
        assert "#0072B2" in html and "#E69F00" in html  # Okabe-Ito, one colour per model
    assert "0.44 [" in out.read_text() or "0.438 [" in out.read_text()


@pytest.mark.slow
def test_two_generated_runs_compare_end_to_end(tmp_path, monkeypatch, capsys, one_torch_thread):
    """Two tiny sweeps of the demo prompts (other --limit, --seeds and --base-seed) through the CLI:
    only the shared prompts and seed indices enter, and the leaderboard validates."""
    sweep = ["sweep", "--model", "tiny-random-sd", "--prompts", "demo", "--device", "cpu"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert in_process(monkeypatch, capsys, *sweep, "--seeds", "1", "--limit", "2", "--out", str(a))[0] == 0
    assert in_process(monkeypatch, capsys, *sweep, "--seeds", "2", "--limit", "3", "--base-seed", "5", "--out", str(b))[0] == 0
    out = tmp_path / "cmp" / "compare.html"
    code, _, err = in_process(monkeypatch, capsys, "compare", str(a), str(b), "--out", str(out), "--json", str(tmp_path / "c.json"))
    assert code == 0, err
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["matching"]["n_prompts"] == 2 and doc["matching"]["n_images"] == 2
    assert [m["id"] for m in doc["models"]] == ["tiny-random-sd (a)", "tiny-random-sd (b)"]
    assert {r["axis"] for r in doc["rows"]["ranks"]} >= {"gender_presentation"}
    assert in_process(monkeypatch, capsys, "validate", str(out.parent / "leaderboard.json"))[0] == 0


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (Debian package `chromium`)")
def test_the_pages_load_in_chromium_with_no_error_request_or_sideways_overflow(runs, tmp_path, monkeypatch, capsys):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    out = tmp_path / "compare.html"
    assert in_process(monkeypatch, capsys, "compare", str(runs["fair"]), str(runs["skewed"]), "--out", str(out))[0] == 0
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium())
        try:
            for page_file in (out, tmp_path / "leaderboard.html"):
                for width in (390, 1280):
                    page = browser.new_page(viewport={"width": width, "height": 800})
                    errors, requests = [], []
                    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    page.on("request", lambda r: requests.append(r.url))
                    page.goto(page_file.as_uri())
                    assert errors == [] and all(u.startswith("file:") for u in requests), (page_file, errors, requests)
                    assert page.evaluate("document.documentElement.scrollWidth") <= width, (page_file, width)
                    names = page.evaluate("[...document.querySelectorAll('svg')].map(s => s.getAttribute('aria-label') || '')")
                    assert names and all(names), page_file
                    page.screenshot(path=str(tmp_path / f"{page_file.stem}-{width}.png"))
                    page.close()
        finally:
            browser.close()


@pytest.mark.parametrize("damage, needle", [
    ("unscored", "t2ibias score"),
    ("labels-garbage", "image_labels.parquet"),
    ("file", "not a run directory"),
    ("confidence", "--confidence"),
])
def test_bad_runs_and_options_are_one_line_each_and_nothing_is_written(runs, tmp_path, monkeypatch, capsys, damage, needle):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(runs["skewed"], broken)
    extra: list[str] = []
    if damage == "unscored":
        (broken / "image_labels.parquet").unlink()
    elif damage == "labels-garbage":
        (broken / "image_labels.parquet").write_bytes(b"not parquet")
    elif damage == "file":
        broken = broken / "spec.json"
    else:
        extra = ["--confidence", "2"]
    out = tmp_path / "out" / "compare.html"
    code, _, err = in_process(monkeypatch, capsys, "compare", str(runs["fair"]), str(broken), "--out", str(out), *extra)
    assert needle in error_line(code, err)
    assert not (tmp_path / "out").exists()


def test_the_total_variation_difference_covers_the_true_difference_at_four_images_per_prompt():
    """200 prompts of 4 images, one model balanced (p = ½) and one mildly skewed (p = 0.65): the true
    difference in total variation is 0.15, but the balanced model's plug-in is biased up by ~0.19 and
    the skewed one's by ~0.08, so the former t interval of plug-in differences sits near 0.04."""
    from t2ibias.comparison.match import Axis
    from t2ibias.comparison.paired import _per_prompt, tv_difference, tv_difference_plugin

    rng = np.random.default_rng(7)
    counts = np.stack([rng.multinomial(4, q, size=200) for q in ([0.5, 0.5], [0.65, 0.35])])  # (runs, prompts, K)
    pp = _per_prompt(Axis("gender_presentation", ["masc", "fem"], ["masc", "fem"], counts), 0.95)
    everything = np.ones(200, dtype=bool)
    truth = 0.15 - 0.0
    _, lo, hi, _ = tv_difference(pp, 0, 1, everything, 2, 0.95)
    assert lo <= truth <= hi and lo > -1 and hi < 1
    _, old_lo, old_hi, _ = tv_difference_plugin(pp, 0, 1, everything, 0.95)
    assert not old_lo <= truth <= old_hi


def test_the_python_api_writes_the_bytes_the_command_writes(runs, tmp_path, monkeypatch, capsys):
    import t2ibias

    cli_out = tmp_path / "cli" / "compare.html"
    code, _, err = in_process(monkeypatch, capsys, "compare", str(runs["fair"]), str(runs["skewed"]), "--out", str(cli_out),
                              "--json", str(tmp_path / "cli" / "rows.json"))
    assert code == 0, err
    api_out = tmp_path / "api" / "compare.html"
    written = t2ibias.compare([t2ibias.open_run(runs["fair"]), runs["skewed"]], api_out, json=tmp_path / "api" / "rows.json")
    assert set(written) == {"compare", "leaderboard", "leaderboard_page", "json"}
    for name in ("compare.html", "leaderboard.json", "leaderboard.html", "rows.json"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    from t2ibias.core.errors import UserError

    with pytest.raises(UserError, match="shared|share"):
        t2ibias.compare([runs["fair"], runs["disjoint"]], tmp_path / "none" / "compare.html")
    assert not (tmp_path / "none").exists()
