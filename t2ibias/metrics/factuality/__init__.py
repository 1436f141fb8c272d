"""DoFaiR factuality metrics (Wan et al., "The Factuality Tax of Diversity-Intervened
Text-to-Image Generation", EMNLP 2024) and the factuality tax of an intervention.

An instance is one DoFaiR row: gold dominant and gold present groups, as FairFace race classes
or genders. Its image is matched to the faces a face-attribute classifier found in it, and the
labels of those faces are scored against the gold groups.

Modules, in the order the data flows: :mod:`.faces` (the faces file, :func:`load_faces`),
:mod:`.instance` (one instance's IDA, IDF, DDA and diversity: the formulas), :mod:`.join`
(instances matched with their faces, :func:`per_instance_scores`), :mod:`.summary` (means over
instances with bootstrap intervals, overall and per culture) and :mod:`.tax` (paired deltas
against the baseline).
"""

from t2ibias.core.fairface_csv import IMAGE_EXTENSIONS, face_image_stem, image_stem
from t2ibias.core.vocab import dofair_label as normalize_label
from t2ibias.metrics.factuality.faces import AXES, load_faces
from t2ibias.metrics.factuality.instance import dominant_credit, instance_scores
from t2ibias.metrics.factuality.join import per_instance_scores
from t2ibias.metrics.factuality.summary import (
    MEAN_METHOD,
    METRICS,
    N_RESAMPLES,
    SEED,
    SHARE_METHOD,
    score_factuality,
    summarize,
    summarize_table,
    summary_rows,
)
from t2ibias.metrics.factuality.tax import TAX_METRICS, factuality_tax, factuality_tax_table, tax_rows

__all__ = [
    "AXES", "IMAGE_EXTENSIONS", "MEAN_METHOD", "METRICS", "N_RESAMPLES", "SEED", "SHARE_METHOD", "TAX_METRICS",
    "dominant_credit", "face_image_stem", "factuality_tax", "factuality_tax_table", "image_stem", "instance_scores",
    "load_faces", "normalize_label", "per_instance_scores", "score_factuality", "summarize", "summarize_table",
    "summary_rows", "tax_rows",
]
