"""The instrument beside the estimate: the classifier's audit, confusion-corrected proportions and
agreement between measurers, for one run (``instrument.json``).

- **Audit**: the audit copied into the run (``audit.json``), attached by ``t2ibias score --audit
  FILE`` or, at sweep time, by the classifier config's ``audit:``; never one found elsewhere. Its
  per-attribute accuracy, abstention rate and worst group travel with the run's numbers, and its
  provenance (source file, sha256, how it was attached) with them.
- **Corrected proportions**: for every attribute the audit covers, the run's answered labels
  (abstentions, images with no person, blocked and failed images left out) are corrected by
  inverting the audited confusion matrix (Rogan-Gladen for two labels, the simplex-constrained
  inverse for more), with intervals that resample the audit and the run's labels together (the
  labels as sampled: prompts, then images within prompts); over all images, per prompt family and
  per intervention. The audit crops FACET people from photos,
  the run classifies generated faces: the correction assumes the classifier errs alike on both.
- **Agreement**: where a second measurer covers an attribute of the classifier (a crop measurer
  run on the same face crops, or FairFace predictions imported from a CSV), Cohen's kappa and raw
  agreement between the two, overall and per prompt family. Crop measurers are paired face by
  face; imported faces, whose order the run does not know, only on images where both sides found
  exactly one face.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.files import atomic_write_text
from t2ibias.core.fingerprint import file_sha256
from t2ibias.core.files import json_safe
from t2ibias.core.vocab import ABSTAIN, PERSON_ATTRIBUTE
from t2ibias.store.rundir import AUDIT_FILE, RunDir

N_BOOT = 1000
SCHEMA = "t2ibias-instrument/1"


def audit_to_attach(source: str | Path, attached_by: str, **more: str) -> dict[str, Any]:
    """An audit file (or its folder) read and checked, with the ``provenance`` a run keeps beside
    it: the source file, its sha256 and what attached it (``more`` adds fields). Nothing is written,
    so a bad audit fails before a stage changes the run."""
    from t2ibias.store.audit_file import load_audit

    path = Path(source)
    if path.is_dir():
        path = path / "audit.json"
    doc = load_audit(path)
    provenance = {"source": str(path.absolute()), "sha256": file_sha256(path), "attached_by": attached_by, **more}
    return {"provenance": provenance, **{k: v for k, v in doc.items() if k != "provenance"}}


def write_audit(path: Path, doc: dict[str, Any]) -> None:
    """Write an audit made by :func:`audit_to_attach` as the run's ``audit.json``."""
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def audit_summary(audit: dict[str, Any], classifier_fingerprint: str) -> dict[str, Any]:
    """The audit's headline numbers per attribute (accuracy, abstention, calibration, worst group),
    with where the run's copy came from."""
    attrs = {}
    for name, entry in (audit.get("attributes") or {}).items():
        own = entry.get("facet_attribute")
        groups = [r for r in entry.get("by_group") or [] if r.get("metric") == "accuracy"
                  and r.get("group_attribute") == own and r.get("group") not in ("na", "non_binary")
                  and isinstance(r.get("value"), (int, float)) and (r.get("n") or 0) > 0]
        worst = min(groups, key=lambda r: r["value"]) if groups else None
        best = max(groups, key=lambda r: r["value"]) if groups else None
        attrs[name] = {
            "accuracy": entry.get("accuracy"),
            "abstain_rate": entry.get("abstain_rate"),
            "ece": entry.get("ece"),
            "within_range": entry.get("within_range"),
            "worst_group": worst and {k: worst.get(k) for k in ("group", "value", "n", "ci_low", "ci_high")},
            "best_group": best and {k: best.get(k) for k in ("group", "value", "n", "ci_low", "ci_high")},
            "by_group": [{k: r.get(k) for k in ("group", "value", "n", "ci_low", "ci_high")} for r in groups],
            "confusion": entry.get("confusion"),
        }
    facet = audit.get("facet") or {}
    clf = audit.get("classifier") or {}
    provenance = audit.get("provenance") or {}
    return {
        "source": provenance.get("source"),
        "sha256": provenance.get("sha256"),
        "attached_by": provenance.get("attached_by"),
        "file": AUDIT_FILE,
        "classifier": clf,
        "matches_run_classifier": clf.get("fingerprint") == classifier_fingerprint,
        "n_audited": facet.get("n_audited"),
        "annotations_sha256": facet.get("annotations_sha256"),
        "attributes": attrs,
    }


def _groupings(labels: pd.DataFrame, prompts: pd.DataFrame) -> list[tuple[str, str, pd.Series]]:
    """(group_by, group, mask over ``labels``) for all images, each family and each intervention."""
    out: list[tuple[str, str, pd.Series]] = [("all", "all", pd.Series(True, index=labels.index))]
    info = prompts.set_index("prompt_id")
    for col in ("family", "intervention"):
        if col not in info.columns:
            continue
        values = labels["prompt_id"].map(info[col])
        groups = sorted(v for v in values.dropna().unique())
        if len(groups) < 2 and col == "family":
            continue
        out.extend((col, str(g), values == g) for g in groups)
    return out


