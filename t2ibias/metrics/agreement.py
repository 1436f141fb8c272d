"""Agreement between two measurers labelling the same units (images, faces, FACET people).

Two instruments that disagree cannot both be right; where they disagree more for some groups,
at least one of them errs differently across groups. Per scope (overall, then each group) this
reports raw agreement (share of units with the same label) and Cohen's kappa (agreement beyond
what the two label distributions give by chance, Cohen 1960; the point value is
``sklearn.metrics.cohen_kappa_score``), each with n and a percentile bootstrap interval.

Units where either measurer abstained or gave no label are left out and counted in
``n_excluded``. The bootstrap resamples within the scope what was sampled: units, or, given an
``image`` column, images with all their faces together, and given a ``prompt`` column too,
prompts and then images within each drawn prompt (:mod:`t2ibias.stats.cluster`); each
replicate's kappa comes from its own resampled label table. Raw agreement is a share: its
interval is Korn–Graubard's with the resampled variance; kappa's is the percentile interval.
Kappa is NaN with a note when both measurers used a single label only (chance agreement is then
1 and kappa undefined).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from t2ibias.core.csvsafe import unescape_cell
from t2ibias.core.errors import UserError
from t2ibias.core.vocab import ABSTAIN
from t2ibias.stats.bootstrap import percentile_intervals
from t2ibias.stats.cluster import cluster_group_means, share_interval_clustered
from t2ibias.stats.rng import seeded

REQUIRED = ("unit", "label_a", "label_b")
METRICS = ("agreement", "kappa")


def _kappa_from_tables(tables: np.ndarray) -> np.ndarray:
    """Cohen's kappa of (..., k, k) count tables: (p_o − p_e) / (1 − p_e); NaN when p_e = 1 or n = 0."""
    t = np.asarray(tables, dtype=float)
    n = t.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        po = np.trace(t, axis1=-2, axis2=-1) / n
        pe = (t.sum(axis=-1) * t.sum(axis=-2)).sum(axis=-1) / n**2
        return np.where((n > 0) & (pe < 1.0 - 1e-12), (po - pe) / (1.0 - pe), np.nan)


def _missing(values: pd.Series) -> np.ndarray:
    as_str = values.astype(str).str.strip()
    return (values.isna() | as_str.isin(["", ABSTAIN, "None", "nan"])).to_numpy()


