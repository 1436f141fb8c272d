"""Where t2ibias keeps things outside a run directory."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
CONFIG_DIR = PACKAGE_DIR / "configs"
REPO_DIR = PACKAGE_DIR.parent


def cache_dir() -> Path:
    """User cache: ``$T2IBIAS_CACHE``, else ``$XDG_CACHE_HOME/t2ibias``, else ``~/.cache/t2ibias``."""
    env = os.environ.get("T2IBIAS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "t2ibias"


def data_dir(name: str) -> Path:
    """A top-level data folder (``prompts``, ``annotations``) of the repository.

    An installed wheel carries it as ``t2ibias/_data/<name>`` (pyproject.toml maps the folder
    there at build time); a source checkout or editable install has no such folder and reads
    ``<name>/`` beside the package, the single copy in git.
    """
    shipped = files("t2ibias") / "_data" / name
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    return REPO_DIR / name


def prompts_dir() -> Path:
    """The prompt bank: ``$T2IBIAS_PROMPTS``, else the ``prompts`` data folder."""
    env = os.environ.get("T2IBIAS_PROMPTS")
    return Path(env).expanduser() if env else data_dir("prompts")


def annotations_dir() -> Path:
    """Reference tables and swatches: the ``annotations`` data folder."""
    return data_dir("annotations")
