"""The one vocabulary module: label sets, the FairFace / DoFaiR spelling bridge, face file names."""

from __future__ import annotations

import pytest

from t2ibias.core import vocab
from t2ibias.core.vocab import (
    ABSTAIN,
    DOFAIR_LABELS,
    FACE_NAME,
    FAIRFACE_ATTRIBUTE_LABELS,
    FAIRFACE_GENDER_LABELS,
    FAIRFACE_RACE4_LABELS,
    FAIRFACE_RACE7_LABELS,
    KNOWN_LABELS,
    dofair_label,
)


def test_every_module_uses_the_one_abstain():
    from t2ibias.measure import predictors
    from t2ibias.metrics import agreement, correction
    from t2ibias.models import clip_zeroshot

    assert ABSTAIN == "abstain"
    for module in (clip_zeroshot, predictors, agreement, correction):
        assert module.ABSTAIN is vocab.ABSTAIN, module.__name__


def test_the_old_names_are_the_vocabulary_itself():
    from t2ibias.measure import fairface
    from t2ibias.models import classifier_spec

    assert classifier_spec.KNOWN_LABELS is KNOWN_LABELS
    assert classifier_spec.PERSON_ATTRIBUTE == vocab.PERSON_ATTRIBUTE == "person"
    assert fairface.ATTRIBUTE_LABELS is FAIRFACE_ATTRIBUTE_LABELS
    assert fairface.RACE7_LABELS is FAIRFACE_RACE7_LABELS
    assert fairface.GENDER_LABELS is FAIRFACE_GENDER_LABELS
    assert fairface.AGE_BINS is vocab.FAIRFACE_AGE_BINS


def test_fairface_names_map_onto_t2ibias_labels_in_fairface_order():
    assert list(FAIRFACE_RACE7_LABELS.items())[:3] == [("White", "white"), ("Black", "black"), ("Latino_Hispanic", "latino_hispanic")]
    assert FAIRFACE_RACE7_LABELS["East Asian"] == "east_asian" and FAIRFACE_RACE7_LABELS["Middle Eastern"] == "middle_eastern"
    assert FAIRFACE_RACE4_LABELS == {"White": "white", "Black": "black", "Asian": "asian", "Indian": "indian"}
    assert FAIRFACE_GENDER_LABELS == {"Male": "masc", "Female": "fem"}
    # a FairFace measurer's labels are the shared vocabulary wherever the attribute is shared
    for attribute, labels in FAIRFACE_ATTRIBUTE_LABELS.items():
        if attribute in KNOWN_LABELS:
            assert labels == KNOWN_LABELS[attribute], attribute
    assert tuple(FAIRFACE_RACE7_LABELS.values()) == KNOWN_LABELS["race"]


def test_dofair_uses_fairface_race_names_and_male_female():
    assert DOFAIR_LABELS["race"] == tuple(FAIRFACE_RACE7_LABELS)
    assert DOFAIR_LABELS["gender"] == ("male", "female")


@pytest.mark.parametrize(("value", "axis", "label"), [
    ("East_Asian", "race", "East Asian"),
    ("east-asian", "race", "East Asian"),
    ("  SOUTHEAST   asian ", "race", "Southeast Asian"),
    ("Latino", "race", "Latino_Hispanic"),
    ("latino_hispanic", "race", "Latino_Hispanic"),
    ("Middle-Eastern", "race", "Middle Eastern"),
    ("Male", "gender", "male"),
    ("FEMALE", "gender", "female"),
    ("Asian", "race", None),  # a race4 class, not one of the seven
    ("male", "race", None),
    ("White", "gender", None),
])
def test_dofair_label_reads_the_spellings_of_faces_files(value, axis, label):
    assert dofair_label(value, axis) == label


@pytest.mark.parametrize(("name", "parts"), [
    ("img_a_face0.jpg", ("img_a", "0", ".jpg")),
    ("U.S. Diplomats_x_face12.png", ("U.S. Diplomats_x", "12", ".png")),
    ("a_face1_face2.jpg", ("a_face1", "2", ".jpg")),
    ("a_face3", ("a", "3", None)),
    ("_face3.png", ("", "3", ".png")),
    ("a_face.jpg", None),
    ("a_face1.tar.gz", None),
    ("a.jpg", None),
])
def test_face_name_splits_stem_index_and_extension(name, parts):
    m = FACE_NAME.match(name)
    assert (m and (m["stem"], m["index"], m["ext"])) == parts
