"""The score stage: one label per image and attribute, then long-format metric rows.

An image's label for an attribute comes from its largest detected face; with no face, from its
largest detected person when the run was measured with a person detector (no person box: it is
``no_person``); without one, from the whole image if the classifier's ``person`` attribute says a
person is there; otherwise it is ``no_person``. Images blocked by a safety checker or that failed keep those statuses as labels.
Nothing is dropped: ``abstain``, ``no_person``, ``blocked`` and ``failed`` are visible bins in
every denominator, and skew metrics (computed over classified images only) carry that n.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from t2ibias.core.version import __version__
from t2ibias.core.csvsafe import frame_to_csv
from t2ibias.core.errors import UserError
from t2ibias.core.files import json_safe
from t2ibias.core.rows import ROW_KEYS
from t2ibias.core.vocab import ABSTAIN, PERSON_ATTRIBUTE
from t2ibias.models.classifier_spec import ClassifierSpec
from t2ibias.metrics.location import location_rows
from t2ibias.stats.binomial import DEFAULT_SHARE_METHOD, SHARE_METHODS, clopper_pearson, cluster_shares, share_interval
from t2ibias.stats.projection import box_projections, difference_of_mean_bounds, mean_of_bounds, projection_interval, simultaneous_box
from t2ibias.stats.testing import bh_qvalues, fit_pvalues, t_interval
from t2ibias.metrics.legacy import PEER_METRICS
from t2ibias.metrics.registry import PAIRED_NAME, PAIRED_SKEW_NAME, PROJECTION_NAME, metric_info
from t2ibias.metrics.skew import (EXTRA_SKEW_METRICS, REFERENCE_SKEW_METRICS, SKEW_METRICS, js_divergence,
                                 proportions, total_variation, total_variation_uniform)
from t2ibias.store.rundir import RunDir, image_table, read_measurements, spec_classifier
from t2ibias.store.image_store import BLOCKED, FAILED, OK
from t2ibias.core.files import atomic_write_bytes, atomic_write_text
from t2ibias.store.rundir import AUDIT_FILE, IMAGE_LABELS_FILE, INSTRUMENT_FILE, METRICS_FILE

NO_PERSON = "no_person"
BINS = (ABSTAIN, NO_PERSON, BLOCKED, FAILED)
#: Every reference-free metric of the classified label counts, with its definition.
GROUP_METRICS = SKEW_METRICS + EXTRA_SKEW_METRICS + PEER_METRICS
#: Metrics against a reference distribution (labour statistics) for axes a reference table covers.
REFERENCE_AXES = {"gender_presentation": "gender"}
REFERENCE_METRICS = REFERENCE_SKEW_METRICS
REFERENCE_METRIC_NAMES = {m.name for m in REFERENCE_METRICS} | {"share_minus_reference"}
N_RESAMPLES = 1000
#: Prompt-record columns the metrics are also split by (besides each prompt and all prompts).
GROUP_COLUMNS = ("family", "subject", "template_id", "intervention")
CONFIDENCE = 0.95

#: Definition, direction and interval of every metric in metrics.json: the run metrics of the
#: metric registry (:mod:`t2ibias.metrics.registry`), in its order.
METRIC_INFO: dict[str, dict[str, Any]] = metric_info()


def share_halfwidth(n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the exact interval of a share of ½ among n images: what a prompt's figures can resolve."""
    lo, hi = clopper_pearson(np.array([n / 2.0]), np.array([float(n)]), confidence)
    return float(hi[0] - lo[0]) / 2.0


def share_seeds_for(halfwidth: float, confidence: float = CONFIDENCE) -> int:
    """Fewest images per prompt whose exact share interval at ½ is at most ±``halfwidth``."""
    n = 1
    while share_halfwidth(n, confidence) > halfwidth:
        n = n * 2
    lo, hi = n // 2, n
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if share_halfwidth(mid, confidence) <= halfwidth else (mid, hi)
    return hi


#: The measurement columns the label join reads (the rest — boxes, probabilities — stay on disk).
MEASUREMENT_COLUMNS = ["key", "measurer", "unit", "face_index", "attribute", "label", "score"]
_UNMADE = object()


def image_labels(run: RunDir) -> pd.DataFrame:
    """One row per (image, attribute) with its label and where the label came from: the rows of
    the measurer ``measure`` recorded, with the classifier the run's spec froze."""
    cspec = run.classifier
    frame = image_table(run.spec, run.prompts)
    statuses = run.store.statuses()
    status = [statuses.get(k, _UNMADE) for k in frame["key"]]
    del statuses
    missing = sum(1 for st in status if st is _UNMADE)
    if missing:
        raise UserError(f"{run.path}: {missing} of {len(frame)} images are not generated yet (run `t2ibias generate {run.path}`)")
    frame["status"] = pd.Series(status, dtype=object)
    del status
    meas = read_measurements(run.path, columns=MEASUREMENT_COLUMNS)
    meas = meas[meas["measurer"] == run.measurer]
    unmeasured = int(((frame["status"] == OK) & ~frame["key"].isin(meas["key"].unique())).sum())
    if unmeasured:
        raise UserError(f"{run.path}: {unmeasured} images are not measured with classifier {cspec.id!r} (run `t2ibias measure {run.path}`)")
    axes = [a for a in cspec.attributes if a != PERSON_ATTRIBUTE]
    return join_labels(frame, meas, axes, run.has_person_detector, where=str(run.path))


