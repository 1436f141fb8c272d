"""FairFace perceived attributes: import FairFace's own CSV, or run its ResNet-34 on our face crops.

FairFace (Kärkkäinen & Joo, WACV 2021) predicts, per aligned face, a perceived race (7 or 4
classes), a perceived binary gender and a perceived age bin. Every label here is *perceived*:
what a classifier trained on annotators' judgements says a face looks like, never a person's
identity. Two ways in:

* :func:`read_fairface_csv` + :func:`fairface_rows`: the CSV that FairFace's ``predict.py``
  writes (dlib detection and alignment; race, gender and age from the 7-race model, ``race4``
  from the 4-race model) becomes ``measurements.parquet`` rows, one per (face, attribute). The
  copy of ``predict.py`` in DoFaiR's release runs the 7-race model only and writes no ``race4``
  columns; both layouts are read.
* :class:`FairFaceResNet34`: a FairFace checkpoint (``fairface_alldata_20191111.pt``, 7 races,
  or ``fairface_alldata_4race_20191111.pt``, 4 races; the older ``res34_fair_align_multi_*`` files
  too) run on the face crops of the run's gate. With ``--face-detector dlib-cnn`` those crops are
  FairFace's own aligned chips (dlib MMOD detection at 800 px, 5-point landmarks, 300 px chips,
  padding 0.25: :mod:`t2ibias.measure.dlib_faces`), so the labels are FairFace's instrument as
  DoFaiR ran it; with another gate they are that gate's unaligned crops (expect some loss of
  accuracy against FairFace's published numbers).

Chip geometry (:func:`chip_transform`): dlib places the five landmarks on a mean-face template in
the unit square, pads it by ``padding`` on each side, scales it to ``size`` and fits the
least-squares similarity (rotation, uniform scale, shift) from those chip positions to the
detected landmarks; the chip is the image resampled through that transform.

Attributes and their labels (t2ibias names, all perceived):

* ``gender_presentation``: ``masc`` (FairFace ``Male``), ``fem`` (``Female``);
* ``race``: the 7 FairFace classes, snake_cased (``latino_hispanic``, ``east_asian`` ...);
* ``race4``: ``white``, ``black``, ``asian``, ``indian``;
* ``age_fairface``: FairFace's nine age bins as they are (``0-2`` … ``70+``);
* ``age_group``: FACET's bands ``young`` (<25), ``middle`` (25-65), ``older`` (>65) from the
  age-bin probabilities through :data:`AGE_GROUP_SHARES`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.fairface_csv import MALFORMED, MISSING, NOT_UTF8, CsvReadError, csv_records, parse_face_name
from t2ibias.core.fingerprint import file_sha256, fingerprint
from t2ibias.models.clip_zeroshot import Prediction
from t2ibias.core.safe_load import load_weights_file
from t2ibias.core.vocab import AGE_GROUPS
from t2ibias.core.vocab import FAIRFACE_AGE_BINS as AGE_BINS
from t2ibias.core.vocab import FAIRFACE_ATTRIBUTE_LABELS as ATTRIBUTE_LABELS
from t2ibias.core.vocab import FAIRFACE_GENDER_LABELS as GENDER_LABELS
from t2ibias.core.vocab import FAIRFACE_RACE4_LABELS as RACE4_LABELS
from t2ibias.core.vocab import FAIRFACE_RACE7_LABELS as RACE7_LABELS

#: Share of each FairFace age bin's probability that goes to each FACET age band (young <25,
#: middle 25-65, older >65; FACET, Gustafson et al. 2023). Two bins straddle a FACET boundary and
#: are split in proportion to the whole years on each side, as if ages were uniform inside a bin:
#: ``20-29`` is 20-24 young / 25-29 middle (5 and 5 years → ½ and ½); ``60-69`` is 60-65 middle /
#: 66-69 older (65 is still middle in FACET: 6 and 4 years → 0.6 and 0.4). A face's ``age_group``
#: label is the band with the largest summed probability (a tie goes to the younger band).
AGE_GROUP_SHARES: dict[str, dict[str, float]] = {
    "0-2": {"young": 1.0},
    "3-9": {"young": 1.0},
    "10-19": {"young": 1.0},
    "20-29": {"young": 0.5, "middle": 0.5},
    "30-39": {"middle": 1.0},
    "40-49": {"middle": 1.0},
    "50-59": {"middle": 1.0},
    "60-69": {"middle": 0.6, "older": 0.4},
    "70+": {"older": 1.0},
}

#: The columns FairFace's predict.py writes, in its order.
CSV_COLUMNS = (
    "face_name_align", "race", "race4", "gender", "age",
    "race_scores_fair", "race_scores_fair_4", "gender_scores_fair", "age_scores_fair",
)
#: The 4-race model's columns: absent from the CSV of a predict.py that runs the 7-race model only
#: (DoFaiR's copy), so both are optional, but one without the other is a damaged file.
RACE4_COLUMNS = ("race4", "race_scores_fair_4")
# label column → (its FairFace labels in score order, its score column)
_LABEL_COLUMNS: dict[str, tuple[tuple[str, ...], str]] = {
    "race": (tuple(RACE7_LABELS), "race_scores_fair"),
    "race4": (tuple(RACE4_LABELS), "race_scores_fair_4"),
    "gender": (tuple(GENDER_LABELS), "gender_scores_fair"),
    "age": (AGE_BINS, "age_scores_fair"),
}
_USE_PREDICT = "use the CSV FairFace's predict.py writes"
_SUM_TOLERANCE = 0.01  # printed score arrays are rounded; anything further off is not a softmax
_ARGMAX_TOLERANCE = 1e-4  # the label's printed score may lose to another by rounding only
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as FairFace normalizes
_CHECKPOINT_FIX = (
    "download fairface_alldata_20191111.pt (7 races; fairface_alldata_4race_20191111.pt for fairface4:) "
    "from the FairFace release and pass its path"
)


def _age_group_probs(age_probs: dict[str, float]) -> dict[str, float]:
    out = dict.fromkeys(AGE_GROUPS, 0.0)
    for age_bin, p in age_probs.items():
        for band, share in AGE_GROUP_SHARES[age_bin].items():
            out[band] += share * p
    return out


def _prediction(probs: dict[str, float], top: str | None = None) -> Prediction:
    """A prediction with no abstention: ``top`` (default: the most probable label, first on ties)."""
    if top is None:
        top = max(probs, key=lambda lab: probs[lab])  # max keeps the first of equal values
    others = [v for lab, v in probs.items() if lab != top]
    score = probs[top]
    return Prediction(label=top, top_label=top, score=score, margin=score - max(others), probs=dict(probs))


def _model_predictions(
    race_attribute: str, race: dict[str, float], gender: dict[str, float], age: dict[str, float]
) -> dict[str, Prediction]:
    """Attribute → prediction from t2ibias-labelled probabilities, each label the most probable."""
    preds = {race_attribute: _prediction(race)}
    preds["gender_presentation"] = _prediction(gender)
    preds["age_fairface"] = _prediction(age)
    preds["age_group"] = _prediction(_age_group_probs(age))
    return preds


# ---------------------------------------------------------------------------------------- CSV


def _one_line(value: str, limit: int = 60) -> str:
    text = value if len(value) <= limit else value[:limit] + "…"
    return repr(text)


def _parse_scores(path: Path, column: str, line: int, text: str, labels: tuple[str, ...]) -> tuple[float, ...]:
    where = f"{path}: {column}: line {line}"
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise UserError(f"{where}: {_one_line(text)} is not a score array like '[0.9 0.1]' ({_USE_PREDICT})")
    parts = [p for p in re.split(r"[\s,]+", body[1:-1]) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise UserError(f"{where}: {_one_line(text)} is not an array of numbers ({_USE_PREDICT})") from None
    if len(values) != len(labels):
        raise UserError(
            f"{where}: {len(values)} scores, expected {len(labels)} (one per label {', '.join(labels)}; {_USE_PREDICT})"
        )
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise UserError(f"{where}: {_one_line(text)} has a negative or non-finite score ({_USE_PREDICT})")
    total = sum(values)
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise UserError(f"{where}: scores sum to {total:.4g}, not 1 ({_USE_PREDICT}, unedited)")
    return tuple(v / total for v in values)


def _read_records(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (first line number, fields) of every non-blank record."""
    header: list[str] | None = None
    records: list[tuple[int, list[str]]] = []
    try:
        for record in csv_records(path):
            if record.blank:
                continue
            if header is None:
                header = [f.strip() for f in record.fields]
            else:
                records.append((record.line, record.fields))
    except CsvReadError as exc:
        if exc.reason == MISSING:
            raise UserError(f"{path}: no such file (pass the CSV FairFace's predict.py wrote)") from None
        if exc.reason == NOT_UTF8:
            raise UserError(f"{path}: not UTF-8 text ({_USE_PREDICT})") from None
        if exc.reason == MALFORMED:
            raise UserError(f"{path}: line {exc.line}: not valid CSV ({exc.detail}; {_USE_PREDICT})") from None
        raise UserError(f"{path}: cannot read ({exc.detail}; pass the CSV FairFace's predict.py wrote)") from None
    return header or [], records


