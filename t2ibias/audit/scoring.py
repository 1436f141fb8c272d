"""One attribute's audit: a classifier's answers against FACET's true classes, overall and by group.

The confusion matrix crosses the true classes with the predicted labels (``abstain`` a column).
People of classes outside the attribute's label space (``non_binary``, ``na``) are confusion rows
but not in accuracy. A person the predictor gave no answer for on this attribute (e.g. no face
found) is an abstention (``n_no_prediction``). ``accuracy`` counts an abstention as an error,
``accuracy_answered`` leaves abstentions out and ``abstain_rate`` reports them. For skin tone
``accuracy`` is exact match to the median MST, ``within_range`` counts a prediction among the
values any annotator chose and ``abs_error`` is the mean absolute MST difference from the median
(answered predictions only). Calibration uses the score (the probability of the top label) and
whether the top label is right, abstentions included.

Groups are the attribute's own true classes and the cross-attribute groups :data:`CROSS_GROUPS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from facet_eval.attributes import FACET_ATTRIBUTES, LABEL_SPACE
from t2ibias.audit.groupwise import N_BINS, calibration_table, metric_rows
from t2ibias.measure.predictors import ABSTAIN, NO_ANSWER, prediction_fields
from t2ibias.core.errors import UserError
from t2ibias.core.rows import AUDIT, MetricRow

if TYPE_CHECKING:
    from t2ibias.audit.options import AuditOptions

#: cross-attribute groupings (FACET attribute names); skin_tone_bucket is facet_eval.groups' definition
CROSS_GROUPS = ("gender_presentation", "age_presentation", "skin_tone_bucket", "lighting")


@dataclass(frozen=True)
class AttributeAudit:
    """An attribute's ``audit.json`` entry, its ``audit.csv`` rows and its ``predictions.csv`` rows."""

    entry: dict[str, Any]
    long_rows: list[MetricRow]
    pred_rows: list[dict[str, Any]]


class _Answers(NamedTuple):
    """The predictor's answers for one attribute, one entry per person audited on it."""

    pred: np.ndarray  # label (object)
    top: np.ndarray  # top label (object)
    score: np.ndarray  # probability of the top label (NaN: none)
    labels: list[str]  # the label space, then other labels the predictor used
    n_no_prediction: int


def _answers(attr: str, preds: list[dict[str, Any]], idx: np.ndarray, classifier_id: str) -> _Answers:
    """The predictor's answers for people ``idx``; refuses labels that match none of FACET's."""
    fields = [prediction_fields(preds[i][attr]) if attr in preds[i] else NO_ANSWER for i in idx]
    seen: dict[str, None] = {}
    for f in fields:
        seen.update({k: None for k in f[3]})
        for lab in (f[0], f[1]):
            if lab != ABSTAIN:
                seen.setdefault(lab, None)
    if seen and not set(seen) & set(LABEL_SPACE[attr]):
        raise UserError(
            f"classifier {classifier_id!r}: attribute {attr}: labels {sorted(seen)} match none of FACET's classes "
            f"{list(LABEL_SPACE[attr])} (name the labels as FACET does)"
        )
    return _Answers(pred=np.array([f[0] for f in fields], dtype=object), top=np.array([f[1] for f in fields], dtype=object),
                    score=np.array([f[2] for f in fields], dtype=float),
                    labels=list(LABEL_SPACE[attr]) + [lab for lab in seen if lab not in LABEL_SPACE[attr]],
                    n_no_prediction=sum(1 for i in idx if attr not in preds[i]))