def _scope(a: np.ndarray, b: np.ndarray, images: np.ndarray, prompts: np.ndarray | None, n_excluded: int, group: Any,
           n_boot: int, rng: np.random.Generator, confidence: float, unit: str) -> list[dict[str, Any]]:
    from sklearn.metrics import cohen_kappa_score

    n = len(a)
    base = {"group": group, "n": int(n), "n_excluded": int(n_excluded)}
    if n == 0:
        return [{**base, "metric": m, "value": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                 "note": "no unit labelled by both measurers", "method": ""} for m in METRICS]
    cats = sorted(set(a) | set(b))
    ia = np.searchsorted(cats, a)
    ib = np.searchsorted(cats, b)
    k = len(cats)
    table = np.bincount(ia * k + ib, minlength=k * k).reshape(k, k)
    agreement = float(np.trace(table) / n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kappa = float(cohen_kappa_score(a, b, labels=cats)) if k > 1 else math.nan
    kappa_note = "" if math.isfinite(kappa) else "both measurers used one label only: kappa undefined"
    ci = {m: (math.nan, math.nan) for m in METRICS}
    if n_boot > 0:
        cells = np.zeros((n, k * k))
        cells[np.arange(n), ia * k + ib] = 1.0
        res = cluster_group_means(cells, np.zeros(n, dtype=np.int64), images, n_boot, rng, outer=prompts)
        shares = res["replicates"][:, :, 0].reshape(n_boot, k, k)  # each replicate's table, as shares
        agree_reps = np.trace(shares, axis1=1, axis2=2)
        n_images = len(set(images.tolist()))
        lo, hi = share_interval_clustered(np.array(agreement), agree_reps, np.array(n), np.array(n_images), confidence)
        ci["agreement"] = (float(lo), float(hi))
        if math.isfinite(kappa):
            ci["kappa"] = tuple(float(x) for x in percentile_intervals(_kappa_from_tables(shares), confidence))
    return [
        {**base, "metric": "agreement", "value": agreement, "ci_low": ci["agreement"][0], "ci_high": ci["agreement"][1],
         "note": "", "method": f"korn-graubard, {unit} resampled"},
        {**base, "metric": "kappa", "value": kappa, "ci_low": ci["kappa"][0], "ci_high": ci["kappa"][1], "note": kappa_note,
         "method": f"percentile, {unit} resampled"},
    ]


def agreement_rows(frame: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                   where: str = "frame") -> list[dict[str, Any]]:
    """Agreement and Cohen's kappa of ``label_a`` vs ``label_b`` over ``unit``s, overall and per ``group``.

    ``frame`` has one row per unit with columns unit, label_a, label_b and optionally group,
    image (units of one image are resampled together) and prompt (with image: prompts, then images
    within prompts, are resampled). Returns rows {group (None for overall), metric ("agreement" |
    "kappa"), value, n, n_excluded, ci_low, ci_high, note, method}: overall first, then groups in
    sorted order. ``where`` names the input in error messages.
    """
    if not isinstance(frame, pd.DataFrame):
        raise UserError(f"{where}: needs a table with columns {', '.join(REQUIRED)} (and optionally group)")
    for col in REQUIRED:
        if col not in frame.columns:
            raise UserError(f"{where}: column {col}: missing (give columns {', '.join(REQUIRED)} and optionally group)")
    dup = frame["unit"].duplicated()
    if dup.any():
        raise UserError(f"{where}: column unit: {frame['unit'][dup].iloc[0]!r} appears more than once (one row per unit)")
    if not 0 < confidence < 1:
        raise UserError(f"confidence: {confidence} (use a number between 0 and 1)")
    excluded = _missing(frame["label_a"]) | _missing(frame["label_b"])
    a = frame["label_a"].astype(str).str.strip().to_numpy()
    b = frame["label_b"].astype(str).str.strip().to_numpy()
    if "prompt" in frame.columns and "image" not in frame.columns:
        raise UserError(f"{where}: column prompt: given without an image column (name each unit's image too)")
    for col in ("image", "prompt"):
        if col in frame.columns and frame[col].isna().any():
            raise UserError(f"{where}: column {col}: empty cells (give every unit its {col})")
    images = frame["image"].astype(str).to_numpy() if "image" in frame.columns else frame["unit"].astype(str).to_numpy()
    prompts = frame["prompt"].astype(str).to_numpy() if "prompt" in frame.columns else None
    if prompts is not None and pd.Series(prompts).groupby(images).nunique().max() > 1:
        raise UserError(f"{where}: column prompt: one image under two prompts (an image belongs to one prompt)")
    unit = ("prompts, then images within prompts" if prompts is not None
            else "images" if "image" in frame.columns else "units")

    def scope(m: np.ndarray, group: Any) -> list[dict[str, Any]]:
        keep = m & ~excluded
        return _scope(a[keep], b[keep], images[keep], None if prompts is None else prompts[keep],
                      int((m & excluded).sum()), group, n_boot, seeded(seed, "agreement", "" if group is None else group),
                      confidence, unit)

    rows = scope(np.ones(len(frame), dtype=bool), None)
    if "group" in frame.columns:
        groups = frame["group"].astype(str).to_numpy()
        for g in sorted(set(groups)):
            rows += scope(groups == g, g)
    return rows


def paired_predictions(audit_a: str | Path, audit_b: str | Path, attribute: str, *, group: str = "true") -> pd.DataFrame:
    """Frame for :func:`agreement_rows` from the ``predictions.csv`` of two audits of the same
    FACET people: unit = person_id, label_a / label_b = each classifier's label for ``attribute``,
    group = the annotators' class (``group="true"``) or classifier a's label (``group="label_a"``).
    People audited by only one of the two are left out."""
    if group not in ("true", "label_a"):
        raise UserError(f"group: {group!r} (use 'true' or 'label_a')")
    frames = []
    for name, folder in (("a", audit_a), ("b", audit_b)):
        path = Path(folder)
        path = path / "predictions.csv" if path.is_dir() else path
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise UserError(f"{path}: file not found (pass the --out folder of `t2ibias audit`)") from None
        df = df.map(unescape_cell).rename(columns=unescape_cell)  # cells the audit quoted for spreadsheets
        for col in ("person_id", "attribute", "true", "pred"):
            if col not in df.columns:
                raise UserError(f"{path}: column {col}: missing (re-run `t2ibias audit`)")
        df = df[df["attribute"] == attribute]
        if df.empty:
            raise UserError(f"{path}: attribute {attribute!r}: no predictions (audit a classifier that returns it)")
        frames.append(df[["person_id", "true", "pred"]].rename(columns={"pred": f"label_{name}", "true": f"true_{name}"}))
    merged = frames[0].merge(frames[1], on="person_id", how="inner")
    out = pd.DataFrame({"unit": merged["person_id"], "label_a": merged["label_a"], "label_b": merged["label_b"]})
    out["group"] = merged["true_a"] if group == "true" else merged["label_a"]
    return out