def read_fairface_csv(path: str | Path) -> pd.DataFrame:
    """Read and check the CSV that FairFace's ``predict.py`` writes.

    Returns one row per face with columns ``line`` (the CSV line the face's record starts on),
    ``face_name_align``, ``image_stem`` and ``face_index`` (from the aligned face's file name
    ``<image stem>_face<N>.<ext>``), the label columns ``race``, ``race4``, ``gender``, ``age`` as
    FairFace writes them, and the four score columns as tuples of floats in FairFace's label
    order, renormalized to sum to 1. A file without the 4-race columns (DoFaiR's predict.py)
    has None in ``race4`` and ``race_scores_fair_4``. ``df.attrs["source"]`` is the file's path.
    Any defect raises :class:`UserError` naming the file, column and line.
    """
    path = Path(path)
    header, records = _read_records(path)
    has_race4 = any(c in header for c in RACE4_COLUMNS)
    wanted = [c for c in CSV_COLUMNS if has_race4 or c not in RACE4_COLUMNS]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise UserError(f"{path}: columns: missing {', '.join(missing)} ({_USE_PREDICT})")
    where = {c: header.index(c) for c in wanted}
    label_columns = {c: v for c, v in _LABEL_COLUMNS.items() if c in where}
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], int] = {}
    for line, fields in records:
        if len(fields) != len(header):
            raise UserError(f"{path}: line {line}: {len(fields)} fields, expected {len(header)} as in the header ({_USE_PREDICT})")
        raw = {c: fields[i] for c, i in where.items()}
        name = raw["face_name_align"].strip()
        parts = parse_face_name(name)
        if parts is None or not parts.stem or parts.ext is None:
            raise UserError(
                f"{path}: face_name_align: line {line}: {_one_line(name)} is not named <image>_face<N>.<ext> ({_USE_PREDICT})"
            )
        stem, index = parts.stem, parts.index
        if (stem, index) in seen:
            raise UserError(
                f"{path}: face_name_align: line {line}: face {index} of image {stem!r} already on line "
                f"{seen[stem, index]} (run predict.py once per folder and pass its CSV unmerged)"
            )
        seen[stem, index] = line
        row: dict[str, Any] = {"line": line, "face_name_align": name, "image_stem": stem, "face_index": index,
                               "race4": None, "race_scores_fair_4": None}
        for column, (labels, score_column) in label_columns.items():
            value = raw[column].strip()
            if value not in labels:
                raise UserError(
                    f"{path}: {column}: line {line}: unknown label {_one_line(value)} "
                    f"(FairFace writes one of {', '.join(labels)}; {_USE_PREDICT})"
                )
            scores = _parse_scores(path, score_column, line, raw[score_column], labels)
            if scores[labels.index(value)] < max(scores) - _ARGMAX_TOLERANCE:
                raise UserError(
                    f"{path}: {column}: line {line}: label {value!r} is not the top score of {score_column} "
                    f"(columns shifted or edited; {_USE_PREDICT})"
                )
            row[column] = value
            row[score_column] = scores
        rows.append(row)
    columns = ["line", "face_name_align", "image_stem", "face_index", "race", "race4", "gender", "age",
               "race_scores_fair", "race_scores_fair_4", "gender_scores_fair", "age_scores_fair"]
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["source"] = str(path)
    return df