def _per_row(attr: str, true: np.ndarray, a: _Answers, in_labels: np.ndarray, gt: dict[str, Any],
             idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric's value per person (NaN: not counted); the metric is their mean."""
    answered = a.pred != ABSTAIN
    hit = (a.pred == true).astype(float)
    per_row: dict[str, np.ndarray] = {
        "accuracy": np.where(in_labels, hit, np.nan),
        "accuracy_answered": np.where(in_labels & answered, hit, np.nan),
        "abstain_rate": (~answered).astype(float),
    }
    if attr == "skin_tone":
        chosen = gt["skin_chosen"][idx]
        med = gt["skin_median"][idx]
        pred_num = np.array([int(p) if p.isdigit() and 1 <= int(p) <= 10 else 0 for p in a.pred])
        within = np.array([chosen[i, pred_num[i] - 1] if pred_num[i] else False for i in range(len(idx))], dtype=float)
        per_row["within_range"] = np.where(in_labels, within, np.nan)
        per_row["abs_error"] = np.where(in_labels & (pred_num > 0), np.abs(pred_num - med).astype(float), np.nan)
    return per_row


def _confusion(true: np.ndarray, pred: np.ndarray, labels: list[str], true_classes: list[str]) -> dict[str, Any]:
    """Counts of true class × predicted label: the label space, other labels seen, then abstain."""
    pred_cols = labels + [ABSTAIN]
    extra = sorted({p for p in pred if p not in pred_cols})
    pred_cols = labels + extra + [ABSTAIN]
    counts = [[int(((true == t) & (pred == p)).sum()) for p in pred_cols] for t in true_classes]
    return {"true": true_classes, "pred": pred_cols, "counts": counts}


def _group_columns(attr: str, true: np.ndarray, gt: dict[str, Any], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Grouping name → group of each person: the attribute's own true class first."""
    group_cols: dict[str, np.ndarray] = {FACET_ATTRIBUTES[attr][0]: true.astype(str)}
    for g in CROSS_GROUPS:
        if g in gt["groups"] and g not in group_cols:
            group_cols[g] = gt["groups"][g][idx].astype(str)
    return group_cols


def _calibration(ece_scores: np.ndarray, correct_top: np.ndarray, group_cols: dict[str, np.ndarray]) -> dict[str, Any]:
    """ECE and reliability table overall and per group (groups with a score)."""
    if not np.isfinite(ece_scores).any():
        return {"n_bins": N_BINS, "ece": math.nan, "n": 0, "bins": [], "by_group": [], "note": "the predictor gives no scores"}
    ece, bins = calibration_table(ece_scores, correct_top)
    cal_groups = []
    for gname, gcol in group_cols.items():
        for g in sorted(set(gcol)):
            m = gcol == g
            if not np.isfinite(ece_scores[m]).any():
                continue
            g_ece, g_bins = calibration_table(ece_scores[m], correct_top[m])
            cal_groups.append({"group_attribute": gname, "group": g, "ece": g_ece,
                               "n": int(np.isfinite(ece_scores[m]).sum()), "bins": g_bins})
    return {"n_bins": N_BINS, "score": "probability of the top label", "ece": ece,
            "n": int(np.isfinite(ece_scores).sum()), "bins": bins, "by_group": cal_groups}


def audit_attribute(attr: str, idx: np.ndarray, gt: dict[str, Any], preds: list[dict[str, Any]],
                    person_ids: np.ndarray, image_ids: np.ndarray, options: AuditOptions,
                    classifier_id: str) -> AttributeAudit:
    """Audit of ``attr`` over the audited people ``idx`` that have a true class for it.

    ``gt`` is :func:`facet_eval.attributes.ground_truth` of the audited people, ``preds`` their
    answers; people of one image (``image_ids``) are resampled together."""
    truth = gt["truth"][attr]
    a = _answers(attr, preds, idx, classifier_id)
    true = truth[idx].astype(object)
    true_classes = list(FACET_ATTRIBUTES[attr][1])
    in_labels = np.isin(true, a.labels)
    per_row = _per_row(attr, true, a, in_labels, gt, idx)
    correct_top = (a.top == true).astype(float)
    ece_scores = np.where(in_labels, a.score, np.nan)
    has_scores = bool(np.isfinite(ece_scores).any())
    entry: dict[str, Any] = {
        "facet_attribute": FACET_ATTRIBUTES[attr][0], "labels": a.labels, "true_classes": true_classes,
        "n": int(len(idx)), "n_in_labels": int(in_labels.sum()), "n_unannotated": int(len(truth) - len(idx)),
        "n_no_prediction": int(a.n_no_prediction), "confusion": _confusion(true, a.pred, a.labels, true_classes),
    }
    group_cols = _group_columns(attr, true, gt, idx)
    by_group: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    overall: dict[str, dict[str, Any]] = {}
    for k, (gname, gcol) in enumerate(group_cols.items()):
        ov, rows, comps = metric_rows(
            per_row, gcol, ece_inputs=(ece_scores, correct_top) if has_scores else None, n_boot=options.n_boot,
            seed=options.seed, confidence=options.confidence, min_n=options.min_n, engine=options.engine,
            clusters=image_ids[idx])
        if k == 0:
            overall = ov
        by_group += [{"group_attribute": gname, **r} for r in rows]
        comparisons += [{"group_attribute": gname, **c} for c in comps]
    entry.update(overall)
    entry.update(by_group=by_group, comparisons=comparisons, calibration=_calibration(ece_scores, correct_top, group_cols))
    long_rows = [AUDIT.read({"attribute": attr, "group_attribute": "overall", "group": "all", "metric": m, **v, "note": ""})
                 for m, v in overall.items()] + [AUDIT.read({"attribute": attr, **r}) for r in by_group]
    pred_rows = [{"person_id": int(person_ids[k]), "attribute": attr, "true": true[i], "pred": a.pred[i],
                  "top_label": a.top[i], "score": a.score[i]} for i, k in enumerate(idx)]
    return AttributeAudit(entry, long_rows, pred_rows)