def corrected_rows(labels: pd.DataFrame, prompts: pd.DataFrame, audit: dict[str, Any], n_boot: int = N_BOOT,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Raw and corrected label shares per attribute and grouping (see the module doc)."""
    from t2ibias.metrics.correction import corrected_proportions

    rows: list[dict[str, Any]] = []
    for attr, entry in (audit.get("attributes") or {}).items():
        sub = labels[labels["attribute"] == attr]
        if sub.empty:
            continue
        audit_labels = [p for p in entry["confusion"]["pred"] if p != ABSTAIN]
        for group_by, group, mask in _groupings(sub, prompts):
            chosen = sub[mask]
            # one mapping of labels to counts per prompt: prompts, then images within them, are resampled
            table = pd.crosstab(chosen["prompt_id"], chosen["label"])
            observed = [{lab: int(row.get(lab, 0)) for lab in [*audit_labels, ABSTAIN]} for _, row in table.iterrows()]
            base = {"attribute": attr, "group_by": group_by, "group": group}
            if sum(v for o in observed for k, v in o.items() if k != ABSTAIN) == 0:
                continue
            try:
                out = corrected_proportions(observed, entry, n_boot=n_boot, seed=seed, where=f"{attr} labels")
            except UserError as exc:
                rows.append({**base, "label": None, "note": f"not corrected: {exc}"})
                break  # the same audit problem holds for every grouping
            rows.extend({**base, **r} for r in out)
    return json_safe(rows)


def _face_labels(meas: pd.DataFrame, measurer: str, attrs: set[str]) -> pd.DataFrame:
    m = meas[(meas["measurer"] == measurer) & (meas["unit"] == "face") & meas["attribute"].isin(attrs)]
    return m[["key", "face_index", "attribute", "label"]]


def agreement_rows(run: RunDir, labels: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> list[dict[str, Any]]:
    """Kappa between the run's classifier and every other measurer sharing an attribute with it."""
    from t2ibias.metrics.agreement import agreement_rows as kappa_rows

    cspec = run.classifier
    prompts = run.prompts
    clip_fp = run.measurer
    measurers = run.measurers
    others = {fp: info for fp, info in measurers.items() if fp != clip_fp and info.get("kind") in ("crop", "external")}
    if not others:
        return []
    meas = run.measurements
    clip_attrs = {a for a in cspec.attributes if a != PERSON_ATTRIBUTE}
    clip_faces = _face_labels(meas, clip_fp, clip_attrs)
    prompt_of = labels.drop_duplicates("key").set_index("key")["prompt_id"]
    family = prompt_of.map(prompts.set_index("prompt_id")["family"])
    rows: list[dict[str, Any]] = []
    for fp, info in sorted(others.items(), key=lambda kv: str(kv[1].get("id"))):
        theirs = _face_labels(meas, fp, clip_attrs)
        if theirs.empty:
            continue
        if info.get("kind") == "crop" and info.get("gate_fingerprint") == (measurers.get(clip_fp) or {}).get("gate_fingerprint"):
            pairing = "same face crops"
            joined = clip_faces.merge(theirs, on=["key", "face_index", "attribute"], suffixes=("_a", "_b"))
        else:
            pairing = "images with exactly one face on both sides"
            one_a = clip_faces.groupby("key")["face_index"].nunique()
            one_b = theirs.groupby("key")["face_index"].nunique()
            keys = set(one_a[one_a == 1].index) & set(one_b[one_b == 1].index)
            joined = clip_faces[clip_faces["key"].isin(keys)].merge(
                theirs[theirs["key"].isin(keys)].drop(columns="face_index"), on=["key", "attribute"], suffixes=("_a", "_b"))
        for attr in sorted(set(joined["attribute"])):
            j = joined[joined["attribute"] == attr]
            frame = pd.DataFrame({
                "unit": j["key"].astype(str) + "#" + j["face_index"].astype(str),
                "label_a": j["label_a"].astype(str), "label_b": j["label_b"].astype(str),
                "group": j["key"].map(family).fillna("?").astype(str),
                # faces of one image, images of one prompt: resampled as sampled
                "image": j["key"].astype(str), "prompt": j["key"].map(prompt_of).fillna("?").astype(str),
            })
            base = {"attribute": attr, "measurer_a": cspec.id, "measurer_b": str(info.get("id", fp)), "pairing": pairing}
            try:
                out = kappa_rows(frame, n_boot=n_boot, seed=seed, where=f"agreement on {attr}")
            except UserError as exc:
                rows.append({**base, "group": None, "metric": "kappa", "value": None, "note": str(exc)})
                continue
            rows.extend({**base, **r} for r in out)
    return json_safe(rows)


def instrument_doc(run: RunDir, labels: pd.DataFrame, audit: dict[str, Any] | None = None,
                   n_boot: int = N_BOOT) -> dict[str, Any]:
    """The content of ``instrument.json`` for a scored run, corrected with ``audit`` (the run's
    ``audit.json``, or one about to be attached; None: no audit)."""
    cspec = run.classifier
    seed = int(run.spec.get("base_seed", 0))
    doc: dict[str, Any] = {"schema": SCHEMA, "classifier": {"id": cspec.id, "fingerprint": cspec.fingerprint()},
                           "audit": None, "corrected": [], "agreement": []}
    if audit is not None:
        doc["audit"] = audit_summary(audit, cspec.fingerprint())
        if doc["audit"]["matches_run_classifier"]:
            doc["corrected"] = corrected_rows(labels, run.prompts, audit, n_boot, seed)
        else:
            doc["audit"]["note"] = "audit of another classifier: no correction applied"
    doc["agreement"] = agreement_rows(run, labels, n_boot, seed)
    from t2ibias.metrics.gate_rows import gate_doc

    doc["gate"] = gate_doc(audit, run.measure_config, labels)  # the gate's audited recall, its warning, no-face rates
    return doc
