"""Perceived-attribute groups of FACET people.

An attribute is a column prefix and a group its suffix (``gender_presentation_fem`` →
attribute ``gender_presentation``, group ``fem``). A person belongs to a group when the column
is > 0; for skin tone every MST value any annotator chose counts, so one person can be in
several skin-tone groups. Item columns (``has_tattoo`` ...) are attributes with groups ``1``
and ``0``. ``skin_tone_bucket`` adds ``lighter`` (MST 1-3) and ``darker`` (MST 8-10).
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
BUCKETS = {"lighter": (1, 2, 3), "darker": (8, 9, 10)}

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
        n = len(people)
        bucket = {}
        for name, values in BUCKETS.items():
            mask = np.zeros(n, dtype=bool)
            for v in values:
                if str(v) in tones:
                    mask |= tones[str(v)]
            bucket[name] = mask
        out["skin_tone_bucket"] = bucket
    return out


def intersect(membership: Membership, a: str, b: str) -> dict[str, np.ndarray]:
    """Groups ``"<ga>&<gb>"`` of people in group ga of attribute a and gb of attribute b."""
    for name in (a, b):
        if name not in membership:
            from t2ibias.errors import UserError

            raise UserError(f"--intersect: unknown attribute {name!r} (choose from {', '.join(membership)})")
    return {f"{ga}&{gb}": ma & mb for ga, ma in membership[a].items() for gb, mb in membership[b].items()}
