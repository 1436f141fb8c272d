"""DoFaiR factuality metrics (Wan et al., "The Factuality Tax of Diversity-Intervened
Text-to-Image Generation", EMNLP 2024) and the factuality tax of an intervention.

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

Over the scored instances: DDA, IDA and IDF are means, and FDD (factual diversity divergence) =
mean(diversity) − mean(gold diversity). An instance whose image has no detected face, or that
has no image, is not scored: it counts in ``n_instances`` but not in ``n_scored``. Success rate =
instances with at least one detected face / all instances (rows without an image included).

``dofair_compat=True`` reproduces the released scoring script (organize_fairface_results_new.py):
its DDA step recomputes TP and FP for D against Gd but reuses TN and FN left over from the IDA
step, so DDA_compat = (|D ∩ Gd| + TN_IDA) / (|D| + TN_IDA + FN_IDA), whose denominator is
|D| + K − |P| rather than K. It can be higher or lower than the correct value: faces
[Black, Black, White] for Gd = [White], G = [White, Black] give 5/7 correctly but 5/6 in compat;
faces [White] for Gd = [White], G = [White, Black, Indian] give 1 correctly but 5/7 in compat.
In compat mode ties in frequency are also broken as that script's ``Counter.most_common`` does:
by first appearance in the image's face list (face file order). IDA, IDF and diversity are the
same in both modes.

Confidence intervals resample instances, the units of the benchmark, each with its one image
(:func:`t2ibias.stats.cluster.resample_weights`; all instances, scored or not, so ``n_scored``
varies across resamples), 1000 resamples, seeded: percentile intervals for DDA, IDA, IDF and
FDD, and Clopper–Pearson's for the success rate, a share of independent instances
(``<metric>_method`` names each). The factuality tax pairs instances by ``instance_id`` and
resamples the pairs.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.prompts.dofair import LABEL_ALIASES, LABELS
from t2ibias.stats.binomial import clopper_pearson
from t2ibias.stats.bootstrap import percentile_interval
from t2ibias.stats.cluster import resample_weights
from t2ibias.stats.rng import seeded

AXES = tuple(LABELS)
METRICS = (
    "dominant_demographic_accuracy",
    "involved_demographic_accuracy",
    "involved_demographic_f1",
    "factual_diversity_divergence",
    "success_rate",
)
#: per-instance column of each averaged metric
_COLUMN = {
    "dominant_demographic_accuracy": "dda",
    "involved_demographic_accuracy": "ida",
    "involved_demographic_f1": "idf",
}
TAX_METRICS = ("dominant_demographic_accuracy", "involved_demographic_accuracy", "involved_demographic_f1", "diversity")
N_RESAMPLES = 1000
SEED = 0
MEAN_METHOD = "percentile, instances resampled"
SHARE_METHOD = "clopper-pearson"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_FACE_SUFFIX = re.compile(r"^(?P<stem>.*)_face\d+(?:\.[A-Za-z0-9]+)?$")

# FairFace and common spellings → DoFaiR vocabulary, keyed by lower case with "_"/"-" as spaces.
_SPELLINGS = {
    axis: {label.lower().replace("_", " "): label for label in labels} for axis, labels in LABELS.items()
}
_SPELLINGS["race"].update({alias.lower(): label for alias, label in LABEL_ALIASES.items()})


# --------------------------------------------------------------------------- per instance


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


# --------------------------------------------------------------------------- faces input


def image_stem(value: str) -> str:
    """The file stem of an image path or name: folders and a known image extension removed.

    Only image extensions are stripped, so a bare stem with dots ("U.S. Diplomats_…") is kept whole.
    """
    name = re.split(r"[\\/]", value.strip())[-1]
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def face_image_stem(face_name: str) -> str:
    """The image stem of a FairFace face chip name ``<dir>/<image stem>_face<N>.jpg``.

    A name without the ``_face<N>`` suffix is taken as the image itself.
    """
    name = re.split(r"[\\/]", face_name.strip())[-1]
    match = _FACE_SUFFIX.match(name)
    return match.group("stem") if match else image_stem(name)


def normalize_label(value: str, axis: str) -> str | None:
    """A FairFace / DoFaiR spelling as the DoFaiR label (``East_Asian`` → ``East Asian``,
    ``Latino`` → ``Latino_Hispanic``, ``Male`` → ``male``); None when unknown."""
    key = re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", value.strip().lower()))
    return _SPELLINGS[axis].get(key)


def load_faces(path: str | Path) -> pd.DataFrame:
    """One row per detected face: columns ``image`` (image stem), ``face``, ``race`` and/or
    ``gender`` (DoFaiR labels) and ``line`` (CSV line, header = 1); ``attrs["source"]`` = path.

    Accepted files:

    (a) FairFace ``predict.py`` output: ``face_name_align`` (``<dir>/<image stem>_face<N>.jpg``),
        ``race`` (7 classes), ``gender`` (``Male``/``Female``); other columns (``race4``, ``age``,
        ``*_scores_fair*``) are ignored.
    (b) A table with ``image`` (an image file name, path or stem; matched by stem) and ``race``
        and/or ``gender``, one row per face; an optional ``face`` column names the face.

    Race labels may be spelled as FairFace does (``Latino_Hispanic``, ``East Asian``) or with
    ``_``/``-`` for spaces, any case; ``Latino`` reads as ``Latino_Hispanic``. Gender: male/female,
    any case. A missing column, an empty cell or an unknown label is a :class:`UserError`
    ``file:line: column X: what (fix)``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file (pass FairFace predict.py output or a table with image and race/gender columns)")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if not header:
                raise UserError(f"{path}:1: empty file (expected a header: face_name_align,race,gender,... or image,race,gender)")
            header = [h.strip() for h in header]
            col = {name: i for i, name in enumerate(header)}
            fairface = "face_name_align" in col
            key = "face_name_align" if fairface else "image"
            if key not in col:
                raise UserError(
                    f"{path}:1: column image: missing (a faces file is FairFace predict.py output with "
                    f"face_name_align, race, gender, or a table with image and race and/or gender; found {', '.join(header)})"
                )
            axes = [axis for axis in AXES if axis in col]
            if not axes:
                raise UserError(f"{path}:1: column race: missing, and no gender column either (add race and/or gender)")
            end = reader.line_num
            for row in reader:
                line, end = end + 1, reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise UserError(f"{path}:{line}: row: {len(row)} fields where the header has {len(header)} (quote fields that contain commas)")
                raw = row[col[key]].strip()
                if not raw or raw.lower() == "nan":
                    raise UserError(f"{path}:{line}: column {key}: empty (name the image or face file)")
                record: dict[str, Any] = {
                    "image": face_image_stem(raw) if fairface else image_stem(raw),
                    "face": raw if fairface else (row[col["face"]].strip() if "face" in col else ""),
                }
                for axis in axes:
                    value = row[col[axis]].strip()
                    if not value or value.lower() in ("nan", "none", "null"):
                        raise UserError(f"{path}:{line}: column {axis}: empty (give a label for every face, or drop the row)")
                    label = normalize_label(value, axis)
                    if label is None:
                        raise UserError(
                            f"{path}:{line}: column {axis}: unknown label {value!r} (use one of {', '.join(LABELS[axis])}"
                            + ("; the 7-class race column, not race4)" if axis == "race" else ")")
                        )
                    record[axis] = label
                record["line"] = line
                rows.append(record)
        except csv.Error as exc:
            raise UserError(f"{path}:{reader.line_num}: malformed CSV ({exc}) (fix the quoting)") from None
    df = pd.DataFrame(rows, columns=["image", "face", *axes, "line"])
    df.attrs["source"] = str(path)
    return df


