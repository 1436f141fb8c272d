"""Agreement between two measurers labelling the same units (images, faces, FACET people).

Two instruments that disagree cannot both be right; where they disagree more for some groups,
at least one of them errs differently across groups. Per scope (overall, then each group) this
reports raw agreement (share of units with the same label) and Cohen's kappa (agreement beyond
what the two label distributions give by chance, Cohen 1960; the point value is
``sklearn.metrics.cohen_kappa_score``), each with n and a percentile bootstrap interval.

Units where either measurer abstained or gave no label are left out and counted in
``n_excluded``. The bootstrap resamples units within the scope; resampling units is a
multinomial draw over the cells of the two measurers' label table, so each replicate's kappa
comes from its own table. Kappa is NaN with a note when both measurers used a single label only
(chance agreement is then 1 and kappa undefined).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from t2ibias.csvsafe import unescape_cell
from t2ibias.errors import UserError
from t2ibias.stats.bootstrap import percentile_intervals

ABSTAIN = "abstain"
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


def _scope(a: np.ndarray, b: np.ndarray, n_excluded: int, group: Any, n_boot: int, rng: np.random.Generator,
           confidence: float) -> list[dict[str, Any]]:
    from sklearn.metrics import cohen_kappa_score

    n = len(a)
    base = {"group": group, "n": int(n), "n_excluded": int(n_excluded)}
    if n == 0:
        return [{**base, "metric": m, "value": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                 "note": "no unit labelled by both measurers"} for m in METRICS]
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
        reps = rng.multinomial(n, table.ravel() / n, size=n_boot).reshape(n_boot, k, k)
        agree_reps = np.trace(reps, axis1=1, axis2=2) / n
        ci["agreement"] = tuple(float(x) for x in percentile_intervals(agree_reps, confidence))
        if math.isfinite(kappa):
            ci["kappa"] = tuple(float(x) for x in percentile_intervals(_kappa_from_tables(reps), confidence))
    return [
        {**base, "metric": "agreement", "value": agreement, "ci_low": ci["agreement"][0], "ci_high": ci["agreement"][1], "note": ""},
        {**base, "metric": "kappa", "value": kappa, "ci_low": ci["kappa"][0], "ci_high": ci["kappa"][1], "note": kappa_note},
    ]


def agreement_rows(frame: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                   where: str = "frame") -> list[dict[str, Any]]:
    """Agreement and Cohen's kappa of ``label_a`` vs ``label_b`` over ``unit``s, overall and per ``group``.

    ``frame`` has one row per unit with columns unit, label_a, label_b and optionally group.
    Returns rows {group (None for overall), metric ("agreement" | "kappa"), value, n,
    n_excluded, ci_low, ci_high, note}: overall first, then groups in sorted order. ``where``
    names the input in error messages.
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
    rng = np.random.default_rng(seed)
    rows = _scope(a[~excluded], b[~excluded], int(excluded.sum()), None, n_boot, rng, confidence)
    if "group" in frame.columns:
        groups = frame["group"].astype(str).to_numpy()
        for g in sorted(set(groups)):
            m = groups == g
            rows += _scope(a[m & ~excluded], b[m & ~excluded], int((m & excluded).sum()), g, n_boot, rng, confidence)
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
