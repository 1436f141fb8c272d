"""The one metric row and the layouts its writers publish it in."""

from __future__ import annotations

import dataclasses
import math

import pytest

from t2ibias.core.rows import AUDIT, FACET, LONG, ROW_KEYS, MetricRow, RowLayout


def test_row_keys_are_the_fields_and_the_design_long_format():
    assert ROW_KEYS == ("metric", "axis", "group_by", "group", "label", "value", "ci_low", "ci_high", "n",
                        "higher_is_better", "note", "aggregate", "method", "p_value", "q_value")


def test_score_row_keys_are_derivable_from_the_row():
    from t2ibias.metrics.score import ROW_KEYS as SCORE_ROW_KEYS

    assert SCORE_ROW_KEYS == ROW_KEYS  # so metrics/score.py can import them from here


def test_to_dict_is_the_long_format_in_order():
    row = MetricRow(metric="proportion", axis="gender_presentation", group_by="prompt_id", group="p1", label="fem",
                    value=0.5, ci_low=0.3, ci_high=0.7, n=10, aggregate="prompt", method="wilson")
    d = row.to_dict()
    assert list(d) == list(ROW_KEYS) and d == row.to_dict(LONG)
    assert (d["label"], d["value"], d["note"], d["p_value"]) == ("fem", 0.5, None, None)


def test_a_row_is_frozen_and_replace_keeps_extras_apart():
    row = MetricRow(metric="m", value=1.0, extra={"task": "detection"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.value = 2.0  # type: ignore[misc]
    new = row.replace(value=2.0, se=0.1)
    assert (new.value, dict(new.extra)) == (2.0, {"task": "detection", "se": 0.1})
    assert (row.value, dict(row.extra)) == (1.0, {"task": "detection"})


def test_audit_layout_names_the_measured_and_the_grouping_attribute():
    from t2ibias.store.audit_file import ROW_COLUMNS

    assert AUDIT.keys == ROW_COLUMNS
    row = MetricRow(metric="accuracy", axis="gender_presentation", group_by="skin_tone_bucket", group="darker", value=0.8,
                    n=14, ci_low=0.5, ci_high=0.95, note="", method="korn-graubard, images resampled")
    published = AUDIT.publish(row)
    assert list(published.items()) == [
        ("attribute", "gender_presentation"), ("group_attribute", "skin_tone_bucket"), ("group", "darker"),
        ("metric", "accuracy"), ("value", 0.8), ("n", 14), ("ci_low", 0.5), ("ci_high", 0.95), ("note", ""),
        ("method", "korn-graubard, images resampled")]
    assert AUDIT.read(published) == row


def test_facet_layout_keeps_the_published_keys_and_their_order():
    group = MetricRow(metric="mAR", group_by="gender_presentation", group="fem", value=0.5, n=60, ci_low=0.4, ci_high=0.6,
                      method="korn-graubard (image bootstrap variance)",
                      extra={"task": "detection", "class": None, "n_images": 30})
    assert list(FACET.publish(group)) == ["task", "metric", "attribute", "group", "class", "value", "n", "ci_low",
                                          "ci_high", "n_images", "method", "p_value", "q_value"]
    empty = group.replace(value=math.nan, n=0, note="no people in this group")
    assert list(FACET.publish(empty))[-1] == "note"
    gap = MetricRow(metric="disparity_mAR", group_by="gender_presentation", group="masc-fem", value=0.1, n=55,
                    ci_low=0.0, ci_high=0.2, method="joint image bootstrap percentile", p_value=0.03,
                    extra={"task": "detection", "class": None, "group_a": "masc", "group_b": "fem", "n_a": 60, "n_b": 55,
                           "se": 0.05})
    adjusted = gap.replace(q_value=0.06, n_tests=3, adj_ci_low=-0.05, adj_ci_high=0.25, adj_method="Bonferroni over 3 gaps")
    assert list(FACET.publish(adjusted)) == [
        "task", "metric", "attribute", "group", "class", "group_a", "group_b", "value", "n", "n_a", "n_b", "ci_low",
        "ci_high", "method", "p_value", "q_value", "se", "n_tests", "adj_ci_low", "adj_ci_high", "adj_method"]
    assert FACET.publish(adjusted)["attribute"] == "gender_presentation"  # the grouping attribute: group_by
    assert FACET.read(FACET.publish(adjusted)) == adjusted


def test_a_layout_leaves_out_only_what_it_says():
    layout = RowLayout(("metric", "value", "note", "extra_key"), optional=frozenset({"note"}))
    assert layout.publish(MetricRow(metric="m", value=None)) == {"metric": "m", "value": None}
    assert layout.publish(MetricRow(metric="m", value=1.0, note="x", extra={"extra_key": None})) == {
        "metric": "m", "value": 1.0, "note": "x", "extra_key": None}
