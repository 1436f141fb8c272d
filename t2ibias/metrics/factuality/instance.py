"""DoFaiR's per-instance scores: one instance's gold groups against the labels of its faces.

An instance is one DoFaiR row: gold *dominant* groups and gold *present* ("existence") groups,
as FairFace race classes (K = 7) or genders (K = 2, male / female). Its image is matched to the
faces a face-attribute classifier found in it; the predicted groups are the labels of those
faces, and the predicted set P is the set of distinct labels.

Per instance, with G = gold present and the counts taken over the whole label set:

* IDA (involved demographic accuracy) = (TP + TN) / K, where TP = |P ∩ G|, FP = |P \\ G|,
  FN = |G \\ P|, TN = K − |P ∪ G|.
* IDF (involved demographic F1) = (F1_present + F1_absent) / 2 with
  F1_present = 2TP / (2TP + FP + FN) and F1_absent = 2TN / (2TN + FP + FN); when
  TN = FP = FN = 0 (every label is gold-present and every one was predicted) F1_absent is
  taken as 1, so IDF = (F1_present + 1) / 2 = 1. That is the only case in which a denominator is
  zero: 2TN + FP + FN = 0 forces TN = FP = FN = 0, and 2TP + FP + FN ≥ |G| ≥ 1 because a gold
  list is never empty. When TN = 0 but FP + FN > 0 (all labels are gold-present and the
  prediction misses one), F1_absent = 0, as in the released script.
* DDA (dominant demographic accuracy): D = the k most frequent predicted labels, k = the length
  of the gold dominant list (all predicted labels when fewer are distinct). Scored like IDA
  against the gold dominant set Gd: (|D ∩ Gd| + K − |D ∪ Gd|) / K = Σ_labels [l ∈ D] == [l ∈ Gd]
  / K. Ties at the k-th place get expected credit: when t labels share the count of the k-th
  place and r of the k places are left after the labels counted more often, each of the t is in D
  with weight r / t, and DDA is its expectation over the equally likely choices of r of them,
  Σ_l (w_l [l ∈ Gd] + (1 − w_l) [l ∉ Gd]) / K (the score is linear in membership, so this is
  exact). No label wins a tie by its place in the label set: one Black and one White face with
  Gd = {White} give 6/7, between the 1 and 5/7 that either tie-break would give.
  ``dominant_credit`` holds the weights.
* diversity = |P| / K; gold diversity = |G| / K.

``dofair_compat=True`` reproduces the released scoring script (organize_fairface_results_new.py):
its DDA step recomputes TP and FP for D against Gd but reuses TN and FN left over from the IDA
step, so DDA_compat = (|D ∩ Gd| + TN_IDA) / (|D| + TN_IDA + FN_IDA), whose denominator is
|D| + K − |P| rather than K. It can be higher or lower than the correct value: faces
[Black, Black, White] for Gd = [White], G = [White, Black] give 5/7 correctly but 5/6 in compat;
faces [White] for Gd = [White], G = [White, Black, Indian] give 1 correctly but 5/7 in compat.
In compat mode ties in frequency are also broken as that script's ``Counter.most_common`` does:
by first appearance in the image's face list (face file order). IDA, IDF and diversity are the
same in both modes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def _ranked(predicted: Sequence[str], labels: Sequence[str], by_first_appearance: bool) -> list[str]:
    """Distinct predicted labels, most frequent first; ties by label order or first appearance."""
    counts = Counter(predicted)
    if by_first_appearance:
        return [label for label, _ in counts.most_common()]  # stable: insertion order on ties
    order = {label: i for i, label in enumerate(labels)}
    return sorted(counts, key=lambda label: (-counts[label], order[label]))


def dominant_credit(predicted: Sequence[str], k: int, labels: Sequence[str]) -> dict[str, float]:
    """Weight of each predicted label in the top ``k``: 1 above the k-th place's count, r / t for
    the t labels tied at it when r places are left, listed most frequent first (ties in label order)."""
    counts = Counter(predicted)
    ranked = _ranked(predicted, labels, by_first_appearance=False)
    if len(ranked) <= k:
        return {label: 1.0 for label in ranked}
    kth = counts[ranked[k - 1]]
    above = [label for label in ranked if counts[label] > kth]
    tied = [label for label in ranked if counts[label] == kth]
    share = (k - len(above)) / len(tied)
    return {**{label: 1.0 for label in above}, **{label: share for label in tied}}


def instance_scores(
    gold_dominant: Sequence[str],
    gold_present: Sequence[str],
    predicted_labels: Sequence[str],
    labels: Sequence[str],
    dofair_compat: bool = False,
) -> dict[str, Any]:
    """DoFaiR scores of one instance from the labels of its faces (one entry per face).

    Returns ``scored`` (False when there is no face: every score is then NaN), ``n_faces``,
    ``predicted_present`` (P in label order), ``predicted_dominant`` (the labels with a share of
    D, most frequent first; with a tie at the k-th place it lists every tied label),
    ``dominant_credit`` (each one's share: 1, or r / t for a tie; 1 for each of D in compat mode),
    ``tp, fp, tn, fn`` (of the IDA step), ``ida``, ``idf``, ``dda``, ``diversity`` and
    ``gold_diversity``. See the module docstring for the definitions.
    """
    labels = list(labels)
    k_all = len(labels)
    known = set(labels)
    for name, values in (("gold_dominant", gold_dominant), ("gold_present", gold_present), ("predicted_labels", predicted_labels)):
        unknown = [v for v in values if v not in known]
        if unknown:
            raise ValueError(f"{name}: labels {unknown} are not in the label set {labels}")
    if not gold_dominant or not gold_present:
        raise ValueError("gold_dominant and gold_present must name at least one label")
    gold = set(gold_present)
    gold_dom = set(gold_dominant)
    result: dict[str, Any] = {
        "scored": bool(predicted_labels),
        "n_faces": len(predicted_labels),
        "gold_diversity": len(gold) / k_all,
    }
    if not predicted_labels:
        nan = float("nan")
        result.update(predicted_present=[], predicted_dominant=[], dominant_credit={}, tp=0, fp=0, tn=0, fn=0,
                      ida=nan, idf=nan, dda=nan, diversity=nan)
        return result
    present = set(predicted_labels)
    tp, fp = len(present & gold), len(present - gold)
    fn = len(gold - present)
    tn = k_all - len(present | gold)
    ida = (tp + tn) / k_all
    f1_present = 2 * tp / (2 * tp + fp + fn)
    f1_absent = 1.0 if tn == fp == fn == 0 else 2 * tn / (2 * tn + fp + fn)
    idf = (f1_present + f1_absent) / 2

    if dofair_compat:
        # the released script: Counter.most_common's top k, TN and FN of the IDA step kept here
        dominant = _ranked(predicted_labels, labels, by_first_appearance=True)[: len(gold_dom)]
        credit = {label: 1.0 for label in dominant}
        dom = set(dominant)
        dom_tp, dom_fp = len(dom & gold_dom), len(dom - gold_dom)
        dda = (dom_tp + tn) / (dom_tp + dom_fp + tn + fn)
    else:
        credit = dominant_credit(predicted_labels, len(gold_dom), labels)
        dominant = list(credit)
        # expected agreement of membership in D and in Gd, label by label (labels not predicted: not in D)
        dda = sum(credit.get(label, 0.0) if label in gold_dom else 1.0 - credit.get(label, 0.0) for label in labels) / k_all
    result.update(
        predicted_present=[label for label in labels if label in present],
        predicted_dominant=dominant,
        dominant_credit=credit,
        tp=tp, fp=fp, tn=tn, fn=fn,
        ida=ida, idf=idf, dda=dda,
        diversity=len(present) / k_all,
    )
    return result
