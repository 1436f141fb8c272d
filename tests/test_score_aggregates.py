"""Headline aggregates of the score stage: a mean over prompts that cannot cancel out, intervals that
hold balance, and the row contract (aggregate, method, p_value, q_value, the min-n note)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from t2ibias.core.errors import UserError
from t2ibias.metrics.score import compute_metrics

CLASSIFIER = "clip-vit-l-14-openai"
AXES = {2: ("gender_presentation", ["masc", "fem"]), 4: ("race4", ["white", "black", "asian", "indian"])}


def frames(counts: list[list[int]], k: int = 2, **columns: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Image-labels and prompts tables: prompt i has counts[i][j] images of label j."""
    axis, labels = AXES[k]
    pids = [f"p{i}" for i in range(len(counts))]
    rows = []
    for pid, row in zip(pids, counts):
        lab = [labels[j] for j, c in enumerate(row) for _ in range(c)]
        rows += [{"key": f"{pid}-{i}", "prompt_id": pid, "image_index": i, "attribute": axis, "label": x} for i, x in enumerate(lab)]
    prompts = pd.DataFrame({"prompt_id": pids, "family": "occupation", **columns})
    return pd.DataFrame(rows), prompts


def score(counts: list[list[int]], k: int = 2, **kwargs) -> pd.DataFrame:
    columns = kwargs.pop("columns", {})
    labels, prompts = frames(counts, k, **columns)
    rows = pd.DataFrame(compute_metrics(labels, prompts, {"classifier": {"id": CLASSIFIER}, "base_seed": 0}, **kwargs))
    return rows


def one(rows: pd.DataFrame, **where) -> pd.Series:
    sel = rows
    for key, value in where.items():
        sel = sel[sel[key].isna()] if value is None else sel[sel[key] == value]
    assert len(sel) == 1, f"{where}: {len(sel)} rows"
    return sel.iloc[0]


@pytest.mark.parametrize("n", [10, 60])
def test_prompts_stereotyped_both_ways_do_not_cancel_in_the_mean_over_prompts(n: int) -> None:
    rows = score([[n, 0], [0, n]])  # prompt A: every image masc; prompt B: every image fem
    for group_by in ("family", "all"):
        tv_mean = one(rows, metric="total_variation_uniform", group_by=group_by, aggregate="mean_over_prompts")
        tv_pooled = one(rows, metric="total_variation_uniform", group_by=group_by, aggregate="pooled")
        gap_mean = one(rows, metric="max_min_gap", group_by=group_by, aggregate="mean_over_prompts")
        gap_pooled = one(rows, metric="max_min_gap", group_by=group_by, aggregate="pooled")
        entropy_mean = one(rows, metric="normalized_entropy", group_by=group_by, aggregate="mean_over_prompts")
        mad_mean = one(rows, metric="dalleval_mad", group_by=group_by, aggregate="mean_over_prompts")
        assert tv_mean["value"] == pytest.approx(0.5)  # the largest TV for K = 2: 1 − 1/K
        assert gap_mean["value"] == pytest.approx(1.0)
        assert entropy_mean["value"] == pytest.approx(0.0)
        assert mad_mean["value"] == pytest.approx(0.5)  # DALL-Eval averages per prompt
        assert tv_pooled["value"] == pytest.approx(0.0)
        assert gap_pooled["value"] == pytest.approx(0.0)
        # the headline's interval keeps it away from balance; the pooled one holds balance
        assert tv_mean["ci_low"] > 0.05 and tv_mean["ci_high"] == pytest.approx(0.5)
        assert gap_mean["ci_low"] > 0.1
        assert tv_pooled["ci_low"] == pytest.approx(0.0, abs=1e-12)


def test_a_stereotyped_prompt_has_the_largest_skew_inside_its_interval() -> None:
    rows = score([[10, 0]])
    tv = one(rows, metric="total_variation_uniform", group_by="prompt_id", group="p0")
    gap = one(rows, metric="max_min_gap", group_by="prompt_id", group="p0")
    assert tv["value"] == 0.5 and tv["ci_low"] < 0.5 <= tv["ci_high"] + 1e-12
    assert gap["value"] == 1.0 and gap["ci_low"] < 1.0 <= gap["ci_high"] + 1e-12


@pytest.mark.parametrize("k,n", [(2, 10), (4, 5), (4, 40)])
def test_equal_groups_give_a_gap_interval_containing_zero(k: int, n: int) -> None:
    rows = score([[n] * k, [n] * k, [n] * k], k)
    gaps = rows[rows["metric"] == "max_min_gap"]
    assert set(gaps["aggregate"]) == {"prompt", "mean_over_prompts", "pooled"}
    assert (gaps["value"].abs() < 1e-12).all()
    assert (gaps["ci_low"] <= 1e-12).all() and (gaps["ci_high"] > 0).all(), gaps[["group_by", "aggregate", "ci_low", "ci_high"]]
    tv = rows[rows["metric"] == "total_variation_uniform"]
    assert (tv["ci_low"] <= 1e-12).all()
    entropy = rows[rows["metric"] == "normalized_entropy"]
    assert (entropy["ci_high"] >= 1 - 1e-12).all()


