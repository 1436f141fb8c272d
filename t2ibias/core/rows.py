"""The one metric row: :class:`MetricRow`, and how each writer publishes it (:class:`RowLayout`).

Every metric this project reports is a long-format row (DESIGN, "Data flow and artifacts"):
``metric, axis, group_by, group, label, value, ci_low, ci_high, n, higher_is_better, note``,
plus ``aggregate`` (``prompt`` | ``mean_over_prompts`` | ``pooled``), ``method`` (how the
interval was made) and, where a row is one test among many, ``p_value`` and ``q_value``
(Benjamini–Hochberg). The fields mean the same in every writer:

* ``axis``: the measured attribute (``gender_presentation`` for label shares, ``race`` for
  DoFaiR scores, the audited attribute in a classifier audit);
* ``group_by`` / ``group``: what the rows are split by and which part this row is (``all`` /
  ``all``, ``prompt_id`` / an id, ``skin_tone_bucket`` / ``lighter``);
* ``label``: the label a share or count is of, where the metric has one.

Writers that publish other key names keep them, through a :class:`RowLayout` that names each
published key's field:

* ``metrics.json`` of a run (:data:`LONG`): the fields, in :data:`ROW_KEYS` order.
* ``audit.csv`` (:data:`AUDIT`): ``attribute`` is ``axis`` (the audited attribute) and
  ``group_attribute`` is ``group_by``.
* ``facet-eval`` rows (:data:`FACET`, docs/facet_submission.md): ``attribute`` is ``group_by``
  (the *grouping* attribute; FACET measures no attribute), and the task's own fields (``task``,
  ``class``, ``n_images``, the disparity fields) travel in :attr:`MetricRow.extra`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class MetricRow:
    """One metric value with its interval and provenance; see the module docstring for the fields.

    ``extra`` holds a writer's own fields (published only by a layout that names them).
    """

    metric: str
    axis: str | None = None
    group_by: str | None = None
    group: str | None = None
    label: str | None = None
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    higher_is_better: bool | None = None
    note: str | None = None
    aggregate: str | None = None
    method: str | None = None
    p_value: float | None = None
    q_value: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def replace(self, **changes: Any) -> MetricRow:
        """A copy with ``changes``; keys that are not fields go into (a copy of) ``extra``."""
        names = _FIELD_NAMES
        extra = {k: v for k, v in changes.items() if k not in names and k != "extra"}
        fields_ = {k: v for k, v in changes.items() if k in names or k == "extra"}
        if extra:
            fields_["extra"] = {**fields_.get("extra", self.extra), **extra}
        return dataclasses.replace(self, **fields_)

    def to_dict(self, layout: RowLayout | None = None) -> dict[str, Any]:
        """The row as a writer publishes it: :data:`LONG` (the :data:`ROW_KEYS`) by default."""
        return (layout or LONG).publish(self)


#: The long-format keys of ``metrics.json`` rows, in order: :class:`MetricRow`'s fields.
ROW_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(MetricRow) if f.name != "extra")
_FIELD_NAMES = frozenset(ROW_KEYS)


@dataclass(frozen=True)
class RowLayout:
    """The keys a writer publishes, in order. A key is a :class:`MetricRow` field (under its own
    name, or the field ``renamed`` maps it to) or else an ``extra`` field. ``optional`` field keys
    are left out of a row whose value for them is None; an extra key is left out of a row that
    does not have it."""

    keys: tuple[str, ...]
    renamed: Mapping[str, str] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()

    def source(self, key: str) -> str:
        """The field behind a published key (the key itself for an extra)."""
        return self.renamed.get(key, key)

    def publish(self, row: MetricRow) -> dict[str, Any]:
        """``row`` under this layout's keys, in order."""
        out: dict[str, Any] = {}
        for key in self.keys:
            name = self.source(key)
            if name in _FIELD_NAMES:
                value = getattr(row, name)
                if value is None and key in self.optional:
                    continue
                out[key] = value
            elif name in row.extra:
                out[key] = row.extra[name]
        return out

    def read(self, published: Mapping[str, Any]) -> MetricRow:
        """The :class:`MetricRow` of a published row (keys this layout does not know go to ``extra``)."""
        by_field = {self.source(k): v for k, v in published.items() if self.source(k) in _FIELD_NAMES}
        extra = {k: v for k, v in published.items() if self.source(k) not in _FIELD_NAMES}
        by_field.setdefault("metric", "")
        by_field.setdefault("value", None)
        return MetricRow(**by_field, extra=extra)


#: ``metrics.json`` / ``metrics.csv`` of a run.
LONG = RowLayout(ROW_KEYS)
#: ``audit.csv`` of ``t2ibias audit`` (``store.audit_file.ROW_COLUMNS``).
AUDIT = RowLayout(("attribute", "group_attribute", "group", "metric", "value", "n", "ci_low", "ci_high", "note", "method"),
                  renamed={"attribute": "axis", "group_attribute": "group_by"})
#: ``metrics.json`` / ``metrics.csv`` of ``facet-eval`` (docs/facet_submission.md). Per-group rows
#: carry ``n_images`` and a ``note`` only when the group is empty; disparity rows carry
#: ``group_a, group_b, n_a, n_b``, and when compared ``se``, ``n_tests`` and the adjusted interval.
FACET = RowLayout(
    ("task", "metric", "attribute", "group", "class", "group_a", "group_b", "value", "n", "n_a", "n_b", "ci_low",
     "ci_high", "n_images", "method", "p_value", "q_value", "se", "note", "n_tests", "adj_ci_low", "adj_ci_high",
     "adj_method"),
    renamed={"attribute": "group_by"},
    optional=frozenset({"note"}),
)