def _csv_predictions(row: Any) -> dict[str, Prediction]:
    def probs(column: str, mapping: dict[str, str] | None) -> dict[str, float]:
        labels, score_column = _LABEL_COLUMNS[column]
        return {(mapping[lab] if mapping else lab): float(v) for lab, v in zip(labels, row[score_column])}

    race, gender, age = probs("race", RACE7_LABELS), probs("gender", GENDER_LABELS), probs("age", None)
    preds = {
        # the CSV's own label (already checked to hold the top score, up to printing)
        "race": _prediction(race, RACE7_LABELS[row["race"]]),
        "gender_presentation": _prediction(gender, GENDER_LABELS[row["gender"]]),
        "age_fairface": _prediction(age, row["age"]),
        "age_group": _prediction(_age_group_probs(age)),
    }
    if row["race4"] is not None:  # a CSV without the 4-race model's columns has no race4
        preds["race4"] = _prediction(probs("race4", RACE4_LABELS), RACE4_LABELS[row["race4"]])
    return preds


def fairface_rows(df: pd.DataFrame, image_keys: dict[str, str], measurer: str) -> pd.DataFrame:
    """``measurements.parquet`` rows (columns :data:`t2ibias.measure.stage.COLUMNS`) of a FairFace CSV.

    ``df`` is what :func:`read_fairface_csv` returns; ``image_keys`` maps an image file stem to
    the run's image key (run images are ``images/<k0k1>/<key>.png``, so stem and key coincide).
    One row per (face, attribute): unit ``face``, ``face_index`` = FairFace's ``_face<N>`` (dlib's
    detection order, not largest first), no box, attributes ``race``, ``race4`` (when the CSV has
    it), ``gender_presentation``, ``age_fairface``, ``age_group``; no abstention (label = top label).
    Faces of images that are not in the run raise :class:`UserError`.
    """
    from t2ibias.store.rundir import COLUMNS

    source = df.attrs.get("source", "FairFace CSV")
    unknown = df[~df["image_stem"].isin(image_keys)] if len(df) else df
    if len(unknown):
        first = unknown.iloc[0]
        raise UserError(
            f"{source}: face_name_align: {len(unknown)} of {len(df)} faces are of images not in this run, "
            f"first {first['face_name_align']!r} (line {first['line']}) (run FairFace on this run's images/ folder)"
        )
    rows: list[dict[str, Any]] = []
    for _, face in df.iterrows():
        key, index = image_keys[face["image_stem"]], int(face["face_index"])
        for attribute, p in _csv_predictions(face).items():
            rows.append({
                "key": key, "measurer": measurer, "unit": "face", "face_index": index,
                "box_x": None, "box_y": None, "box_w": None, "box_h": None,
                "attribute": attribute, "label": p.label, "top_label": p.top_label,
                "score": p.score, "margin": p.margin, "probs": json.dumps(p.probs, sort_keys=True),
            })
    return pd.DataFrame(rows, columns=COLUMNS)




