"""The HTML pages in a real browser (headless Debian chromium driven by playwright's sync API).

Each page loads from ``file://`` with no console message of level error or warning, no page error
and no request other than the page itself; every ``<svg role="img">`` has an accessible name; at
1280 px and at 390 px the page is no wider than the viewport, and a screenshot is taken. Skipped
with a reason when chromium or playwright is absent (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("T2IBIAS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium, or set T2IBIAS_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


# --------------------------------------------------------------------------- the pages


def _report_page(tmp: Path) -> Path:
    from t2ibias.report import write_report
    from tests.test_report import _extra, _gate_audit, _with_gate, make_run

    run = make_run(tmp)
    _with_gate(run, _gate_audit())  # the face-gate banner, marks and tables are laid out too
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["rows"] += [  # rows that draw every chart type
        _extra("share_minus_reference", "gender_presentation", "prompt_id", "p1", "fem", 0.2, (0.1, 0.3), 2,
               "reference 0.400 (BLS)"),
        _extra("share_minus_reference", "gender_presentation", "subject", "doctor", "fem", 0.2, (0.1, 0.3), 3),
        _extra("total_variation_uniform", "gender_presentation", "intervention_vs_none", "ethnic-diversity", None,
               -0.15, (-0.25, -0.05), 2),
        _extra("location_distance", "location", "all", "all", "Germany", 0.30, (0.2, 0.4), 5),
        _extra("location_distance", "location", "prompt_id", "p3", "Germany", 0.35, (0.2, 0.5), 2),
    ]
    (run / "metrics.json").write_text(json.dumps(metrics))
    return write_report(run)


def _audit_page(tmp: Path) -> Path:
    from t2ibias.audit import run_audit
    from t2ibias.report.audit_html import write_audit_html
    from tests.test_audit import PaintedPredictor, build_fixture

    root = tmp / "facet"
    root.mkdir()
    build_fixture(root)
    run_audit(PaintedPredictor(), root, tmp / "audit", classifier_id="painted", fingerprint="f", limit=12, n_boot=20)
    return write_audit_html(tmp / "audit" / "audit.json")


def _leaderboard_page(tmp: Path) -> Path:
    from facet_eval.leaderboard import write_leaderboard
    from tests.test_facet_submission import _facet_root, _rows, _sub_file

    root = _facet_root(tmp)
    subs = [_sub_file(tmp, "detr_r50", root, _rows(overall=0.84, masc=0.85, fem=0.84)),
            _sub_file(tmp, "faster_rcnn", root, _rows(overall=0.74, masc=0.745, fem=0.744))]
    return write_leaderboard(subs, tmp / "board" / "index.html")


#: name → a function writing the page into a temporary folder and returning its path. A page added
#: later (the compare page) joins the checks with one entry here.
PAGES = {"report": _report_page, "audit": _audit_page, "leaderboard": _leaderboard_page}


def _check(browser, page_file: Path, shots: Path) -> None:
    url = page_file.resolve().as_uri()
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 900})
        messages, errors, requests = [], [], []
        page.on("console", lambda m: messages.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url, wait_until="load")
        # open every <details> so collapsed content is laid out too, then scroll once (lazy images)
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_timeout(100)
        assert not messages and not errors, (width, messages, errors)
        assert [u for u in requests if u != url and not u.startswith("data:")] == [], requests
        unnamed = page.evaluate("""[...document.querySelectorAll('svg[role=img]')]
            .filter(s => !(s.getAttribute('aria-label') || '').trim() || !s.querySelector('title'))
            .map(s => s.outerHTML.slice(0, 80))""")
        assert unnamed == []
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width, f"{page_file.name} is {scroll_width} px wide at a {width} px viewport"
        page.screenshot(path=str(shots / f"{page_file.stem}_{width}.png"), full_page=page.evaluate("document.documentElement.scrollHeight") < 16000)
        page.close()


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_loads_clean_and_fits_a_phone(browser, name, tmp_path):
    page_file = PAGES[name](tmp_path)
    shots = tmp_path / "shots"
    shots.mkdir()
    _check(browser, page_file, shots)
    assert sorted(p.name for p in shots.iterdir()) == sorted(f"{page_file.stem}_{w}.png" for w in WIDTHS)
    keep = os.environ.get("T2IBIAS_SHOTS")  # a folder to keep the screenshots in, for a look
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for p in shots.iterdir():
            shutil.copy(p, Path(keep) / f"{name}_{p.name}")


def test_report_charts_are_named_in_the_browser(browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(_report_page(tmp_path).resolve().as_uri())
    names = page.evaluate("[...document.querySelectorAll('svg[role=img]')].map(s => s.getAttribute('aria-label'))")
    assert len(names) >= 4 and any("labour statistics" in n for n in names) and any("per intervention" in n for n in names)
    # the numbers are one click away: the table beside each chart opens and shows its rows
    first = page.locator("figure.chart details").first
    first.locator("summary").click()
    assert first.locator("table tbody tr").count() >= 1 and first.locator("table").is_visible()
    page.close()
