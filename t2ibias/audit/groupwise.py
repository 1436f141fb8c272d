"""Metrics by group with intervals: per-group values, between-group gaps, and calibration.

Per-group values, ``difference()`` and ``ratio()`` come from fairlearn's ``MetricFrame``.
Intervals resample clusters (for the audit: images, the people of one image together, since they
share its lighting and annotators) with :mod:`t2ibias.stats.cluster`, all groups from the same
draws: shares (accuracy, within-range, abstention) get the Korn–Graubard interval with the
resampled variance, mean error and ECE the percentile interval, and gaps between groups
simultaneous intervals from the same joint resample, with a p-value and a Benjamini–Hochberg
q-value (:func:`add_qvalues`). FACET's minimum-n policy applies: groups with fewer than ``min_n``
items, and ``na`` groups, keep their rows but are left out of comparisons.

Calibration is the expected calibration error over equal-width confidence bins (Guo et al.
2017), with its reliability table (:func:`calibration_table`).

Run time: ``engine="vectorized"`` evaluates the resamples as matrix products (seconds);
``engine="fairlearn"`` evaluates the same resamples with a MetricFrame each (tens of ms per
replicate and group table), a slow cross-check that gives the same numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from t2ibias.core.errors import UserError
from t2ibias.stats.bootstrap import percentile_intervals
from t2ibias.stats.cluster import CHUNK as CLUSTER_CHUNK
from t2ibias.stats.cluster import cluster_codes, cluster_group_means, compare_groups, resample_weights, share_interval_clustered
from t2ibias.stats.rng import seeded
from t2ibias.stats.testing import bh_qvalues

N_BINS = 10
ENGINES = ("fairlearn", "vectorized")
#: how each kind of interval is named in the rows (``{unit}``: what was resampled)
SHARE_METHOD = "korn-graubard, {unit} resampled"
PERCENTILE_METHOD = "percentile, {unit} resampled"
COMPARISON_METHOD = "max-t simultaneous, {unit} resampled jointly"
_NAN = {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}


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


def _replicates(per_row: dict[str, np.ndarray], ece_inputs: tuple[np.ndarray, np.ndarray] | None, n_bins: int,
                metrics: dict[str, Callable], groups: np.ndarray, levels: list[str], clusters: np.ndarray,
                n_boot: int, seed: int, engine: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per metric the (B, G + 1) resampled values (last column: all rows) by ``engine``, and the
    (G + 1,) numbers of clusters with a counted row."""
    design, spans = _design(per_row, ece_inputs, n_bins)
    membership = np.concatenate([groups[:, None] == np.array(levels)[None, :], np.ones((len(groups), 1), dtype=bool)], axis=1)
    rng = seeded(seed)
    res = cluster_group_means(design, membership, clusters, n_boot if engine == "vectorized" else 0, rng)
    n_clus = {m: res["n_clusters"][s.start] for m, s in spans.items()}
    reps: dict[str, np.ndarray] = {}
    if n_boot > 0 and engine == "vectorized":
        reps = _metric_replicates(res["replicates"], spans)
    elif n_boot > 0:
        codes, n_clusters = cluster_codes(clusters)
        reps = _fairlearn_replicates(metrics, groups, levels, codes, n_clusters, n_boot, rng)
    return reps, n_clus