def _last(slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``slots`` and the position of the last occurrence of each."""
    uniq, first_from_end = np.unique(slots[::-1], return_index=True)
    return uniq, len(slots) - 1 - first_from_end


def join_labels(images: pd.DataFrame, meas: pd.DataFrame, axes: list[str], person_gate: bool,
                where: str = "measurements") -> pd.DataFrame:
    """The label table of :func:`image_labels` from ``images`` (``key, prompt_id, image_index, status``
    in run order) and one measurer's rows, by integer codes instead of a lookup per image:
    image-major, ``axes`` in order within an image. Where a measurement row is repeated (same key,
    unit, attribute), the last one counts.

    The source of an image's labels is its largest face (``face_index`` 0) when it has a face, else
    its largest person box, else — without a person detector — the whole image if its ``person``
    attribute says a person is there; otherwise there is none and every label is ``no_person``.
    """
    n_img = len(images)
    img_code, img_keys = pd.factorize(images["key"])
    n_keys = len(img_keys)
    key_code, key_vals = pd.factorize(meas["key"])
    pos = np.append(pd.Index(img_keys).get_indexer(pd.Index(key_vals)), -1)[key_code]  # a missing key (code −1): no image
    unit_code, unit_vals = pd.factorize(meas["unit"])
    unit_of = {u: i for i, u in enumerate(unit_vals)}

    def unit_is(name: str) -> np.ndarray:
        return unit_code == unit_of.get(name, -2)

    face_index = meas["face_index"].to_numpy(dtype=np.int64)
    mine = pos >= 0

    # faces / people per image: distinct face_index values of that unit
    def count(unit: str) -> np.ndarray:
        sel = mine & unit_is(unit)
        pairs = pd.DataFrame({"p": pos[sel], "f": face_index[sel]}).drop_duplicates()
        return np.bincount(pairs["p"].to_numpy(), minlength=n_keys)[img_code].astype(np.int64)

    n_faces, n_people = count("face"), count("person")
    ok = (images["status"] == OK).to_numpy()
    source = np.full(n_img, "none", dtype=object)
    has_face = ok & (n_faces > 0)
    has_person = ok & ~has_face & (n_people > 0)
    source[has_face] = "face"
    source[has_person] = "person"
    attr_code, attr_vals = pd.factorize(meas["attribute"])
    label_code, label_vals = pd.factorize(meas["label"])
    label_vals = np.asarray(label_vals, dtype=object)
    if not person_gate:
        person_attr = list(attr_vals).index(PERSON_ATTRIBUTE) if PERSON_ATTRIBUTE in list(attr_vals) else -2
        sel = np.flatnonzero(mine & unit_is("image") & (attr_code == person_attr))
        said = np.full(n_keys, -1, dtype=np.int64)
        slots, last = _last(pos[sel])
        said[slots] = label_code[sel[last]]
        person_label = list(label_vals).index(PERSON_ATTRIBUTE) if PERSON_ATTRIBUTE in list(label_vals) else -2
        is_clip = ok & ~has_face & ~has_person & (said[img_code] == person_label)
        source[is_clip] = "clip"
    n_axes = len(axes)
    out = pd.DataFrame({
        "key": np.repeat(images["key"].to_numpy(dtype=object), n_axes),
        "prompt_id": np.repeat(images["prompt_id"].to_numpy(dtype=object), n_axes),
        "image_index": np.repeat(images["image_index"].to_numpy(dtype=np.int64), n_axes),
        "attribute": np.tile(np.array(axes, dtype=object), n_img),
    })
    src = np.repeat(source, n_axes)
    # the row each (image, unit, axis) reads: slot = (key · 3 + unit) · axes + axis
    lookup_unit = {"face": 0, "person": 1, "clip": 2}
    table_unit = np.full(len(unit_vals) + 1, -1, dtype=np.int64)
    for name, slot in (("face", 0), ("person", 1), ("image", 2)):
        if name in unit_of:
            table_unit[unit_of[name]] = slot
    axis_of = np.full(len(attr_vals) + 1, -1, dtype=np.int64)
    for i, name in enumerate(attr_vals):
        if name in axes:
            axis_of[i] = axes.index(name)
    t_unit = table_unit[unit_code]
    t_axis = axis_of[attr_code]
    sel = np.flatnonzero(mine & (t_unit >= 0) & (t_axis >= 0) & ((face_index == 0) | (t_unit == 2)))
    row_of = np.full(n_keys * 3 * n_axes, -1, dtype=np.int64)
    slots, last = _last((pos[sel] * 3 + t_unit[sel]) * n_axes + t_axis[sel])
    row_of[slots] = sel[last]
    measured = src != "none"
    src_unit = np.array([lookup_unit.get(x, 0) for x in source], dtype=np.int64)
    want = (np.repeat(img_code * 3 + src_unit, n_axes)) * n_axes + np.tile(np.arange(n_axes), n_img)
    hit = row_of[want]
    hit_label = np.where(hit >= 0, label_code[np.maximum(hit, 0)], -1) if len(meas) else np.full(len(want), -1)
    lacking = measured & (hit_label < 0)
    if lacking.any():
        i = int(np.flatnonzero(lacking)[0])
        unit_name = {"face": "face", "person": "person", "clip": "image"}[src[i]]
        raise UserError(f"{where}: image {out['key'].iat[i]} has no {unit_name} row for attribute "
                        f"{out['attribute'].iat[i]!r} ({int(lacking.sum())} such rows; re-run `t2ibias measure {where}`)")
    status = np.repeat(images["status"].to_numpy(dtype=object), n_axes)
    ok_rows = np.repeat(ok, n_axes)
    scores = meas["score"].to_numpy(dtype=np.float64)
    got_label = label_vals[np.maximum(hit_label, 0)] if len(label_vals) else np.full(len(want), None, dtype=object)
    got_score = scores[np.maximum(hit, 0)] if len(scores) else np.full(len(want), np.nan)
    label = np.where(measured, got_label, np.where(ok_rows, NO_PERSON, status))
    score = np.where(measured, got_score, np.nan)
    out["label"] = label
    out["score"] = score
    out["person_source"] = src
    out["n_faces"] = np.where(ok_rows, np.repeat(n_faces, n_axes), 0)
    out["n_people"] = np.where(ok_rows, np.repeat(n_people, n_axes), 0)
    return out


def _row(metric: str, axis: str, group_by: str, group: str, label: str | None, value: float,
         ci: tuple[float, float] | None, n: int, note: str = "", *, aggregate: str | None = None, method: str = "",
         p_value: float = math.nan) -> dict[str, Any]:
    ci = ci or (math.nan, math.nan)
    return {
        "metric": metric, "axis": axis, "group_by": group_by, "group": group, "label": label,
        "value": float(value), "ci_low": float(ci[0]), "ci_high": float(ci[1]), "n": int(n),
        "higher_is_better": METRIC_INFO[metric]["higher_is_better"], "note": note,
        "aggregate": aggregate or ("prompt" if group_by == "prompt_id" else "pooled"),
        "method": method, "p_value": float(p_value), "q_value": math.nan,
    }


CI_METHODS = SHARE_METHODS
DEFAULT_CI = DEFAULT_SHARE_METHOD
MIN_N = 50  # FACET's rule: a per-prompt figure on fewer images is shown, flagged, and never ranked
PROJECTION = PROJECTION_NAME
MEAN_OF_BOUNDS = "mean of per-prompt bounds"
PAIRED = PAIRED_NAME
PAIRED_SKEW = PAIRED_SKEW_NAME


#: For each reference-free statistic: is it concave in the shares (entropy) rather than convex?
_CONCAVE = {"normalized_entropy"}
#: Statistics whose projection is that of total variation to uniform (closed-form minimum), scaled.
_TV_SCALE = {"total_variation_uniform", "dalleval_mad"}


def _skew_bounds(classified: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None,
                 confidence: float = CONFIDENCE) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Projection intervals of every reference-free statistic for rows of classified counts (N, K).

    With ``lo``/``hi`` the simultaneous box is given (the pooled box over prompts); otherwise it is
    the per-row Clopper–Pearson–Bonferroni box of :mod:`t2ibias.stats.projection`.
    """
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    k = classified.shape[-1]
    n = len(classified)
    ok = classified.sum(axis=-1) > 0 if lo is None else np.isfinite(lo).all(axis=-1)
    idx = np.flatnonzero(ok)
    if lo is None and len(idx):
        lo_b, hi_b = simultaneous_box(classified[idx], confidence)
    elif len(idx):
        lo_b, hi_b = lo[idx], hi[idx]
    if len(idx) and k >= 2:
        # total variation and DALL-Eval's MAD share one projection (MAD = TV · 2/K)
        specs = {m.name: (m.fn, m.name in _CONCAVE, False) for m in GROUP_METRICS if m.name not in _TV_SCALE}
        specs["total_variation_uniform"] = (total_variation_uniform, False, True)
        got = dict(zip(specs, box_projections(lo_b, hi_b, list(specs.values()))))
    for m in GROUP_METRICS:
        a, b = np.full(n, np.nan), np.full(n, np.nan)
        if len(idx) and k >= 2:
            if m.name in _TV_SCALE:
                scale = 1.0 if m.name == "total_variation_uniform" else 2.0 / k
                tv_lo, tv_hi = got["total_variation_uniform"]
                a[idx], b[idx] = tv_lo * scale, tv_hi * scale
            else:
                a[idx], b[idx] = got[m.name]
        out[m.name] = (a, b)
    return out


def _value_range(metric: str, k: int) -> tuple[float, float]:
    """Smallest and largest value a statistic of K shares can take (what a missed prompt may hold)."""
    return {
        "total_variation_uniform": (0.0, 1.0 - 1.0 / k), "dalleval_mad": (0.0, 2.0 / k * (1.0 - 1.0 / k)),
        "dalleval_std": (0.0, math.sqrt(k - 1) / k), "js_divergence_reference": (0.0, math.log(2)),
        "share_minus_reference": (-1.0, 1.0),
    }.get(metric, (0.0, 1.0))


def _per_prompt(matrix: np.ndarray, n_labels: int, confidence: float, seed: int) -> dict[str, Any]:
    """Everything per prompt that rows and aggregates share: counts, shares and their intervals,
    skew values and projection intervals, the balance test."""
    totals = matrix.sum(axis=1)
    classified = matrix[:, :n_labels]
    n_cls = classified.sum(axis=1)
    shares = proportions(matrix)
    return {
        "totals": totals, "shares": shares, "classified": classified, "n_cls": n_cls,
        "values": {m.name: np.asarray(m.fn(classified), dtype=float) for m in GROUP_METRICS},
        "bounds": _skew_bounds(classified, confidence=confidence),
        "balance_p": fit_pvalues(classified, seed=seed) if n_labels >= 2 else np.full(len(matrix), np.nan),
        "reference_rows": {},  # prompt index → {(metric, label): row}, filled by the per-prompt rows
    }


def _small(n: int, min_n: int) -> str:
    return "n < min_n" if n < min_n else ""


def _join(*notes: str) -> str:
    return "; ".join(x for x in notes if x)


def _prompt_rows(axis: str, order: list[str], bins: list[str], n_labels: int, matrix: np.ndarray, pp: dict[str, Any],
                 refs: dict[str, tuple[np.ndarray, str]], confidence: float, ci_method: str, min_n: int,
                 seed: int) -> list[dict[str, Any]]:
    """Per-prompt rows: counts; shares of all images with ``ci_method`` intervals; skew statistics of
    the classified images with projection intervals and the p-value of the exact test of balance;
    distances to a reference with the test of fit to it."""
    totals, shares = pp["totals"], pp["shares"]
    share_lo, share_hi = share_interval(matrix, totals[:, None], confidence, ci_method)
    rows: list[dict[str, Any]] = []
    for i, pid in enumerate(order):
        total, n_cls = int(totals[i]), int(pp["n_cls"][i])
        for k, label in enumerate(bins):
            rows.append(_row("count", axis, "prompt_id", pid, label, matrix[i, k], None, total))
            rows.append(_row("proportion", axis, "prompt_id", pid, label, shares[i, k],
                             (share_lo[i, k], share_hi[i, k]) if total else None, total, _small(total, min_n),
                             method=ci_method if total else ""))
        for m in GROUP_METRICS:
            if n_cls == 0:
                rows.append(_row(m.name, axis, "prompt_id", pid, None, math.nan, None, 0, "no classified images in this group"))
                continue
            lo, hi = pp["bounds"][m.name]
            rows.append(_row(m.name, axis, "prompt_id", pid, None, pp["values"][m.name][i], (lo[i], hi[i]), n_cls,
                             _join(_small(n_cls, min_n), "p_value: exact test of balance"), method=PROJECTION,
                             p_value=pp["balance_p"][i]))
        if pid in refs:
            ref_rows = _reference_rows(axis, "prompt_id", pid, bins[:n_labels], pp["classified"][i], refs[pid],
                                       confidence, min_n, seed)
            pp["reference_rows"][i] = {(r["metric"], r["label"]): r for r in ref_rows}  # the aggregates average these
            rows += ref_rows
    return rows


def _reference_rows(axis: str, group_by: str, group: str, labels: list[str], classified: np.ndarray,
                    reference: tuple[np.ndarray, str], confidence: float, min_n: int, seed: int) -> list[dict[str, Any]]:
    """Distance of one prompt's classified counts to a reference (labour statistics), with intervals
    valid at a perfect match and the exact test of fit to the reference."""
    ref, source = reference
    n_cls = int(classified.sum())
    if not np.isfinite(ref).all() or n_cls == 0:
        note = f"{source}: no published reference shares" if n_cls else "no classified images in this group"
        return [_row(m.name, axis, group_by, group, None, math.nan, None, n_cls, note) for m in REFERENCE_METRICS]
    rows = []
    p_fit = float(fit_pvalues(classified[None], ref, seed=seed)[0])
    note = _join(_small(n_cls, min_n), f"reference: {source}", "p_value: exact test of fit to the reference")
    for m in REFERENCE_METRICS:
        value = float(m.fn(classified, ref))
        stat = (lambda p: total_variation(p, ref)) if m.name == "total_variation_reference" else (lambda p: js_divergence(p, ref))
        lo, hi = projection_interval(classified[None], stat, ref=ref, tv_ref=m.name == "total_variation_reference",
                                     confidence=confidence)
        rows.append(_row(m.name, axis, group_by, group, None, value, (lo[0], hi[0]), n_cls, note, method=PROJECTION, p_value=p_fit))
    share = classified / n_cls
    lo, hi = clopper_pearson(classified, np.full(len(classified), n_cls), confidence)
    for k, label in enumerate(labels):
        p = float(stats.binomtest(int(classified[k]), n_cls, float(ref[k])).pvalue) if 0 < ref[k] < 1 else math.nan
        rows.append(_row("share_minus_reference", axis, group_by, group, label, float(share[k] - ref[k]),
                         (lo[k] - ref[k], hi[k] - ref[k]), n_cls,
                         _join(_small(n_cls, min_n), f"reference {ref[k]:.3f} ({source})", "p_value: exact binomial test"),
                         method="clopper-pearson", p_value=p))
    return rows


def _aggregate_rows(axis: str, group_by: str, group: str, bins: list[str], n_labels: int, matrix: np.ndarray,
                    pp: dict[str, Any], idx: list[int], prompt_refs: list[tuple[np.ndarray, str] | None],
                    confidence: float) -> list[dict[str, Any]]:
    """Rows for a group of prompts: the mean over prompts of each per-prompt figure (the headline,
    DALL-Eval's aggregate) and the pooled-counts figure beside it, each with a prompt-level interval."""
    sub = matrix[idx]
    counts = sub.sum(axis=0)
    total = int(counts.sum())
    n_prompts = len(idx)
    rows = [_row("count", axis, group_by, group, label, counts[k], None, total) for k, label in enumerate(bins)]
    agg = cluster_shares(sub, sub.sum(axis=1), confidence)
    for k, label in enumerate(bins):
        for name in ("mean_over_prompts", "pooled"):
            est, lo, hi = agg[name]
            rows.append(_row("proportion", axis, group_by, group, label, est[k], (lo[k], hi[k]), total,
                             f"over {n_prompts} prompts", aggregate=name, method="korn-graubard" if n_prompts > 1 else "clopper-pearson"))
    classified = sub[:, :n_labels]
    n_cls_each = classified.sum(axis=1)
    n_cls = int(n_cls_each.sum())
    has = n_cls_each > 0
    pooled_cls = classified.sum(axis=0)
    level = confidence if n_labels <= 2 else 1.0 - (1.0 - confidence) / n_labels
    box = cluster_shares(classified[has], n_cls_each[has], level)["pooled"] if has.any() else None
    pooled_bounds = _skew_bounds(pooled_cls[None], box[1][None], box[2][None]) if box is not None else None
    for m in GROUP_METRICS:
        if n_cls == 0:
            for name in ("mean_over_prompts", "pooled"):
                rows.append(_row(m.name, axis, group_by, group, None, math.nan, None, 0, "no classified images in this group", aggregate=name))
            continue
        vals = pp["values"][m.name][idx][has]
        lo_i, hi_i = (b[idx][has] for b in pp["bounds"][m.name])
        mean = float(vals.mean())
        mlo, mhi = mean_of_bounds(lo_i, hi_i, _value_range(m.name, n_labels), confidence)
        pvals = pp["balance_p"][idx][has]
        p_all = float(stats.combine_pvalues(pvals[np.isfinite(pvals)], method="fisher").pvalue) if np.isfinite(pvals).any() else math.nan
        pooled_value = float(m.fn(pooled_cls))
        plo, phi = (float(b[0]) for b in pooled_bounds[m.name])
        simpson = ""
        if not mlo - 1e-9 <= pooled_value <= mhi + 1e-9:  # Simpson: pooling moved the figure out of the headline's interval
            simpson = f"pooled counts give {pooled_value:.3f}: prompts skewed in different directions cancel when pooled"
        rows.append(_row(m.name, axis, group_by, group, None, mean, (mlo, mhi), n_cls,
                         _join(f"mean over {int(has.sum())} prompts", "p_value: all prompts balanced (Fisher)", simpson),
                         aggregate="mean_over_prompts", method=MEAN_OF_BOUNDS, p_value=p_all))
        rows.append(_row(m.name, axis, group_by, group, None, pooled_value, (plo, phi), n_cls,
                         _join(f"counts pooled over {int(has.sum())} prompts", simpson and "see the mean over prompts"),
                         aggregate="pooled", method=PROJECTION + " (korn-graubard box)"))
    refs = [prompt_refs[i] for i in idx]
    if n_prompts and all(r is not None for r in refs) and n_labels >= 2:
        per = [pp["reference_rows"][i] for i in idx]
        sources = {r[1] for r in refs}
        for key in dict.fromkeys(k for p in per for k in p):
            got = [p[key] for p in per if key in p and math.isfinite(p[key]["value"])]
            if not got:
                continue
            rows.append(_row(key[0], axis, group_by, group, key[1], float(np.mean([g["value"] for g in got])),
                             mean_of_bounds(np.array([g["ci_low"] for g in got]), np.array([g["ci_high"] for g in got]),
                                            _value_range(key[0], n_labels), confidence), n_cls,
                             _join(f"mean over {len(got)} prompts", f"reference: {next(iter(sources))}" if len(sources) == 1 else f"{len(sources)} references"),
                             aggregate="mean_over_prompts", method=MEAN_OF_BOUNDS))
    return rows


def _paired_rows(axis: str, order: list[str], prompts: pd.DataFrame, bins: list[str], n_labels: int,
                 pp: dict[str, Any], confidence: float) -> list[dict[str, Any]]:
    """Each intervention against ``none`` on the same subject, template and seed indices: the mean over
    matched prompt pairs of the difference of each per-prompt figure, a t interval over pairs and the
    paired test of no difference."""
    if "intervention" not in prompts or "none" not in set(prompts["intervention"].astype(str)):
        return []
    keys = [c for c in ("family", "subject", "template_id", "place") if c in prompts]
    pos = {pid: i for i, pid in enumerate(order)}
    frame = prompts.assign(_i=[pos.get(p, -1) for p in prompts["prompt_id"]])
    frame = frame[frame["_i"] >= 0]
    key_of = lambda r: tuple(str(r[c]) for c in keys)
    base = {key_of(r): int(r["_i"]) for _, r in frame.iterrows() if str(r["intervention"]) == "none"}
    rows: list[dict[str, Any]] = []
    for name in dict.fromkeys(str(v) for v in frame["intervention"]):
        if name == "none":
            continue
        pairs = [(base[key_of(r)], int(r["_i"])) for _, r in frame.iterrows()
                 if str(r["intervention"]) == name and key_of(r) in base]
        if not pairs:
            continue
        a = np.array([p[0] for p in pairs])
        b = np.array([p[1] for p in pairs])
        note = f"{len(pairs)} prompt pairs matched on {', '.join(keys)}; difference = {name} − none"
        n_img = int(pp["totals"][b].sum())
        for k, label in enumerate(bins):
            ok = (pp["totals"][a] > 0) & (pp["totals"][b] > 0)
            diff = pp["shares"][b, k] - pp["shares"][a, k]
            mean, lo, hi, p = t_interval(diff[ok], confidence)
            rows.append(_row("proportion", axis, "intervention_vs_none", name, label, mean, (lo, hi), n_img, note,
                             aggregate="mean_over_prompts", method=PAIRED, p_value=p))
        for m in GROUP_METRICS:
            v = pp["values"][m.name]
            lo_v, hi_v = pp["bounds"][m.name]
            ok = np.isfinite(v[a]) & np.isfinite(v[b])
            if not ok.any():
                continue
            # a skew statistic's plug-in is biased away from balance, and the bias differs between
            # the arms: the difference of the two headline intervals (each at 1 − α/2) stays valid
            rng_m = _value_range(m.name, n_labels)
            bounds = difference_of_mean_bounds(lo_v[a][ok], hi_v[a][ok], lo_v[b][ok], hi_v[b][ok], rng_m, confidence)
            rows.append(_row(m.name, axis, "intervention_vs_none", name, None, float((v[b][ok] - v[a][ok]).mean()),
                             bounds, int(pp["n_cls"][b].sum()),
                             _join(note, "no test: a paired t test of skew plug-ins is biased; the paired share rows carry the test"),
                             aggregate="mean_over_prompts", method=PAIRED_SKEW))
    return rows


def _references(prompts: pd.DataFrame, axis: str, labels: list[str]) -> dict[str, tuple[np.ndarray, str]]:
    """prompt_id → (reference shares over ``labels``, source) for prompts whose subject has a reference row."""
    ref_axis = REFERENCE_AXES.get(axis)
    if ref_axis is None or "reference" not in prompts or "reference_table" not in prompts:
        return {}
    from t2ibias.prompts.references import reference_distribution

    out: dict[str, tuple[np.ndarray, str]] = {}
    cache: dict[tuple[str, str], tuple[np.ndarray, str] | None] = {}
    for pid, table, key in zip(prompts["prompt_id"], prompts["reference_table"], prompts["reference"]):
        if not isinstance(table, str) or not isinstance(key, str):
            continue
        if (table, key) not in cache:
            shares = reference_distribution(table, key).get(ref_axis) or {}
            cache[(table, key)] = (np.array([shares.get(lab, math.nan) for lab in labels], dtype=float), f"{table}: {key}") if all(lab in shares for lab in labels) else None
        if cache[(table, key)] is not None:
            out[pid] = cache[(table, key)]
    return out


def _add_qvalues(rows: list[dict[str, Any]]) -> None:
    """Benjamini–Hochberg q-values over each table of tests: rows of one (axis, metric, label,
    group_by, aggregate) family, e.g. TV's test of balance over every prompt of an attribute."""
    families: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if isinstance(r.get("p_value"), float) and math.isfinite(r["p_value"]):
            families.setdefault((r["axis"], r["metric"], r["label"], r["group_by"], r["aggregate"]), []).append(i)
    for members in families.values():
        q = bh_qvalues(np.array([rows[i]["p_value"] for i in members]))
        for i, v in zip(members, q):
            rows[i]["q_value"] = float(v)


def check_options(ci_method: str, confidence: float, min_n: int) -> None:
    """One-line errors for interval options a user typed."""
    if ci_method not in CI_METHODS:
        hint = "; the percentile and BCa bootstraps are gone: they cannot reach a share of 0 or 1" if ci_method in ("percentile", "bca") else ""
        raise UserError(f"--ci {ci_method}: unknown interval method (use {', '.join(CI_METHODS)}{hint})")
    if not (isinstance(confidence, (int, float)) and 0.0 < float(confidence) < 1.0):
        raise UserError(f"--confidence {confidence}: must lie strictly between 0 and 1 (e.g. 0.95)")
    if not (isinstance(min_n, int) and min_n >= 1):
        raise UserError(f"--min-n {min_n}: must be a whole number of images of at least 1 (default {MIN_N})")


def compute_metrics(labels: pd.DataFrame, prompts: pd.DataFrame, spec: dict[str, Any], ci_method: str = DEFAULT_CI, *,
                    confidence: float = CONFIDENCE, min_n: int = MIN_N,
                    classifier: ClassifierSpec | None = None) -> list[dict[str, Any]]:
    """Metric rows for every attribute of the run's classifier that ``labels`` holds (``classifier``,
    else the one ``spec`` froze)."""
    check_options(ci_method, confidence, min_n)
    cspec = classifier or spec_classifier(spec)
    order = list(prompts["prompt_id"])
    base_seed = int(spec.get("base_seed", 0))
    rows: list[dict[str, Any]] = []
    present = set(labels["attribute"].unique())
    for axis in [a for a in cspec.attributes if a != PERSON_ATTRIBUTE and a in present]:
        class_labels = list(cspec.attributes[axis].labels)
        bins = class_labels + list(BINS)
        n_labels = len(class_labels)
        sub = labels[labels["attribute"] == axis]
        unknown = set(sub["label"].unique()) - set(bins)
        if unknown:
            raise UserError(f"measurements: label {sorted(unknown)[0]!r} of {axis!r} is not in classifier {cspec.id!r} (re-run `t2ibias measure`)")
        matrix = _count_matrix(sub["prompt_id"], order, sub["label"], bins)
        refs = _references(prompts, axis, class_labels)
        seed = zlib.crc32(f"{base_seed}/{axis}".encode())
        pp = _per_prompt(matrix, n_labels, confidence, seed)
        rows += _prompt_rows(axis, order, bins, n_labels, matrix, pp, refs, confidence, ci_method, min_n, seed)
        prompt_refs = [refs.get(pid) for pid in order]
        for column in GROUP_COLUMNS:
            values = [str(v) for v in prompts[column]] if column in prompts else []
            if len(set(values)) < 2 and column != "family":
                continue  # one group only: the same numbers as "all"
            for value in dict.fromkeys(values):
                idx = [i for i, v in enumerate(values) if v == value]
                rows += _aggregate_rows(axis, column, value, bins, n_labels, matrix, pp, idx, prompt_refs, confidence)
        rows += _aggregate_rows(axis, "all", "all", bins, n_labels, matrix, pp, list(range(len(order))), prompt_refs, confidence)
        rows += _paired_rows(axis, order, prompts, bins, n_labels, pp, confidence)
        rows += _seed_rows(axis, bins, n_labels, sub)
    _add_qvalues(rows)
    return rows


def _codes(values: pd.Series, order: list[Any]) -> np.ndarray:
    """Position of each value in ``order`` (−1 if absent), factorizing first: a million Arrow strings
    are encoded once instead of converted to Python objects."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    pos = pd.Index(order).get_indexer(pd.Index(uniques)).astype(np.int64)
    return np.where(codes >= 0, pos[np.maximum(codes, 0)], -1)


def _count_matrix(rows: pd.Series, row_order: list[Any], labels: pd.Series, bins: list[str]) -> np.ndarray:
    """(len(row_order), len(bins)) counts of ``labels`` per value of ``rows`` (values outside the order are dropped)."""
    r = _codes(rows, row_order)
    c = _codes(labels, bins)
    keep = (r >= 0) & (c >= 0)
    flat = np.bincount(r[keep] * len(bins) + c[keep], minlength=len(row_order) * len(bins))
    return flat.reshape(len(row_order), len(bins))


def _seed_rows(axis: str, bins: list[str], n_labels: int, sub: pd.DataFrame) -> list[dict[str, Any]]:
    """Run-to-run variation of the all-prompt figures: the standard deviation, across image indices
    (seed slots), of each figure computed from one slot alone, divided by √S — the spread one expects
    between two whole runs of S seeds each (a share averages S independent slots)."""
    slots = sorted(sub["image_index"].unique())
    if len(slots) < 2:
        return []
    counts = _count_matrix(sub["image_index"], slots, sub["label"], bins)
    rows = []
    shares = proportions(counts)
    root = math.sqrt(len(slots))
    note = f"standard deviation over {len(slots)} seed slots / √{len(slots)}"
    for k, label in enumerate(bins):
        rows.append(_row("proportion_seed_sd", axis, "all", "all", label, float(np.std(shares[:, k], ddof=1)) / root, None, len(slots), note))
    for m in SKEW_METRICS:
        per_slot = m.fn(counts[:, :n_labels])
        finite = per_slot[np.isfinite(per_slot)]
        value = float(np.std(finite, ddof=1)) / math.sqrt(len(finite)) if len(finite) >= 2 else math.nan
        rows.append(_row(f"{m.name}_seed_sd", axis, "all", "all", None, value, None, len(finite), note))
    return rows


def _location_rows(run: RunDir, labels: pd.DataFrame) -> list[dict[str, Any]]:
    """Neutral-vs-place embedding distances, for prompt sets with geographic variants."""
    prompts = run.prompts
    if "place" not in prompts or prompts["place"].isna().all():
        return []
    emb = run.embeddings
    emb = emb[emb["measurer"] == run.measurer]
    vectors = {k: np.asarray(v, dtype=np.float32) for k, v in zip(emb["key"], emb["embedding"])}
    keys_by_prompt = labels.drop_duplicates("key").groupby("prompt_id")["key"].apply(list).to_dict()
    return location_rows(prompts, keys_by_prompt, vectors, N_RESAMPLES, CONFIDENCE, int(run.spec.get("base_seed", 0)))


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    """A row of another module (location distances) in the full row schema."""
    out = {k: row.get(k) for k in ROW_KEYS}
    out["aggregate"] = row.get("aggregate") or ("prompt" if row.get("group_by") == "prompt_id" else "pooled")
    out["method"] = row.get("method") or ("bootstrap percentile" if row.get("ci_low") is not None else "")
    for key in ("p_value", "q_value"):
        out[key] = row.get(key, math.nan)
    return out


def metrics_json(doc: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """``json.dumps({**doc, "rows": rows}, indent=1, allow_nan=False)`` and a newline, the same text
    made faster: with ``indent`` the standard library encodes in Python (≈ 20 µs a value, a minute
    for a million-row table), without it in C. Each flat row is encoded by the C encoder with the
    item separator carrying the newline and indentation ``indent=1`` puts at that depth; ``doc``
    must end with an empty ``rows`` list."""
    head = json.dumps(doc, indent=1, allow_nan=False)
    assert head.endswith('"rows": []\n}') and list(doc)[-1] == "rows"
    if not rows:
        return head + "\n"
    body = ",\n".join("  {\n   " + json.dumps(r, separators=(",\n   ", ": "), allow_nan=False)[1:-1] + "\n  }"
                      if r else "  {}" for r in rows)
    return head[: -len("]\n}")] + "\n" + body + "\n ]\n}\n"


#: How each interval is made, for metrics.json, ``t2ibias ls metrics`` and the report.
INTERVAL_METHODS = {
    "clopper-pearson": "exact binomial interval (Clopper & Pearson 1934): coverage ≥ the nominal level for every share and n",
    "wilson": "Wilson score interval (1927)",
    "jeffreys": "Jeffreys equal-tailed Beta(k+½, n−k+½) interval",
    "korn-graubard": "over prompts: Clopper–Pearson at the effective size p(1−p)/var, var cluster-robust over prompts, df = prompts − 1 (Korn & Graubard 1998)",
    PROJECTION: "[min, max] of the statistic over a simultaneous Clopper–Pearson–Bonferroni box of the label shares: valid at and near balance",
    PROJECTION + " (korn-graubard box)": "the same projection over a box of per-label Korn–Graubard intervals pooled over prompts",
    MEAN_OF_BOUNDS: "mean over prompts of the per-prompt projection bounds, the m most extreme replaced by the statistic's range end (m: a binomial bound on how many prompt intervals can miss)",
    PAIRED_SKEW: "intervention's mean-over-prompts interval minus none's, each at 1 − α/2 (valid whatever the plug-in bias)",
    PAIRED: "t interval over matched prompt pairs; p-value of the paired t test",
    "bootstrap percentile": "percentile bootstrap",
}


def score_stage(run_dir: Path, ci_method: str = DEFAULT_CI, audit: str | Path | None = None, *,
                confidence: float = CONFIDENCE, min_n: int = MIN_N) -> dict[str, Any]:
    """Write ``image_labels.parquet``, ``metrics.json``, ``metrics.csv`` and ``instrument.json``
    (the classifier's audit, corrected proportions, agreement between measurers); return the
    metrics document. Only the run's own files are read.

    ``audit`` is an audit file (or its folder) to correct with: it is copied into the run as
    ``audit.json`` with its source and checksum, and later scores without ``audit`` keep using
    that copy (as they use one the classifier config attached at sweep time).

    ``ci_method`` is the per-prompt share interval; skew intervals are projections that hold at
    balance; every row names its method, and tests carry Benjamini–Hochberg q-values."""
    from t2ibias.metrics.instrument import audit_to_attach, instrument_doc, write_audit

    check_options(ci_method, confidence, min_n)
    run = RunDir(run_dir)
    spec = run.spec
    attached = audit_to_attach(audit, "t2ibias score --audit") if audit is not None else None
    prompts = run.prompts
    labels = image_labels(run)
    rows = compute_metrics(labels, prompts, spec, ci_method, confidence=confidence, min_n=min_n, classifier=run.classifier)
    rows += [_complete(r) for r in _location_rows(run, labels)]
    instrument = instrument_doc(run, labels, attached if attached is not None else run.audit)
    buf = io.BytesIO()
    labels.to_parquet(buf, index=False)
    atomic_write_bytes(run.file(IMAGE_LABELS_FILE), buf.getvalue())
    doc = {
        "t2ibias_version": __version__,
        "run_fingerprint": spec["fingerprint"],
        "intervals": {"share_method": ci_method, "confidence": confidence, "min_n": min_n,
                      "methods": {m: INTERVAL_METHODS[m] for m in dict.fromkeys(r["method"] for r in rows) if m in INTERVAL_METHODS},
                      "significant": "q_value < 0.05 (Benjamini-Hochberg over the rows of one table)",
                      "aggregates": {"prompt": "one prompt", "mean_over_prompts": "mean over prompts of the per-prompt figure (the headline)",
                                     "pooled": "counts pooled over prompts (shown beside the mean, never instead)"}},
        "bootstrap": {"n_resamples": N_RESAMPLES, "confidence": confidence, "seed": int(spec.get("base_seed", 0)),
                      "resampling": "location distances only: images within a prompt; prompts for all prompts"},
        "metrics": METRIC_INFO,
        "rows": [],
    }
    safe_rows = [{k: json_safe(r[k]) for k in ROW_KEYS} for r in rows]
    atomic_write_text(run.file(METRICS_FILE), metrics_json(doc, safe_rows))
    atomic_write_text(run.file("metrics.csv"), frame_to_csv(pd.DataFrame(rows, columns=list(ROW_KEYS))))
    if attached is not None:
        write_audit(run.file(AUDIT_FILE), attached)
    atomic_write_text(run.file(INSTRUMENT_FILE), json.dumps(instrument, indent=1, allow_nan=False) + "\n")
    doc["rows"] = safe_rows  # what metrics.json holds
    return doc
