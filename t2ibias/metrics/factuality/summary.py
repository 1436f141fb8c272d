"""DoFaiR metrics over instances, with bootstrap intervals: overall and per culture.

Over the scored instances: DDA, IDA and IDF are means, and FDD (factual diversity divergence) =
mean(diversity) − mean(gold diversity). An instance whose image has no detected face, or that
has no image, is not scored: it counts in ``n_instances`` but not in ``n_scored``. Success rate =
instances with at least one detected face / all instances (rows without an image included).

Confidence intervals resample instances, the units of the benchmark, each with its one image
(:func:`t2ibias.stats.cluster.resample_weights`; all instances, scored or not, so ``n_scored``
varies across resamples), 1000 resamples, seeded: percentile intervals for DDA, IDA, IDF and
FDD, and Clopper–Pearson's for the success rate, a share of independent instances
(``<metric>_method`` names each).

The metrics are :class:`t2ibias.core.rows.MetricRow` rows (:func:`summary_rows`); the factuality
JSON publishes them in its own layout (:func:`summarize`): ``<metric>``, ``<metric>_method`` and
``<metric>_ci`` = [low, high] keys, with ``n_instances`` and ``n_scored``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from t2ibias.core.rows import MetricRow
from t2ibias.metrics.factuality.join import per_instance_scores
from t2ibias.stats.binomial import clopper_pearson
from t2ibias.stats.bootstrap import percentile_interval
from t2ibias.stats.cluster import resample_weights
from t2ibias.stats.rng import seeded

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
#: the metrics that are means over scored instances (their ``n`` is ``n_scored``)
MEAN_METRICS = METRICS[:-1]
#: DDA, IDA, IDF and the success rate are better high; FDD is best at 0
HIGHER_IS_BETTER = {**dict.fromkeys(_COLUMN, True), "factual_diversity_divergence": None, "success_rate": True}
N_RESAMPLES = 1000
SEED = 0
MEAN_METHOD = "percentile, instances resampled"
SHARE_METHOD = "clopper-pearson"


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None when it is missing or not finite."""
    return None if value is None or not np.isfinite(value) else float(value)


def summary_rows(table: pd.DataFrame, n_resamples: int = N_RESAMPLES, seed: int = SEED, confidence: float = 0.95,
                 group: str = "all", group_by: str | None = None) -> list[MetricRow]:
    """One row per metric of :data:`METRICS` over a per-instance table: value (None when nothing
    is scored), interval and ``n`` (scored instances for the means, all instances for the success
    rate). ``group`` seeds the resamples; ``group_by`` defaults to ``all`` for the group ``all``
    and ``culture`` for any other."""
    n = len(table)
    scored = table["scored"].to_numpy(dtype=bool)
    n_scored = int(scored.sum())
    s = scored.astype(float)
    x = {name: np.where(scored, table[col].to_numpy(dtype=float), 0.0) for name, col in _COLUMN.items()}
    div = np.where(scored, table["diversity"].to_numpy(dtype=float), 0.0)
    gold = np.where(scored, table["gold_diversity"].to_numpy(dtype=float), 0.0)
    success = table["success"].to_numpy(dtype=float)
    value: dict[str, float | None] = dict.fromkeys(METRICS)
    ci: dict[str, tuple[float | None, float | None]] = {name: (None, None) for name in METRICS}
    if n_scored:
        for name, values in x.items():
            value[name] = float(values.sum() / n_scored)
        value["factual_diversity_divergence"] = float((div.sum() - gold.sum()) / n_scored)
    if n:
        value["success_rate"] = float(success.mean())
        lo, hi = clopper_pearson(success.sum(), n, confidence)
        ci["success_rate"] = (finite_or_none(float(lo)), finite_or_none(float(hi)))
    if n and n_scored:
        w = resample_weights(n, n_resamples, seeded(seed, group)).astype(float)  # (B, n): instances resampled
        with np.errstate(invalid="ignore", divide="ignore"):
            ws = w @ s
            replicates = {name: (w @ values) / ws for name, values in x.items()}
            replicates["factual_diversity_divergence"] = (w @ (div - gold)) / ws
        for name, reps in replicates.items():
            lo, hi = percentile_interval(reps, confidence)
            ci[name] = (finite_or_none(lo), finite_or_none(hi))
    axis = table.attrs.get("axis")
    group_by = group_by or ("all" if group == "all" else "culture")
    return [MetricRow(metric=name, axis=axis, group_by=group_by, group=group, value=value[name],
                      ci_low=ci[name][0], ci_high=ci[name][1], n=n if name == "success_rate" else n_scored,
                      higher_is_better=HIGHER_IS_BETTER[name],
                      method=SHARE_METHOD if name == "success_rate" else MEAN_METHOD)
            for name in METRICS]


def published(rows: list[MetricRow]) -> dict[str, Any]:
    """The factuality JSON's layout of one group's :func:`summary_rows`: the metrics,
    ``n_instances``, ``n_scored``, each ``<metric>_method``, then each ``<metric>_ci``.

    The ``_ci`` keys come in the order the file has always had them: the success rate's first
    whenever there are instances (its interval needs no resamples)."""
    by = {r.metric: r for r in rows}
    out: dict[str, Any] = {name: by[name].value for name in METRICS}
    out["n_instances"] = by["success_rate"].n
    out["n_scored"] = by[MEAN_METRICS[0]].n
    for name in METRICS:
        out[f"{name}_method"] = by[name].method
    for name in (METRICS if out["n_instances"] == 0 else ("success_rate", *MEAN_METRICS)):
        out[f"{name}_ci"] = [by[name].ci_low, by[name].ci_high]
    return out


def summarize(
    table: pd.DataFrame, n_resamples: int = N_RESAMPLES, seed: int = SEED, confidence: float = 0.95, group: str = "all"
) -> dict[str, Any]:
    """The metrics, ``n_instances``, ``n_scored``, ``<metric>_ci`` and ``<metric>_method`` of a per-instance table."""
    return published(summary_rows(table, n_resamples, seed, confidence, group))


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
    :func:`t2ibias.metrics.factuality.join.per_instance_scores`.
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
