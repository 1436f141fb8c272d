"""Every metric t2ibias computes, by id: its family, which way is better, a one-line definition,
its interval and the file it is written to. ``t2ibias ls metrics`` lists this registry, and the
``metrics`` block of a run's ``metrics.json`` is its run-metric part (:func:`metric_info`).

Metrics of label counts are defined beside their function (``SkewMetric`` tuples in
:mod:`t2ibias.metrics.skew` and :mod:`t2ibias.metrics.legacy`) and registered from those tuples,
so a new skew-type metric is one function and one ``SkewMetric``. Metrics of other shapes (per
image, per audited person, per FACET person, per DoFaiR instance) are one :func:`register` call
each, below, named as their writer names them.
"""

from __future__ import annotations

from dataclasses import dataclass

from t2ibias.core.registry import Registry
from t2ibias.metrics import location
from t2ibias.metrics.legacy import PEER_METRICS
from t2ibias.metrics.skew import EXTRA_SKEW_METRICS, REFERENCE_SKEW_METRICS, SKEW_METRICS
from t2ibias.store.rundir import INSTRUMENT_FILE, METRICS_FILE

#: Where each output's metrics are written (the ``output`` of a metric).
RUN_METRICS = METRICS_FILE
INSTRUMENT = INSTRUMENT_FILE
AUDIT = "audit.json"
FACTUALITY = "factuality --json"
FACET = "facet-eval metrics.json"

#: Metric families, each with what it measures.
FAMILIES: dict[str, str] = {
    "share": "label counts and shares of a run's images, abstain / no_person / blocked / failed as bins",
    "skew": "how far a run's label shares are from balance",
    "peer": "peers' skew metrics of label shares, as their papers define them",
    "reference": "label shares against a reference distribution (labour statistics)",
    "location": "which place location-neutral images resemble (image embeddings)",
    "seed": "run-to-run variation of a run's headline figures across seed slots",
    "audit": "a classifier's error against FACET's human annotations (`t2ibias audit`)",
    "correction": "label shares corrected with the audited confusion matrix",
    "agreement": "agreement between two measurers labelling the same faces",
    "factuality": "DoFaiR factuality of generated groups (Wan et al., EMNLP 2024)",
    "factuality_tax": "change of DoFaiR factuality and diversity under an intervention",
    "facet": "FACET detection, segmentation and classification recall per perceived group",
}

#: Interval methods the score stage names in its rows.
PROJECTION_NAME = "simultaneous-projection"
PAIRED_NAME = "paired t over matched prompts"
PAIRED_SKEW_NAME = "difference of mean-over-prompts bounds"
_SHARE_INTERVAL = "per prompt: the --ci share interval (clopper-pearson by default); over prompts: korn-graubard"
_SKEW_INTERVAL = f"per prompt and pooled: {PROJECTION_NAME}; mean over prompts: mean of per-prompt bounds"


@dataclass(frozen=True)
class MetricInfo:
    """One metric: ``higher_is_better`` is None where neither direction is better (counts, signed gaps)."""

    id: str
    family: str
    higher_is_better: bool | None
    definition: str
    interval: str | None = None
    output: str = RUN_METRICS


METRICS: Registry[MetricInfo] = Registry("metric", "t2ibias ls metrics")
_ORDER: list[str] = []  # registration order: the order of metrics.json's `metrics` block


def register(info: MetricInfo) -> MetricInfo:
    """Add a metric (its id once only; its family one of :data:`FAMILIES`)."""
    if info.family not in FAMILIES:
        raise ValueError(f"metric {info.id!r}: unknown family {info.family!r} (add it to FAMILIES)")
    METRICS.entry(info.id)(info)
    _ORDER.append(info.id)
    return info


def metrics(family: str | None = None, output: str | None = None) -> list[MetricInfo]:
    """The registered metrics in registration order, optionally of one family or output only."""
    out = [METRICS.get(name) for name in _ORDER]
    return [m for m in out if (family is None or m.family == family) and (output is None or m.output == output)]


def metric_info(output: str = RUN_METRICS) -> dict[str, dict[str, object]]:
    """id → definition, higher_is_better and interval of one output's metrics (the ``metrics``
    block of a run's metrics.json)."""
    return {m.id: {"definition": m.definition, "higher_is_better": m.higher_is_better, "interval": m.interval}
            for m in metrics(output=output)}


# ---------------------------------------------------------------- a run's metrics.json (score stage)

register(MetricInfo("count", "share", None, "Number of images with this label or status."))
register(MetricInfo(
    "proportion", "share", None,
    "Share of all images of the group with this label; abstain, no_person, blocked and failed are bins of their own.",
    f"{_SHARE_INTERVAL}; paired differences: {PAIRED_NAME}"))
for _family, _group in (("skew", SKEW_METRICS + EXTRA_SKEW_METRICS), ("peer", PEER_METRICS)):
    for _m in _group:
        register(MetricInfo(_m.name, _family, _m.higher_is_better, _m.definition,
                            f"{_SKEW_INTERVAL}; paired differences: {PAIRED_SKEW_NAME}"))
for _m in REFERENCE_SKEW_METRICS:
    register(MetricInfo(_m.name, "reference", _m.higher_is_better, _m.definition, _SKEW_INTERVAL))
register(MetricInfo(
    "share_minus_reference", "reference", None,
    "Label share among classified images minus the reference share (e.g. US labour statistics); 0 matches it.",
    "clopper-pearson minus the reference"))
register(MetricInfo(location.METRIC, "location", None, location.DEFINITION, "bootstrap percentile"))
register(MetricInfo(
    "proportion_seed_sd", "seed", None,
    "Run-to-run variation of a label's all-prompt share: the standard deviation across seed slots (image index), each slot alone, divided by √(slots)."))