@dataclass
class _Table:
    """What one :func:`metric_rows` call shares: the point values (a MetricFrame over all rows),
    the rows each metric counts, the replicates and how each metric's interval is made."""

    frame: Any
    metrics: dict[str, Callable]
    counted: dict[str, np.ndarray]
    groups: np.ndarray
    levels: list[str]
    clusters: np.ndarray
    reps: dict[str, np.ndarray]
    n_clus: dict[str, np.ndarray]
    share: dict[str, bool]
    method: dict[str, str]
    n_boot: int
    confidence: float

    def ci(self, m: str, j: int, value: float, n: int) -> tuple[float, float]:
        """Interval of metric ``m`` in group column ``j`` (the last: all rows); NaN without resamples."""
        if self.n_boot <= 0:
            return math.nan, math.nan
        col = self.reps[m][:, j]
        if self.share[m]:
            lo, hi = share_interval_clustered(np.array(value), col[:, None], np.array(n), np.array(self.n_clus[m][j]),
                                              self.confidence)
        else:
            lo, hi = percentile_intervals(col[:, None], self.confidence)
        return float(lo[0] if np.ndim(lo) else lo), float(hi[0] if np.ndim(hi) else hi)

    def overall(self) -> dict[str, dict[str, Any]]:
        out = {}
        for m in self.metrics:
            value, n_all = float(self.frame.overall[m]), int(self.counted[m].sum())
            lo, hi = self.ci(m, len(self.levels), value, n_all)
            out[m] = {"value": value, "n": n_all, "ci_low": lo, "ci_high": hi, "method": self.method[m]}
        return out

    def by_group(self, min_n: int) -> tuple[list[dict[str, Any]], dict[str, tuple[str, ...]]]:
        """A row per metric and group with a counted row, and per metric the groups to compare."""
        rows: list[dict[str, Any]] = []
        kept_by_metric: dict[str, tuple[str, ...]] = {}
        for m in self.metrics:
            kept = []
            for j, g in enumerate(self.levels):
                n_g = int((self.counted[m] & (self.groups == g)).sum())
                if n_g == 0:
                    continue
                value = float(self.frame.by_group.loc[g, m])
                lo, hi = self.ci(m, j, value, n_g)
                small = n_g < min_n
                note = f"n={n_g} < {min_n}: not compared" if small else ("na group: not compared" if g == "na" else "")
                rows.append({"group": g, "metric": m, "value": value, "n": n_g,
                             "ci_low": lo, "ci_high": hi, "note": note, "method": self.method[m]})
                if not small and g != "na":
                    kept.append(g)
            kept_by_metric[m] = tuple(kept)
        return rows, kept_by_metric

    def comparisons(self, kept_by_metric: dict[str, tuple[str, ...]], method: str) -> list[dict[str, Any]]:
        """Gap and ratio over each metric's kept groups, metrics with the same kept groups together."""
        by_kept: dict[tuple[str, ...], list[str]] = {}
        for m, kept in kept_by_metric.items():
            by_kept.setdefault(kept, []).append(m)
        out = []
        for kept, ms in by_kept.items():
            if len(kept) < 2:
                out += [{"metric": m, "groups": list(kept), "difference": dict(_NAN), "ratio": dict(_NAN),
                         "note": "fewer than two groups with n >= min_n to compare",
                         "p_value": math.nan, "q_value": math.nan, "method": method} for m in ms]
            else:
                out += self._compared(kept, ms, method)
        return out

    def _compared(self, kept: tuple[str, ...], ms: list[str], method: str) -> list[dict[str, Any]]:
        sub = self.frame
        if set(kept) != set(self.levels):
            mask = np.isin(self.groups, list(kept))
            sub = _frame({m: self.metrics[m] for m in ms}, np.arange(len(self.groups))[mask], self.groups[mask])
        diff, ratio = sub.difference(), sub.ratio()
        out = []
        for m in ms:
            d = {"value": float(diff[m]), "ci_low": math.nan, "ci_high": math.nan}
            r = {"value": float(ratio[m]), "ci_low": math.nan, "ci_high": math.nan}
            p = math.nan
            if self.n_boot > 0:
                cols = [self.levels.index(g) for g in kept]
                est = np.array([float(self.frame.by_group.loc[g, m]) for g in kept])
                in_kept = self.counted[m] & np.isin(self.groups, list(kept))
                c = compare_groups(est, self.reps[m][:, cols], self.confidence,
                                   n_clusters=len(np.unique(self.clusters[in_kept])))
                d["ci_low"], d["ci_high"] = c["difference"][1:]
                r["ci_low"], r["ci_high"] = c["ratio"][1:]
                p = c["p_value"]
            out.append({"metric": m, "groups": list(kept), "difference": d, "ratio": r, "note": "",
                        "p_value": p, "q_value": math.nan, "method": method})
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
    reps, n_clus = _replicates(per_row, ece_inputs, n_bins, metrics, groups, levels, clusters, n_boot, seed, engine)
    table = _Table(frame, metrics, counted, groups, levels, clusters, reps, n_clus, share, method, n_boot, confidence)
    out_rows, kept_by_metric = table.by_group(min_n)
    comparisons = table.comparisons(kept_by_metric, COMPARISON_METHOD.format(unit=unit))
    add_qvalues(comparisons)
    return table.overall(), out_rows, comparisons


def add_qvalues(comparisons: list[dict[str, Any]]) -> None:
    """Set each comparison's ``q_value``: Benjamini–Hochberg over the p-values of all of them."""
    q = bh_qvalues(np.array([c.get("p_value", math.nan) for c in comparisons], dtype=float))
    for c, v in zip(comparisons, q):
        c["q_value"] = float(v)
