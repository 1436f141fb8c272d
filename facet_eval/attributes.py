"""FACET's perceived attributes as ground truth: one true class per person and attribute.

A classifier audit compares a classifier's answers with what FACET's annotators perceived
(Gustafson et al., ICCV 2023). This module reads those perceptions from the annotation columns:

- ``gender_presentation`` ← ``gender_presentation_{masc,fem,non_binary,na}`` and ``age_group`` ←
  ``age_presentation_{young,middle,older,na}``. The true class is the column with the most votes;
  a tie between classes is ``na``; a person with no vote in any column of an attribute has no
  true class (None) for it. ``non_binary`` and ``na`` are classes a classifier cannot be right
  about: they are outside :data:`LABEL_SPACE`.
- ``skin_tone`` (classes ``"1"``..``"10"``) ← ``skin_tone_1..10`` vote counts: three annotators
  each chose at least two adjacent Monk Skin Tone values. The true value is the weighted median of
  the votes (the lower median on a tie); the values any annotator chose are kept for a
  within-range check. A person with only ``skin_tone_na`` votes is ``na``.

Group columns for disaggregating are the same truths (``na`` where unannotated), the skin-tone
bucket of :func:`facet_eval.groups.skin_tone_bucket_labels` (the one definition of FACET's
lighter/darker buckets) and the lighting class by the same most-votes rule.

People annotated ``visible_minimal`` only (neither face nor torso visible) and people whose box
has no area cannot be cropped for a classifier: :func:`skip_reasons` names them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from facet_eval.groups import skin_tone_bucket_labels
from t2ibias.core.vocab import AGE_GROUPS, GENDER_PRESENTATION, KNOWN_LABELS, SKIN_TONES

#: classifier attribute → (FACET column prefix, FACET classes in order)
FACET_ATTRIBUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "gender_presentation": ("gender_presentation", (*GENDER_PRESENTATION, "non_binary", "na")),
    "age_group": ("age_presentation", (*AGE_GROUPS, "na")),
    "skin_tone": ("skin_tone", (*SKIN_TONES, "na")),
}
#: labels every audit of an attribute scores (FACET classes a classifier can be right about, the
#: shared vocabulary); people of the other classes (non_binary, na) are confusion rows but not in accuracy
LABEL_SPACE: dict[str, tuple[str, ...]] = {attr: KNOWN_LABELS[attr] for attr in FACET_ATTRIBUTES}
#: FACET's lighting classes (column suffixes of ``lighting_*``)
LIGHTING = ("well_lit", "dimly_lit", "underexposed", "overexposed", "na")
#: why a person is not cropped (see :func:`skip_reasons`)
SKIP_REASONS = ("visible_minimal", "empty_box")


def _votes(people: pd.DataFrame, prefix: str, classes: tuple[str, ...]) -> np.ndarray | None:
    """Vote counts (n, classes) of columns ``{prefix}_{class}`` (0 where absent or not a number);
    None when the release has none of those columns."""
    cols = [f"{prefix}_{c}" for c in classes]
    if not any(c in people.columns for c in cols):
        return None
    out = np.zeros((len(people), len(cols)))
    for j, c in enumerate(cols):
        if c in people.columns:
            out[:, j] = np.nan_to_num(pd.to_numeric(people[c], errors="coerce").to_numpy(dtype=float), nan=0.0)
    return np.clip(out, 0, None)


def _argmax_class(votes: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """Class with the most votes per row; ``na`` on a tie; None without any vote."""
    out = np.full(len(votes), None, dtype=object)
    top = votes.max(axis=1) if votes.size else np.zeros(0)
    for i in np.flatnonzero(top > 0):
        winners = np.flatnonzero(votes[i] == top[i])
        out[i] = classes[winners[0]] if len(winners) == 1 else "na"
    return out


def weighted_median_mst(votes: np.ndarray) -> np.ndarray:
    """Lower weighted median MST value (1..10) of vote counts (n, 10); 0 where there is no vote."""
    votes = np.asarray(votes, dtype=float)
    total = votes.sum(axis=1)
    cum = np.cumsum(votes, axis=1)
    med = (cum >= total[:, None] / 2.0).argmax(axis=1) + 1
    return np.where(total > 0, med, 0)


def _na_filled(classes: np.ndarray) -> np.ndarray:
    return np.array([t if t is not None else "na" for t in classes], dtype=object)


def ground_truth(people: pd.DataFrame) -> dict[str, Any]:
    """True classes per classifier attribute (``truth``: object arrays, None = not annotated),
    group columns (``groups``) and, with skin-tone votes, ``skin_median`` (the median MST, 0 = no
    vote) and ``skin_chosen`` (n, 10: values any annotator chose)."""
    truth: dict[str, np.ndarray] = {}
    extra: dict[str, Any] = {}
    for attr in ("gender_presentation", "age_group"):
        prefix, classes = FACET_ATTRIBUTES[attr]
        v = _votes(people, prefix, classes)
        if v is not None:
            truth[attr] = _argmax_class(v, classes)
    tones = _votes(people, "skin_tone", LABEL_SPACE["skin_tone"])
    if tones is not None:
        na = _votes(people, "skin_tone", ("na",))
        med = weighted_median_mst(tones)
        t = np.array([str(m) if m > 0 else None for m in med], dtype=object)
        if na is not None:
            t[(med == 0) & (na[:, 0] > 0)] = "na"
        truth["skin_tone"] = t
        extra["skin_median"] = med
        extra["skin_chosen"] = tones > 0
    groups: dict[str, np.ndarray] = {}
    for attr, facet_name in (("gender_presentation", "gender_presentation"), ("age_group", "age_presentation")):
        if attr in truth:
            groups[facet_name] = _na_filled(truth[attr])
    if "skin_tone" in truth:
        groups["skin_tone"] = _na_filled(truth["skin_tone"])
        groups["skin_tone_bucket"] = skin_tone_bucket_labels(extra["skin_chosen"])
    light = _votes(people, "lighting", LIGHTING)
    if light is not None:
        groups["lighting"] = _na_filled(_argmax_class(light, LIGHTING))
    return {"truth": truth, "groups": groups, **extra}


def skip_reasons(people: pd.DataFrame) -> np.ndarray:
    """Per person: "" (can be cropped), "visible_minimal" or "empty_box"."""
    n = len(people)
    reason = np.full(n, "", dtype=object)

    def col(name: str) -> np.ndarray:
        if name not in people.columns:
            return np.zeros(n)
        return np.nan_to_num(pd.to_numeric(people[name], errors="coerce").to_numpy(dtype=float), nan=0.0)

    minimal_only = (col("visible_minimal") > 0) & (col("visible_face") <= 0) & (col("visible_torso") <= 0)
    reason[minimal_only] = "visible_minimal"
    empty = ~((people["box_w"].to_numpy(dtype=float) > 0) & (people["box_h"].to_numpy(dtype=float) > 0))
    reason[empty & (reason == "")] = "empty_box"
    return reason
