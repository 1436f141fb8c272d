"""Performance with ground truth, disaggregated by group (classifier audits, FACET-style tables).

:func:`by_group` wraps fairlearn's :class:`~fairlearn.metrics.MetricFrame`: one value per
group, a bootstrap interval per group, and the between-group ``difference()`` (largest minus
smallest group value) and ``ratio()`` (smallest over largest), each with an interval.

Intervals come from MetricFrame's own bootstrap (``n_boot``, ``ci_quantiles``,
``random_state``; fairlearn ≥ 0.11) — it resamples all rows together, so group sizes vary between
replicates. ``engine="vectorized"`` (the fallback when MetricFrame has no bootstrap) resamples
rows within each group instead (group sizes fixed) in one multinomial draw; it is about three
orders of magnitude faster and agrees within Monte-Carlo error.

FACET's minimum-n policy: a group whose metric averages over fewer than ``min_n`` items (all of
its rows for accuracy, its positives for recall) keeps its own row, flagged in ``note``, but is
left out of ``difference()`` and ``ratio()``, and the summaries' notes name it; with fewer than
two groups left they are NaN.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from t2ibias.metrics.bootstrap import MIN_N, percentile_intervals, resample_counts_many

METRICS = ("accuracy", "recall")
ENGINES = ("auto", "fairlearn", "vectorized")
TABLE_COLUMNS = ("group", "value", "ci_low", "ci_high", "n", "n_group", "note")


def _accuracy(y_true: Any, y_pred: Any) -> float:
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(yt == yp)) if yt.size else math.nan


def _recall_for(pos_label: Any):
    def recall(y_true: Any, y_pred: Any) -> float:
        yt, yp = np.asarray(y_true), np.asarray(y_pred)
        positive = yt == pos_label
        n_pos = int(positive.sum())
        return float(np.sum(positive & (yp == pos_label)) / n_pos) if n_pos else math.nan

    return recall


def fairlearn_has_bootstrap() -> bool:
    """Whether the installed fairlearn's MetricFrame takes ``n_boot`` / ``ci_quantiles`` / ``random_state``."""
    try:
        from fairlearn.metrics import MetricFrame
    except ImportError:  # pragma: no cover - fairlearn is a dependency
        return False
    params = inspect.signature(MetricFrame.__init__).parameters
    return all(p in params for p in ("n_boot", "ci_quantiles", "random_state"))


@dataclass
class Disaggregated:
    """Per-group values (``table``) and the between-group summaries of one metric."""

    metric: str
    table: pd.DataFrame
    overall: float
    engine: str
    n_resamples: int
    confidence: float
    min_n: int
    _summaries: dict[str, dict[str, Any]] = field(repr=False)

    def difference(self) -> dict[str, Any]:
        """max − min of the group values over groups with n ≥ min_n: value, ci_low, ci_high, groups, note."""
        return dict(self._summaries["difference"])

    def ratio(self) -> dict[str, Any]:
        """min / max of the group values over groups with n ≥ min_n: value, ci_low, ci_high, groups, note."""
        return dict(self._summaries["ratio"])


def _summary(value: float, ci: tuple[float, float], groups: list[Any], note: str) -> dict[str, Any]:
    return {"value": float(value), "ci_low": float(ci[0]), "ci_high": float(ci[1]), "groups": list(groups), "note": note}


def _empty_summaries(note: str) -> dict[str, dict[str, Any]]:
    nan = (math.nan, math.nan)
    return {"difference": _summary(math.nan, nan, [], note), "ratio": _summary(math.nan, nan, [], note)}


def _excluded_note(small: list[tuple[Any, int]], min_n: int) -> str:
    return "; ".join(f"n={n} < {min_n} for group {g}: left out" for g, n in small)