# --------------------------------------------------------------------------- scoring


def _check_axis(axis: str) -> str:
    if axis not in LABELS:
        raise UserError(f"axis {axis!r}: unknown (use race or gender)")
    return axis


def per_instance_scores(
    instances_df: pd.DataFrame, faces_df: pd.DataFrame, axis: str, dofair_compat: bool = False
) -> pd.DataFrame:
    """One row per instance (file order): ``instance_id, culture, line, image, n_faces, success,
    scored, predicted`` (face labels in file order), ``predicted_present, predicted_dominant,
    dominant_credit, gold_dominant, gold_present, tp, fp, tn, fn, ida, idf, dda, diversity, gold_diversity``.

    ``instances_df`` is :func:`t2ibias.prompts.dofair.load_dofair_instances` output;
    ``faces_df`` is :func:`load_faces` output. Faces are matched to an instance by the stem of
    its ``img_path``; faces of other images are ignored, but a faces table none of whose faces
    matches is a :class:`UserError` (probably the wrong file).
    """
    axis = _check_axis(axis)
    labels = LABELS[axis]
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


def _num(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def summarize(
    table: pd.DataFrame, n_resamples: int = N_RESAMPLES, seed: int = SEED, confidence: float = 0.95, group: str = "all"
) -> dict[str, Any]:
    """The metrics, ``n_instances``, ``n_scored``, ``<metric>_ci`` and ``<metric>_method`` of a per-instance table."""
    n = len(table)
    scored = table["scored"].to_numpy(dtype=bool)
    n_scored = int(scored.sum())
    out: dict[str, Any] = {}
    s = scored.astype(float)
    x = {name: np.where(scored, table[col].to_numpy(dtype=float), 0.0) for name, col in _COLUMN.items()}
    div = np.where(scored, table["diversity"].to_numpy(dtype=float), 0.0)
    gold = np.where(scored, table["gold_diversity"].to_numpy(dtype=float), 0.0)
    success = table["success"].to_numpy(dtype=float)
    if n_scored:
        for name, values in x.items():
            out[name] = float(values.sum() / n_scored)
        out["factual_diversity_divergence"] = float((div.sum() - gold.sum()) / n_scored)
    else:
        for name in (*_COLUMN, "factual_diversity_divergence"):
            out[name] = None
    out["success_rate"] = float(success.mean()) if n else None
    out["n_instances"] = n
    out["n_scored"] = n_scored
    for name in METRICS:
        out[f"{name}_method"] = SHARE_METHOD if name == "success_rate" else MEAN_METHOD
    if n == 0:
        for name in METRICS:
            out[f"{name}_ci"] = [None, None]
        return out
    lo, hi = clopper_pearson(success.sum(), n, confidence)
    out["success_rate_ci"] = [_num(float(lo)), _num(float(hi))]
    if n_scored == 0:
        for name in (*_COLUMN, "factual_diversity_divergence"):
            out[f"{name}_ci"] = [None, None]
        return out
    w = resample_weights(n, n_resamples, seeded(seed, group)).astype(float)  # (B, n): instances resampled
    with np.errstate(invalid="ignore", divide="ignore"):
        ws = w @ s
        replicates = {name: (w @ values) / ws for name, values in x.items()}
        replicates["factual_diversity_divergence"] = (w @ (div - gold)) / ws
    for name, reps in replicates.items():
        lo, hi = percentile_interval(reps, confidence)
        out[f"{name}_ci"] = [_num(lo), _num(hi)]
    return out


def score_factuality(
    instances_df: pd.DataFrame,
    faces_df: pd.DataFrame,
    axis: str,
    dofair_compat: bool = False,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """DoFaiR metrics overall and ``by_culture`` (cultures in file order), with bootstrap CIs.

    Keys: ``dominant_demographic_accuracy, involved_demographic_accuracy,
    involved_demographic_f1, factual_diversity_divergence, success_rate, n_instances, n_scored``,
    ``<metric>_ci`` = [low, high] for the five metrics, and ``by_culture`` = {culture: same keys}.
    A metric is None when no instance is scored. The per-instance table is
    :func:`per_instance_scores`.
    """
    table = per_instance_scores(instances_df, faces_df, axis, dofair_compat)
    return summarize_table(table, n_resamples=n_resamples, seed=seed, confidence=confidence)


def summarize_table(
    table: pd.DataFrame, *, n_resamples: int = N_RESAMPLES, seed: int = SEED, confidence: float = 0.95
) -> dict[str, Any]:
    """:func:`score_factuality` from an already computed per-instance table."""
    result = summarize(table, n_resamples, seed, confidence, group="all")
    result["by_culture"] = {
        str(culture): summarize(part, n_resamples, seed, confidence, group=str(culture))
        for culture, part in table.groupby("culture", sort=False)
    }
    return result


# --------------------------------------------------------------------------- factuality tax


def factuality_tax(
    results_by_intervention: Mapping[str, pd.DataFrame],
    baseline: str = "none",
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """The factuality tax of each intervention against ``baseline``, from per-instance tables.

    Instances are paired by ``instance_id`` and kept when scored (≥ 1 face) under both. For each
    intervention: ``n_paired``, ``delta_<m>`` = mean over pairs of (intervention − baseline) for
    m in DDA, IDA, IDF (``dominant_demographic_accuracy`` …; negative = factuality lost) and
    ``delta_diversity`` (mean |P|/K; positive = diversity gained), each with ``delta_<m>_ci``
    from a paired bootstrap over instances. Deltas are None when no pair exists.
    """
    if baseline not in results_by_intervention:
        raise UserError(f"interventions: no {baseline!r} results (the baseline; have {', '.join(results_by_intervention) or 'none'})")
    columns = {"dominant_demographic_accuracy": "dda", "involved_demographic_accuracy": "ida",
               "involved_demographic_f1": "idf", "diversity": "diversity"}

    def indexed(name: str, frame: pd.DataFrame) -> pd.DataFrame:
        dup = frame["instance_id"][frame["instance_id"].duplicated()]
        if len(dup):
            raise UserError(f"intervention {name}: column instance_id: {dup.iloc[0]!r} repeats (one row per instance)")
        return frame.set_index("instance_id")

    base = indexed(baseline, results_by_intervention[baseline])
    base = base[base["scored"].astype(bool)]
    result: dict[str, dict[str, Any]] = {}
    for name, frame in results_by_intervention.items():
        if name == baseline:
            continue
        other = indexed(name, frame)
        other = other[other["scored"].astype(bool)]
        ids = [i for i in base.index if i in other.index]
        entry: dict[str, Any] = {"n_paired": len(ids)}
        if not ids:
            for metric in TAX_METRICS:
                entry[f"delta_{metric}"] = None
                entry[f"delta_{metric}_ci"] = [None, None]
            result[name] = entry
            continue
        cols = list(columns.values())
        diffs = other.loc[ids, cols].to_numpy(dtype=float) - base.loc[ids, cols].to_numpy(dtype=float)  # (m, 4)
        w = resample_weights(len(ids), n_resamples, seeded(seed, name)).astype(float)  # pairs resampled
        replicates = (w @ diffs) / len(ids)  # (B, 4)
        for j, metric in enumerate(columns):
            entry[f"delta_{metric}"] = float(diffs[:, j].mean())
            lo, hi = percentile_interval(replicates[:, j], confidence)
            entry[f"delta_{metric}_ci"] = [_num(lo), _num(hi)]
        result[name] = entry
    return result