def test_a_share_of_one_label_only_still_has_an_interval_with_width() -> None:
    rows = score([[4, 0], [4, 0], [4, 0]])
    shares = rows[(rows["metric"] == "proportion") & (rows["label"] == "masc")]
    assert set(shares["aggregate"]) == {"prompt", "mean_over_prompts", "pooled"}
    assert (shares["value"] == 1.0).all()
    assert (shares["ci_high"] - shares["ci_low"] > 0.05).all(), shares[["group_by", "aggregate", "ci_low", "ci_high"]]
    assert (shares["ci_high"] >= 1 - 1e-12).all()


def test_rows_carry_aggregate_method_and_tests() -> None:
    rows = score([[6, 4], [9, 1], [2, 8], [5, 5]])
    assert set(rows["aggregate"]) <= {"prompt", "mean_over_prompts", "pooled"}
    assert (rows.loc[rows["group_by"] == "prompt_id", "aggregate"] == "prompt").all()
    estimates = rows[rows["ci_low"].notna()]
    assert (estimates["method"].astype(str).str.len() > 0).all()
    per_prompt = rows[(rows["group_by"] == "prompt_id") & (rows["metric"] == "proportion")]
    assert set(per_prompt["method"]) == {"clopper-pearson"}
    counts = rows[rows["metric"] == "count"]
    assert counts["p_value"].isna().all() and counts["q_value"].isna().all()
    for group_by in ("family", "all"):
        for metric in ("proportion", "total_variation_uniform", "normalized_entropy", "max_min_gap"):
            sel = rows[(rows["group_by"] == group_by) & (rows["metric"] == metric)]
            assert {"mean_over_prompts", "pooled"} <= set(sel["aggregate"]), (group_by, metric)


def test_per_prompt_tests_of_balance_carry_benjamini_hochberg_q_values() -> None:
    rows = score([[10, 0], [9, 1], [5, 5], [6, 4], [0, 10], [7, 3]])
    tv = rows[(rows["group_by"] == "prompt_id") & (rows["metric"] == "total_variation_uniform")]
    p, q = tv["p_value"].to_numpy(float), tv["q_value"].to_numpy(float)
    assert np.isfinite(p).all() and np.isfinite(q).all()
    np.testing.assert_allclose(q, stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    assert p[2] == pytest.approx(1.0)  # 5 / 5 is balance itself
    assert q[0] < 0.05 and q[4] < 0.05  # 10 of 10 one way: significant after the adjustment
    assert (q >= p - 1e-15).all()


def test_per_prompt_rows_below_min_n_are_flagged() -> None:
    rows = score([[3, 1], [6, 4]], min_n=5)
    for group, small in (("p0", True), ("p1", False)):
        sel = rows[(rows["group_by"] == "prompt_id") & (rows["group"] == group) & (rows["metric"] != "count")]
        flagged = sel["note"].astype(str).str.contains("n < min_n", regex=False)
        assert flagged.all() if small else not flagged.any(), sel[["metric", "note"]]


def test_share_interval_method_is_the_one_asked_for() -> None:
    cp, wilson = (score([[7, 3]], ci_method=m) for m in ("clopper-pearson", "wilson"))
    a = one(cp, metric="proportion", group_by="prompt_id", label="masc")
    b = one(wilson, metric="proportion", group_by="prompt_id", label="masc")
    assert (a["method"], b["method"]) == ("clopper-pearson", "wilson")
    assert (a["ci_low"], a["ci_high"]) == pytest.approx(stats.binomtest(7, 10).proportion_ci(0.95, "exact"))
    assert (b["ci_low"], b["ci_high"]) == pytest.approx(stats.binomtest(7, 10).proportion_ci(0.95, "wilson"))


@pytest.mark.parametrize("kwargs,field", [({"ci_method": "percentile-ish"}, "unknown interval method"),
                                           ({"confidence": 1.5}, "between 0 and 1"), ({"min_n": 0}, "min-n")])
def test_bad_interval_options_are_one_line_user_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(UserError, match=field) as err:
        score([[3, 1]], **kwargs)
    assert "\n" not in str(err.value)


def test_paired_difference_of_an_intervention_on_the_same_prompts() -> None:
    # three subjects, each with a none and a diverse prompt; the intervention lowers the masc share
    counts = [[9, 1], [10, 0], [8, 2], [5, 5], [7, 3], [3, 7]]
    columns = {"subject": ["a", "b", "c", "a", "b", "c"], "intervention": ["none"] * 3 + ["diverse"] * 3}
    rows = score(counts, columns=columns)
    share = one(rows, metric="proportion", group_by="intervention_vs_none", group="diverse", label="masc")
    res = stats.ttest_rel([0.5, 0.7, 0.3], [0.9, 1.0, 0.8])
    assert share["value"] == pytest.approx(-0.4)
    assert share["p_value"] == pytest.approx(res.pvalue)
    assert share["ci_high"] < 0
    assert share["aggregate"] == "mean_over_prompts"
    assert not math.isnan(share["q_value"])
