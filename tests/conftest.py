"""Shared test setup: everything offline, one user cache per test session (tiny models built once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def t2ibias_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private user cache for the session, so tests never touch ~/.cache and build tiny models once."""
    cache = Path(os.environ.get("T2IBIAS_TEST_CACHE") or tmp_path_factory.mktemp("t2ibias-cache"))
    os.environ["T2IBIAS_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: CPU pixels depend on the thread count (docs/footguns.md), so
    images compared across processes (OMP_NUM_THREADS=1 there) must be made the same way here;
    it is also the fastest setting on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def yolo_env(tmp_path_factory):
    """Offline ultralytics with a private settings folder (set before ultralytics is imported)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_OFFLINE", "1")
        mp.setenv("YOLO_AUTOINSTALL", "0")
        mp.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("yolo-config")))
        yield
