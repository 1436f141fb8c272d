"""Label sets and their spellings, each defined once.

Every label here is *perceived*: what annotators or a classifier say a person looks like, never
who they are. Three spellings of the same classes meet in this project, and this module bridges
them:

* t2ibias labels (snake_case: ``masc``, ``east_asian``), used in measurements, configs and
  metrics: :data:`KNOWN_LABELS`;
* FairFace's class names as its ``predict.py`` writes them (``Male``, ``East Asian``), in the
  order of its output units: :data:`FAIRFACE_RACE7_LABELS` and its siblings map them to
  t2ibias labels;
* DoFaiR's gold facts, which use FairFace's race names and ``male``/``female``:
  :data:`DOFAIR_LABELS`, with :func:`dofair_label` reading the spellings found in faces files.

:data:`FACE_NAME` parses FairFace's aligned-face file names, ``<image stem>_face<N>.<ext>``.
"""

from __future__ import annotations

import re

#: The label of a prediction that declines to answer (its own bin in every count).
ABSTAIN = "abstain"

# ------------------------------------------------------------------ t2ibias labels

#: The attribute that decides whether an image without a detected face shows a person.
PERSON_ATTRIBUTE = "person"
PERSON_LABELS: tuple[str, ...] = ("person", "no_person")
#: FACET's perceived gender presentation (its ``non_binary`` and ``na`` are not classifier labels).
GENDER_PRESENTATION: tuple[str, ...] = ("masc", "fem")
#: FACET's perceived age bands: young (<25), middle (25-65), older (>65).
AGE_GROUPS: tuple[str, ...] = ("young", "middle", "older")
#: FairFace's seven race classes as t2ibias labels, in FairFace's order.
RACE: tuple[str, ...] = ("white", "black", "latino_hispanic", "east_asian", "southeast_asian", "indian", "middle_eastern")
#: FairFace's four race classes as t2ibias labels, in FairFace's order.
RACE4: tuple[str, ...] = ("white", "black", "asian", "indian")
#: The Monk Skin Tone scale, 1 = lightest … 10 = darkest.
SKIN_TONES: tuple[str, ...] = tuple(str(i) for i in range(1, 11))

#: Label vocabularies of the attributes other stages, reference tables and datasets share. A
#: classifier config may use a subset of them, never other names.
KNOWN_LABELS: dict[str, tuple[str, ...]] = {
    PERSON_ATTRIBUTE: PERSON_LABELS,
    "gender_presentation": GENDER_PRESENTATION,
    "age_group": AGE_GROUPS,
    "race": RACE,
    "race4": RACE4,
    "skin_tone": SKIN_TONES,
}

# ------------------------------------------------------------------ FairFace

#: FairFace's seven race names (the order of its output units and score arrays).
FAIRFACE_RACE7: tuple[str, ...] = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
FAIRFACE_RACE4: tuple[str, ...] = ("White", "Black", "Asian", "Indian")
FAIRFACE_GENDERS: tuple[str, ...] = ("Male", "Female")
#: FairFace's nine age bins, kept as they are (t2ibias attribute ``age_fairface``).
FAIRFACE_AGE_BINS: tuple[str, ...] = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
#: FairFace name → t2ibias label, in FairFace's order.
FAIRFACE_RACE7_LABELS: dict[str, str] = dict(zip(FAIRFACE_RACE7, RACE))
FAIRFACE_RACE4_LABELS: dict[str, str] = dict(zip(FAIRFACE_RACE4, RACE4))
FAIRFACE_GENDER_LABELS: dict[str, str] = dict(zip(FAIRFACE_GENDERS, GENDER_PRESENTATION))
#: t2ibias attribute → its labels, as a FairFace measurer reports them (``race`` for the 7-class
#: model, ``race4`` for the 4-class one; ``age_group`` from the age bins).
FAIRFACE_ATTRIBUTE_LABELS: dict[str, tuple[str, ...]] = {
    "race": RACE,
    "race4": RACE4,
    "gender_presentation": GENDER_PRESENTATION,
    "age_fairface": FAIRFACE_AGE_BINS,
    "age_group": AGE_GROUPS,
}
#: An aligned face's file name as FairFace's ``predict.py`` writes it, ``<image stem>_face<N>.<ext>``
#: (folders removed first). ``stem`` is everything before the last ``_face<N>``; ``ext`` is None
#: when the name has no extension.
FACE_NAME = re.compile(r"^(?P<stem>.*)_face(?P<index>\d+)(?P<ext>\.[A-Za-z0-9]+)?$")

# ------------------------------------------------------------------ DoFaiR

DOFAIR_GENDERS: tuple[str, ...] = ("male", "female")
#: DoFaiR's axes and their labels: FairFace's race names, and male / female.
DOFAIR_LABELS: dict[str, tuple[str, ...]] = {"race": FAIRFACE_RACE7, "gender": DOFAIR_GENDERS}
#: Spellings of DoFaiR's release mapped to FairFace's class names.
DOFAIR_ALIASES: dict[str, str] = {"Latino": "Latino_Hispanic"}
# each axis: spelling key (lower case, "_"/"-" as spaces) → DoFaiR label
_DOFAIR_SPELLINGS: dict[str, dict[str, str]] = {
    axis: {label.lower().replace("_", " "): label for label in labels} for axis, labels in DOFAIR_LABELS.items()
}
_DOFAIR_SPELLINGS["race"].update({alias.lower(): label for alias, label in DOFAIR_ALIASES.items()})


def dofair_label(value: str, axis: str) -> str | None:
    """A FairFace / DoFaiR spelling as the DoFaiR label of ``axis`` (``East_Asian`` → ``East
    Asian``, ``Latino`` → ``Latino_Hispanic``, ``Male`` → ``male``); None when unknown."""
    key = re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", value.strip().lower()))
    return _DOFAIR_SPELLINGS[axis].get(key)
