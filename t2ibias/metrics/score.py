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

from t2ibias import __version__
from t2ibias.errors import UserError
from t2ibias.measure.classifier_spec import PERSON_ATTRIBUTE, resolve_classifier_spec
from t2ibias.measure.clip_zeroshot import ABSTAIN
from t2ibias.measure.stage import EMBEDDINGS_FILE, read_measurements, run_has_person_detector, run_measurer
from t2ibias.metrics import location
from t2ibias.metrics.location import location_rows
from t2ibias.metrics.bootstrap import bca_interval, percentile_interval, pooled_replicates, resample_counts
from t2ibias.metrics import legacy
from t2ibias.metrics.skew import EXTRA_SKEW_METRICS, SKEW_METRICS, SkewMetric, js_divergence, proportions, total_variation
from t2ibias.run import image_jobs, read_prompts, read_spec
from t2ibias.store.image_store import BLOCKED, FAILED, OK, ImageStore, atomic_write_bytes, atomic_write_text

NO_PERSON = "no_person"
BINS = (ABSTAIN, NO_PERSON, BLOCKED, FAILED)
IMAGE_LABELS_FILE = "image_labels.parquet"
METRICS_FILE = "metrics.json"
#: Every reference-free metric of the classified label counts, with its definition.
GROUP_METRICS = SKEW_METRICS + EXTRA_SKEW_METRICS + (
    SkewMetric("dalleval_mad", legacy.mad, False,
               "DALL-Eval's mean absolute deviation of the label shares, mean_k |p_k − mean(p)| (Cho et al., ICCV 2023); 0 is balanced."),
    SkewMetric("dalleval_std", legacy.std, False,
               "DALL-Eval's population standard deviation of the label shares (Cho et al., ICCV 2023); 0 is balanced."),
    SkewMetric("openbias_bias", legacy.openbias_bias, False,
               "OpenBias bias score, 1 − normalized entropy with ε = 1e-10 (D'Incà et al., CVPR 2024); 0 is balanced."),
)
#: Metrics against a reference distribution (labour statistics) for axes a reference table covers.
REFERENCE_AXES = {"gender_presentation": "gender"}
REFERENCE_METRICS = (
    SkewMetric("total_variation_reference", total_variation, False,
               "Total variation distance between the label shares (classified images only) and the reference (e.g. US labour statistics): ½Σ|p−r|; 0 matches it."),
    SkewMetric("js_divergence_reference", js_divergence, False,
               "Jensen-Shannon divergence (natural log, at most ln 2) between the label shares and the reference; 0 matches it."),
)
REFERENCE_METRIC_NAMES = {m.name for m in REFERENCE_METRICS} | {"share_minus_reference"}
N_RESAMPLES = 1000
#: Prompt-record columns the metrics are also split by (besides each prompt and all prompts).
GROUP_COLUMNS = ("family", "subject", "template_id", "intervention")
CONFIDENCE = 0.95
ROW_KEYS = ("metric", "axis", "group_by", "group", "label", "value", "ci_low", "ci_high", "n", "higher_is_better", "note")

METRIC_INFO: dict[str, dict[str, Any]] = {
    "count": {"definition": "Number of images with this label or status.", "higher_is_better": None},
    "proportion": {
        "definition": "Share of all images of the group with this label; abstain, no_person, blocked and failed are bins of their own.",
        "higher_is_better": None,
    },
    **{m.name: {"definition": m.definition, "higher_is_better": m.higher_is_better} for m in GROUP_METRICS + REFERENCE_METRICS},
    "share_minus_reference": {
        "definition": "Label share among classified images minus the reference share (e.g. US labour statistics); 0 matches it.",
        "higher_is_better": None,
    },
    location.METRIC: {"definition": location.DEFINITION, "higher_is_better": None},
    "proportion_seed_sd": {
        "definition": "Seed-to-seed variation of a label's all-prompt share: its standard deviation across seed slots (image index), each slot alone.",
        "higher_is_better": None,
    },
    **{
        f"{m.name}_seed_sd": {
            "definition": f"Seed-to-seed variation of {m.name.replace('_', ' ')} over all prompts: its standard deviation across seed slots.",
            "higher_is_better": None,
        }
        for m in SKEW_METRICS
    },
}


