"""Seeded random generators keyed by names, so that every figure has its own reproducible stream.

A figure's resamples must not change when another figure is added or the work is done in another
order, so each one draws from a generator seeded by (base seed, a key naming the figure): the
key's parts are joined with the unit separator ``\\x1f`` and hashed with CRC-32 into numpy's
``SeedSequence`` entropy, beside the base seed.
"""

from __future__ import annotations

import zlib

import numpy as np


def seed_key(*parts: object) -> int:
    """CRC-32 of the parts (as text) joined by ``\\x1f``: one 32-bit number naming a figure."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode("utf-8"))


def seeded(seed: int, *parts: object) -> np.random.Generator:
    """A generator for the figure named by ``parts`` under base ``seed`` (no parts: the seed alone).

    ``seeded(s, "gender", "prompt_id", "p1")`` is ``np.random.default_rng([s, crc32("gender\\x1fprompt_id\\x1fp1")])``.
    """
    if not parts:
        return np.random.default_rng(int(seed))
    return np.random.default_rng([int(seed), seed_key(*parts)])
