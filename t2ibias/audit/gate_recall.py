"""The face gate audited like the classifier: its detection rate among FACET people whose face
annotators marked visible, per perceived group.

Every estimate of a run conditions on the faces the gate finds: an image whose face it misses is
"no person" or gets a whole-image label. If the gate misses one group's faces more often than
another's, the labels of the classified images are not a random sample of the depicted people
(not missing at random), and classified-only skew is biased. This module measures that.

``gate_recall`` of a set of people: the share of them, among those FACET marks ``visible_face``
(and that the audit could crop), in whose padded box the gate finds a face whose centre lies in
the person's own box (how the audit crops faces; :func:`t2ibias.audit.crops._face_in`). Groups:
FACET's perceived gender presentation, age presentation, MST skin tone, the lighter/darker
skin-tone bucket and lighting. Intervals resample images (people of one image together;
:func:`t2ibias.audit.groupwise.metric_rows`, Korn–Graubard with the resampled variance), and
"equal rates across groups" is tested per grouping with the engine's cluster-robust max-t
bootstrap test, with Benjamini–Hochberg q-values over the groupings of this audit (their own
family, apart from the classifier's comparisons).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from facet_eval.attributes import ground_truth
from t2ibias.audit.groupwise import add_qvalues, metric_rows
from t2ibias.core.rows import AUDIT, MetricRow

METRIC = "gate_recall"
#: The ``attribute`` of the gate's rows in audit.csv (the classifier's rows name the classified attribute).
ROW_ATTRIBUTE = "face_gate"
#: A grouping whose q-value is below this says the rate differs across its groups.
ALPHA = 0.05
#: Groupings in the order they are reported (those the release annotates).
GROUPINGS = ("gender_presentation", "age_presentation", "skin_tone", "skin_tone_bucket", "lighting")
DEFINITION = ("share of the people FACET marks visible_face in whose box the face gate finds a face "
              "(its centre inside the person's box)")
WARNING = ("the face gate's detection rate differs across {what} (q < {alpha}): images of some groups lose "
           "their face more often, so classified-only skew is not missing-at-random")


def visible_face(people: pd.DataFrame) -> np.ndarray | None:
    """Per person: FACET's ``visible_face`` marked (> 0); None when the release has no such column."""
    if "visible_face" not in people.columns:
        return None
    return np.nan_to_num(pd.to_numeric(people["visible_face"], errors="coerce").to_numpy(dtype=float), nan=0.0) > 0


def detect_faces(facet: Any, order: np.ndarray, face_gate: Any) -> np.ndarray:
    """Per person of ``order`` (rows of ``facet.people``): did ``face_gate`` find their face? The
    same crops and rule as the audit's face crops; a box outside the image counts as not found."""
    from PIL import Image

    from t2ibias.audit.crops import _face_in, crop_box

    paths = facet.image_paths()
    people = facet.people
    sizes = {int(i): (w, h) for i, w, h in zip(facet.images["id"], facet.images["width"], facet.images["height"])}
    found = np.zeros(len(order), dtype=bool)
    image_ids = people["image_id"].to_numpy()[order]
    for img_id in pd.unique(image_ids):
        with Image.open(paths[int(img_id)]) as im:
            im = im.convert("RGB")
            w0, h0 = sizes.get(int(img_id), (None, None))
            sx, sy = (im.size[0] / float(w0), im.size[1] / float(h0)) if w0 and h0 else (1.0, 1.0)
            for k in np.flatnonzero(image_ids == img_id):
                r = people.iloc[int(order[k])]
                box = (r["box_x"] * sx, r["box_y"] * sy, r["box_w"] * sx, r["box_h"] * sy)
                cb = crop_box(box, im.size)
                found[k] = cb is not None and _face_in(im.crop(cb), box, cb, face_gate) is not None
    return found


