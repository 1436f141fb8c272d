"""t2ibias: measure social bias in text-to-image models.

Stages (each reads only the files of the stage before it, so any stage can be re-run alone):
prompts → generate → measure → score → report. See ``t2ibias --help``.
"""

__version__ = "0.1.0"
