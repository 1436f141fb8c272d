"""t2ibias: measure social bias in text-to-image models.

Stages (each reads only the files of the stage before it, so any stage can be re-run alone):
prompts → generate → measure → score → report. See ``t2ibias --help``, and in Python
:func:`t2ibias.sweep`, :func:`t2ibias.open_run`, :func:`t2ibias.compare` and :class:`t2ibias.Run` (``t2ibias.api``),
which are imported on first use, so ``import t2ibias.core.errors`` stays free of torch.
"""

from __future__ import annotations

from typing import Any

from t2ibias.core.version import __version__

__all__ = ["__version__", "sweep", "open_run", "compare", "Run"]
_API = ("sweep", "open_run", "compare", "Run")


def __getattr__(name: str) -> Any:
    if name in _API:
        from t2ibias import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