def by_group(y_true: Any, y_pred: Any, groups: Any, metric: str = "accuracy", n_resamples: int = 1000, seed: int = 0, *,
             confidence: float = 0.95, min_n: int = MIN_N, pos_label: Any = 1, engine: str = "auto") -> Disaggregated:
    """Disaggregate ``metric`` ("accuracy" or "recall" of ``pos_label``) over ``groups``.

    Returns a :class:`Disaggregated` whose ``table`` has one row per group (sorted): group,
    value, ci_low, ci_high (percentile bootstrap at ``confidence``), n (items the value averages
    over: the group's rows for accuracy, its positives for recall), n_group (rows) and note.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {ENGINES}")
    yt, yp, g = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    if not (len(yt) == len(yp) == len(g)):
        raise ValueError(f"y_true, y_pred and groups must have the same length, got {len(yt)}, {len(yp)}, {len(g)}")
    if len(yt) == 0:
        raise ValueError("no rows to disaggregate")
    if engine == "auto":
        engine = "fairlearn" if fairlearn_has_bootstrap() else "vectorized"
    fn = _accuracy if metric == "accuracy" else _recall_for(pos_label)

    levels, inverse = np.unique(g, return_inverse=True)
    n_group = np.bincount(inverse, minlength=len(levels))
    if metric == "accuracy":
        n_metric = n_group
    else:
        n_metric = np.bincount(inverse, weights=(yt == pos_label), minlength=len(levels)).astype(np.int64)
    eligible = n_metric >= min_n
    small = [(levels[i], int(n_metric[i])) for i in np.flatnonzero(~eligible)]

    if engine == "fairlearn":
        values, lo, hi, summaries = _fairlearn(fn, yt, yp, g, levels, eligible, small, n_resamples, seed, confidence, min_n)
    else:
        values, lo, hi, summaries = _vectorized(metric, yt, yp, inverse, levels, pos_label, eligible, small,
                                                n_resamples, seed, confidence, min_n)

    notes = [f"n={int(n)} < {min_n}: not compared" if not ok else "" for n, ok in zip(n_metric, eligible)]
    table = pd.DataFrame({
        "group": levels, "value": values, "ci_low": lo, "ci_high": hi,
        "n": n_metric.astype(np.int64), "n_group": n_group.astype(np.int64), "note": notes,
    }, columns=list(TABLE_COLUMNS))
    return Disaggregated(metric, table, fn(yt, yp), engine, int(n_resamples), float(confidence), int(min_n), summaries)


def _fairlearn(fn, yt, yp, g, levels, eligible, small, n_resamples, seed, confidence, min_n):
    from fairlearn.metrics import MetricFrame

    alpha = (1.0 - confidence) / 2.0
    boot = {"n_boot": int(n_resamples), "ci_quantiles": [alpha, 1.0 - alpha], "random_state": int(seed)}
    def metric_frame(rows: Any) -> Any:
        with warnings.catch_warnings():
            # a small group absent from a resample is NaN there; fairlearn's nanquantile warns about it
            warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)
            return MetricFrame(metrics=fn, y_true=yt[rows], y_pred=yp[rows], sensitive_features=g[rows], **boot)

    frame = metric_frame(slice(None))
    values = frame.by_group.reindex(levels).to_numpy(dtype=float)
    ci = frame.by_group_ci
    lo = ci[0].reindex(levels).to_numpy(dtype=float)
    hi = ci[1].reindex(levels).to_numpy(dtype=float)

    kept = [lv for lv, ok in zip(levels, eligible) if ok]
    note = _excluded_note(small, min_n)
    if len(kept) < 2:
        return values, lo, hi, _empty_summaries((note + "; " if note else "") + "fewer than two groups to compare")
    if small:
        frame = metric_frame(np.isin(g, kept))
    summaries = {
        "difference": _summary(frame.difference(), frame.difference_ci(), kept, note),
        "ratio": _summary(frame.ratio(), frame.ratio_ci(), kept, note),
    }
    return values, lo, hi, summaries


def _vectorized(metric, yt, yp, inverse, levels, pos_label, eligible, small, n_resamples, seed, confidence, min_n):
    # cell counts per group: [hits, misses, rows outside the metric's denominator]
    if metric == "accuracy":
        hit, miss = yt == yp, yt != yp
    else:
        positive = yt == pos_label
        hit, miss = positive & (yp == pos_label), positive & (yp != pos_label)
    code = np.where(hit, 0, np.where(miss, 1, 2))
    cells = np.bincount(inverse * 3 + code, minlength=3 * len(levels)).reshape(len(levels), 3)

    def rate(c: np.ndarray) -> np.ndarray:
        den = c[..., 0] + c[..., 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, c[..., 0] / np.maximum(den, 1), np.nan)

    values = rate(cells)
    reps = rate(resample_counts_many(cells, n_resamples, np.random.default_rng(seed)))  # (B, G)
    lo, hi = percentile_intervals(reps, confidence)

    note = _excluded_note(small, min_n)
    kept_idx = np.flatnonzero(eligible)
    kept = [levels[i] for i in kept_idx]
    if len(kept) < 2:
        return values, lo, hi, _empty_summaries((note + "; " if note else "") + "fewer than two groups to compare")
    sub, rsub = values[kept_idx], reps[:, kept_idx]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates stay NaN on purpose
        rmax, rmin = np.nanmax(rsub, axis=1), np.nanmin(rsub, axis=1)
        diff_reps = rmax - rmin
        ratio_reps = np.where(rmax > 0, rmin / np.where(rmax > 0, rmax, 1.0), np.nan)
        top, bottom = float(np.nanmax(sub)), float(np.nanmin(sub))
    ratio_value = bottom / top if top > 0 else math.nan
    summaries = {
        "difference": _summary(top - bottom, tuple(x.item() for x in percentile_intervals(diff_reps, confidence)), kept, note),
        "ratio": _summary(ratio_value, tuple(x.item() for x in percentile_intervals(ratio_reps, confidence)), kept, note),
    }
    return values, lo, hi, summaries

