"""A tiny generated run whose second image is a real photo with a face (for gate/measure tests)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from PIL import Image
from skimage import data as skdata


def make_face_run(run: Path) -> tuple[Path, str]:
    """Generate a two-image run at ``run`` (tiny-random-sd, demo prompts) and replace its second
    image by the astronaut photo (OpenCV's face cascade finds one face in it). Returns (run, key
    of the photo)."""
    from t2ibias.runspec import SweepRequest, prepare_run
    from t2ibias.generation.stage import generate_stage
    from t2ibias.store.image_store import ImageStore

    req = SweepRequest(model="tiny-random-sd", prompt_sets=["demo"], n_seeds=1, limit=2, device="cpu")
    prepare_run(run, req)
    result = generate_stage(run, device="cpu")
    assert result.total == 2 and result.generated == 2
    records = ImageStore(run).records()
    assert len(records) == 2
    key, row = sorted(records.items())[1]
    path = run / row["path"]
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    fixed = {**row, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size, "width": 512, "height": 512}
    with open(run / "manifest-0.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(fixed, sort_keys=True) + "\n")
    assert ImageStore(run).is_intact(fixed)
    return run, key


def audit_doc(counts: list[list[int]], classifier_id: str = "x", classifier_fingerprint: str = "not-this-one") -> dict:
    """An audit.json of `t2ibias audit` shape for a two-label gender_presentation classifier whose
    confusion rows for masc and fem are ``counts`` (predicted masc, fem, abstain)."""
    import numpy as np

    from t2ibias.store.audit_file import SCHEMA

    return {"schema": SCHEMA, "classifier": {"id": classifier_id, "fingerprint": classifier_fingerprint},
            "facet": {"n_audited": int(np.sum(counts))},
            "attributes": {"gender_presentation": {
                "facet_attribute": "gender_presentation", "labels": ["masc", "fem"],
                "true_classes": ["masc", "fem", "non_binary", "na"],
                "confusion": {"true": ["masc", "fem", "non_binary", "na"], "pred": ["masc", "fem", "abstain"],
                              "counts": counts + [[0, 0, 0], [0, 0, 0]]},
                "accuracy": {"value": 0.85, "n": 40, "ci_low": 0.7, "ci_high": 0.95}, "by_group": []}}}
