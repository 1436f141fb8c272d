"""Audit a perceived-attribute classifier against FACET's human annotations.

Every bias number this project reports is read through a classifier, and a classifier errs
differently across groups. ``t2ibias audit`` measures how: it crops each annotated FACET person
(Gustafson et al., ICCV 2023), asks the classifier for their perceived attributes and compares
the answers with what FACET's annotators perceived. Per attribute it reports the confusion
matrix, overall and per-group accuracy with image-resampled intervals, abstention rates and
calibration.

Modules: :mod:`facet_eval.attributes` (FACET's true classes), :mod:`.predictors` (what is asked),
:mod:`.crops` (what the classifier sees), :mod:`.scoring` (one attribute's audit),
:mod:`.groupwise` (metrics by group, intervals, calibration), :mod:`.file` (audit.json and the
CSVs) and :mod:`.run` (the whole audit); :mod:`t2ibias.report.audit_html` draws the page.
"""

from t2ibias.store.audit_file import SCHEMA, load_audit
from t2ibias.measure.predictors import Predictor
from t2ibias.audit.options import AuditOptions
from t2ibias.audit.run import run_audit

__all__ = ["SCHEMA", "AuditOptions", "Predictor", "load_audit", "run_audit"]
