"""The measure stage: gate every stored image, classify faces (or whole images), cache rows.

Rows go to ``measurements.parquet``, one per (image, unit, attribute), where a unit is the
whole image or one detected face. They are keyed by (image key, measurer fingerprint): a re-run
measures only images it has not seen with the same gate and classifier.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.errors import UserError
from t2ibias.fingerprint import fingerprint
from t2ibias.measure.classifier_spec import ClassifierSpec, resolve_classifier_spec
from t2ibias.measure.clip_zeroshot import CLIPAttributeClassifier
from t2ibias.measure.gate import HaarFaceGate
from t2ibias.run import image_jobs, read_prompts, read_spec
from t2ibias.store.image_store import OK, ImageStore, atomic_write_bytes

MEASUREMENTS_FILE = "measurements.parquet"
#: Whole-image CLIP embeddings (L2-normalized), for distances between groups of images.
EMBEDDINGS_FILE = "embeddings.parquet"
EMBEDDING_COLUMNS = ["key", "measurer", "embedding"]
_ROW_ID = ["key", "measurer", "unit", "face_index", "attribute"]
COLUMNS = [
    "key", "measurer", "unit", "face_index", "box_x", "box_y", "box_w", "box_h",
    "attribute", "label", "top_label", "score", "margin", "probs",
]
CHECKPOINT_EVERY = 256  # images between rewrites of the measurement file


def measurer_fingerprint(gate: HaarFaceGate, cspec: ClassifierSpec) -> str:
    return fingerprint({"gate": gate.fingerprint(), "classifier": cspec.fingerprint()})


def read_measurements(run_dir: Path, name: str = MEASUREMENTS_FILE) -> pd.DataFrame:
    path = run_dir / name
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS if name == MEASUREMENTS_FILE else EMBEDDING_COLUMNS)
    try:
        return pd.read_parquet(path)
    except Exception as exc:
        raise UserError(f"{path}: unreadable ({exc}); delete it and re-run `t2ibias measure {run_dir}`") from None


def _write(run_dir: Path, frames: list[pd.DataFrame], embeddings: list[pd.DataFrame]) -> None:
    """Rewrite both files; a key measured again after a crash between the two writes keeps its last rows."""
    for name, parts, ident in ((EMBEDDINGS_FILE, embeddings, ["key", "measurer"]), (MEASUREMENTS_FILE, frames, _ROW_ID)):
        parts = [f for f in parts if len(f)]
        if not parts:
            continue
        frame = pd.concat(parts, ignore_index=True).drop_duplicates(ident, keep="last")
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        atomic_write_bytes(run_dir / name, buf.getvalue())


def _open_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UserError(
            f"{path}: cannot read image ({exc}); run `t2ibias generate {path.parent.parent.parent}` to regenerate it"
        ) from None


def _rows(key: str, measurer: str, unit: str, face_index: int, box: Any, preds: dict[str, Any]) -> list[dict[str, Any]]:
    bx = (box.x, box.y, box.w, box.h) if box is not None else (None, None, None, None)
    return [
        {
            "key": key, "measurer": measurer, "unit": unit, "face_index": face_index,
            "box_x": bx[0], "box_y": bx[1], "box_w": bx[2], "box_h": bx[3],
            "attribute": attr, "label": p.label, "top_label": p.top_label,
            "score": p.score, "margin": p.margin, "probs": json.dumps(p.probs, sort_keys=True),
        }
        for attr, p in preds.items()
    ]


def measure_stage(
    run_dir: Path,
    device: str = "auto",
    batch_size: int = 16,
    classifier: str | None = None,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
) -> dict[str, int]:
    """Measure every intact image not yet measured by this (gate, classifier) pair."""
    from t2ibias.generation.diffusers_adapter import resolve_device

    spec = read_spec(run_dir)
    cspec = resolve_classifier_spec(classifier or spec["classifier"]["id"])
    gate = HaarFaceGate()
    measurer = measurer_fingerprint(gate, cspec)
    jobs = image_jobs(spec, read_prompts(run_dir, spec))
    records = ImageStore(run_dir).records()
    ok_keys = [j.key for j in jobs if records.get(j.key, {}).get("status") == OK]
    existing = read_measurements(run_dir)
    existing_emb = read_measurements(run_dir, EMBEDDINGS_FILE)
    seen = set(existing.loc[existing["measurer"] == measurer, "key"]) & set(
        existing_emb.loc[existing_emb["measurer"] == measurer, "key"]
    )
    todo = [k for k in ok_keys if k not in seen]
    if not todo:
        return {"measured": 0, "cached": len(ok_keys), "faces": 0}
    clf = CLIPAttributeClassifier(cspec, resolve_device(device))
    clf.load()
    advance = progress(len(todo), len(ok_keys) - len(todo)) if progress else (lambda n: None)
    new_rows: list[dict[str, Any]] = []
    new_emb: list[dict[str, Any]] = []
    n_faces = 0
    since_checkpoint = 0
    frames, embeddings = [existing], [existing_emb]
    for start in range(0, len(todo), batch_size):
        keys = todo[start : start + batch_size]
        units: list[tuple[str, str, int, Any, Any]] = []  # key, unit, face index, box, PIL image
        for key in keys:
            image = _open_image(run_dir / records[key]["path"])
            units.append((key, "image", -1, None, image))
            for i, box in enumerate(gate.detect(image)):
                units.append((key, "face", i, box, gate.crop(image, box)))
                n_faces += 1
        feats = clf.encode_images([u[4] for u in units])
        vectors = feats.cpu().numpy().astype("float32")
        for (key, unit, idx, box, _), preds, vec in zip(units, clf.predict(feats), vectors):
            new_rows.extend(_rows(key, measurer, unit, idx, box, preds))
            if unit == "image":
                new_emb.append({"key": key, "measurer": measurer, "embedding": vec})
        advance(len(keys))
        since_checkpoint += len(keys)
        if since_checkpoint >= CHECKPOINT_EVERY:
            frames.append(pd.DataFrame(new_rows, columns=COLUMNS))
            embeddings.append(pd.DataFrame(new_emb, columns=EMBEDDING_COLUMNS))
            new_rows, new_emb, since_checkpoint = [], [], 0
            _write(run_dir, frames, embeddings)
    frames.append(pd.DataFrame(new_rows, columns=COLUMNS))
    embeddings.append(pd.DataFrame(new_emb, columns=EMBEDDING_COLUMNS))
    _write(run_dir, frames, embeddings)
    return {"measured": len(todo), "cached": len(ok_keys) - len(todo), "faces": n_faces}
