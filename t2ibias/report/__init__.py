"""Report stage: turn a scored run directory into ``report.html`` and a ``model_card.md`` section.

Reads only the run's output files; see :mod:`t2ibias.report.html`.
"""

from t2ibias.report.html import build_context, fmt_estimate, load_run, write_model_card, write_report

__all__ = ["build_context", "fmt_estimate", "load_run", "write_model_card", "write_report"]
