"""Perceived-attribute groups of FACET people.

An attribute is a column prefix and a group its suffix (``gender_presentation_fem`` →
attribute ``gender_presentation``, group ``fem``). A person belongs to a group when the column
is > 0; for skin tone every MST value any annotator chose counts, so one person can be in
several skin-tone groups. Item columns (``has_tattoo`` ...) are attributes with groups ``1``
and ``0``. ``skin_tone_bucket`` adds ``lighter`` (MST 1-3) and ``darker`` (MST 8-10), the
buckets of FACET's intersectional analysis (Gustafson et al., ICCV 2023), by the same any-vote
rule: a person is in a bucket when an annotator chose one of its values. This module is the one
definition of the buckets; the classifier audit (:mod:`t2ibias.audit`) takes its
one-label-per-person view from :func:`skin_tone_bucket_labels`.
Groups named ``na`` (or intersections containing ``na``) are reported but never compared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PREFIX_ATTRIBUTES = (
    "gender_presentation",
    "age_presentation",
    "skin_tone",
    "hair_color",
    "hairtype",
    "lighting",
    "visible",
)
ITEM_PREFIX = "has_"
#: FACET's skin-tone buckets: MST values whose choice by any annotator puts a person in the bucket.
SKIN_TONE_BUCKETS = {"lighter": (1, 2, 3), "darker": (8, 9, 10)}
BUCKETS = SKIN_TONE_BUCKETS
MST_VALUES = tuple(range(1, 11))

Membership = dict[str, dict[str, np.ndarray]]


def attribute_of_column(col: str) -> tuple[str, str] | None:
    """``(attribute, group)`` of an attribute column, or None for other columns."""
    if col.startswith(ITEM_PREFIX):
        return col, "1"
    for attr in PREFIX_ATTRIBUTES:
        if col.startswith(attr + "_") and len(col) > len(attr) + 1:
            return attr, col[len(attr) + 1:]
    return None


def is_na_group(group: str) -> bool:
    return "na" in group.split("&")


def skin_tone_bucket_masks(chosen: np.ndarray) -> dict[str, np.ndarray]:
    """Bucket → boolean mask over people, from ``chosen`` (n, 10): MST value v chosen by any
    annotator in column v − 1. A person whose annotators chose values of both buckets is in both."""
    chosen = np.asarray(chosen, dtype=bool).reshape(-1, len(MST_VALUES))
    return {name: chosen[:, [v - 1 for v in values]].any(axis=1) for name, values in SKIN_TONE_BUCKETS.items()}


def skin_tone_bucket_labels(chosen: np.ndarray) -> np.ndarray:
    """One bucket label per person (object array) for tools that need exactly one group per
    person: the bucket when the person is in exactly one (:func:`skin_tone_bucket_masks`), else
    ``"na"`` — only MST 4-7 chosen, values of both buckets chosen, or no MST vote — so such
    people are reported but never compared, as FACET compares lighter with darker only."""
    masks = skin_tone_bucket_masks(chosen)
    n = len(next(iter(masks.values())))
    out = np.full(n, "na", dtype=object)
    inside = np.sum([m.astype(int) for m in masks.values()], axis=0)
    for name, m in masks.items():
        out[m & (inside == 1)] = name
    return out


def group_membership(people: pd.DataFrame) -> Membership:
    """Boolean masks over the rows of ``people`` for every (attribute, group), in column order."""
    out: Membership = {}
    for col in people.columns:
        ag = attribute_of_column(str(col))
        if ag is None:
            continue
        attr, group = ag
        vals = pd.to_numeric(people[col], errors="coerce").to_numpy(dtype=float)
        present = ~np.isnan(vals)
        if attr.startswith(ITEM_PREFIX):
            out[attr] = {"1": present & (vals > 0), "0": present & (vals <= 0)}
        else:
            out.setdefault(attr, {})[group] = present & (vals > 0)
    tones = out.get("skin_tone", {})
    if tones:
        none = np.zeros(len(people), dtype=bool)
        chosen = np.column_stack([tones.get(str(v), none) for v in MST_VALUES])
        out["skin_tone_bucket"] = skin_tone_bucket_masks(chosen)
    return out


def intersect(membership: Membership, a: str, b: str) -> dict[str, np.ndarray]:
    """Groups ``"<ga>&<gb>"`` of people in group ga of attribute a and gb of attribute b."""
    for name in (a, b):
        if name not in membership:
            from t2ibias.core.errors import UserError

            raise UserError(f"--intersect: unknown attribute {name!r} (choose from {', '.join(membership)})")
    return {f"{ga}&{gb}": ma & mb for ga, ma in membership[a].items() for gb, mb in membership[b].items()}
