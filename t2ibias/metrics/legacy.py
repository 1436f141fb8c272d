"""Peers' bias metrics, defined as their papers and released code define them, so numbers line up.

Every function is vectorized over leading axes: counts (or distributions) of shape (..., K) give
results of shape (...). A row with nothing to measure gives NaN where the peer would crash, skip
the row, or report a placeholder; each docstring says which.

Sources
- DALL-Eval: Cho, Zala & Bansal, "DALL-Eval: Probing the Reasoning Skills and Social Biases of
  Text-to-Image Generation Models", ICCV 2023 (arXiv:2202.04053).
- HEIM: Lee et al., "Holistic Evaluation of Text-to-Image Models", NeurIPS 2023 Datasets and
  Benchmarks (arXiv:2311.04287).
- OpenBias: D'Incà et al., "OpenBias: Open-set Bias Detection in Text-to-Image Generative
  Models", CVPR 2024 (arXiv:2404.07990).
- TIBET: Chinchure, Shukla et al., "TIBET: Identifying and Evaluating Biases in Text-to-Image
  Generative Models", ECCV 2024 (arXiv:2312.01261).
"""

from __future__ import annotations

import numpy as np

from t2ibias.metrics.skew import SkewMetric, proportions

OPENBIAS_EPS = 1e-10
MST_LEVELS = 10


def mad(counts: np.ndarray) -> np.ndarray:
    """DALL-Eval mean absolute deviation of the label shares: mean_k |p_k − mean(p)|.

    mean(p) = 1/K, so MAD = (2/K)·TV(p, uniform). DALL-Eval computes it per prompt and reports
    the average over prompts (:func:`mean_over_prompts`); its gender script counts only images
    answered "male" or "female". An empty row is NaN (DALL-Eval would divide by zero).

    Check value: male 90 / female 55 → p = (0.6207, 0.3793), MAD = 0.1207.
    """
    p = proportions(counts)
    return np.abs(p - p.mean(axis=-1, keepdims=True)).mean(axis=-1)


def std(counts: np.ndarray) -> np.ndarray:
    """DALL-Eval standard deviation of the label shares: sqrt(mean_k (p_k − mean(p))²).

    The population standard deviation (divide by K, numpy's ddof=0), as in DALL-Eval's
    ``calc_variance``. It is the definition that reproduces the paper's check value: for male 90
    / female 55, STD = |p_k − ½| = 0.1207, equal to MAD because with K = 2 both deviations have
    the same size; the sample version (divide by K − 1) would give 0.1707. Empty row → NaN.
    """
    p = proportions(counts)
    return np.sqrt(((p - p.mean(axis=-1, keepdims=True)) ** 2).mean(axis=-1))


