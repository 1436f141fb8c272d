"""The one disaggregation step of every FACET task: per-person values → metric rows per group.

A task reduces its predictions to one value per person and metric (1.0 matched / 0.0 missed for
detection and segmentation, 1.0 correct / 0.0 wrong for classification); :func:`rows_from_values`
turns those into rows overall, per attribute group, per class and per group pair, and
:func:`write_outputs` writes them as ``metrics.json`` and ``metrics.csv``.

Statistics (:mod:`t2ibias.stats.cluster_bootstrap`): people of one image are not independent, so
intervals resample images (all evaluated people of an image together), the same draws for every
class, group and metric. A group's value is a share of its people: its interval is Korn–Graubard's
at the variance of its replicates (``method`` "korn-graubard (image bootstrap variance)"), never
zero width; a disparity's is that of the differences of the two
groups on the same draws ("joint image bootstrap percentile"), right for groups that share
people (one person can be in several MST groups). Each compared disparity row carries ``se``
(the image-clustered linearized standard error), ``p_value`` (two-sided test of no gap, with the
clustered standard error under no gap, as the pooled two-proportion z test), ``q_value``
(Benjamini–Hochberg) and ``adj_ci_low``/``adj_ci_high`` (Bonferroni-simultaneous Wald interval
with the larger of the two standard errors, so it excludes 0 only where the Bonferroni test
rejects), both over its family: the compared disparity rows of one task, metric and
attribute at the all-classes level (its group pairs), or over classes (its pairs × classes, the
rows a largest-gap table of the attribute is selected from). ``n_tests`` is the family size;
significant means q < 0.05. Rows that are not tests have null ``p_value`` and ``q_value``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facet_eval.data import FacetData
from facet_eval.groups import Membership, group_membership, intersect, is_na_group
from t2ibias.core.errors import UserError
from t2ibias.core.fmt import fmt_interval, fmt_value
from t2ibias.core.rows import FACET, MetricRow
from t2ibias.stats.cluster import resample_weights, share_interval_clustered
from t2ibias.stats.cluster_bootstrap import (
    bonferroni_intervals,
    group_replicates,
    percentile_columns,
    wald_pvalues,
)
from t2ibias.stats.testing import bh_qvalues

MIN_GROUP_SIZE = 50
N_BOOT = 1000
CONFIDENCE = 0.95
#: interval methods named in the rows (see :mod:`t2ibias.stats.cluster_bootstrap`)
#: per-group values are shares of people: Korn–Graubard at the image-bootstrap variance, so a group
#: whose people were all found still gets an interval with width (a percentile one would be [1, 1])
VALUE_METHOD = "korn-graubard (image bootstrap variance)"
GAP_METHOD = "joint image bootstrap percentile"
ADJ_METHOD = "Wald, image-clustered SE"
SIGNIFICANT_Q = 0.05


# ---------------------------------------------------------------- options
def _rng(seed: int, *key: Any) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode("utf-8"))])


def check_confidence(confidence: float) -> float:
    """``confidence`` when it lies strictly between 0 and 1, else :class:`UserError`."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise UserError(f"confidence: {confidence!r} is not strictly between 0 and 1 (use e.g. 0.95)")
    return float(confidence)


class GroupedEvaluator:
    """What every FACET evaluator keeps between ``reset()``, ``process(...)`` and ``evaluate()``:
    the release, the group intersections to add, and the bootstrap settings of its rows.
    Subclasses hold their predictions (``reset``) and score them (``evaluate``)."""

    def __init__(self, data: FacetData, intersections: Iterable[tuple[str, str]] = (), n_boot: int = N_BOOT,
                 seed: int = 0, per_class: bool = True, confidence: float = CONFIDENCE) -> None:
        self.data = data
        self.intersections = list(intersections)
        self.n_boot, self.seed, self.per_class = n_boot, seed, per_class
        self.confidence = check_confidence(confidence)
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- groups
@dataclass
class _Layout:
    """What every class's rows are computed over: the groups (``("all", "all")`` first) with their
    member masks over people, the compared group pairs, and the class masks (None = all classes)."""

    groups: list[tuple[str, str]]
    masks: list[np.ndarray]
    pairs: list[tuple[str, str, str]]
    class_masks: list[tuple[str | None, np.ndarray]]