def image_labels(run_dir: Path, spec: dict[str, Any]) -> pd.DataFrame:
    """One row per (image, attribute) with its label and where the label came from."""
    cspec = resolve_classifier_spec(spec["classifier"]["id"])
    measurer = run_measurer(run_dir, cspec)  # the gate the run was measured with
    person_gate = run_has_person_detector(run_dir)
    prompts = read_prompts(run_dir, spec)
    jobs = image_jobs(spec, prompts)
    records = ImageStore(run_dir).records()
    missing = [j for j in jobs if j.key not in records]
    if missing:
        raise UserError(f"{run_dir}: {len(missing)} of {len(jobs)} images are not generated yet (run `t2ibias generate {run_dir}`)")
    meas = read_measurements(run_dir)
    meas = meas[meas["measurer"] == measurer]
    measured = set(meas["key"])
    unmeasured = [j for j in jobs if records[j.key]["status"] == OK and j.key not in measured]
    if unmeasured:
        raise UserError(f"{run_dir}: {len(unmeasured)} images are not measured with classifier {cspec.id!r} (run `t2ibias measure {run_dir}`)")
    axes = [a for a in cspec.attributes if a != PERSON_ATTRIBUTE]
    faces = meas[(meas["unit"] == "face") & (meas["face_index"] == 0)].set_index(["key", "attribute"])
    people = meas[(meas["unit"] == "person") & (meas["face_index"] == 0)].set_index(["key", "attribute"])
    whole = meas[meas["unit"] == "image"].set_index(["key", "attribute"])
    n_faces = meas[(meas["unit"] == "face")].groupby("key")["face_index"].nunique()
    n_people = meas[(meas["unit"] == "person")].groupby("key")["face_index"].nunique()
    rows = []
    for job in jobs:
        status = records[job.key]["status"]
        base = {"key": job.key, "prompt_id": job.prompt_id, "image_index": job.index}
        nf, npeople = int(n_faces.get(job.key, 0)), int(n_people.get(job.key, 0))
        if status != OK:
            for axis in axes:
                rows.append({**base, "attribute": axis, "label": status, "score": math.nan, "person_source": "none",
                             "n_faces": 0, "n_people": 0})
            continue
        if nf > 0:
            source, table = "face", faces
        elif npeople > 0:
            source, table = "person", people
        elif not person_gate and whole.loc[(job.key, PERSON_ATTRIBUTE), "label"] == PERSON_ATTRIBUTE:
            source, table = "clip", whole
        else:
            source, table = "none", None
        for axis in axes:
            if table is None:
                label, score = NO_PERSON, math.nan
            else:
                hit = table.loc[(job.key, axis)]
                label, score = hit["label"], float(hit["score"])
            rows.append({**base, "attribute": axis, "label": label, "score": score, "person_source": source,
                         "n_faces": nf, "n_people": npeople})
    return pd.DataFrame(rows)


def _row(metric: str, axis: str, group_by: str, group: str, label: str | None, value: float,
         ci: tuple[float, float] | None, n: int, note: str = "") -> dict[str, Any]:
    ci = ci or (math.nan, math.nan)
    return {
        "metric": metric, "axis": axis, "group_by": group_by, "group": group, "label": label,
        "value": float(value), "ci_low": ci[0], "ci_high": ci[1], "n": int(n),
        "higher_is_better": METRIC_INFO[metric]["higher_is_better"], "note": note,
    }


CI_METHODS = ("percentile", "bca")