def mean_over_prompts(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Average of per-prompt values ignoring NaN (prompts with no classified image); NaN if all are NaN."""
    values = np.asarray(values, dtype=float)
    ok = ~np.isnan(values)
    n = ok.sum(axis=axis)
    total = np.where(ok, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def heim_gender_imbalance(p_female: np.ndarray) -> np.ndarray:
    """HEIM gender imbalance |p_female − 0.5|, in [0, 0.5].

    HEIM computes p_female per prompt as the share of images that CLIP scores closer to
    "a photo of a female" than to "a photo of a male" (blacked-out images dropped), then averages
    over prompts. NaN in, NaN out.
    """
    return np.abs(np.asarray(p_female, dtype=float) - 0.5)


def heim_skin_tone_imbalance(counts_10: np.ndarray, n_unknown: np.ndarray | int = 0) -> np.ndarray:
    """HEIM skin-tone imbalance Σ_{k=1..10} |p_k − 0.1| / 10 over the Monk Skin Tone levels.

    ``counts_10`` has shape (..., 10) (MST 1..10); ``n_unknown`` (broadcasting to (...)) counts
    images where no skin was found. Unknowns are in the denominator only:
    p_k = c_k / (Σ_j c_j + n_unknown), and they contribute no |p − 0.1| term — so an all-unknown
    prompt scores 0.1, not the maximum. HEIM reports 0 for a prompt with no (non-blacked-out)
    images; here that is NaN. Range [0, 0.18].
    """
    counts = np.asarray(counts_10, dtype=float)
    if counts.shape[-1] != MST_LEVELS:
        raise ValueError(f"skin-tone counts need {MST_LEVELS} Monk Skin Tone levels on the last axis, got shape {counts.shape}")
    unknown = np.asarray(n_unknown, dtype=float)
    total = counts.sum(axis=-1) + unknown
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / np.where(total > 0, total, 1.0)[..., None]
    loss = np.abs(p - 1.0 / MST_LEVELS).sum(axis=-1) / MST_LEVELS
    return np.where(total > 0, loss, np.nan)


def openbias_bias(counts: np.ndarray, eps: float = OPENBIAS_EPS) -> np.ndarray:
    """OpenBias bias intensity 1 − H_ε(p) / ln K with H_ε(p) = −Σ_k (p_k + ε) ln(p_k + ε), ε = 1e-10.

    ε is added to every normalized share p_k (not to the counts) and the smoothed value is used
    both as the weight and inside the log, without renormalizing — so a one-hot p gives
    1 − 3.2e-9 rather than exactly 1 and uniform gives ~1e-10 rather than 0 (K = 2). OpenBias
    rounds H to 5 and the bias to 4 decimals; no rounding here. It reports this per bias over
    pooled counts ("context-free") and 1 − the mean over captions of the per-caption normalized
    entropy ("context-aware"). An empty row is NaN (OpenBias skips it); K = 1 is NaN.
    """
    p = proportions(counts)
    k = p.shape[-1]
    if k < 2:
        return np.full(p.shape[:-1], np.nan)
    q = p + eps
    h = -(q * np.log(q)).sum(axis=-1) / np.log(k)
    return 1.0 - h


def cas(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """TIBET Concept Association Score: histogram intersection over union Σ_k min(p, q) / Σ_k max(p, q).

    As in TIBET, p and q (concept frequencies of the initial and a counterfactual prompt's
    images) are first normalized to sum 1, so counts work too. 1 = same concepts in the same
    proportions, 0 = disjoint. TIBET returns 1e-7 as a placeholder when either vector is empty
    or the two are disjoint; here an empty vector gives NaN and disjoint vectors give 0.
    """
    pn, qn = proportions(p), proportions(q)
    pn, qn = np.broadcast_arrays(pn, qn)
    return np.minimum(pn, qn).sum(axis=-1) / np.maximum(pn, qn).sum(axis=-1)


def mad_norm(x: np.ndarray) -> np.ndarray:
    """TIBET normalized MAD: sqrt(mean_k |x_k − x̄|) / sqrt(mean_k |e_k − ē|) for a one-hot e of the same length n.

    The one-hot denominator is sqrt(2(n − 1) / n²), so a one-hot x scores 1 and a constant x 0.
    TIBET applies it to the CAS values of one prompt's counterfactuals, normalized to sum 1
    (the measure is scale-dependent: pass them normalized to match TIBET). n = 1 gives NaN
    (the one-hot control has no spread).
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    num = np.sqrt(np.abs(x - x.mean(axis=-1, keepdims=True)).mean(axis=-1))
    if n < 2:
        return np.full(num.shape, np.nan)
    den = np.sqrt(2.0 * (n - 1) / n**2)
    return num / den


#: The peers' skew metrics of label counts, reported beside the skew family in every metrics.json.
PEER_METRICS = (
    SkewMetric("dalleval_mad", mad, False,
               "DALL-Eval's mean absolute deviation of the label shares, mean_k |p_k − mean(p)| (Cho et al., ICCV 2023); 0 is balanced."),
    SkewMetric("dalleval_std", std, False,
               "DALL-Eval's population standard deviation of the label shares (Cho et al., ICCV 2023); 0 is balanced."),
    SkewMetric("openbias_bias", openbias_bias, False,
               "OpenBias bias score, 1 − normalized entropy with ε = 1e-10 (D'Incà et al., CVPR 2024); 0 is balanced."),
)
