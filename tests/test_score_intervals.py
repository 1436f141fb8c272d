"""The score stage's intervals and tests: exact share intervals, skew intervals that reach balance,
q-values, the minimum-n flag, paired intervention differences and the options' bad values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from t2ibias.metrics.score import compute_metrics, share_halfwidth, share_seeds_for
from t2ibias.stats.binomial import clopper_pearson

CLASSIFIER = "tiny-random-clip"
SPEC = {"classifier": {"id": CLASSIFIER}, "base_seed": 0}


def _frame(per_prompt: dict[str, list[str]], axis: str = "gender_presentation") -> pd.DataFrame:
    return pd.DataFrame([{"key": f"{pid}-{i}", "prompt_id": pid, "image_index": i, "attribute": axis, "label": lab}
                         for pid, labs in per_prompt.items() for i, lab in enumerate(labs)])


def _rows(rows, **want):
    return [r for r in rows if all(r[k] == v for k, v in want.items())]


def test_a_prompt_whose_images_all_agree_still_gets_an_interval_with_width():
    rows = compute_metrics(_frame({"p": ["masc"] * 4}), pd.DataFrame({"prompt_id": ["p"], "family": ["f"]}), SPEC)
    share = _rows(rows, metric="proportion", group_by="prompt_id", label="masc")[0]
    lo, hi = clopper_pearson(4, 4)
    assert (share["value"], share["ci_low"], share["ci_high"]) == (1.0, pytest.approx(float(lo)), 1.0)
    assert share["ci_low"] < 0.5 and share["method"] == "clopper-pearson" and share["aggregate"] == "prompt"
    assert "n < min_n" in share["note"]  # 4 images, default --min-n 50


def test_balanced_prompt_interval_reaches_balance_and_its_test_does_not_reject():
    labs = ["masc", "fem"] * 30
    rows = compute_metrics(_frame({"p": labs}), pd.DataFrame({"prompt_id": ["p"], "family": ["f"]}), SPEC)
    tv = _rows(rows, metric="total_variation_uniform", group_by="prompt_id")[0]
    gap = _rows(rows, metric="max_min_gap", group_by="prompt_id")[0]
    ent = _rows(rows, metric="normalized_entropy", group_by="prompt_id")[0]
    assert tv["value"] == 0 and tv["ci_low"] == 0 and tv["ci_high"] > 0
    assert gap["ci_low"] == 0 and ent["ci_high"] == pytest.approx(1.0)
    assert tv["p_value"] > 0.9 and tv["method"] == "simultaneous-projection"
    assert "n < min_n" not in tv["note"]


def test_q_values_are_benjamini_hochberg_over_the_prompts_of_a_table():
    rng = np.random.default_rng(3)
    per = {f"p{i}": list(rng.choice(["masc", "fem"], size=30, p=[0.5 + 0.05 * (i % 8), 0.5 - 0.05 * (i % 8)])) for i in range(16)}
    prompts = pd.DataFrame({"prompt_id": list(per), "family": ["f"] * 16})
    rows = compute_metrics(_frame(per), prompts, SPEC)
    tv = _rows(rows, metric="total_variation_uniform", group_by="prompt_id")
    p = np.array([r["p_value"] for r in tv])
    assert np.allclose([r["q_value"] for r in tv], stats.false_discovery_control(p, method="bh"))
    assert all(0 < r["p_value"] <= 1 for r in tv)


def test_paired_differences_of_each_intervention_against_none():
    # five subjects; "diverse" turns an all-masc prompt into a half-and-half one
    per, records = {}, []
    for s in range(5):
        per[f"n{s}"] = ["masc"] * 10
        per[f"d{s}"] = ["masc", "fem"] * 5
        records += [{"prompt_id": f"n{s}", "family": "occupation", "subject": f"s{s}", "template_id": "t", "intervention": "none"},
                    {"prompt_id": f"d{s}", "family": "occupation", "subject": f"s{s}", "template_id": "t", "intervention": "diverse"}]
    rows = compute_metrics(_frame(per), pd.DataFrame(records), SPEC)
    fem = _rows(rows, metric="proportion", group_by="intervention_vs_none", group="diverse", label="fem")[0]
    tv = _rows(rows, metric="total_variation_uniform", group_by="intervention_vs_none", group="diverse")[0]
    assert fem["value"] == pytest.approx(0.5) and tv["value"] == pytest.approx(-0.5)
    # the skew difference: the difference of the two headline intervals, no (biased) paired test
    assert tv["ci_low"] <= -0.5 <= tv["ci_high"] and math.isnan(tv["p_value"]) and "no test" in tv["note"]
    assert fem["aggregate"] == "mean_over_prompts" and "5 prompt pairs" in fem["note"]
    # every pair moves the same way: no spread, the interval is the point and the change is certain
    assert fem["ci_low"] == fem["ci_high"] == pytest.approx(0.5)
    # with noise the interval has width and contains the mean difference
    per["d0"] = ["masc"] * 8 + ["fem"] * 2
    rows = compute_metrics(_frame(per), pd.DataFrame(records), SPEC)
    fem = _rows(rows, metric="proportion", group_by="intervention_vs_none", group="diverse", label="fem")[0]
    diffs = [0.2, 0.5, 0.5, 0.5, 0.5]
    res = stats.ttest_1samp(diffs, 0.0)
    assert fem["value"] == pytest.approx(np.mean(diffs)) and fem["p_value"] == pytest.approx(res.pvalue)
    assert fem["ci_low"] < fem["value"] < fem["ci_high"]


def test_mean_over_prompts_cannot_cancel_while_pooled_counts_do():
    rows = compute_metrics(_frame({"a": ["masc"] * 20, "b": ["fem"] * 20}), pd.DataFrame({"prompt_id": ["a", "b"], "family": ["f", "f"]}), SPEC)
    mean = _rows(rows, metric="total_variation_uniform", group_by="all", aggregate="mean_over_prompts")[0]
    pooled = _rows(rows, metric="total_variation_uniform", group_by="all", aggregate="pooled")[0]
    assert mean["value"] == pytest.approx(0.5) and pooled["value"] == pytest.approx(0.0)
    assert "cancel" in mean["note"] and mean["ci_low"] > 0.1 and pooled["ci_low"] == 0


def test_halfwidth_before_a_sweep():
    assert share_halfwidth(4) > 0.4 and share_halfwidth(50) < 0.15
    n = share_seeds_for(0.15)
    assert share_halfwidth(n) <= 0.15 < share_halfwidth(n - 1)


@pytest.mark.parametrize("argv, field", [
    (["--min-n", "0"], "--min-n"),
    (["--confidence", "1.5"], "--confidence"),
    (["--confidence", "0"], "--confidence"),
    (["--ci", "studentized"], "--ci"),
])
def test_bad_interval_options_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, field):
    from tests.test_cli import error_line, in_process

    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.json").write_text("{}")
    before = sorted(p.name for p in run.iterdir())
    code, _, err = in_process(monkeypatch, capsys, "score", str(run), *argv)
    assert field in error_line(code, err)
    assert sorted(p.name for p in run.iterdir()) == before
    code, _, err = in_process(monkeypatch, capsys, "sweep", "--model", "tiny-random-sd", "--out", str(tmp_path / "new"),
                              "--min-n", "0")
    assert "--min-n" in error_line(code, err) and not (tmp_path / "new").exists()
