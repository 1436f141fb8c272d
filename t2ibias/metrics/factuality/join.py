"""Joining DoFaiR instances with their faces: one row of per-instance scores per instance.

An instance's image is found among the faces by the stem of its ``img_path``
(:func:`t2ibias.core.fairface_csv.image_stem`); its scores are
:func:`t2ibias.metrics.factuality.instance.instance_scores` of the labels of those faces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.fairface_csv import image_stem
from t2ibias.core.vocab import DOFAIR_LABELS
from t2ibias.metrics.factuality.instance import instance_scores


def _check_axis(axis: str) -> str:
    if axis not in DOFAIR_LABELS:
        raise UserError(f"axis {axis!r}: unknown (use race or gender)")
    return axis


def per_instance_scores(
    instances_df: pd.DataFrame, faces_df: pd.DataFrame, axis: str, dofair_compat: bool = False
) -> pd.DataFrame:
    """One row per instance (file order): ``instance_id, culture, line, image, n_faces, success,
    scored, predicted`` (face labels in file order), ``predicted_present, predicted_dominant,
    dominant_credit, gold_dominant, gold_present, tp, fp, tn, fn, ida, idf, dda, diversity, gold_diversity``.

    ``instances_df`` is :func:`t2ibias.prompts.dofair.load_dofair_instances` output; ``faces_df``
    is :func:`t2ibias.metrics.factuality.faces.load_faces` output. Faces are matched to an instance
    by the stem of its ``img_path``; faces of other images are ignored, but a faces table none of
    whose faces matches is a :class:`UserError` (probably the wrong file).
    """
    axis = _check_axis(axis)
    labels = DOFAIR_LABELS[axis]
    faces_src = faces_df.attrs.get("source", "faces")
    inst_src = instances_df.attrs.get("source", "instances")
    dom_col, ex_col = f"dominant_{axis}_list", f"existence_{axis}_list"
    if "axis" in instances_df.columns and len(instances_df) and str(instances_df["axis"].iloc[0]) != axis:
        raise UserError(f"{inst_src}: a DoFaiR {instances_df['axis'].iloc[0]} file, but the axis is {axis} (pass the {axis} file or use that axis)")
    for column in ("instance_id", "culture", "img_path", dom_col, ex_col):
        if column not in instances_df.columns:
            raise UserError(f"{inst_src}: column {column}: missing (pass instances read by load_dofair_instances from a DoFaiR {axis} CSV)")
    if axis not in faces_df.columns:
        raise UserError(f"{faces_src}:1: column {axis}: missing (the faces file has no {axis} labels; add the column or use the other axis)")
    if faces_df[axis].isna().any():
        raise UserError(f"{faces_src}: column {axis}: empty cells (give a label for every face)")

    by_image: dict[str, list[str]] = {}
    for image, label in zip(faces_df["image"], faces_df[axis]):
        by_image.setdefault(str(image), []).append(str(label))

    lines = instances_df["line"] if "line" in instances_df.columns else pd.Series(range(2, len(instances_df) + 2))
    stems: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    matched: set[str] = set()
    for row, line in zip(instances_df.itertuples(index=False), lines):
        img_path = row.img_path
        img_path = "" if img_path is None or (isinstance(img_path, float) and np.isnan(img_path)) else str(img_path).strip()
        stem = image_stem(img_path) if img_path else ""
        if stem:
            if stem in stems:
                raise UserError(
                    f"{inst_src}:{line}: column img_path: image stem {stem!r} repeats line {stems[stem]} "
                    "(faces could not be told apart; give each instance its own image file name)"
                )
            stems[stem] = line
        key = stem if stem in by_image else (stem + "." if stem and stem + "." in by_image else None)
        predicted = by_image.get(key, []) if key is not None else []
        if key is not None:
            matched.add(key)
        gold_dominant, gold_present = list(getattr(row, dom_col)), list(getattr(row, ex_col))
        scores = instance_scores(gold_dominant, gold_present, predicted, labels, dofair_compat)
        records.append({
            "instance_id": row.instance_id,
            "culture": row.culture,
            "line": line,
            "image": stem,
            "n_faces": scores["n_faces"],
            "success": scores["scored"],
            "scored": scores["scored"],
            "predicted": list(predicted),
            "predicted_present": scores["predicted_present"],
            "predicted_dominant": scores["predicted_dominant"],
            "dominant_credit": scores["dominant_credit"],
            "gold_dominant": gold_dominant,
            "gold_present": gold_present,
            **{c: scores[c] for c in ("tp", "fp", "tn", "fn", "ida", "idf", "dda", "diversity", "gold_diversity")},
        })
    if len(faces_df) and not matched:
        example_face = str(faces_df["image"].iloc[0])
        example_inst = next(iter(stems), "(no instance has an img_path)")
        raise UserError(
            f"{faces_src}: column image: no face matches an instance image (face image stem {example_face!r}, "
            f"instance img_path stem {example_inst!r}; pass the faces of this file's images)"
        )
    columns = ["instance_id", "culture", "line", "image", "n_faces", "success", "scored", "predicted",
               "predicted_present", "predicted_dominant", "dominant_credit", "gold_dominant", "gold_present",
               "tp", "fp", "tn", "fn", "ida", "idf", "dda", "diversity", "gold_diversity"]
    table = pd.DataFrame(records, columns=columns)
    table.attrs["axis"] = axis
    table.attrs["dofair_compat"] = dofair_compat
    return table
