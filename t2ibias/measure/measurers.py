"""Measurers by name, for ``t2ibias audit --classifier`` and ``t2ibias measure --also``.

- a classifier config id or YAML file (``t2ibias ls classifiers``): CLIP zero-shot;
- ``pixel-mst``: Monk skin tone from the skin pixels of a face crop (CIEDE2000 to the swatches);
- ``fairface:PATH`` / ``fairface4:PATH``: a FairFace ResNet-34 checkpoint given by local path:
  the 7-race model (race, gender, age) or the 4-race model (``race4`` only, as FairFace uses it).

Each has ``id``, a fingerprint and ``measure(crops) -> list[dict[attribute, Prediction]]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError

PIXEL_MST = "pixel-mst"
FAIRFACE_PREFIXES = {"fairface": 7, "fairface7": 7, "fairface4": 4}
#: The checkpoint FairFace's predict.py loads for each variant.
FAIRFACE_CHECKPOINTS = {7: "fairface_alldata_20191111.pt", 4: "fairface_alldata_4race_20191111.pt"}
CROP_MEASURERS_HELP = "pixel-mst, fairface:PATH or fairface4:PATH"


def measurer_fingerprint_of(measurer: Any) -> str:
    """The fingerprint string of any measurer (a method on crop measurers, an attribute on CLIP predictors)."""
    fp = measurer.fingerprint
    return str(fp() if callable(fp) else fp)


def resolve_crop_measurer(name: str, device: str = "cpu") -> Any:
    """``pixel-mst`` or ``fairface[4]:PATH`` as a crop measurer; UserError for anything else."""
    text = name.strip()
    if text == PIXEL_MST:
        from t2ibias.measure.skin_tone import PixelSkinTone

        return PixelSkinTone()
    prefix, sep, path = text.partition(":")
    if sep and prefix in FAIRFACE_PREFIXES:
        if not path:
            raise UserError(f"measurer {name!r}: no checkpoint path (write {prefix}:PATH/TO/{FAIRFACE_CHECKPOINTS[FAIRFACE_PREFIXES[prefix]]})")
        from t2ibias.measure.fairface import FairFaceResNet34

        return FairFaceResNet34(Path(path).expanduser(), variant=FAIRFACE_PREFIXES[prefix], device=device)
    raise UserError(f"measurer {name!r}: unknown (use {CROP_MEASURERS_HELP})")


def resolve_measurer(name: str, device: str = "cpu") -> Any:
    """A crop measurer (see :func:`resolve_crop_measurer`) or a CLIP classifier config as a predictor."""
    text = name.strip()
    if text == PIXEL_MST or text.partition(":")[0] in FAIRFACE_PREFIXES and ":" in text:
        return resolve_crop_measurer(text, device)
    from t2ibias.measure.predictors import ClipPredictor
    from t2ibias.models.classifier_spec import resolve_classifier_spec

    return ClipPredictor(resolve_classifier_spec(text), device)