def _layout(data: FacetData, intersections: Iterable[tuple[str, str]], per_class: bool) -> _Layout:
    membership: Membership = group_membership(data.people)
    for a, b in intersections:
        membership[f"{a}&{b}"] = intersect(membership, a, b)
    n = len(data.people)
    class_masks: list[tuple[str | None, np.ndarray]] = [(None, np.ones(n, dtype=bool))]
    if per_class:
        classes = data.people["classes"]
        for c in data.classes:
            class_masks.append((c, np.array([c in cl for cl in classes], dtype=bool)))
    groups: list[tuple[str, str]] = [("all", "all")]
    masks: list[np.ndarray] = [np.ones(n, dtype=bool)]
    pairs: list[tuple[str, str, str]] = []
    for attr, gs in membership.items():
        for g, m in gs.items():
            groups.append((attr, g))
            masks.append(m)
        names = [g for g in gs if not is_na_group(g)]
        pairs += [(attr, ga, gb) for i, ga in enumerate(names) for gb in names[i + 1:]]
    return _Layout(groups, masks, pairs, class_masks)


# ---------------------------------------------------------------- rows
def rows_from_values(
    data: FacetData,
    per_person: dict[str, np.ndarray],
    evaluated: np.ndarray,
    intersections: Iterable[tuple[str, str]] = (),
    n_boot: int = N_BOOT,
    seed: int = 0,
    per_class: bool = True,
    task: str = "detection",
    confidence: float = CONFIDENCE,
) -> list[dict[str, Any]]:
    """Metric rows from one value per person and metric (``per_person[metric][i]`` for row ``i``
    of ``data.people``, e.g. 1.0 matched / 0.0 missed), over the people with ``evaluated[i]``.

    For every class (None = all classes) and every (attribute, group): the mean value with its
    image-bootstrap CI; for every pair of non-``na`` groups of an attribute: the signed difference
    ``disparity_<metric>`` = group_a − group_b (FACET eq. 1) with its joint image-bootstrap CI, a
    p-value of no gap, its BH q-value and a Bonferroni interval over its family (see module doc),
    computed only when both groups have at least ``MIN_GROUP_SIZE`` people of that class,
    otherwise null with a note. Rows are :class:`t2ibias.core.rows.MetricRow` published in the
    :data:`t2ibias.core.rows.FACET` layout (``attribute`` = the grouping attribute).
    """
    confidence = check_confidence(confidence)
    layout = _layout(data, intersections, per_class)
    metrics = list(per_person)
    people = np.flatnonzero(np.asarray(evaluated, dtype=bool))
    _, clusters = np.unique(data.people["image_id"].to_numpy()[people], return_inverse=True)
    n_images = int(clusters.max()) + 1 if len(people) else 0
    weights = resample_weights(n_images, n_boot, _rng(seed, "images"), dtype=np.float32)
    values = np.column_stack([np.asarray(per_person[m], dtype=float)[people] for m in metrics])
    member = np.column_stack([m[people] for m in layout.masks])

    rows: list[MetricRow] = []
    gaps: list[tuple[int, float]] = []
    for cls, cmask in layout.class_masks:
        sel = cmask[people]
        res = group_replicates(values[sel], member[sel], clusters[sel], weights)
        rows += _group_rows(res, layout, metrics, cls, task, confidence)
        rows += _pair_rows(res, layout, metrics, cls, task, confidence, gaps, len(rows))
    adjust_gap_rows(rows, gaps, confidence)
    return [FACET.publish(r) for r in rows]


def _group_rows(res: Any, layout: _Layout, metrics: list[str], cls: str | None, task: str,
                confidence: float) -> list[MetricRow]:
    """One row per group and metric of one class: the mean value with its interval."""
    lo, hi = share_interval_clustered(res.estimate, res.replicates, res.n[:, None], res.n_clusters[:, None], confidence)
    rows = []
    for j, (attr, g) in enumerate(layout.groups):
        k = int(res.n[j])
        for mi, metric in enumerate(metrics):
            rows.append(MetricRow(metric=metric, group_by=attr, group=g,
                                  value=float(res.estimate[j, mi]) if k else math.nan, n=k,
                                  ci_low=float(lo[j, mi]), ci_high=float(hi[j, mi]), method=VALUE_METHOD,
                                  note=None if k else "no people in this group",
                                  extra={"task": task, "class": cls, "n_images": int(res.n_clusters[j])}))
    return rows


