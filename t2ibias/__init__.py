"""t2ibias: measure social bias in text-to-image models.

Stages (each reads only the files of the stage before it, so any stage can be re-run alone):
prompts → generate → measure → score → report. See ``t2ibias --help``.
"""

from t2ibias.core.version import __version__

__all__ = ["__version__"]
