"""Scored runs written file by file, with image labels chosen by the test (no model runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from t2ibias.models.classifier_spec import CLASSIFIERS

CLASSIFIER = "tiny-random-clip"
SUBJECTS = ("doctor", "nurse", "pilot", "chef", "baker", "clerk", "guard", "tailor")
INTERVENTIONS = ("none", "diverse")


def prompt_records(subjects=SUBJECTS, interventions=INTERVENTIONS, prefix: str = "") -> list[dict]:
    """One record per subject × intervention of an ``occupations`` family (ids carry ``prefix``)."""
    out = []
    for s in subjects:
        for i in interventions:
            text = f"a photo of a {s}" + ("" if i == "none" else ", of any gender")
            out.append({"prompt_id": f"{prefix}{s}-{i}", "set_id": "occ", "set_version": 1, "family": "occupations",
                        "subject": s, "template_id": "t0", "intervention": i, "text": text})
    return out


def write_run(run: Path, model: str, labels_for, *, records: list[dict] | None = None, seeds: int = 8,
              classifier_fingerprint: str | None = None, gate: str = "gate-1", audit: dict | None = None) -> Path:
    """A scored run at ``run``: ``labels_for(record, index)`` gives each image's gender_presentation label."""
    records = records if records is not None else prompt_records()
    fp = classifier_fingerprint or CLASSIFIERS.get(CLASSIFIER).fingerprint()
    run.mkdir(parents=True, exist_ok=True)
    spec = {"fingerprint": f"run-{model}", "t2ibias_version": "0.1.0", "model": {"id": model, "revision": "r1"},
            "weights": f"hub:{model}@r1", "generator_fingerprint": f"gen-{model}", "n_seeds": seeds, "base_seed": 0,
            "classifier": {"id": CLASSIFIER, "fingerprint": fp}, "defining": {},
            "prompt_sets": [{"id": "occ", "version": 1, "sha256": "0" * 64}]}
    (run / "spec.json").write_text(json.dumps(spec))
    pd.DataFrame(records).to_parquet(run / "prompts.parquet", index=False)
    rows = [{"key": f"{r['prompt_id']}-{i}", "prompt_id": r["prompt_id"], "image_index": i, "attribute": "gender_presentation",
             "label": labels_for(r, i), "score": 0.9, "person_source": "face", "n_faces": 1, "n_people": 0}
            for r in records for i in range(seeds)]
    pd.DataFrame(rows).to_parquet(run / "image_labels.parquet", index=False)
    (run / "measure.json").write_text(json.dumps({"classifier": {"id": CLASSIFIER, "fingerprint": fp}, "gate_fingerprint": gate,
                                                  "measurer": f"m-{fp}-{gate}", "gate": {}}))
    if audit is not None:
        (run / "audit.json").write_text(json.dumps(audit))
    return run


#: Masculine images of 8 per subject: a model near balance, and one skewed without intervention.
#: (The last four subjects repeat the first four, so the means are those of the first four.)
FAIR_MASC = {"doctor": 4, "nurse": 5, "pilot": 3, "chef": 4, "baker": 4, "clerk": 5, "guard": 3, "tailor": 4}
SKEWED_MASC = {"doctor": 8, "nurse": 7, "pilot": 8, "chef": 7, "baker": 8, "clerk": 7, "guard": 8, "tailor": 7}


def fair(record, i):
    """``FAIR_MASC[subject]`` of the 8 seed indices masc, the rest fem, with and without intervention."""
    return "masc" if i < FAIR_MASC.get(record["subject"], 4) else "fem"


def skewed(record, i):
    """``SKEWED_MASC[subject]`` of 8 masc without intervention; like :func:`fair` with it."""
    if record["intervention"] != "none":
        return fair(record, i)
    return "masc" if i < SKEWED_MASC[record["subject"]] else "fem"
