"""Audit a perceived-attribute classifier against FACET's human annotations.

Every bias number this project reports is read through a classifier, and a classifier errs
differently across groups. This module measures how: it crops each annotated FACET person
(Gustafson et al., ICCV 2023), asks the classifier for their perceived attributes and compares
the answers with what FACET's annotators perceived.

Per audited attribute it reports the confusion matrix (true class × predicted label, with
``abstain`` as a column), overall and per-group accuracy with bootstrap intervals, abstention
rates and calibration (expected calibration error over equal-width confidence bins, Guo et al.
2017, with its reliability table). Groups are the attribute's own true classes and the
cross-attribute groups gender presentation, age presentation, skin-tone bucket (FACET's lighter
MST 1-3 and darker 8-10 by any annotator's vote, :func:`facet_eval.groups.skin_tone_bucket_labels`;
people in neither or both are ``na``) and lighting. Per-group values, ``difference()`` and
``ratio()`` come from fairlearn's ``MetricFrame``. Intervals resample images, the people of one
image together (they share its lighting and annotators), with :mod:`t2ibias.stats.cluster`: shares
(accuracy, within-range, abstention) get the Korn–Graubard interval with the resampled variance,
mean error and ECE the percentile interval, and gaps between groups simultaneous intervals from the
same joint resample, with a p-value and a Benjamini–Hochberg q-value over all comparisons of the
audit. FACET's minimum-n policy applies: groups with fewer than ``min_n`` items, and ``na`` groups,
keep their rows but are left out of comparisons.

Ground truth (perceived, FACET columns):

- ``gender_presentation`` ← ``gender_presentation_{masc,fem,non_binary,na}``. People annotated
  ``non_binary`` or ``na`` appear as their own rows of the confusion matrix but not in accuracy
  (the classifier cannot be right about a class it does not have).
- ``age_group`` ← ``age_presentation_{young,middle,older,na}`` (same rules).
- ``skin_tone`` (labels ``"1"``..``"10"``) ← ``skin_tone_1..10`` vote counts: three annotators
  each chose at least two adjacent Monk Skin Tone values. The reference value is the weighted
  median of the votes (the lower median on a tie); ``accuracy`` is exact match to it,
  ``within_range`` counts a prediction among the values any annotator chose, and ``abs_error``
  is the mean absolute MST difference from the median (answered predictions only).

The true class is the column with the most votes; a tie between classes is ``na``; a person
with no vote in any column of an attribute is left out of that attribute's audit.

A crop the predictor returns no answer for on an attribute it answers elsewhere (e.g. no face
found) counts as an abstention (``n_no_prediction``). Accuracy counts an abstention as an error; ``accuracy_answered`` leaves abstentions out and
``abstain_rate`` reports them. Calibration uses ``Prediction.score`` (the probability of the top
label) and whether the top label is right, abstentions included.

Crops: the person's FACET box padded by 0.25 of its width and height on each side, clipped to
the image. People annotated ``visible_minimal`` only (neither face nor torso visible) and people
whose box has no area are skipped and counted.

Run time: ``engine="vectorized"`` evaluates the resamples as matrix products (seconds);
``engine="fairlearn"`` evaluates the same resamples with a MetricFrame each (tens of ms per
replicate and group table), a slow cross-check that gives the same numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from facet_eval.attributes import FACET_ATTRIBUTES, LABEL_SPACE, ground_truth, skip_reasons
from t2ibias.errors import UserError
from t2ibias.fingerprint import file_sha256
from t2ibias.stats.bootstrap import MIN_N, percentile_intervals
from t2ibias.stats.cluster import CHUNK as CLUSTER_CHUNK
from t2ibias.stats.cluster import cluster_codes, cluster_group_means, compare_groups, resample_weights, share_interval_clustered
from t2ibias.stats.rng import seeded
from t2ibias.stats.testing import bh_qvalues
from t2ibias.store.image_store import atomic_write_text

SCHEMA = "t2ibias-audit/1"
PADDING = 0.25
N_BINS = 10
ABSTAIN = "abstain"  # same spelling as t2ibias.measure.clip_zeroshot.ABSTAIN

#: cross-attribute groupings (FACET attribute names); skin_tone_bucket is facet_eval.groups' definition
CROSS_GROUPS = ("gender_presentation", "age_presentation", "skin_tone_bucket", "lighting")
ROW_COLUMNS = ("attribute", "group_attribute", "group", "metric", "value", "n", "ci_low", "ci_high", "note", "method")


class Predictor(Protocol):
    def measure(self, crops: list[Any]) -> list[dict[str, Any]]: ...


class ClipPredictor:
    """A CLIP zero-shot classifier spec as a predictor: ``measure(crops)`` classifies PIL crops."""

    def __init__(self, spec: Any, device: str = "cpu") -> None:
        from t2ibias.measure.clip_zeroshot import CLIPAttributeClassifier

        self.spec = spec
        self.id = spec.id
        self.fingerprint = spec.fingerprint()
        self.classifier = CLIPAttributeClassifier(spec, device)

    def measure(self, crops: list[Any]) -> list[dict[str, Any]]:
        return self.classifier.classify(crops)


# --------------------------------------------------------------------------- geometry


def crop_box(box: tuple[float, float, float, float], image_size: tuple[int, int],
             padding: float = PADDING) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) pixel box of an (x, y, w, h) box padded by ``padding`` × its size
    on each side and clipped to the image; None when nothing of it lies inside the image."""
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        return None
    width, height = image_size
    left = max(0, math.floor(x - padding * w))
    top = max(0, math.floor(y - padding * h))
    right = min(width, math.ceil(x + w + padding * w))
    bottom = min(height, math.ceil(y + h + padding * h))
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


