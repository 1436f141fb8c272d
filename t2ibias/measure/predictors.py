"""What the audit asks a classifier: the :class:`Predictor` protocol (every registered measurer of
:mod:`t2ibias.measure.measurers`, the CLIP classifier included, is one).

A predictor maps a batch of PIL crops to one dict per crop, attribute → a prediction with
``label`` (``abstain`` when it declines), and optionally ``top_label`` (the best label even when
abstaining), ``score`` (the probability of the top label) and ``probs`` (label → probability),
as :class:`t2ibias.models.clip_zeroshot.Prediction` has them. An attribute missing from a
crop's dict is no answer for that crop.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from t2ibias.core.vocab import ABSTAIN


class Predictor(Protocol):
    """Anything that answers a batch of crops with one dict per crop (see the module docstring)."""

    def measure(self, crops: list[Any]) -> list[dict[str, Any]]: ...


#: the fields of an attribute a predictor gave no answer for: an abstention without a score
NO_ANSWER: tuple[str, str, float, dict[str, float]] = (ABSTAIN, ABSTAIN, math.nan, {})


def prediction_fields(p: Any) -> tuple[str, str, float, dict[str, float]]:
    """(label, top label, score, probs) of one prediction; the top label is the label and the
    score NaN where the predictor gives none."""
    label = str(getattr(p, "label"))
    top = getattr(p, "top_label", None)
    score = getattr(p, "score", None)
    probs = getattr(p, "probs", None) or {}
    try:
        s = float(score) if score is not None else math.nan
    except (TypeError, ValueError):
        s = math.nan
    return label, str(top) if top is not None else label, s, {str(k): float(v) for k, v in dict(probs).items()}
