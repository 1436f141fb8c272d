"""The factuality tax of a diversity intervention (Wan et al. 2024): what DDA, IDA and IDF lose,
and what diversity gains, against the images made without it.

Instances are paired by ``instance_id`` and kept when scored (at least one face) under both;
each delta is the mean over pairs of (intervention − baseline), with a percentile interval from
resampling the pairs. The deltas are :class:`t2ibias.core.rows.MetricRow` rows
(:func:`tax_rows`: metric ``delta_<m>``, grouped by intervention, ``n`` = pairs), published as a
dict per intervention (:func:`factuality_tax`) or one table row per intervention
(:func:`factuality_tax_table`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.rows import MetricRow
from t2ibias.metrics.factuality.faces import load_faces
from t2ibias.metrics.factuality.join import per_instance_scores
from t2ibias.metrics.factuality.summary import N_RESAMPLES, SEED, finite_or_none
from t2ibias.prompts.dofair import load_dofair_instances
from t2ibias.stats.bootstrap import percentile_interval
from t2ibias.stats.cluster import resample_weights
from t2ibias.stats.rng import seeded

TAX_METRICS = ("dominant_demographic_accuracy", "involved_demographic_accuracy", "involved_demographic_f1", "diversity")
#: per-instance column of each metric the tax is taken of
_COLUMN = {"dominant_demographic_accuracy": "dda", "involved_demographic_accuracy": "ida",
           "involved_demographic_f1": "idf", "diversity": "diversity"}
TAX_METHOD = "percentile, instance pairs resampled"


def _indexed(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The scored instances of one intervention's per-instance table, by instance id."""
    dup = frame["instance_id"][frame["instance_id"].duplicated()]
    if len(dup):
        raise UserError(f"intervention {name}: column instance_id: {dup.iloc[0]!r} repeats (one row per instance)")
    frame = frame.set_index("instance_id")
    return frame[frame["scored"].astype(bool)]


def tax_rows(
    results_by_intervention: Mapping[str, pd.DataFrame],
    baseline: str = "none",
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = 0.95,
) -> list[MetricRow]:
    """For each intervention other than ``baseline`` (in the mapping's order), one row per metric
    of :data:`TAX_METRICS`: ``delta_<m>`` over the pairs scored under both, with its paired
    interval; value None when no pair exists."""
    if baseline not in results_by_intervention:
        raise UserError(f"interventions: no {baseline!r} results (the baseline; have {', '.join(results_by_intervention) or 'none'})")
    base = _indexed(baseline, results_by_intervention[baseline])
    rows: list[MetricRow] = []
    for name, frame in results_by_intervention.items():
        if name == baseline:
            continue
        other = _indexed(name, frame)
        ids = [i for i in base.index if i in other.index]
        common = dict(axis=frame.attrs.get("axis"), group_by="intervention", group=name, n=len(ids), method=TAX_METHOD)
        if not ids:
            rows += [MetricRow(metric=f"delta_{m}", value=None, **common) for m in TAX_METRICS]
            continue
        cols = list(_COLUMN.values())
        diffs = other.loc[ids, cols].to_numpy(dtype=float) - base.loc[ids, cols].to_numpy(dtype=float)  # (m, 4)
        w = resample_weights(len(ids), n_resamples, seeded(seed, name)).astype(float)  # pairs resampled
        replicates = (w @ diffs) / len(ids)  # (B, 4)
        for j, metric in enumerate(_COLUMN):
            lo, hi = percentile_interval(replicates[:, j], confidence)
            rows.append(MetricRow(metric=f"delta_{metric}", value=float(diffs[:, j].mean()), ci_low=finite_or_none(lo),
                                  ci_high=finite_or_none(hi), **common))
    return rows


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
    result: dict[str, dict[str, Any]] = {}
    for row in tax_rows(results_by_intervention, baseline, n_resamples=n_resamples, seed=seed, confidence=confidence):
        entry = result.setdefault(str(row.group), {"n_paired": row.n})
        entry[row.metric] = row.value
        entry[f"{row.metric}_ci"] = [row.ci_low, row.ci_high]
    return result


def factuality_tax_table(
    instances: pd.DataFrame | str | Path,
    faces_by_intervention: Mapping[str, pd.DataFrame | str | Path],
    axis: str | None = None,
    dofair_compat: bool = False,
    baseline: str = "none",
    **bootstrap: Any,
) -> pd.DataFrame:
    """The factuality tax of each intervention against ``baseline``, one row per intervention.

    ``instances``: a DoFaiR CSV path or :func:`load_dofair_instances` frame; faces per
    intervention: :func:`load_faces` frames or paths. Columns: ``intervention, n_paired`` and, for
    m in DDA, IDA, IDF (full names) and ``diversity``, ``delta_<m>``, ``delta_<m>_ci_low``,
    ``delta_<m>_ci_high`` (intervention − baseline over instances scored under both).
    ``bootstrap`` passes ``n_resamples``, ``seed``, ``confidence`` on.
    """
    if isinstance(instances, (str, Path)):
        inst = load_dofair_instances(instances)
        inst.attrs["source"] = str(instances)
    else:
        inst = instances
    if axis is None:
        if inst.empty:
            raise UserError(f"{inst.attrs.get('source', 'instances')}:2: no instances (the file has a header but no rows)")
        axis = str(inst["axis"].iloc[0])
    tables = {
        name: per_instance_scores(inst, load_faces(f) if isinstance(f, (str, Path)) else f, axis, dofair_compat)
        for name, f in faces_by_intervention.items()
    }
    out: dict[str, dict[str, Any]] = {}
    for row in tax_rows(tables, baseline=baseline, **bootstrap):
        entry = out.setdefault(str(row.group), {"intervention": row.group, "n_paired": row.n})
        entry[row.metric] = row.value
        entry[f"{row.metric}_ci_low"], entry[f"{row.metric}_ci_high"] = row.ci_low, row.ci_high
    columns = ["intervention", "n_paired"] + [f"delta_{m}{s}" for m in TAX_METRICS for s in ("", "_ci_low", "_ci_high")]
    return pd.DataFrame(list(out.values()), columns=columns)