def _pair_rows(res: Any, layout: _Layout, metrics: list[str], cls: str | None, task: str, confidence: float,
               gaps: list[tuple[int, float]], start: int) -> list[MetricRow]:
    """One disparity row per group pair and metric of one class; compared rows (both groups with
    at least ``MIN_GROUP_SIZE`` people) are also noted in ``gaps`` as (their index among all rows,
    counting from ``start``, their variance), for :func:`adjust_gap_rows`."""
    index = {ag: j for j, ag in enumerate(layout.groups)}
    pairs = layout.pairs
    ia = np.array([index[(attr, ga)] for attr, ga, _ in pairs], dtype=np.int64)
    ib = np.array([index[(attr, gb)] for attr, _, gb in pairs], dtype=np.int64)
    ok = (res.n[ia] >= MIN_GROUP_SIZE) & (res.n[ib] >= MIN_GROUP_SIZE)
    var = res.gap_variance(ia[ok], ib[ok])
    var_null = res.gap_variance(ia[ok], ib[ok], null=True)
    glo, ghi = percentile_columns(res.gap_replicates(ia[ok], ib[ok]), confidence)
    gap = res.estimate[ia[ok]] - res.estimate[ib[ok]]
    pvals = wald_pvalues(gap, var_null)
    slot = np.cumsum(ok) - 1
    rows = []
    for p, (attr, ga, gb) in enumerate(pairs):
        na, nb = int(res.n[ia[p]]), int(res.n[ib[p]])
        for mi, metric in enumerate(metrics):
            extra = {"task": task, "class": cls, "group_a": ga, "group_b": gb, "n_a": na, "n_b": nb}
            row = MetricRow(metric=f"disparity_{metric}", group_by=attr, group=f"{ga}-{gb}", value=math.nan,
                            n=min(na, nb), ci_low=math.nan, ci_high=math.nan, method=GAP_METHOD, extra=extra)
            if ok[p]:
                s = slot[p]
                row = row.replace(value=float(gap[s, mi]), ci_low=float(glo[s, mi]), ci_high=float(ghi[s, mi]),
                                  se=float(math.sqrt(var[s, mi])), p_value=float(pvals[s, mi]))
                gaps.append((start + len(rows), float(max(var[s, mi], var_null[s, mi]))))
            else:
                row = row.replace(note=f"not compared: needs >= {MIN_GROUP_SIZE} people in both groups "
                                       f"({ga}: {na}, {gb}: {nb})")
            rows.append(row)
    return rows


def _family(row: MetricRow) -> tuple[Any, ...]:
    return (row.extra["task"], row.metric, row.group_by, row.extra["class"] is None)


def adjust_gap_rows(rows: list[MetricRow], gaps: list[tuple[int, float]], confidence: float = CONFIDENCE) -> None:
    """Add ``q_value`` (Benjamini–Hochberg), ``n_tests`` and the Bonferroni interval
    ``adj_ci_low``/``adj_ci_high`` to the compared disparity rows ``gaps`` names ((index in
    ``rows``, variance) pairs), within each family: the rows of one task, metric and attribute, at
    the all-classes level or over classes (see module doc). The adjusted interval is widened to
    hold the naive one where the two methods disagree, so it is never the narrower of the two."""
    families: dict[tuple[Any, ...], list[tuple[int, float]]] = {}
    for i, var in gaps:
        families.setdefault(_family(rows[i]), []).append((i, var))
    for members in families.values():
        m = len(members)
        q = bh_qvalues(np.array([rows[i].p_value for i, _ in members], dtype=float))
        lo, hi = bonferroni_intervals(np.array([rows[i].value for i, _ in members]), np.array([v for _, v in members]),
                                      m, confidence)
        for (i, _), qi, a, b in zip(members, q, lo, hi):
            row = rows[i]
            naive = [v for v in (row.ci_low, row.ci_high) if math.isfinite(v)]
            rows[i] = row.replace(q_value=float(qi), n_tests=m, adj_ci_low=float(min([a, row.value, *naive])),
                                  adj_ci_high=float(max([b, row.value, *naive])),
                                  adj_method=f"Bonferroni over {m} gaps ({ADJ_METHOD})")


# ---------------------------------------------------------------- output
def write_outputs(rows: list[dict[str, Any]], out_dir: str | Path, console: Any = None) -> None:
    """Write ``metrics.json`` (``{"rows": [...]}``, NaN as null) and ``metrics.csv`` atomically,
    then print a summary."""
    from t2ibias.core.csvsafe import frame_to_csv
    from t2ibias.core.files import atomic_write_text, dumps_strict, json_safe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = [json_safe(r) for r in rows]
    atomic_write_text(out / "metrics.json", dumps_strict({"rows": clean}, indent=1) + "\n")
    columns: list[str] = []
    for r in clean:
        for k in r:
            if k not in columns:
                columns.append(k)
    atomic_write_text(out / "metrics.csv", frame_to_csv(pd.DataFrame(clean, columns=columns)))
    print_summary(rows, console)


def _fmt(v: Any) -> str:
    """A share in percent points, one decimal; ``-`` when missing."""
    return fmt_value(v, 1, scale=100, missing="-")


