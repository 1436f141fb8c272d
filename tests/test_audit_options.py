"""The audit's options object: the CLI's path (AuditOptions) and the keyword path give the same
audit, bad values are refused with the flag that set them, and the page is drawn from audit.json."""

from __future__ import annotations

import pytest

from t2ibias.audit import AuditOptions, run_audit
from t2ibias.core.errors import UserError
from t2ibias.report.audit_html import write_audit_html
from tests.test_audit import PaintedPredictor, build_fixture


@pytest.fixture(scope="module")
def facet(tmp_path_factory):
    root = tmp_path_factory.mktemp("facet")
    build_fixture(root)
    return root


def test_options_and_keywords_write_the_same_files(facet, tmp_path):
    kw = dict(limit=12, batch_size=5, seed=2, n_boot=20, engine="vectorized")
    run_audit(PaintedPredictor(), facet, tmp_path / "a", classifier_id="p", fingerprint="f", options=AuditOptions(**kw))
    run_audit(PaintedPredictor(), facet, tmp_path / "b", classifier_id="p", fingerprint="f", **kw)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "audit.json" in names and "audit.html" not in names  # the page is the report's job
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    page = write_audit_html(tmp_path / "a" / "audit.json")
    assert page == tmp_path / "a" / "audit.html" and "Classifier audit: p" in page.read_text()


@pytest.mark.parametrize("field, value, flag", [("batch_size", 0, "--batch-size"), ("limit", 0, "--limit"),
                                                ("engine", "numpy", "--engine"), ("confidence", 1.0, "confidence")])
def test_bad_option_names_its_flag(field, value, flag):
    with pytest.raises(UserError, match=f"^{flag}: "):
        AuditOptions(**{field: value})


def test_options_and_keywords_together_are_refused(facet, tmp_path):
    with pytest.raises(TypeError, match="not both"):
        run_audit(PaintedPredictor(), facet, tmp_path, classifier_id="p", fingerprint="f",
                  options=AuditOptions(n_boot=0), n_boot=5)
    assert not any(tmp_path.iterdir())
