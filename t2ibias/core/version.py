"""The version of t2ibias written into every file a run produces."""

__version__ = "0.1.0"
