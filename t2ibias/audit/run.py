"""``run_audit``: crop FACET's people, ask the classifier, score each attribute, write the files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facet_eval.attributes import FACET_ATTRIBUTES, SKIP_REASONS, ground_truth, skip_reasons
from facet_eval.data import load_facet
from t2ibias.audit.crops import Measured, measure_crops
from t2ibias.audit.gate_recall import detect_faces, gate_recall_audit, visible_face
from t2ibias.store.audit_file import SCHEMA, write_audit_files
from t2ibias.audit.groupwise import add_qvalues
from t2ibias.audit.options import AuditOptions
from t2ibias.audit.scoring import audit_attribute
from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import file_sha256
from t2ibias.core.rows import MetricRow
from t2ibias.stats.rng import seeded

def run_audit(predictor: Any, facet_root: str | Path, out_dir: str | Path, *, classifier_id: str, fingerprint: str,
              options: AuditOptions | None = None, progress: Callable[[int, int], None] | None = None,
              **settings: Any) -> dict[str, Any]:
    """Audit ``predictor`` on the people of the FACET release at ``facet_root``; write
    ``audit.json``, ``audit.csv``, ``confusion_<attribute>.csv`` and ``predictions.csv`` into
    ``out_dir`` and return the audit.json content (NaN as float; the file holds null). The page,
    ``audit.html``, is :func:`t2ibias.report.audit_html.write_audit_html` of that folder.

    ``options`` (or its fields as keywords, e.g. ``n_boot=0``) are :class:`AuditOptions`.
    ``progress(done, total)`` is called after each batch of crops.
    """
    if options is not None and settings:
        raise TypeError(f"run_audit: pass options or {', '.join(settings)} as keywords, not both")
    if options is None:
        options = AuditOptions(**settings)
    facet = load_facet(facet_root)
    people = facet.people
    reason = skip_reasons(people)
    eligible = _sample(np.flatnonzero(reason == ""), options)
    if len(eligible) == 0:
        raise UserError(f"{facet.root}: no person to audit (every person is visible_minimal only or has an empty box)")
    measured = measure_crops(predictor, facet, eligible, options.batch_size, progress, options.face_gate)
    reason[eligible[measured.outside]] = "box_outside_image"
    audited = eligible[~measured.outside]
    preds = [p for p, o in zip(measured.preds, measured.outside) if not o]
    attributes, not_audited, long_rows, pred_rows = _audit_attributes(people.iloc[audited], preds, options, classifier_id)
    if not attributes:
        raise UserError(
            f"{facet.root}: no audited person has a {', '.join(FACET_ATTRIBUTES[a][0] for a in not_audited)} annotation "
            f"(attribute{'s' if len(not_audited) > 1 else ''} {', '.join(not_audited)} cannot be audited; "
            "use a FACET release whose annotations.csv has those votes)"
        )
    add_qvalues([c for e in attributes.values() for c in e["comparisons"]])  # one family: every comparison of the audit
    gate_block = None
    gate = options.face_gate if options.face_gate is not None else options.recall_gate
    if gate is not None:  # the gate's own detection rate among visible faces (its own q-value family)
        if options.face_gate is not None and measured.face_found is not None:
            found = measured.face_found[~measured.outside]
        else:  # person crops: run the gate on the people whose face counts only
            found = np.zeros(len(audited), dtype=bool)
            visible = visible_face(people.iloc[audited])
            if visible is not None and visible.any():
                found[visible] = detect_faces(facet, audited[visible], gate)
        gate_block, gate_rows = gate_recall_audit(people.iloc[audited], found, options, gate)
        long_rows += gate_rows
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "classifier": {"id": str(classifier_id), "fingerprint": str(fingerprint)},
        "facet": _facet_counts(facet, reason, len(audited), measured),
        "settings": options.settings(),
        "versions": _versions(),
        "attributes": attributes,
        "not_audited": not_audited,
    }
    if gate_block is not None:
        result["gate"] = gate_block
    write_audit_files(Path(out_dir), result, long_rows, pred_rows)
    return result


def _sample(eligible: np.ndarray, options: AuditOptions) -> np.ndarray:
    """``options.limit`` of the eligible people drawn with ``options.seed``, in release order."""
    if options.limit is not None and options.limit < len(eligible):
        return np.sort(seeded(options.seed).choice(eligible, size=options.limit, replace=False))
    return eligible


def _audit_attributes(audited: Any, preds: list[dict[str, Any]], options: AuditOptions, classifier_id: str
                      ) -> tuple[dict[str, Any], dict[str, str], list[MetricRow], list[dict[str, Any]]]:
    """Each attribute the predictor answers and FACET annotates: its entry (or why it was not
    audited), its audit.csv rows and its predictions.csv rows."""
    gt = ground_truth(audited.reset_index(drop=True))
    returned = {a for p in preds for a in p}
    attrs = [a for a in FACET_ATTRIBUTES if a in returned and a in gt["truth"]]
    if not attrs:
        raise UserError(
            f"classifier {classifier_id!r}: returns none of the audited attributes {', '.join(FACET_ATTRIBUTES)} "
            f"that the FACET release annotates (it returns {', '.join(sorted(returned)) or 'nothing'})"
        )
    person_ids = audited["person_id"].to_numpy()
    image_ids = audited["image_id"].to_numpy()  # people of one image are resampled together
    entries: dict[str, Any] = {}
    not_audited: dict[str, str] = {}
    long_rows: list[MetricRow] = []
    pred_rows: list[dict[str, Any]] = []
    for attr in attrs:
        truth = gt["truth"][attr]
        idx = np.flatnonzero(np.array([t is not None for t in truth], dtype=bool))
        if len(idx) == 0:
            # nothing to compare the classifier with: say so instead of auditing an empty set
            not_audited[attr] = (f"none of the {len(truth)} audited people has a {FACET_ATTRIBUTES[attr][0]} "
                                 "annotation, so there is nothing to compare the classifier with")
            continue
        one = audit_attribute(attr, idx, gt, preds, person_ids, image_ids, options, classifier_id)
        entries[attr] = one.entry
        long_rows += one.long_rows
        pred_rows += one.pred_rows
    return entries, not_audited, long_rows, pred_rows


def _facet_counts(facet: Any, reason: np.ndarray, n_audited: int, measured: Measured) -> dict[str, Any]:
    """The ``facet`` block of audit.json: the release, and who was audited, skipped or not sampled."""
    skipped = {r: int((reason == r).sum()) for r in (*SKIP_REASONS, "box_outside_image")}
    n_people = len(facet.people)
    return {
        "root": str(facet.root),
        "annotations_sha256": file_sha256(facet.root / "annotations" / "annotations.csv"),
        "n_people": int(n_people),
        "n_audited": int(n_audited),
        "n_skipped": int(sum(skipped.values())),
        "skipped": skipped,
        "n_not_sampled": int(n_people - n_audited - sum(skipped.values())),
        "n_images_rescaled": int(measured.n_rescaled),
        "n_no_face": int(measured.n_no_face),
    }


def _versions() -> dict[str, str]:
    import fairlearn

    from t2ibias.core.version import __version__

    return {"t2ibias": __version__, "fairlearn": fairlearn.__version__, "numpy": np.__version__}