def fairface_csv_fingerprint(path: str | Path) -> str:
    """Measurer id of a FairFace CSV: its content hash and the label mapping (not its path or time)."""
    path = Path(path)
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc}; pass the CSV FairFace's predict.py wrote)") from None
    return fingerprint({"measurer": "fairface-csv", "sha256": digest, "attributes": ATTRIBUTE_LABELS, "age_group": AGE_GROUP_SHARES})


def import_fairface_csv(run_dir: str | Path, path: str | Path) -> int:
    """Read a FairFace CSV made on ``run_dir``'s images and merge its faces into the run's
    measurements (measurer ``fairface-csv``, fingerprinted by the file's content); returns the
    number of faces. Nothing is written when any line of the CSV is bad."""
    from t2ibias.measure.table import append_measurements
    from t2ibias.store.image_store import ImageStore

    run_dir, path = Path(run_dir), Path(path)
    df = read_fairface_csv(path)
    records = ImageStore(run_dir).records()
    image_keys = {Path(str(rec.get("path", key))).stem: key for key, rec in records.items()}
    measurer = fairface_csv_fingerprint(path)
    rows = fairface_rows(df, image_keys, measurer)
    if len(rows):
        attributes = [a for a in ATTRIBUTE_LABELS if a in set(rows["attribute"])]
        append_measurements(run_dir, rows, measurer, {"id": "fairface-csv", "source": str(path.resolve()),
                                                      "attributes": attributes}, source=str(path))
    return int(len(df))


# ------------------------------------------------------------------------------- aligned chips

#: dlib's 5-point mean face on the unit square (``get_face_chip_details``), in the order of
#: ``shape_predictor_5_face_landmarks.dat``: the two corners of one eye (outer, inner), those of
#: the other eye (outer, inner), the base of the nose.
FACE_TEMPLATE_5 = (
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)
CHIP_SIZE, CHIP_PADDING = 300, 0.25  # FairFace's predict.py


