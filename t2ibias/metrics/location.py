"""Which place do location-neutral images resemble most?

For an everyday situation generated location-neutral ("people at a wedding") and qualified by
place ("... in Nigeria"), the distance between the neutral images and each place's images is
the cosine distance between their mean CLIP image embeddings (L2-normalized embeddings,
renormalized means). Naik & Nushi (AIES 2023) report that neutral images sit closest to those of
the United States and Germany. Intervals come from resampling images within both groups; pooled
over situations, from resampling situations and then images (two-stage).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pandas as pd

from t2ibias.stats.bootstrap import percentile_interval

METRIC = "location_distance"
DEFINITION = (
    "Cosine distance between the mean image embedding of a prompt's location-neutral images and of its images "
    "for one place; the smallest marks the place the neutral images resemble most (Naik & Nushi, AIES 2023)."
)
VARIANT = ["family", "subject", "template_id", "intervention"]


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _replicate_means(emb: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, D) bootstrap replicates of the renormalized mean embedding of ``emb`` (n, D)."""
    n = len(emb)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples) / n
    return _unit(weights @ emb)


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 - np.sum(_unit(a) * _unit(b), axis=-1)


def location_rows(
    prompts: pd.DataFrame,
    keys_by_prompt: dict[str, list[str]],
    embeddings: dict[str, np.ndarray],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    base_seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows (``metric=location_distance``, ``axis=location``) per neutral prompt and place, and per
    place pooled over prompts (``group_by=all``)."""
    if "place" not in prompts or prompts["place"].isna().all():
        return []
    rows: list[dict[str, Any]] = []
    pooled: dict[str, list[tuple[float, np.ndarray, int]]] = {}
    for _, variant in prompts.groupby(VARIANT, sort=False, dropna=False):
        neutral = variant[variant["place"].isna()]
        placed = variant[variant["place"].notna()]
        if len(neutral) != 1 or placed.empty:
            continue
        pid0 = neutral["prompt_id"].iloc[0]
        e0 = np.array([embeddings[k] for k in keys_by_prompt.get(pid0, []) if k in embeddings])
        for pid, place in zip(placed["prompt_id"], placed["place"]):
            ep = np.array([embeddings[k] for k in keys_by_prompt.get(pid, []) if k in embeddings])
            rng = np.random.default_rng([base_seed, zlib.crc32(f"{pid0}/{pid}".encode())])
            if len(e0) == 0 or len(ep) == 0:
                rows.append(_row(pid0, place, math.nan, (math.nan, math.nan), len(ep), "prompt_id", "no images with embeddings"))
                continue
            value = float(_distance(e0.mean(axis=0), ep.mean(axis=0)))
            reps = _distance(_replicate_means(e0, n_resamples, rng), _replicate_means(ep, n_resamples, rng))
            lo, hi = percentile_interval(reps, confidence)
            # resampled means are noisier, so resampled distances run high; keep the estimate inside
            rows.append(_row(pid0, place, value, (min(lo, value), max(hi, value)), len(ep), "prompt_id", f"vs {len(e0)} location-neutral images"))
            pooled.setdefault(place, []).append((value, reps, len(ep)))
    for place, items in pooled.items():
        values = np.array([v for v, _, _ in items])
        reps = np.stack([r for _, r, _ in items])  # (P, B)
        rng = np.random.default_rng([base_seed, zlib.crc32(f"all/{place}".encode())])
        picks = rng.integers(0, len(items), size=(reps.shape[1], len(items)))  # (B, P)
        agg = reps[picks, np.arange(reps.shape[1])[:, None]].mean(axis=1)
        lo, hi = percentile_interval(agg, confidence)
        mean = float(values.mean())
        rows.append(_row("all", place, mean, (min(lo, mean), max(hi, mean)),
                         sum(n for _, _, n in items), "all", f"mean over {len(items)} location-neutral prompts"))
    return rows


def _row(group: str, place: str, value: float, ci: tuple[float, float], n: int, group_by: str, note: str) -> dict[str, Any]:
    return {"metric": METRIC, "axis": "location", "group_by": group_by, "group": group, "label": place, "value": value,
            "ci_low": ci[0], "ci_high": ci[1], "n": int(n), "higher_is_better": None, "note": note}
