"""Where t2ibias keeps things outside a run directory."""

from __future__ import annotations

import os
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


def prompts_dir() -> Path:
    """The prompt bank: ``$T2IBIAS_PROMPTS``, else ``prompts/`` beside the package."""
    env = os.environ.get("T2IBIAS_PROMPTS")
    return Path(env).expanduser() if env else REPO_DIR / "prompts"