def chip_template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> Any:
    """Where the five landmarks land in a ``size`` × ``size`` chip: the template padded by
    ``padding`` of its side on every side, then scaled to the chip."""
    import numpy as np

    return (padding + np.asarray(FACE_TEMPLATE_5, dtype=float)) / (2 * padding + 1) * size


def chip_transform(landmarks: Any, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> Any:
    """The 2 × 3 affine map from chip pixels to image pixels: the least-squares similarity taking
    :func:`chip_template` onto ``landmarks`` (five (x, y) points).

    With chip points p (centred p') and image points q (centred q'), the map is
    ``[[a, -b], [b, a]] p + t`` with ``a = Σ p'·q' / Σ|p'|²``, ``b = Σ p' × q' / Σ|p'|²`` and ``t``
    taking the mean of p to the mean of q (the closed form of the 2-D similarity fit).
    """
    import numpy as np

    q = np.asarray(landmarks, dtype=float)
    if q.shape != (5, 2) or not np.isfinite(q).all():
        raise UserError(f"face chip: landmarks of shape {q.shape}: need five finite (x, y) points (dlib's 5-point predictor)")
    p = chip_template(size, padding)
    pc, qc = p - p.mean(axis=0), q - q.mean(axis=0)
    den = float((pc**2).sum())
    a = float((pc * qc).sum()) / den
    b = float((pc[:, 0] * qc[:, 1] - pc[:, 1] * qc[:, 0]).sum()) / den
    m = np.array([[a, -b], [b, a]])
    return np.hstack([m, (q.mean(axis=0) - m @ p.mean(axis=0))[:, None]])


def chip_square(landmarks: Any, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> tuple[float, float, float, float]:
    """The chip's footprint in the image: centre x, centre y, side (image pixels) and rotation
    (radians, counter-clockwise in image axes) of the square the chip resamples."""
    import math

    import numpy as np

    t = chip_transform(landmarks, size, padding)
    cx, cy = t[:, :2] @ np.array([size / 2, size / 2]) + t[:, 2]
    return float(cx), float(cy), math.hypot(t[0, 0], t[1, 0]) * size, math.atan2(t[1, 0], t[0, 0])


def face_chip(image: Any, landmarks: Any, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> Any:
    """FairFace's chip of the face with these five landmarks, cut by ``dlib.get_face_chip`` (the
    resampler FairFace used) from a PIL image; needs dlib (``t2ibias[faces]``)."""
    import numpy as np
    from PIL import Image

    from t2ibias.measure.dlib_faces import import_dlib

    dlib = import_dlib("face chip")
    chip_transform(landmarks, size, padding)  # checks the points
    pts = [dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(landmarks, dtype=float)]
    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
    shape = dlib.full_object_detection(dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1), pts)
    return Image.fromarray(np.asarray(dlib.get_face_chip(rgb, shape, size=size, padding=padding)))


# ------------------------------------------------------------------------------- ResNet-34


class FairFaceResNet34:
    """FairFace's ResNet-34 (``fc`` of 18 outputs) on face crops, from a local checkpoint.

    Output units as FairFace slices them, each softmaxed: the 7-race model (``variant=7``) gives
    race ``[:7]``, gender ``[7:9]`` and age ``[9:18]``; the 4-race model (``variant=4``) gives
    ``race4`` from ``[:4]`` only, since FairFace's ``predict.py`` reads nothing else from it (its
    gender and age come from the 7-race model: measure with both for all attributes). Crops are
    resized to 224×224 (no aspect-preserving crop, as FairFace) and ImageNet-normalized. FairFace
    trained on dlib-aligned faces: with the ``dlib-cnn`` gate the crops are exactly those chips;
    other gates' crops are unaligned, so treat their labels as a little noisier.
    """

    id = "fairface-resnet34"

    def __init__(self, checkpoint: str | Path, variant: int = 7, device: str = "cpu", batch_size: int = 32) -> None:
        if variant not in (4, 7):
            raise UserError(f"{self.id}: variant: {variant!r} is not 7 or 4 (pass 7 for res34_fair_align_multi_7, 4 for _4_)")
        if batch_size < 1:
            raise UserError(f"{self.id}: batch_size: {batch_size} is below 1 (pass a positive batch size)")
        self.checkpoint = Path(checkpoint).expanduser()
        if not self.checkpoint.is_file():
            raise UserError(f"{self.checkpoint}: no such checkpoint file ({_CHECKPOINT_FIX})")
        self.variant = variant
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._transform: Any = None
        self._sha256: str | None = None

    @property
    def race_attribute(self) -> str:
        return "race" if self.variant == 7 else "race4"

    @property
    def attributes(self) -> dict[str, tuple[str, ...]]:
        """Attribute → labels, in the order :meth:`measure` reports them."""
        if self.variant == 4:
            return {"race4": ATTRIBUTE_LABELS["race4"]}
        return {a: ATTRIBUTE_LABELS[a] for a in ("race", "gender_presentation", "age_fairface", "age_group")}

    def config(self) -> dict[str, Any]:
        """The measurer kind (``fairface`` or ``fairface4``) and its checkpoint."""
        return {"kind": "fairface" if self.variant == 7 else "fairface4", "checkpoint": str(self.checkpoint),
                "variant": self.variant}

    def fingerprint(self) -> str:
        import torchvision

        if self._sha256 is None:
            try:
                self._sha256 = file_sha256(self.checkpoint)
            except OSError as exc:
                raise UserError(f"{self.checkpoint}: cannot read ({exc.strerror or exc}; {_CHECKPOINT_FIX})") from None
        return fingerprint({
            "measurer": self.id, "checkpoint_sha256": self._sha256, "variant": self.variant, "outputs": list(self.attributes),
            "torchvision": torchvision.__version__, "preprocess": {"resize": [224, 224], "mean": _MEAN, "std": _STD},
            "age_group": AGE_GROUP_SHARES,
        })

    def _state_dict(self) -> dict[str, Any]:
        import torch

        try:
            obj = load_weights_file(self.checkpoint, self.id)
        except UserError:
            raise
        except Exception as exc:  # the unpickler fails on a foreign file in many ways (IndexError, EOFError ...)
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise UserError(f"{self.checkpoint}: not a readable PyTorch state_dict ({reason}; {_CHECKPOINT_FIX})") from None
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UserError(f"{self.checkpoint}: holds no state_dict of tensors ({_CHECKPOINT_FIX})")
        return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}

    def load(self) -> None:
        import torch
        import torchvision
        from torchvision import transforms

        model = torchvision.models.resnet34(weights=None)
        model.fc = torch.nn.Linear(model.fc.in_features, 18)
        state = self._state_dict()
        expected = model.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        wrong = [f"{k} {tuple(state[k].shape)} not {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and state[k].shape != v.shape]
        if missing or unexpected or wrong:
            parts = []
            for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
                if items:
                    parts.append(f"{what} {len(items)}: {', '.join(items[:3])}{' …' if len(items) > 3 else ''}")
            raise UserError(f"{self.checkpoint}: not a FairFace ResNet-34 with 18 outputs ({'; '.join(parts)}; {_CHECKPOINT_FIX})")
        model.load_state_dict(state)
        model.eval().to(self.device)
        self._model = model
        self._transform = transforms.Compose([
            transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(_MEAN, _STD),
        ])

    def measure(self, crops: list[Any]) -> list[dict[str, Prediction]]:
        """One dict attribute → prediction (no abstention) per face crop (PIL images)."""
        import torch

        for i, crop in enumerate(crops):
            if crop.width < 1 or crop.height < 1:
                raise UserError(f"{self.id}: crop {i}: zero size {crop.width}×{crop.height} (pass face crops of at least 1×1 pixel)")
        if not crops:
            return []
        if self._model is None:
            self.load()
        n_race = self.variant
        race_names = tuple(RACE7_LABELS.values()) if n_race == 7 else tuple(RACE4_LABELS.values())
        out: list[dict[str, Prediction]] = []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.stack([self._transform(c.convert("RGB")) for c in crops[start : start + self.batch_size]])
            with torch.no_grad():
                logits = self._model(batch.to(self.device)).float().cpu()
            race = logits[:, :n_race].softmax(dim=1).numpy()
            if n_race == 4:
                out.extend({"race4": _prediction({lab: float(v) for lab, v in zip(race_names, r)})} for r in race)
                continue
            gender = logits[:, 7:9].softmax(dim=1).numpy()
            age = logits[:, 9:18].softmax(dim=1).numpy()
            for r, g, a in zip(race, gender, age):
                out.append(_model_predictions(
                    self.race_attribute,
                    race={lab: float(v) for lab, v in zip(race_names, r)},
                    gender={lab: float(v) for lab, v in zip(GENDER_LABELS.values(), g)},
                    age={lab: float(v) for lab, v in zip(AGE_BINS, a)},
                ))
        return out