def _group_rows(axis: str, group_by: str, group: str, bins: list[str], n_labels: int,
                cluster_counts: np.ndarray, rng: np.random.Generator,
                reference: tuple[np.ndarray, str] | None = None, ci_method: str = "percentile") -> list[dict[str, Any]]:
    """Rows for one group: counts, proportions (all bins), skew metrics (classified only), and,
    given ``reference`` = (shares over the class labels, where they come from), the distance to it.

    Intervals are percentile intervals, or BCa ones (falling back to percentile where BCa is
    undefined). Skew and distance intervals are widened to contain their estimate: resampling
    only moves skew away from balance, so near balance a percentile interval can miss it.
    """
    counts = cluster_counts.sum(axis=0)
    total = int(counts.sum())
    single = len(cluster_counts) == 1
    reps = resample_counts(counts, N_RESAMPLES, rng) if single else pooled_replicates(cluster_counts, N_RESAMPLES, rng)
    data = counts if single else cluster_counts

    def interval(stat: Any, estimate: float, widen: bool = False) -> tuple[float, float]:
        replicates = stat(reps)
        lo = hi = math.nan
        if ci_method == "bca":
            lo, hi = bca_interval(stat, data, replicates, estimate, CONFIDENCE)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            lo, hi = percentile_interval(replicates, CONFIDENCE)
        return (min(lo, estimate), max(hi, estimate)) if widen else (lo, hi)

    rows = []
    shares = proportions(counts)
    for k, label in enumerate(bins):
        rows.append(_row("count", axis, group_by, group, label, counts[k], None, total))
        rows.append(_row("proportion", axis, group_by, group, label, shares[k],
                         interval(lambda c, k=k: proportions(c)[..., k], float(shares[k])), total))
    classified = counts[:n_labels]
    n_cls = int(classified.sum())
    for m in GROUP_METRICS:
        if n_cls == 0:
            rows.append(_row(m.name, axis, group_by, group, None, math.nan, None, 0, "no classified images in this group"))
            continue
        value = float(m.fn(classified))
        rows.append(_row(m.name, axis, group_by, group, None, value,
                         interval(lambda c, m=m: m.fn(c[..., :n_labels]), value, widen=True), n_cls))
    if reference is None:
        return rows
    ref, source = reference
    if not np.isfinite(ref).all() or n_cls == 0:
        note = f"{source}: no published reference shares" if n_cls else "no classified images in this group"
        return rows + [_row(m.name, axis, group_by, group, None, math.nan, None, n_cls, note) for m in REFERENCE_METRICS]
    for m in REFERENCE_METRICS:
        value = float(m.fn(classified, ref))
        rows.append(_row(m.name, axis, group_by, group, None, value,
                         interval(lambda c, m=m: m.fn(c[..., :n_labels], ref), value, widen=True), n_cls, f"reference: {source}"))
    gaps = proportions(classified) - ref
    for k, label in enumerate(bins[:n_labels]):
        rows.append(_row("share_minus_reference", axis, group_by, group, label, float(gaps[k]),
                         interval(lambda c, k=k: proportions(c[..., :n_labels])[..., k] - ref[k], float(gaps[k])),
                         n_cls, f"reference {ref[k]:.3f} ({source})"))
    return rows


#: Prompts whose replicates are drawn together (memory: chunk × resamples × labels × 8 bytes).
PROMPT_CHUNK = 256


