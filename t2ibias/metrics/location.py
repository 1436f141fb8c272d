"""Which place do location-neutral images resemble most?

For an everyday situation generated location-neutral ("people at a wedding") and qualified by
place ("... in Nigeria"), the distance between the neutral images and each place's images is
the cosine distance between their mean CLIP image embeddings (L2-normalized embeddings,
renormalized means). Naik & Nushi (AIES 2023) report that neutral images sit closest to those of
the United States and Germany. A prompt's interval resamples images within both groups; the mean
over prompts (``group_by=all``) resamples the prompts, the units it generalizes over, and
averages their distances (:mod:`t2ibias.stats.cluster`); percentile intervals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from t2ibias.stats.bootstrap import percentile_interval
from t2ibias.stats.cluster import resample_weights
from t2ibias.stats.rng import seeded

METRIC = "location_distance"
DEFINITION = (
    "Cosine distance between the mean image embedding of a prompt's location-neutral images and of its images "
    "for one place; the smallest marks the place the neutral images resemble most (Naik & Nushi, AIES 2023)."
)
VARIANT = ["family", "subject", "template_id", "intervention"]
PROMPT_METHOD = "percentile, images resampled in both groups"
MEAN_METHOD = "percentile, prompts resampled"


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _replicate_means(emb: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, D) bootstrap replicates of the renormalized mean embedding of ``emb`` (n, D)."""
    weights = resample_weights(len(emb), n_resamples, rng) / len(emb)
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
    pooled: dict[str, list[tuple[float, tuple[float, float], int]]] = {}
    for _, variant in prompts.groupby(VARIANT, sort=False, dropna=False):
        neutral = variant[variant["place"].isna()]
        placed = variant[variant["place"].notna()]
        if len(neutral) != 1 or placed.empty:
            continue
        pid0 = neutral["prompt_id"].iloc[0]
        e0 = np.array([embeddings[k] for k in keys_by_prompt.get(pid0, []) if k in embeddings])
        for pid, place in zip(placed["prompt_id"], placed["place"]):
            ep = np.array([embeddings[k] for k in keys_by_prompt.get(pid, []) if k in embeddings])
            rng = seeded(base_seed, METRIC, pid0, pid)
            if len(e0) == 0 or len(ep) == 0:
                rows.append(_row(pid0, place, math.nan, (math.nan, math.nan), len(ep), "prompt_id", "no images with embeddings"))
                continue
            value = float(_distance(e0.mean(axis=0), ep.mean(axis=0)))
            reps = _distance(_replicate_means(e0, n_resamples, rng), _replicate_means(ep, n_resamples, rng))
            lo, hi = percentile_interval(reps, confidence)
            # resampled means are noisier, so resampled distances run high; keep the estimate inside
            rows.append(_row(pid0, place, value, (min(lo, value), max(hi, value)), len(ep), "prompt_id", f"vs {len(e0)} location-neutral images"))
            pooled.setdefault(place, []).append((value, (lo, hi), len(ep)))
    for place, items in pooled.items():
        values = np.array([v for v, _, _ in items])
        mean = float(values.mean())
        note = f"mean over {len(items)} location-neutral prompts"
        if len(items) == 1:  # one prompt: its own interval
            ci, method = items[0][1], PROMPT_METHOD
        else:
            weights = resample_weights(len(items), n_resamples, seeded(base_seed, METRIC, "all", place))
            lo, hi = percentile_interval(weights @ values / len(items), confidence)
            ci, method = (min(lo, mean), max(hi, mean)), MEAN_METHOD
        rows.append(_row("all", place, mean, ci, sum(n for _, _, n in items), "all", note, method))
    return rows


def _row(group: str, place: str, value: float, ci: tuple[float, float], n: int, group_by: str, note: str,
         method: str = PROMPT_METHOD) -> dict[str, Any]:
    return {"metric": METRIC, "axis": "location", "group_by": group_by, "group": group, "label": place, "value": value,
            "ci_low": ci[0], "ci_high": ci[1], "n": int(n), "higher_is_better": None, "note": note,
            "aggregate": "prompt" if group_by == "prompt_id" else "mean_over_prompts", "method": method,
            "p_value": None, "q_value": None}