# --------------------------------------------------------------------------- calibration


def calibration_table(scores: Any, correct: Any, n_bins: int = N_BINS) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error and reliability table over ``n_bins`` equal-width bins of [0, 1].

    ECE = Σ_b (n_b / n) · |accuracy_b − mean confidence_b| (Guo et al. 2017); a score of exactly
    1 falls in the last bin. Rows with a non-finite score are left out. NaN ECE with no rows.
    """
    s = np.asarray(scores, dtype=float)
    c = np.asarray(correct, dtype=float)
    ok = np.isfinite(s)
    s, c = s[ok], c[ok]
    idx = np.clip((s * n_bins).astype(np.int64), 0, n_bins - 1) if s.size else np.zeros(0, dtype=np.int64)
    rows = []
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        n_b = int(m.sum())
        conf = float(s[m].mean()) if n_b else math.nan
        acc = float(c[m].mean()) if n_b else math.nan
        if n_b:
            ece += n_b / s.size * abs(acc - conf)
        rows.append({"bin_low": b / n_bins, "bin_high": (b + 1) / n_bins, "n": n_b,
                     "mean_confidence": conf, "accuracy": acc})
    return (float(ece) if s.size else math.nan), rows


# --------------------------------------------------------------------------- metrics by group


def _nanmean_of(values: np.ndarray) -> Callable[[Any, Any], float]:
    def metric(y_true: Any, y_pred: Any) -> float:
        v = values[np.asarray(y_true, dtype=np.int64)]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan

    return metric


def _ece_of(scores: np.ndarray, correct: np.ndarray, n_bins: int) -> Callable[[Any, Any], float]:
    def metric(y_true: Any, y_pred: Any) -> float:
        rows = np.asarray(y_true, dtype=np.int64)
        return calibration_table(scores[rows], correct[rows], n_bins)[0]

    return metric


def _frame(metrics: dict[str, Callable], rows: np.ndarray, groups: np.ndarray) -> Any:
    from fairlearn.metrics import MetricFrame

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # groups absent from a resample are NaN there
        return MetricFrame(metrics=metrics, y_true=rows, y_pred=rows, sensitive_features=groups)


ENGINES = ("fairlearn", "vectorized")
#: how each kind of interval is named in the rows (``{unit}``: what was resampled)
SHARE_METHOD = "korn-graubard, {unit} resampled"
PERCENTILE_METHOD = "percentile, {unit} resampled"
COMPARISON_METHOD = "max-t simultaneous, {unit} resampled jointly"


def _design(per_row: dict[str, np.ndarray], ece_inputs: tuple[np.ndarray, np.ndarray] | None,
            n_bins: int) -> tuple[np.ndarray, dict[str, slice]]:
    """Per-row values (n, columns) whose group means give every metric, and each metric's columns.

    A metric of per-row values is their mean. ECE is Σ_bins |Σ_{i in bin} (correct_i − score_i)| / n
    (Guo et al. 2017), the sum over bins of |mean of (correct − score)·[in bin]|: one column per bin.
    """
    cols, spans = [], {}
    for m, v in per_row.items():
        spans[m] = slice(len(cols), len(cols) + 1)
        cols.append(np.asarray(v, dtype=float))
    if ece_inputs is not None:
        score, correct = (np.asarray(x, dtype=float) for x in ece_inputs)
        ok = np.isfinite(score)
        bins = np.clip((np.where(ok, score, 0) * n_bins).astype(np.int64), 0, n_bins - 1)
        gap = np.where(ok, correct - np.where(ok, score, 0), np.nan)
        spans["ece"] = slice(len(cols), len(cols) + n_bins)
        cols += [np.where(bins == b, gap, np.where(ok, 0.0, np.nan)) for b in range(n_bins)]
    return np.stack(cols, axis=1), spans


def _metric_replicates(reps: np.ndarray, spans: dict[str, slice]) -> dict[str, np.ndarray]:
    """(B, G) replicates per metric from (B, columns, G) replicates of the design's group means."""
    return {m: (np.abs(reps[:, s]).sum(axis=1) if m == "ece" else reps[:, s.start]) for m, s in spans.items()}