for _m in SKEW_METRICS:
    register(MetricInfo(
        f"{_m.name}_seed_sd", "seed", None,
        f"Run-to-run variation of {_m.name.replace('_', ' ')} over all prompts: its standard deviation across seed slots, divided by √(slots)."))

# ---------------------------------------------------------------- `t2ibias audit` (audit.json, audit.csv)

_AUDIT_SHARE = "korn-graubard, images resampled (the people of one image together); group gaps: max-t simultaneous"
_AUDIT_MEAN = "percentile, images resampled (the people of one image together); group gaps: max-t simultaneous"
register(MetricInfo(
    "accuracy", "audit", True,
    "Share of audited FACET people of the classifier's classes whose label is the annotators' class; an abstention counts as wrong.",
    _AUDIT_SHARE, AUDIT))
register(MetricInfo(
    "accuracy_answered", "audit", True,
    "Accuracy among the audited people the classifier answered (abstentions left out).", _AUDIT_SHARE, AUDIT))
register(MetricInfo(
    "abstain_rate", "audit", None,
    "Share of audited people the classifier abstained on (or gave no answer for, e.g. no face found).", _AUDIT_SHARE, AUDIT))
register(MetricInfo(
    "within_range", "audit", True,
    "Skin tone: share of audited people whose predicted Monk Skin Tone is one of the values an annotator chose.",
    _AUDIT_SHARE, AUDIT))
register(MetricInfo(
    "abs_error", "audit", False,
    "Skin tone: mean absolute difference between the predicted MST value and the annotators' weighted median (answered only).",
    _AUDIT_MEAN, AUDIT))
register(MetricInfo(
    "ece", "audit", False,
    "Expected calibration error of the top label's probability over 10 equal-width bins (Guo et al. 2017); 0 is calibrated.",
    _AUDIT_MEAN, AUDIT))

# ---------------------------------------------------------------- the instrument beside a run (instrument.json)

register(MetricInfo(
    "raw", "correction", None,
    "A label's share among a run's answered images before correction (field `raw` of instrument.json's corrected rows).",
    "clopper-pearson (korn-graubard over prompts when pooled)", INSTRUMENT))
register(MetricInfo(
    "corrected", "correction", None,
    "A label's share among answered images corrected by inverting the audited confusion matrix (Rogan-Gladen for two labels).",
    "percentile, audit rows and images (prompts, then images, when pooled) resampled", INSTRUMENT))
register(MetricInfo(
    "agreement", "agreement", True,
    "Share of the faces both measurers labelled on which their labels are the same.",
    "korn-graubard, faces resampled by image and prompt", INSTRUMENT))
register(MetricInfo(
    "kappa", "agreement", True,
    "Cohen's kappa of two measurers' labels: agreement beyond what their label distributions give by chance (Cohen 1960).",
    "percentile, faces resampled by image and prompt", INSTRUMENT))

# ---------------------------------------------------------------- `t2ibias factuality` (DoFaiR)

_INSTANCES = "percentile, instances resampled"
register(MetricInfo(
    "dominant_demographic_accuracy", "factuality", True,
    "DoFaiR DDA: the most frequent predicted groups scored against the gold dominant groups over all K labels.",
    _INSTANCES, FACTUALITY))
register(MetricInfo(
    "involved_demographic_accuracy", "factuality", True,
    "DoFaiR IDA: (TP + TN) / K of the set of predicted groups against the gold present groups.", _INSTANCES, FACTUALITY))
register(MetricInfo(
    "involved_demographic_f1", "factuality", True,
    "DoFaiR IDF: mean of the F1 of the present and of the absent groups.", _INSTANCES, FACTUALITY))
register(MetricInfo(
    "factual_diversity_divergence", "factuality", None,
    "DoFaiR FDD: mean predicted diversity |P|/K minus mean gold diversity |G|/K; 0 matches the facts.",
    _INSTANCES, FACTUALITY))
register(MetricInfo(
    "success_rate", "factuality", True,
    "Share of DoFaiR instances whose image has at least one detected face.", "clopper-pearson", FACTUALITY))
_PAIRS = "percentile, instance pairs resampled"
for _name, _abbr in (("dominant_demographic_accuracy", "DDA"), ("involved_demographic_accuracy", "IDA"),
                     ("involved_demographic_f1", "IDF")):
    register(MetricInfo(
        f"delta_{_name}", "factuality_tax", True,
        f"Mean over paired instances of {_abbr} with the intervention minus without; negative is factuality lost.",
        _PAIRS, FACTUALITY))
register(MetricInfo(
    "delta_diversity", "factuality_tax", None,
    "Mean over paired instances of diversity |P|/K with the intervention minus without; positive is diversity gained.",
    _PAIRS, FACTUALITY))

# ---------------------------------------------------------------- `facet-eval` (its metrics.json rows)

_FACET_VALUE = "korn-graubard (image bootstrap variance)"
_FACET_GAP = "joint image bootstrap percentile"
for _name, _what in (
    ("AR50", "Recall of FACET people at IoU ≥ 0.50 (pycocotools matching, at most 100 detections per image), per class and perceived group."),
    ("AR75", "Recall of FACET people at IoU ≥ 0.75 (pycocotools matching, at most 100 detections per image), per class and perceived group."),
    ("mAR", "Mean over IoU thresholds 0.50:0.05:0.95 of the recall of FACET people, per class and perceived group."),
    ("recall", "FACET classification recall@1: share of a class's single-person images whose predicted class is the person's class."),
):
    register(MetricInfo(_name, "facet", True, _what, _FACET_VALUE, FACET))
    register(MetricInfo(
        f"disparity_{_name}", "facet", None,
        f"{_name} of one perceived group minus another's (FACET eq. 1), for groups of at least 50 people.", _FACET_GAP, FACET))