def main_metric_of(rows: list[dict[str, Any]]) -> str:
    """The headline metric of some rows: mAR when present, else the first non-disparity metric."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows if not str(r["metric"]).startswith("disparity_")))
    return "mAR" if "mAR" in metrics or not metrics else metrics[0]


def _ci_text(lo: Any, hi: Any) -> str:
    return fmt_interval(lo, hi, 1, scale=100, missing="-")


def _q_text(q: Any) -> str:
    if q is None or (isinstance(q, float) and math.isnan(q)):
        return "-"
    return f"{q:.2g}" + ("*" if q < SIGNIFICANT_Q else "")


def print_summary(rows: list[dict[str, Any]], console: Any = None) -> None:
    """The overall values and, per attribute, the worst group (non-``na`` groups with at least
    ``MIN_GROUP_SIZE`` people) and the largest gap of the headline metric (mAR for detection and
    segmentation, recall for classification), with its naive and selection-adjusted intervals."""
    from rich.console import Console

    console = console or Console()
    main = main_metric_of(rows)
    metrics = list(dict.fromkeys(r["metric"] for r in rows if not str(r["metric"]).startswith("disparity_")))
    top = [r for r in rows if r["class"] is None]
    overall = {r["metric"]: r for r in top if r["attribute"] == "all"}
    if main in overall:
        console.print("overall (n={}): ".format(overall[main]["n"]) + ", ".join(
            f"{m} {_fmt(overall[m]['value'])}" for m in metrics if m in overall), markup=False)
    task = rows[0].get("task", "detection") if rows else "detection"
    worst_table, gap_table = _summary_tables(task, main)
    attrs = list(dict.fromkeys(r["attribute"] for r in top if r["attribute"] != "all"))
    for attr in attrs:
        _add_worst_row(worst_table, top, attr, main)
        _add_gap_row(gap_table, top, attr, main)
    console.print(worst_table)
    console.print(gap_table)
    console.print(f"largest gap: the largest |gap| among an attribute's compared pairs; selecting it inflates it. "
                  f"CI: joint image bootstrap; adjusted CI: simultaneous over the attribute's compared pairs "
                  f"(Bonferroni); q: Benjamini-Hochberg over them, * = significant (q < {SIGNIFICANT_Q}).")


def _summary_tables(task: str, main: str) -> tuple[Any, Any]:
    """The empty worst-group and largest-gap tables of :func:`print_summary`."""
    from rich.markup import escape
    from rich.table import Table

    worst_table = Table(title=escape(f"person {task} {main}: worst group per attribute (all classes; non-na groups "
                              f"with n >= {MIN_GROUP_SIZE})"))
    for col in ("attribute", "groups", "worst group", main, "CI", "n"):
        worst_table.add_column(col, justify="left" if col in ("attribute", "worst group") else "right",
                               no_wrap=col == "CI")
    gap_table = Table(title=escape(f"person {task} {main}: largest gap per attribute (all classes)"))
    for col in ("attribute", "pair", "gap", "CI", "adjusted CI", "q"):
        gap_table.add_column(col, justify="left" if col in ("attribute", "pair") else "right",
                             no_wrap=col not in ("attribute", "pair"))
    return worst_table, gap_table


def _add_worst_row(table: Any, top: list[dict[str, Any]], attr: str, main: str) -> None:
    from rich.markup import escape

    grp = [r for r in top if r["attribute"] == attr and r["metric"] == main
           and not is_na_group(r["group"]) and r["n"] >= MIN_GROUP_SIZE]
    worst = min(grp, key=lambda r: (r["value"], r["group"])) if grp else None
    table.add_row(escape(str(attr)), str(len(grp)), *([escape(str(worst["group"])), _fmt(worst["value"]),
                  _ci_text(worst["ci_low"], worst["ci_high"]), str(worst["n"])] if worst else ["-"] * 4))


def _add_gap_row(table: Any, top: list[dict[str, Any]], attr: str, main: str) -> None:
    from rich.markup import escape

    gaps = [r for r in top if r["attribute"] == attr and r["metric"] == f"disparity_{main}"
            and not (r["value"] is None or math.isnan(r["value"]))]
    gap = max(gaps, key=lambda r: abs(r["value"])) if gaps else None
    if gap:
        table.add_row(escape(str(attr)), escape(str(gap["group"])), _fmt(gap["value"]), _ci_text(gap["ci_low"], gap["ci_high"]),
                      _ci_text(gap.get("adj_ci_low"), gap.get("adj_ci_high")), _q_text(gap.get("q_value")))