def _fairlearn_replicates(metrics: dict[str, Callable], groups: np.ndarray, levels: list[str], codes: np.ndarray,
                          n_clusters: int, n_boot: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The same resamples as :func:`t2ibias.stats.cluster.cluster_group_means` draws (same weights,
    chunk by chunk), each evaluated by a fairlearn MetricFrame over the drawn rows: (B, G + 1)."""
    out = {m: np.full((n_boot, len(levels) + 1), np.nan) for m in metrics}
    done = 0
    for a in range(0, n_boot, CLUSTER_CHUNK):
        w = resample_weights(n_clusters, min(CLUSTER_CHUNK, n_boot - a), rng)
        for row in w:
            drawn = np.repeat(np.arange(len(groups)), row[codes])
            frame = _frame(metrics, drawn, groups[drawn])
            by_group = frame.by_group.reindex([g for g in levels])
            for m in metrics:
                out[m][done, :-1] = by_group[m].to_numpy(dtype=float)
                out[m][done, -1] = float(frame.overall[m])
            done += 1
    return out


def metric_rows(per_row: dict[str, np.ndarray], groups: np.ndarray, *, ece_inputs: tuple[np.ndarray, np.ndarray] | None,
                n_boot: int, seed: int, confidence: float, min_n: int, n_bins: int = N_BINS, engine: str = "fairlearn",
                clusters: np.ndarray | None = None, unit: str = "images"
                ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Overall values, per-group rows and between-group comparisons of per-row metrics.

    ``per_row`` maps a metric to one value per row (NaN where the row does not count for it);
    the metric of a set of rows is the mean of its finite values. ``ece_inputs`` (scores, 0/1
    correctness; NaN score = not counted) adds metric ``ece``. Point values come from one fairlearn
    MetricFrame (``by_group``, ``overall``, and ``difference()`` = max − min, ``ratio()`` = min / max
    over groups with at least ``min_n`` counted rows that are not ``na``).

    Intervals resample ``clusters`` (one id per row, e.g. the image of each person; None = each
    row alone) with :mod:`t2ibias.stats.cluster`, all groups from the same draws: a metric whose
    per-row values are all 0 or 1 (a share) gets the Korn–Graubard interval with the resampled
    variance, any other the percentile interval; comparisons get simultaneous max-t intervals for
    the gap and ratio and the p-value of "all groups equal", with Benjamini–Hochberg q-values
    over the comparisons returned. ``engine="vectorized"`` evaluates the resamples as matrix
    products; ``"fairlearn"`` evaluates the same resamples with a MetricFrame each (slow; the same
    numbers).
    """
    if engine not in ENGINES:
        raise UserError(f"engine: {engine!r} is unknown (use one of {', '.join(ENGINES)})")
    groups = np.asarray(groups).astype(str)
    rows = np.arange(len(groups))
    metrics: dict[str, Callable] = {m: _nanmean_of(v) for m, v in per_row.items()}
    counted = {m: np.isfinite(v) for m, v in per_row.items()}
    if ece_inputs is not None:
        metrics["ece"] = _ece_of(ece_inputs[0], ece_inputs[1], n_bins)
        counted["ece"] = np.isfinite(ece_inputs[0])
    frame = _frame(metrics, rows, groups)
    levels = [str(g) for g in frame.by_group.index]
    clusters = rows if clusters is None else np.asarray(clusters)
    if len(clusters) != len(groups):
        raise ValueError(f"clusters has {len(clusters)} entries for {len(groups)} rows")
    unit = unit if clusters is not rows else "rows"
    share = {m: bool(np.isin(v[np.isfinite(v)], (0.0, 1.0)).all()) for m, v in per_row.items()}
    share["ece"] = False
    method = {m: (SHARE_METHOD if share[m] else PERCENTILE_METHOD).format(unit=unit) for m in metrics}

    design, spans = _design(per_row, ece_inputs, n_bins)
    membership = np.concatenate([groups[:, None] == np.array(levels)[None, :], np.ones((len(groups), 1), dtype=bool)], axis=1)
    rng = seeded(seed)
    res = cluster_group_means(design, membership, clusters, n_boot if engine == "vectorized" else 0, rng)
    n_clus = {m: res["n_clusters"][s.start] for m, s in spans.items()}  # (G + 1,) clusters with a counted row
    reps: dict[str, np.ndarray] = {}
    if n_boot > 0 and engine == "vectorized":
        reps = _metric_replicates(res["replicates"], spans)
    elif n_boot > 0:
        codes, n_clusters = cluster_codes(clusters)
        reps = _fairlearn_replicates(metrics, groups, levels, codes, n_clusters, n_boot, rng)

    def ci(m: str, j: int, value: float, n: int) -> tuple[float, float]:
        if n_boot <= 0:
            return math.nan, math.nan
        col = reps[m][:, j]
        if share[m]:
            lo, hi = share_interval_clustered(np.array(value), col[:, None], np.array(n), np.array(n_clus[m][j]), confidence)
        else:
            lo, hi = percentile_intervals(col[:, None], confidence)
        return float(lo[0] if np.ndim(lo) else lo), float(hi[0] if np.ndim(hi) else hi)

    overall: dict[str, dict[str, Any]] = {}
    out_rows: list[dict[str, Any]] = []
    kept_by_metric: dict[str, tuple[str, ...]] = {}
    for m in metrics:
        value, n_all = float(frame.overall[m]), int(counted[m].sum())
        lo, hi = ci(m, len(levels), value, n_all)
        overall[m] = {"value": value, "n": n_all, "ci_low": lo, "ci_high": hi, "method": method[m]}
        kept = []
        for j, g in enumerate(levels):
            n_g = int((counted[m] & (groups == g)).sum())
            if n_g == 0:
                continue
            value = float(frame.by_group.loc[g, m])
            lo, hi = ci(m, j, value, n_g)
            small = n_g < min_n
            note = f"n={n_g} < {min_n}: not compared" if small else ("na group: not compared" if g == "na" else "")
            out_rows.append({"group": g, "metric": m, "value": value, "n": n_g,
                             "ci_low": lo, "ci_high": hi, "note": note, "method": method[m]})
            if not small and g != "na":
                kept.append(g)
        kept_by_metric[m] = tuple(kept)
    comparisons = []
    by_kept: dict[tuple[str, ...], list[str]] = {}
    for m, kept in kept_by_metric.items():
        by_kept.setdefault(kept, []).append(m)
    nan = {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    cmp_method = COMPARISON_METHOD.format(unit=unit)
    for kept, ms in by_kept.items():
        if len(kept) < 2:
            comparisons += [{"metric": m, "groups": list(kept), "difference": dict(nan), "ratio": dict(nan),
                             "note": "fewer than two groups with n >= min_n to compare",
                             "p_value": math.nan, "q_value": math.nan, "method": cmp_method} for m in ms]
            continue
        sub = frame
        if set(kept) != set(levels):
            mask = np.isin(groups, list(kept))
            sub = _frame({m: metrics[m] for m in ms}, rows[mask], groups[mask])
        diff, ratio = sub.difference(), sub.ratio()
        for m in ms:
            d = {"value": float(diff[m]), "ci_low": math.nan, "ci_high": math.nan}
            r = {"value": float(ratio[m]), "ci_low": math.nan, "ci_high": math.nan}
            p = math.nan
            if n_boot > 0:
                cols = [levels.index(g) for g in kept]
                est = np.array([float(frame.by_group.loc[g, m]) for g in kept])
                in_kept = counted[m] & np.isin(groups, list(kept))
                c = compare_groups(est, reps[m][:, cols], confidence, n_clusters=len(np.unique(clusters[in_kept])))
                d["ci_low"], d["ci_high"] = c["difference"][1:]
                r["ci_low"], r["ci_high"] = c["ratio"][1:]
                p = c["p_value"]
            comparisons.append({"metric": m, "groups": list(kept), "difference": d, "ratio": r, "note": "",
                                "p_value": p, "q_value": math.nan, "method": cmp_method})
    add_qvalues(comparisons)
    return overall, out_rows, comparisons


def add_qvalues(comparisons: list[dict[str, Any]]) -> None:
    """Set each comparison's ``q_value``: Benjamini–Hochberg over the p-values of all of them."""
    q = bh_qvalues(np.array([c.get("p_value", math.nan) for c in comparisons], dtype=float))
    for c, v in zip(comparisons, q):
        c["q_value"] = float(v)



# --------------------------------------------------------------------------- the audit


def _measure(predictor: Any, facet: Any, order: np.ndarray, batch_size: int,
             progress: Callable[[int, int], None] | None,
             face_gate: Any = None) -> tuple[list[dict[str, Any]], np.ndarray, int, int]:
    """Predictions for people ``order`` (row indices), image by image; also which got no crop.

    With ``face_gate`` (anything with ``detect(image)`` largest first and ``crop(image, box)``)
    the predictor sees the largest face centred inside each person's box, as the measure stage
    labels an image by its largest face; a
    person with no face found gets no answer (an abstention). Returns the predictions, the
    people whose box lies outside the image, the number of rescaled images and of people with
    no face found."""
    from PIL import Image

    paths = facet.image_paths()
    people = facet.people
    sizes = {int(i): (w, h) for i, w, h in zip(facet.images["id"], facet.images["width"], facet.images["height"])}
    preds: list[dict[str, Any] | None] = [None] * len(order)
    outside = np.zeros(len(order), dtype=bool)
    pending: list[tuple[int, Any]] = []
    done = 0
    n_rescaled = 0
    n_no_face = 0

    def flush() -> None:
        nonlocal done
        if not pending:
            return
        out = predictor.measure([c for _, c in pending])
        if len(out) != len(pending):
            raise UserError(f"predictor {type(predictor).__name__}: measure() returned {len(out)} results for "
                            f"{len(pending)} crops (return one dict per crop)")
        for (k, _), p in zip(pending, out):
            preds[k] = p
        done += len(pending)
        pending.clear()
        if progress is not None:
            progress(done, len(order))

    image_ids = people["image_id"].to_numpy()[order]
    for img_id in pd.unique(image_ids):
        ks = np.flatnonzero(image_ids == img_id)
        with Image.open(paths[int(img_id)]) as im:
            im = im.convert("RGB")
            sx = sy = 1.0
            w0, h0 = sizes.get(int(img_id), (None, None))
            if w0 and h0 and (int(w0), int(h0)) != im.size:
                # boxes are in the annotated image's pixels; map them onto the file's size
                sx, sy = im.size[0] / float(w0), im.size[1] / float(h0)
                n_rescaled += 1
            for k in ks:
                r = people.iloc[int(order[k])]
                box = (r["box_x"] * sx, r["box_y"] * sy, r["box_w"] * sx, r["box_h"] * sy)
                cb = crop_box(box, im.size)
                if cb is None:
                    outside[k] = True
                    continue
                crop = im.crop(cb)
                if face_gate is not None:
                    # the largest face whose centre lies in the person's own (unpadded) box,
                    # not a neighbour's face that the padding brought in
                    bx, by = box[0] - cb[0], box[1] - cb[1]
                    faces = [f for f in face_gate.detect(crop)
                             if bx <= f.x + f.w / 2 <= bx + box[2] and by <= f.y + f.h / 2 <= by + box[3]]
                    face = face_gate.crop(crop, faces[0]) if faces else None
                    if face is None or face.width == 0 or face.height == 0:
                        preds[k] = {}
                        n_no_face += 1
                        done += 1
                        continue
                    crop = face
                pending.append((int(k), crop))
                if len(pending) >= batch_size:
                    flush()
        flush()
    return preds, outside, n_rescaled, n_no_face  # type: ignore[return-value]


def _pred_fields(p: Any) -> tuple[str, str, float, dict[str, float]]:
    label = str(getattr(p, "label"))
    top = getattr(p, "top_label", None)
    score = getattr(p, "score", None)
    probs = getattr(p, "probs", None) or {}
    try:
        s = float(score) if score is not None else math.nan
    except (TypeError, ValueError):
        s = math.nan
    return label, str(top) if top is not None else label, s, {str(k): float(v) for k, v in dict(probs).items()}


def run_audit(predictor: Any, facet_root: str | Path, out_dir: str | Path, *, classifier_id: str, fingerprint: str,
              limit: int | None = None, batch_size: int = 32, seed: int = 0, n_boot: int = 1000,
              progress: Callable[[int, int], None] | None = None, confidence: float = 0.95,
              min_n: int = MIN_N, engine: str = "fairlearn", face_gate: Any = None) -> dict[str, Any]:
    """Audit ``predictor`` on the people of the FACET release at ``facet_root``; write
    ``audit.json``, ``audit.csv``, ``confusion_<attribute>.csv`` and ``predictions.csv`` into
    ``out_dir`` and return the audit.json content (NaN as float; the file holds null). The page,
    ``audit.html``, is :func:`t2ibias.report.audit_html.write_audit_html` of that folder.

    ``limit`` audits a random sample (seeded by ``seed``) of that many eligible people, in
    release order; ``seed`` also seeds the bootstrap. ``progress(done, total)`` is called after
    each batch of ``batch_size`` crops. ``engine`` picks how the image resamples are evaluated
    (see :func:`metric_rows`): ``"fairlearn"`` (a MetricFrame per resample) or ``"vectorized"``.
    ``face_gate`` audits on the largest face found in each person crop (how the measure stage
    labels an image) instead of the person crop; people with no face found count as abstentions.
    """
    from facet_eval.data import load_facet

    if batch_size < 1:
        raise UserError(f"--batch-size: {batch_size} (use a positive number)")
    if limit is not None and limit < 1:
        raise UserError(f"--limit: {limit} (use a positive number of people, or no limit)")
    if engine not in ENGINES:
        raise UserError(f"--engine: {engine!r} is unknown (use one of {', '.join(ENGINES)})")
    if not 0 < confidence < 1:
        raise UserError(f"confidence: {confidence} (use a number between 0 and 1)")
    facet = load_facet(facet_root)
    people = facet.people
    out_dir = Path(out_dir)
    reason = skip_reasons(people)
    eligible = np.flatnonzero(reason == "")
    if limit is not None and limit < len(eligible):
        eligible = np.sort(seeded(seed).choice(eligible, size=limit, replace=False))
    if len(eligible) == 0:
        raise UserError(f"{facet.root}: no person to audit (every person is visible_minimal only or has an empty box)")

    preds, outside, n_rescaled, n_no_face = _measure(predictor, facet, eligible, batch_size, progress, face_gate)
    reason[eligible[outside]] = "box_outside_image"
    audited = eligible[~outside]
    preds = [p for p, o in zip(preds, outside) if not o]
    skipped = {r: int((reason == r).sum()) for r in ("visible_minimal", "empty_box", "box_outside_image")}

    gt = ground_truth(people.iloc[audited].reset_index(drop=True))
    returned = {a for p in preds for a in p}
    audited_attrs = [a for a in FACET_ATTRIBUTES if a in returned and a in gt["truth"]]
    if not audited_attrs:
        raise UserError(
            f"classifier {classifier_id!r}: returns none of the audited attributes {', '.join(FACET_ATTRIBUTES)} "
            f"that the FACET release annotates (it returns {', '.join(sorted(returned)) or 'nothing'})"
        )

    attributes: dict[str, Any] = {}
    long_rows: list[dict[str, Any]] = []
    pred_rows: list[dict[str, Any]] = []
    person_ids = people["person_id"].to_numpy()[audited]
    image_ids = people["image_id"].to_numpy()[audited]  # people of one image are resampled together
    all_comparisons: list[dict[str, Any]] = []
    not_audited: dict[str, str] = {}
    for attr in audited_attrs:
        truth = gt["truth"][attr]
        idx = np.flatnonzero(np.array([t is not None for t in truth], dtype=bool))
        if len(idx) == 0:
            # nothing to compare the classifier with: say so instead of auditing an empty set
            not_audited[attr] = (f"none of the {len(truth)} audited people has a {FACET_ATTRIBUTES[attr][0]} "
                                 "annotation, so there is nothing to compare the classifier with")
            continue
        # a crop the predictor gave no answer for (e.g. no face found) is an abstention
        no_answer = (ABSTAIN, ABSTAIN, math.nan, {})
        fields = [_pred_fields(preds[i][attr]) if attr in preds[i] else no_answer for i in idx]
        n_no_prediction = sum(1 for i in idx if attr not in preds[i])
        pred = np.array([f[0] for f in fields], dtype=object)
        top = np.array([f[1] for f in fields], dtype=object)
        score = np.array([f[2] for f in fields], dtype=float)
        true = truth[idx].astype(object)
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
        labels = list(LABEL_SPACE[attr]) + [lab for lab in seen if lab not in LABEL_SPACE[attr]]
        true_classes = list(FACET_ATTRIBUTES[attr][1])
        in_labels = np.isin(true, labels)
        answered = pred != ABSTAIN
        hit = (pred == true).astype(float)
        per_row: dict[str, np.ndarray] = {
            "accuracy": np.where(in_labels, hit, np.nan),
            "accuracy_answered": np.where(in_labels & answered, hit, np.nan),
            "abstain_rate": (~answered).astype(float),
        }
        if attr == "skin_tone":
            chosen = gt["skin_chosen"][idx]
            med = gt["skin_median"][idx]
            pred_num = np.array([int(p) if p.isdigit() and 1 <= int(p) <= 10 else 0 for p in pred])
            within = np.array([chosen[i, pred_num[i] - 1] if pred_num[i] else False for i in range(len(idx))], dtype=float)
            per_row["within_range"] = np.where(in_labels, within, np.nan)
            per_row["abs_error"] = np.where(in_labels & (pred_num > 0), np.abs(pred_num - med).astype(float), np.nan)
        correct_top = (top == true).astype(float)
        ece_scores = np.where(in_labels, score, np.nan)
        has_scores = bool(np.isfinite(ece_scores).any())

        # confusion matrix
        pred_cols = labels + [ABSTAIN]
        extra = sorted({p for p in pred if p not in pred_cols})
        pred_cols = labels + extra + [ABSTAIN]
        counts = [[int(((true == t) & (pred == p)).sum()) for p in pred_cols] for t in true_classes]

        entry: dict[str, Any] = {
            "facet_attribute": FACET_ATTRIBUTES[attr][0],
            "labels": labels,
            "true_classes": true_classes,
            "n": int(len(idx)),
            "n_in_labels": int(in_labels.sum()),
            "n_unannotated": int(len(truth) - len(idx)),
            "n_no_prediction": int(n_no_prediction),
            "confusion": {"true": true_classes, "pred": pred_cols, "counts": counts},
        }
        group_cols: dict[str, np.ndarray] = {FACET_ATTRIBUTES[attr][0]: true.astype(str)}
        for g in CROSS_GROUPS:
            if g in gt["groups"] and g not in group_cols:
                group_cols[g] = gt["groups"][g][idx].astype(str)
        by_group: list[dict[str, Any]] = []
        comparisons: list[dict[str, Any]] = []
        overall: dict[str, dict[str, Any]] = {}
        for k, (gname, gcol) in enumerate(group_cols.items()):
            ov, rows, comps = metric_rows(
                per_row, gcol, ece_inputs=(ece_scores, correct_top) if has_scores else None,
                n_boot=n_boot, seed=seed, confidence=confidence, min_n=min_n, engine=engine, clusters=image_ids[idx])
            if k == 0:
                overall = ov
            by_group += [{"group_attribute": gname, **r} for r in rows]
            comparisons += [{"group_attribute": gname, **c} for c in comps]
        for m, v in overall.items():
            entry[m] = v
        entry["by_group"] = by_group
        entry["comparisons"] = comparisons
        all_comparisons += comparisons
        if has_scores:
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
            entry["calibration"] = {"n_bins": N_BINS, "score": "probability of the top label",
                                    "ece": ece, "n": int(np.isfinite(ece_scores).sum()), "bins": bins,
                                    "by_group": cal_groups}
        else:
            entry["calibration"] = {"n_bins": N_BINS, "ece": math.nan, "n": 0, "bins": [], "by_group": [],
                                    "note": "the predictor gives no scores"}
        attributes[attr] = entry
        for m, v in overall.items():
            long_rows.append({"attribute": attr, "group_attribute": "overall", "group": "all", "metric": m, **v, "note": ""})
        long_rows += [{"attribute": attr, **r} for r in by_group]
        for i, k in enumerate(idx):
            pred_rows.append({"person_id": int(person_ids[k]), "attribute": attr, "true": true[i], "pred": pred[i],
                              "top_label": top[i], "score": score[i]})

    if not attributes:
        raise UserError(
            f"{facet.root}: no audited person has a {', '.join(FACET_ATTRIBUTES[a][0] for a in not_audited)} annotation "
            f"(attribute{'s' if len(not_audited) > 1 else ''} {', '.join(not_audited)} cannot be audited; "
            "use a FACET release whose annotations.csv has those votes)"
        )
    add_qvalues(all_comparisons)  # one family of tests: every comparison of the audit
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "classifier": {"id": str(classifier_id), "fingerprint": str(fingerprint)},
        "facet": {
            "root": str(facet.root),
            "annotations_sha256": file_sha256(facet.root / "annotations" / "annotations.csv"),
            "n_people": int(len(people)),
            "n_audited": int(len(audited)),
            "n_skipped": int(sum(skipped.values())),
            "skipped": skipped,
            "n_not_sampled": int(len(people) - len(audited) - sum(skipped.values())),
            "n_images_rescaled": int(n_rescaled),
            "n_no_face": int(n_no_face),
        },
        "settings": {"crops": "person" if face_gate is None else "largest face in the person crop",
                     "face_gate": None if face_gate is None else face_gate.config(),
                     "limit": limit, "seed": int(seed), "n_boot": int(n_boot), "batch_size": int(batch_size),
                     "confidence": float(confidence), "min_n": int(min_n), "padding": PADDING,
                     "engine": engine,
                     "interval": "images resampled (people of one image together), all groups from the same draws: "
                                 "Korn-Graubard for shares, percentile otherwise; gaps and ratios by simultaneous "
                                 "max-t intervals with p-values and Benjamini-Hochberg q-values over the audit's comparisons"},
        "versions": _versions(),
        "attributes": attributes,
        "not_audited": not_audited,
    }
    _write_outputs(out_dir, result, long_rows, pred_rows)
    return result


def _versions() -> dict[str, str]:
    import fairlearn

    import t2ibias

    return {"t2ibias": t2ibias.__version__, "fairlearn": fairlearn.__version__, "numpy": np.__version__}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    from t2ibias.csvsafe import escape_cell

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([escape_cell(h) for h in header])
    for r in rows:
        w.writerow(["" if isinstance(v, float) and not math.isfinite(v) else escape_cell(v) for v in r])
    return buf.getvalue()


def _write_outputs(out_dir: Path, result: dict[str, Any], long_rows: list[dict[str, Any]],
                   pred_rows: list[dict[str, Any]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for attr, entry in result["attributes"].items():
        conf = entry["confusion"]
        atomic_write_text(out_dir / f"confusion_{attr}.csv",
                          _csv_text(["true"] + conf["pred"], [[t] + row for t, row in zip(conf["true"], conf["counts"])]))
    atomic_write_text(out_dir / "audit.csv", _csv_text(list(ROW_COLUMNS), [[r.get(c, "") for c in ROW_COLUMNS] for r in long_rows]))
    pcols = ["person_id", "attribute", "true", "pred", "top_label", "score"]
    atomic_write_text(out_dir / "predictions.csv", _csv_text(pcols, [[r[c] for c in pcols] for r in pred_rows]))
    # NaN is written as null (strict JSON); audit.json goes last so its presence means a complete audit
    atomic_write_text(out_dir / "audit.json", json.dumps(_json_safe(result), indent=2) + "\n")


def load_audit(path: str | Path) -> dict[str, Any]:
    """Read and check an ``audit.json`` (or the folder holding it); NaN values come back as None."""
    path = Path(path)
    if path.is_dir():
        path = path / "audit.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run `t2ibias audit` first, or pass its --out folder)") from None
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON: {exc} (re-run `t2ibias audit`)") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: schema: not an audit object (pass an audit.json written by `t2ibias audit`)")
    if data.get("schema") != SCHEMA:
        raise UserError(f"{path}: schema: {data.get('schema')!r}, expected {SCHEMA!r} (re-run `t2ibias audit` with this version)")
    for key in ("classifier", "facet", "attributes"):
        if not isinstance(data.get(key), dict):
            raise UserError(f"{path}: {key}: missing or not an object (re-run `t2ibias audit`)")
    for attr, entry in data["attributes"].items():
        conf = entry.get("confusion") if isinstance(entry, dict) else None
        where = f"{path}: attributes.{attr}.confusion"
        if not isinstance(conf, dict) or not all(isinstance(conf.get(k), list) for k in ("true", "pred", "counts")):
            raise UserError(f"{where}: needs lists true, pred and counts (re-run `t2ibias audit`)")
        counts = conf["counts"]
        if len(counts) != len(conf["true"]) or any(not isinstance(r, list) or len(r) != len(conf["pred"]) for r in counts):
            raise UserError(f"{where}: counts must be {len(conf['true'])} rows of {len(conf['pred'])} numbers (re-run `t2ibias audit`)")
        if any(not isinstance(v, int) or v < 0 for r in counts for v in r):
            raise UserError(f"{where}: counts must be non-negative integers (re-run `t2ibias audit`)")
    return data
