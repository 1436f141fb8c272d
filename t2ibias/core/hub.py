"""Hub access that fails in one line, fast, when weights are missing and the hub is out of reach.

Left alone, huggingface_hub retries an unreachable hub five times per file with growing pauses
and logs every attempt, and diffusers, transformers and open_clip add warnings of their own: a
missing classifier took a minute and printed dozens of lines before its error. Inside
:func:`quiet_hub` those libraries log errors only, warnings are silenced, and when one request
(through huggingface_hub's own session, so proxies and ``HF_ENDPOINT`` apply) cannot reach the
hub, it is treated as offline, so lookups fall back to the local cache at once.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

QUIET_LOGGERS = ("huggingface_hub", "diffusers", "transformers", "open_clip", "timm", "httpx", "httpx2", "urllib3")
PROBE_TIMEOUT_S = 5.0
_reachable: dict[str, bool] = {}


def hub_reachable() -> bool:
    """Whether the hub answers one request (remembered per endpoint for the process)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = constants.ENDPOINT
    if endpoint not in _reachable:
        from huggingface_hub.utils import get_session

        try:
            get_session().head(endpoint, timeout=PROBE_TIMEOUT_S)
            _reachable[endpoint] = True
        except Exception:  # connection, DNS, TLS and timeout errors come in many types
            _reachable[endpoint] = False
    return _reachable[endpoint]


@contextmanager
def quiet_hub() -> Iterator[None]:
    """Silence library logging and warnings, and go offline when the hub cannot be reached."""
    from huggingface_hub import constants

    for lib in ("diffusers", "transformers"):  # their loggers set their own level when first used: do that first
        try:
            importlib.import_module(f"{lib}.utils.logging").get_verbosity()
        except ImportError:
            pass
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    offline = constants.HF_HUB_OFFLINE
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        if not offline and not hub_reachable():
            constants.HF_HUB_OFFLINE = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        constants.HF_HUB_OFFLINE = offline
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