def gate_recall_audit(people: pd.DataFrame, found: np.ndarray, options: Any, face_gate: Any
                      ) -> tuple[dict[str, Any], list[MetricRow]]:
    """The ``gate`` block of audit.json and its audit.csv rows, for the audited ``people`` (one
    row each, in the order of ``found``: did the gate find their face)."""
    gate_info = {"face_gate": face_gate.config(), "gate_fingerprint": face_gate.fingerprint(),
                 "metric": METRIC, "definition": DEFINITION}
    visible = visible_face(people)
    if visible is None:
        return {**gate_info, "not_audited": "the release has no visible_face column, so there is no set of "
                                            "visible faces to measure the gate's detection rate on"}, []
    idx = np.flatnonzero(visible)
    if len(idx) == 0:
        return {**gate_info, "not_audited": f"none of the {len(people)} audited people has visible_face marked"}, []
    sub = people.iloc[idx].reset_index(drop=True)
    hit = np.asarray(found, dtype=bool)[idx]
    images = sub["image_id"].to_numpy()
    groups = ground_truth(sub)["groups"]
    overall: dict[str, Any] = {}
    by_group: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    for k, name in enumerate(g for g in GROUPINGS if g in groups):
        ov, rows, comps = metric_rows({METRIC: hit.astype(float)}, groups[name], ece_inputs=None, n_boot=options.n_boot,
                                      seed=options.seed, confidence=options.confidence, min_n=options.min_n,
                                      engine=options.engine, clusters=images)
        if not overall:
            overall = ov
        by_group += [{"group_attribute": name, **r} for r in rows]
        comparisons += [{"group_attribute": name, **c} for c in comps]
    if not overall:  # the release annotates none of the groupings: the overall rate alone
        ov, _, _ = metric_rows({METRIC: hit.astype(float)}, np.full(len(hit), "all"), ece_inputs=None,
                               n_boot=options.n_boot, seed=options.seed, confidence=options.confidence,
                               min_n=options.min_n, engine=options.engine, clusters=images)
        overall = ov
    add_qvalues(comparisons)
    differing = [c["group_attribute"] for c in comparisons
                 if isinstance(c.get("q_value"), float) and math.isfinite(c["q_value"]) and c["q_value"] < ALPHA]
    block = {
        **gate_info,
        "n": int(len(idx)), "n_detected": int(hit.sum()), "n_images": int(len(pd.unique(images))),
        "n_not_visible": int(len(people) - len(idx)),
        "overall": overall, "by_group": by_group, "comparisons": comparisons, "alpha": ALPHA,
        "differs_across_groups": bool(differing), "differs_by": differing,
        "warning": WARNING.format(what=", ".join(differing), alpha=ALPHA) if differing else "",
    }
    long_rows = [AUDIT.read({"attribute": ROW_ATTRIBUTE, "group_attribute": "overall", "group": "all", "metric": m,
                             **v, "note": ""}) for m, v in overall.items()]
    long_rows += [AUDIT.read({"attribute": ROW_ATTRIBUTE, **r}) for r in by_group]
    return block, long_rows


def gate_warning(gate: Any) -> str:
    """The warning a report shows beside every estimate when the audited gate's rate differs
    across groups ("" when it does not, or when there is no gate audit)."""
    return str(gate.get("warning") or "") if isinstance(gate, dict) else ""


def gate_line(gate: Any) -> str:
    """One line for the terminal: the gate's overall rate with n and interval, and its warning."""
    if not isinstance(gate, dict):
        return "face gate: not audited"
    kind = (gate.get("face_gate") or {}).get("kind", "face gate")
    if gate.get("not_audited"):
        return f"face gate {kind}: not audited: {gate['not_audited']}"
    ov = (gate.get("overall") or {}).get(METRIC) or {}

    def pct(v: Any) -> str:
        return "-" if not isinstance(v, (int, float)) or v != v else f"{100 * v:.1f}%"

    line = (f"face gate {kind}: found {gate['n_detected']} of {gate['n']} visible faces: {METRIC} {pct(ov.get('value'))} "
            f"[{pct(ov.get('ci_low'))}, {pct(ov.get('ci_high'))}] (n={ov.get('n')}, {gate['n_images']} images)")
    return line + (f"; warning: {gate['warning']}" if gate.get("warning")
                   else f"; no difference across groups found (every q ≥ {ALPHA})")
