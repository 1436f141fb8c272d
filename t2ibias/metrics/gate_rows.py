"""The face gate beside a run's estimates (``instrument.json`` ``gate``): the gate's audited
detection rate per FACET group, whether that audit is of the run's own gate, the warning when the
rate differs across groups, and the run's own no-face rate per prompt.

Every label of a run comes from the largest face the gate finds (or, without one, from a person
box or the whole image, or ``no_person``). When the audited rate differs across groups, images of
some groups lose their face more often, so the shares among classified faces are not a random
sample of the people depicted: classified-only skew is not missing-at-random. ``no_face_by_prompt``
is the share of each prompt's made images on which the gate found no face, with its exact
(Clopper–Pearson) interval; the abstention and ``no_person`` shares per prompt are ``proportion``
rows of ``metrics.json`` (labels ``abstain`` and ``no_person``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from t2ibias.core.files import json_safe
from t2ibias.stats.binomial import clopper_pearson

#: Labels of images that were not made (blocked by a safety checker, failed): not in the denominator.
NOT_MADE = ("blocked", "failed")
METHOD = "clopper-pearson"


def no_face_rows(labels: pd.DataFrame, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per prompt (and pooled over the run): of the images made, the share with no face found."""
    if labels.empty or "person_source" not in labels.columns:
        return []
    images = labels.drop_duplicates("key")
    images = images[~images["label"].isin(NOT_MADE)]
    if images.empty:
        return []
    no_face = (images["person_source"] != "face").astype(int)
    per = no_face.groupby(images["prompt_id"], sort=False).agg(["sum", "count"])
    k = np.append(per["sum"].to_numpy(dtype=float), float(no_face.sum()))
    n = np.append(per["count"].to_numpy(dtype=float), float(len(no_face)))
    lo, hi = clopper_pearson(k, n, confidence)
    groups = [("prompt_id", str(p)) for p in per.index] + [("all", "all")]
    return json_safe([{"metric": "no_face_rate", "group_by": gb, "group": g, "value": float(k[i] / n[i]),
                       "ci_low": float(lo[i]), "ci_high": float(hi[i]), "n": int(n[i]), "method": METHOD,
                       "aggregate": "prompt" if gb == "prompt_id" else "pooled"}
                      for i, (gb, g) in enumerate(groups)])


def gate_doc(audit: dict[str, Any] | None, measure_config: dict[str, Any] | None, labels: pd.DataFrame) -> dict[str, Any]:
    """The ``gate`` block of instrument.json."""
    run_gate = ((measure_config or {}).get("gate") or {}).get("face")
    audited = (audit or {}).get("gate") if isinstance((audit or {}).get("gate"), dict) else None
    doc: dict[str, Any] = {"run_gate": run_gate, "audit": None, "matches_run_gate": None, "warning": "",
                           "no_face_by_prompt": no_face_rows(labels)}
    if audited is None:
        doc["note"] = ("no audit of the face gate: its detection rate per group is unknown, so whether classified-only "
                       "skew is missing-at-random is unchecked (run `t2ibias audit` and attach it with `t2ibias score --audit`)")
        return json_safe(doc)
    keep = ("face_gate", "metric", "definition", "n", "n_detected", "n_images", "overall", "by_group", "comparisons",
            "alpha", "differs_across_groups", "differs_by", "warning", "not_audited")
    doc["audit"] = {k: audited[k] for k in keep if k in audited}
    doc["matches_run_gate"] = bool(run_gate is not None and audited.get("face_gate") == run_gate)
    if audited.get("warning"):
        doc["warning"] = str(audited["warning"]) + ("" if doc["matches_run_gate"] else
                                                   " (audited for another face gate than the run's)")
    if not doc["matches_run_gate"]:
        doc["note"] = "the audit measured another face gate than the one this run was measured with"
    return json_safe(doc)
