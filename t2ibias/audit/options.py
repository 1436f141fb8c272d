"""What a user chose for one ``t2ibias audit``: crops, sampling, bootstrap and engine, checked once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from t2ibias.audit.crops import PADDING
from t2ibias.audit.groupwise import ENGINES
from t2ibias.core.errors import UserError
from t2ibias.stats.bootstrap import MIN_N

INTERVAL = ("images resampled (people of one image together), all groups from the same draws: "
            "Korn-Graubard for shares, percentile otherwise; gaps and ratios by simultaneous "
            "max-t intervals with p-values and Benjamini-Hochberg q-values over the audit's comparisons")


@dataclass(frozen=True)
class AuditOptions:
    """How an audit samples, crops and resamples; checked when made (errors name the CLI flag).

    ``limit`` audits a random sample (seeded by ``seed``) of that many eligible people, in release
    order; ``seed`` also seeds the bootstrap. ``batch_size`` crops go to the predictor at a time.
    ``engine`` picks how the image resamples are evaluated (see
    :func:`t2ibias.audit.groupwise.metric_rows`): ``"fairlearn"`` (a MetricFrame per resample) or
    ``"vectorized"``. ``face_gate`` audits on the largest face found in each person crop (how the
    measure stage labels an image) instead of the person crop; no face found is an abstention.
    ``recall_gate`` is the face gate whose detection rate is audited (``gate_recall``) when the
    crops are person crops; with ``face_gate`` that gate is audited, from the same detections.
    """

    limit: int | None = None
    batch_size: int = 32
    seed: int = 0
    n_boot: int = 1000
    confidence: float = 0.95
    min_n: int = MIN_N
    engine: str = "fairlearn"
    face_gate: Any = None
    recall_gate: Any = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"--batch-size: {self.batch_size} (use a positive number)")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit: {self.limit} (use a positive number of people, or no limit)")
        if self.engine not in ENGINES:
            raise UserError(f"--engine: {self.engine!r} is unknown (use one of {', '.join(ENGINES)})")
        if not 0 < self.confidence < 1:
            raise UserError(f"confidence: {self.confidence} (use a number between 0 and 1)")

    def settings(self) -> dict[str, Any]:
        """The ``settings`` block of audit.json."""
        gate = self.face_gate
        return {"crops": "person" if gate is None else "largest face in the person crop",
                "face_gate": None if gate is None else gate.config(),
                "gate_audited": None if (gate or self.recall_gate) is None else (gate or self.recall_gate).config(),
                "limit": self.limit, "seed": int(self.seed), "n_boot": int(self.n_boot), "batch_size": int(self.batch_size),
                "confidence": float(self.confidence), "min_n": int(self.min_n), "padding": PADDING,
                "engine": self.engine, "interval": INTERVAL}