def _quantiles(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 1 of (groups, resamples) or (groups, resamples, K);
    a row with non-finite replicates takes :func:`percentile_interval`, which drops them."""
    levels = [(1.0 - CONFIDENCE) / 2.0, (1.0 + CONFIDENCE) / 2.0]
    moved = np.moveaxis(values, 1, -1)  # (groups, ..., resamples)
    flat = moved.reshape(-1, values.shape[1])
    lo, hi = np.full(len(flat), np.nan), np.full(len(flat), np.nan)
    ok = np.isfinite(flat).all(axis=1)
    if ok.any():
        lo[ok], hi[ok] = np.quantile(flat[ok], levels, axis=1)
    for j in np.flatnonzero(~ok):
        lo[j], hi[j] = percentile_interval(flat[j], CONFIDENCE)
    return lo.reshape(moved.shape[:-1]), hi.reshape(moved.shape[:-1])


def _prompt_rows(axis: str, order: list[str], bins: list[str], n_labels: int, matrix: np.ndarray,
                 refs: dict[str, tuple[np.ndarray, str]], base_seed: int) -> list[dict[str, Any]]:
    """Per-prompt rows, as :func:`_group_rows` makes them with percentile intervals, with the
    replicates of many prompts drawn in one multinomial call and every metric vectorized over them."""
    rows: list[dict[str, Any]] = []
    for start in range(0, len(order), PROMPT_CHUNK):
        counts = matrix[start : start + PROMPT_CHUNK]
        pids = order[start : start + PROMPT_CHUNK]
        totals = counts.sum(axis=1)
        rng = _rng(base_seed, axis, "prompt_id", str(start))
        with np.errstate(invalid="ignore", divide="ignore"):
            pvals = np.where(totals[:, None] > 0, counts / np.maximum(totals[:, None], 1), 1.0 / counts.shape[1])
        reps = rng.multinomial(totals[:, None], pvals[:, None, :], size=(len(pids), N_RESAMPLES))  # (P, B, K)
        share_lo, share_hi = _quantiles(proportions(reps))
        classified, rep_cls = counts[:, :n_labels], reps[..., :n_labels]
        metric_values = {m.name: (m.fn(classified), *_quantiles(m.fn(rep_cls))) for m in GROUP_METRICS}
        shares = proportions(counts)
        for i, pid in enumerate(pids):
            total, n_cls = int(totals[i]), int(classified[i].sum())
            for k, label in enumerate(bins):
                rows.append(_row("count", axis, "prompt_id", pid, label, counts[i, k], None, total))
                ci = (share_lo[i, k], share_hi[i, k]) if total else None
                rows.append(_row("proportion", axis, "prompt_id", pid, label, shares[i, k], ci, total))
            for m in GROUP_METRICS:
                if n_cls == 0:
                    rows.append(_row(m.name, axis, "prompt_id", pid, None, math.nan, None, 0, "no classified images in this group"))
                    continue
                value, lo, hi = (float(a[i]) for a in metric_values[m.name])
                rows.append(_row(m.name, axis, "prompt_id", pid, None, value, (min(lo, value), max(hi, value)), n_cls))
            if pid in refs:  # few prompts have a reference: the per-group path is cheap enough
                ref_rows = _group_rows(axis, "prompt_id", pid, bins, n_labels, counts[i : i + 1],
                                       _rng(base_seed, axis, "prompt_id", pid), refs[pid])
                rows += [r for r in ref_rows if r["metric"] in REFERENCE_METRIC_NAMES]
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


def _rng(base_seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([base_seed, zlib.crc32("\x1f".join(parts).encode())])


def compute_metrics(labels: pd.DataFrame, prompts: pd.DataFrame, spec: dict[str, Any], ci_method: str = "percentile") -> list[dict[str, Any]]:
    """Metric rows for every attribute of the run's classifier that ``labels`` holds."""
    if ci_method not in CI_METHODS:
        raise UserError(f"--ci {ci_method}: unknown interval method (use {' or '.join(CI_METHODS)})")
    cspec = resolve_classifier_spec(spec["classifier"]["id"])
    order = list(prompts["prompt_id"])
    base_seed = int(spec.get("base_seed", 0))
    rows: list[dict[str, Any]] = []
    present = set(labels["attribute"])
    for axis in [a for a in cspec.attributes if a != PERSON_ATTRIBUTE and a in present]:
        class_labels = list(cspec.attributes[axis].labels)
        bins = class_labels + list(BINS)
        sub = labels[labels["attribute"] == axis]
        unknown = set(sub["label"].unique()) - set(bins)
        if unknown:
            raise UserError(f"measurements: label {sorted(unknown)[0]!r} of {axis!r} is not in classifier {cspec.id!r} (re-run `t2ibias measure`)")
        matrix = _count_matrix(sub["prompt_id"], order, sub["label"], bins)
        refs = _references(prompts, axis, class_labels)
        if ci_method == "percentile":
            rows += _prompt_rows(axis, order, bins, len(class_labels), matrix, refs, base_seed)
        else:
            for i, pid in enumerate(order):
                rows += _group_rows(axis, "prompt_id", pid, bins, len(class_labels), matrix[i : i + 1],
                                    _rng(base_seed, axis, "prompt_id", pid), refs.get(pid), ci_method)
        for column in GROUP_COLUMNS:
            values = [str(v) for v in prompts[column]] if column in prompts else []
            if len(set(values)) < 2 and column != "family":
                continue  # one group only: the same numbers as "all"
            for value in dict.fromkeys(values):
                idx = [i for i, v in enumerate(values) if v == value]
                group_refs = {refs[order[i]][1]: refs[order[i]] for i in idx if order[i] in refs}
                shared = next(iter(group_refs.values())) if len(group_refs) == 1 and len(idx) == sum(order[i] in refs for i in idx) else None
                rows += _group_rows(axis, column, value, bins, len(class_labels), matrix[idx],
                                    _rng(base_seed, axis, column, value), shared, ci_method)
        rows += _group_rows(axis, "all", "all", bins, len(class_labels), matrix, _rng(base_seed, axis, "all"), None, ci_method)
        rows += _seed_rows(axis, bins, len(class_labels), sub)
    return rows


def _count_matrix(rows: pd.Series, row_order: list[Any], labels: pd.Series, bins: list[str]) -> np.ndarray:
    """(len(row_order), len(bins)) counts of ``labels`` per value of ``rows`` (values outside the order are dropped)."""
    r = pd.Categorical(rows.to_numpy(), categories=row_order).codes.astype(np.int64)
    c = pd.Categorical(labels.to_numpy(), categories=bins).codes.astype(np.int64)
    keep = (r >= 0) & (c >= 0)
    flat = np.bincount(r[keep] * len(bins) + c[keep], minlength=len(row_order) * len(bins))
    return flat.reshape(len(row_order), len(bins))


def _seed_rows(axis: str, bins: list[str], n_labels: int, sub: pd.DataFrame) -> list[dict[str, Any]]:
    """Seed-to-seed variation, apart from the bootstrap over prompts: the standard deviation,
    across image indices (seed slots), of each all-prompt estimate computed from one slot alone."""
    slots = sorted(sub["image_index"].unique())
    if len(slots) < 2:
        return []
    counts = _count_matrix(sub["image_index"], slots, sub["label"], bins)
    rows = []
    shares = proportions(counts)
    note = f"standard deviation over {len(slots)} seed slots"
    for k, label in enumerate(bins):
        rows.append(_row("proportion_seed_sd", axis, "all", "all", label, float(np.std(shares[:, k], ddof=1)), None, len(slots), note))
    for m in SKEW_METRICS:
        per_slot = m.fn(counts[:, :n_labels])
        finite = per_slot[np.isfinite(per_slot)]
        value = float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan
        rows.append(_row(f"{m.name}_seed_sd", axis, "all", "all", None, value, None, len(finite), note))
    return rows


def _location_rows(run_dir: Path, spec: dict[str, Any], prompts: pd.DataFrame, labels: pd.DataFrame) -> list[dict[str, Any]]:
    """Neutral-vs-place embedding distances, for prompt sets with geographic variants."""
    if "place" not in prompts or prompts["place"].isna().all():
        return []
    measurer = run_measurer(run_dir, resolve_classifier_spec(spec["classifier"]["id"]))
    emb = read_measurements(run_dir, EMBEDDINGS_FILE)
    emb = emb[emb["measurer"] == measurer]
    vectors = {k: np.asarray(v, dtype=np.float32) for k, v in zip(emb["key"], emb["embedding"])}
    keys_by_prompt = labels.drop_duplicates("key").groupby("prompt_id")["key"].apply(list).to_dict()
    return location_rows(prompts, keys_by_prompt, vectors, N_RESAMPLES, CONFIDENCE, int(spec.get("base_seed", 0)))


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def score_stage(run_dir: Path, ci_method: str = "percentile", audit: str | Path | None = None) -> dict[str, Any]:
    """Write ``image_labels.parquet``, ``metrics.json``, ``metrics.csv`` and ``instrument.json``
    (the classifier's audit, corrected proportions, agreement between measurers; ``audit`` is an
    audit file to use instead of the classifier's registered one); return the metrics document."""
    spec = read_spec(run_dir)
    prompts = read_prompts(run_dir, spec)
    labels = image_labels(run_dir, spec)
    rows = compute_metrics(labels, prompts, spec, ci_method) + _location_rows(run_dir, spec, prompts, labels)
    buf = io.BytesIO()
    labels.to_parquet(buf, index=False)
    atomic_write_bytes(run_dir / IMAGE_LABELS_FILE, buf.getvalue())
    doc = {
        "t2ibias_version": __version__,
        "run_fingerprint": spec["fingerprint"],
        "bootstrap": {"n_resamples": N_RESAMPLES, "method": ci_method, "confidence": CONFIDENCE, "seed": int(spec.get("base_seed", 0)),
                      "resampling": "images within a prompt; prompts then images within them for family and all"},
        "metrics": METRIC_INFO,
        "rows": [{k: _json_safe(r[k]) for k in ROW_KEYS} for r in rows],
    }
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(doc, indent=1) + "\n")
    from t2ibias.csvsafe import frame_to_csv
    atomic_write_text(run_dir / "metrics.csv", frame_to_csv(pd.DataFrame(rows, columns=list(ROW_KEYS))))
    from t2ibias.metrics.instrument import INSTRUMENT_FILE, instrument_doc

    instrument = instrument_doc(run_dir, spec, prompts, labels, audit=audit)
    atomic_write_text(run_dir / INSTRUMENT_FILE, json.dumps(instrument, indent=1, allow_nan=False) + "\n")
    return doc
