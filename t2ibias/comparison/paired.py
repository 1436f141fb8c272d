"""The figures of a comparison: per model, paired between models, and ranks.

For every attribute and every group of matched prompts (all, each family, each intervention, each
family × intervention):

- **per model** (``aggregate = mean_over_prompts``, the run's headline): total variation to uniform
  of the classified label shares, averaged over prompts, with the mean of the per-prompt projection
  bounds (valid at balance; the score stage's interval); and each label's share of all images,
  averaged over prompts, with the Korn–Graubard interval over prompts.
- **paired differences** (``group_by``/``group`` as above, ``model_a``/``model_b``): the mean over
  matched prompts of model b's per-prompt figure minus model a's. A label share's interval is the t
  interval over prompts with the paired t test of no difference (:func:`paired_t`: the variance of
  the mean never below the within-prompt binomial variance at smoothed shares, so a few prompts that
  happen to agree never give an interval of no width). Total variation's interval is model b's
  mean-over-prompts interval minus model a's, each at 1 − α/2 (the score stage's paired skew
  difference): a skew plug-in is biased away from balance, most near balance and at few images per
  prompt, by different amounts for the two models, so a t interval of plug-in differences is centred
  off the true difference and under-covers (benchmarks/coverage_compare.py; docs/compare.md has the
  table). Its p-value is the paired t test of "both models give every prompt the same label
  distribution" (variance floored by the delta method), under which both plug-ins share one bias.
  Both models are counted on the same seed indices of the same prompts. Benjamini–Hochberg
  q-values over each table (one attribute, metric and label: every pair of models and every group).
- **ranks** (metric ``rank``): models ranked per attribute and group by mean total variation (rank 1 =
  least skewed, ties share the better rank), and a rank interval: the α/2 and 1 − α/2 quantiles of
  each model's rank when the matched prompts are resampled with replacement, the same prompts for
  every model (the cluster bootstrap of :func:`t2ibias.stats.cluster.cluster_group_means`; Hall &
  Miller, Biometrika 2009, on bootstrapping ranks).

Total variation uses the prompts where every model classified at least one image (the complete
prompts), so every model's figure, difference and rank rests on the same prompts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from t2ibias.comparison.match import Axis, Matched
from t2ibias.metrics.registry import PAIRED_NAME, PAIRED_SKEW_NAME
from t2ibias.metrics.skew import total_variation_uniform
from t2ibias.stats.binomial import cluster_shares
from t2ibias.stats.cluster import cluster_group_means
from t2ibias.stats.projection import difference_of_mean_bounds, mean_of_bounds, projection_interval
from t2ibias.stats.rng import seeded
from t2ibias.stats.testing import bh_qvalues, t_interval

TV = "total_variation_uniform"
SHARE = "proportion"
RANK = "rank"
N_RESAMPLES = 1000
CONFIDENCE = 0.95
MEAN_OF_BOUNDS = "mean of per-prompt bounds"
KORN_GRAUBARD = "korn-graubard"
RANK_METHOD = "bootstrap over prompts (paired), rank quantiles"
DEFINITIONS = {
    TV: "Total variation distance between the label shares (classified images only) and uniform: ½Σ|p−1/K|; 0 is balanced. Mean over prompts.",
    SHARE: "Share of all images given this label (abstain, no person, blocked and failed count in the denominator). Mean over prompts.",
    RANK: "Rank by mean total variation to uniform (1 = least skewed), with the bootstrap interval of the rank over prompts.",
}
HIGHER_IS_BETTER = {TV: False, SHARE: None, RANK: False}


def _per_prompt(axis: Axis, confidence: float) -> dict[str, Any]:
    """Per run and prompt: classified and total counts, total variation and its projection bounds."""
    k = len(axis.labels)
    classified = axis.counts[:, :, :k]
    n_cls = classified.sum(axis=-1)
    totals = axis.counts.sum(axis=-1)
    tv = np.asarray(total_variation_uniform(classified), dtype=float)
    lo, hi = projection_interval(classified, total_variation_uniform, tv_ref=True, confidence=confidence)
    complete = (n_cls > 0).all(axis=0)
    tv_var = tv_variance(classified)
    return {"tv_var": tv_var, "classified": classified, "n_cls": n_cls, "totals": totals, "tv": tv, "lo": lo, "hi": hi, "complete": complete}


def _smoothed(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Shares (k + ½) / (n + 1): never 0 or 1, so a variance made of them never vanishes."""
    return (np.asarray(k, dtype=float) + 0.5) / (np.asarray(n, dtype=float)[..., None] + 1.0)


def tv_variance(classified: np.ndarray) -> np.ndarray:
    """Delta-method sampling variance of one prompt's total variation plug-in (..., K) → (...):
    with g_k = ½ sign(p_k − 1/K), Var ≈ (Σ g_k² p_k − (Σ g_k p_k)²) / n, at the smoothed shares
    (k + ½) / (n + 1) renormalized (a share of 0 or 1 does not make it vanish)."""
    n = classified.sum(axis=-1)
    p = _smoothed(classified, n)
    p = p / p.sum(axis=-1, keepdims=True)
    g = 0.5 * np.sign(p - 1.0 / classified.shape[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, ((g * g * p).sum(axis=-1) - (g * p).sum(axis=-1) ** 2) / np.maximum(n, 1), np.nan)


def paired_t(diff: np.ndarray, within: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """Mean of per-prompt differences, its t interval over prompts and the paired t test's p-value
    (:func:`t2ibias.stats.testing.t_interval`), with the variance of the mean never below the
    within-prompt sampling variance Σ within / P² (as the score stage's shares over prompts): a few
    prompts that happen to agree do not give an interval of no width."""
    d = np.asarray(diff, dtype=float)
    ok = np.isfinite(d)
    d, w = d[ok], np.asarray(within, dtype=float)[ok]
    mean, lo, hi, p = t_interval(d, confidence)
    if d.size < 2:
        return mean, lo, hi, p
    se_between = float(d.std(ddof=1) / math.sqrt(d.size))
    se_within = float(math.sqrt(np.nansum(w)) / d.size)
    if se_within <= se_between:
        return mean, lo, hi, p
    df = d.size - 1
    t = float(stats.t.ppf(0.5 + confidence / 2, df))
    return mean, mean - t * se_within, mean + t * se_within, float(2 * stats.t.sf(abs(mean) / se_within, df))


TV_DIFF_NOTE = ("interval: model b's mean-over-prompts bounds minus model a's, each at 1 − α/2 (valid whatever the "
                "plug-in bias); p: paired t test of identical label distributions")


def model_tv(pp: dict[str, Any], m: int, mask: np.ndarray, k: int, confidence: float) -> tuple[float, float, float]:
    """One model's mean total variation over the prompts in ``mask`` and the mean of its per-prompt
    projection bounds (:func:`t2ibias.stats.projection.mean_of_bounds`)."""
    lo, hi = mean_of_bounds(pp["lo"][m][mask], pp["hi"][m][mask], (0.0, 1.0 - 1.0 / k), confidence)
    return float(pp["tv"][m][mask].mean()), lo, hi


def tv_difference(pp: dict[str, Any], a: int, b: int, mask: np.ndarray, k: int,
                  confidence: float) -> tuple[float, float, float, float]:
    """Mean over the prompts in ``mask`` of model b's total variation minus model a's; the interval is
    b's mean-over-prompts interval minus a's, each at 1 − α/2 (the score stage's paired skew
    difference, :func:`t2ibias.stats.projection.difference_of_mean_bounds`), which holds whatever
    the plug-ins' bias; the p-value is the paired t test of identical per-prompt label distributions
    (under which both plug-ins share one bias), from :func:`paired_t`."""
    lo, hi = difference_of_mean_bounds(pp["lo"][a][mask], pp["hi"][a][mask], pp["lo"][b][mask], pp["hi"][b][mask],
                                       (0.0, 1.0 - 1.0 / k), confidence)
    mean, _, _, p = tv_difference_plugin(pp, a, b, mask, confidence)
    return mean, lo, hi, p


def tv_difference_plugin(pp: dict[str, Any], a: int, b: int, mask: np.ndarray,
                         confidence: float) -> tuple[float, float, float, float]:
    """The paired t interval of the per-prompt plug-in differences (variance floored at the delta
    method's): centred on the difference of plug-in figures, so it under-covers the difference in true
    total variation at few images per prompt (benchmarks/coverage_compare.py); kept for its test."""
    d = pp["tv"][b][mask] - pp["tv"][a][mask]
    return paired_t(d, pp["tv_var"][a][mask] + pp["tv_var"][b][mask], confidence)


def share_difference(counts: np.ndarray, totals: np.ndarray, a: int, b: int, mask: np.ndarray,
                     confidence: float) -> tuple[float, float, float, float]:
    """Mean over the prompts in ``mask`` of model b's share of one label minus model a's, with
    :func:`paired_t` (binomial within-prompt variance floor). ``counts``, ``totals``: (runs, prompts)."""
    sa = counts[a][mask] / totals[a][mask]
    sb = counts[b][mask] / totals[b][mask]
    within = sum(_share_variance(counts[m][mask], totals[m][mask]) for m in (a, b))
    return paired_t(sb - sa, within, confidence)


def _row(metric: str, axis: str, group_by: str, group: str, label: str | None, value: float, lo: float, hi: float,
         n: int, n_prompts: int, method: str, note: str = "", **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "axis": axis, "group_by": group_by, "group": group, "label": label,
            "value": float(value), "ci_low": float(lo), "ci_high": float(hi), "n": int(n), "n_prompts": int(n_prompts),
            "higher_is_better": HIGHER_IS_BETTER[metric], "note": note, "method": method, **extra}


def compare_figures(matched: Matched, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                    seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """{"models": per-model rows, "differences": paired rows, "ranks": rank rows} (see the module docstring)."""
    names = [r.name for r in matched.runs]
    model_rows: list[dict[str, Any]] = []
    diff_rows: list[dict[str, Any]] = []
    rank_rows: list[dict[str, Any]] = []
    note = matched.warning or ""
    for axis in matched.axes:
        pp = _per_prompt(axis, confidence)
        k = len(axis.labels)
        groups = matched.groups()
        for group_by, group, mask in groups:
            cmask = mask & pp["complete"]
            n_cmp = int(cmask.sum())
            n_prompts = int(mask.sum())
            for m, name in enumerate(names):
                # total variation over the complete prompts
                if n_cmp:
                    value, lo, hi = model_tv(pp, m, cmask, k, confidence)
                    model_rows.append(_row(TV, axis.name, group_by, group, None, value, lo, hi,
                                           int(pp["n_cls"][m][cmask].sum()), n_cmp, MEAN_OF_BOUNDS, note, model=name))
                # label shares over every matched prompt
                agg = cluster_shares(axis.counts[m][mask][:, :k], pp["totals"][m][mask], confidence)["mean_over_prompts"]
                for j, label in enumerate(axis.labels):
                    est, lo_s, hi_s = (float(a[j]) for a in agg)
                    model_rows.append(_row(SHARE, axis.name, group_by, group, label, est, lo_s, hi_s,
                                           int(pp["totals"][m][mask].sum()), n_prompts,
                                           KORN_GRAUBARD if n_prompts > 1 else "clopper-pearson", note, model=name))
            for a in range(len(names)):
                for b in range(a + 1, len(names)):
                    pair = {"model_a": names[a], "model_b": names[b]}
                    what = f"difference = {names[b]} − {names[a]} over matched prompts"
                    if n_cmp:
                        mean, lo, hi, p = tv_difference(pp, a, b, cmask, k, confidence)
                        n_img = int(pp["n_cls"][a][cmask].sum() + pp["n_cls"][b][cmask].sum())
                        diff_rows.append(_row(TV, axis.name, group_by, group, None, mean, lo, hi, n_img, n_cmp, PAIRED_SKEW_NAME,
                                              _join(what, TV_DIFF_NOTE, note), p_value=p, **pair))
                    shares = pp["totals"] > 0
                    for j, label in enumerate(axis.labels):
                        ok = mask & shares[a] & shares[b]
                        if not ok.any():
                            continue
                        mean, lo, hi, p = share_difference(axis.counts[:, :, j], pp["totals"], a, b, ok, confidence)
                        n_img = int(pp["totals"][a][ok].sum() + pp["totals"][b][ok].sum())
                        diff_rows.append(_row(SHARE, axis.name, group_by, group, label, mean, lo, hi, n_img, int(ok.sum()),
                                              PAIRED_NAME, _join(what, note), p_value=p, **pair))
        rank_rows += _ranks(axis.name, names, pp, groups, confidence, n_resamples, seed, note)
    _add_qvalues(diff_rows)
    return {"models": model_rows, "differences": diff_rows, "ranks": rank_rows}


def _share_variance(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Binomial variance of one prompt's share at the smoothed share (k + ½) / (n + 1)."""
    p = (np.asarray(k, dtype=float) + 0.5) / (np.asarray(n, dtype=float) + 1.0)
    return p * (1.0 - p) / np.maximum(np.asarray(n, dtype=float), 1.0)


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _ranks(axis: str, names: list[str], pp: dict[str, Any], groups: list[tuple[str, str, np.ndarray]],
           confidence: float, n_resamples: int, seed: int, note: str) -> list[dict[str, Any]]:
    """Rank of each model by mean total variation over the complete prompts of each group, with the
    bootstrap rank interval (prompts resampled jointly for all models and groups)."""
    complete = pp["complete"]
    idx = np.flatnonzero(complete)
    if len(idx) == 0:
        return []
    values = pp["tv"][:, idx].T  # (prompts, models)
    member = np.stack([mask[idx] for _, _, mask in groups], axis=1)  # (prompts, groups)
    boot = cluster_group_means(values, member, idx, n_resamples, seeded(seed, "compare", "rank", axis))
    est, reps = boot["estimate"], boot["replicates"]  # (M, G), (B, M, G)
    alpha = (1.0 - confidence) / 2.0
    rows = []
    for g, (group_by, group, _) in enumerate(groups):
        if not member[:, g].any():
            continue
        observed = stats.rankdata(est[:, g], method="min")
        ok = np.isfinite(reps[:, :, g]).all(axis=1)
        rep_ranks = stats.rankdata(reps[ok, :, g], method="min", axis=1) if ok.any() else np.full((0, len(names)), np.nan)
        n_prompts = int(member[:, g].sum())
        for m, name in enumerate(names):
            if len(rep_ranks):
                lo = float(math.floor(np.quantile(rep_ranks[:, m], alpha)))
                hi = float(math.ceil(np.quantile(rep_ranks[:, m], 1.0 - alpha)))
                lo, hi = min(lo, float(observed[m])), max(hi, float(observed[m]))
            else:
                lo = hi = math.nan
            rows.append(_row(RANK, axis, group_by, group, None, float(observed[m]), lo, hi, n_prompts, n_prompts,
                             RANK_METHOD, _join(f"by mean {TV} over {n_prompts} prompts, {int(ok.sum())} resamples", note),
                             model=name, tv=float(est[m, g])))
    return rows


def _add_qvalues(rows: list[dict[str, Any]]) -> None:
    """Benjamini–Hochberg q-values over each table: rows of one (axis, metric, label)."""
    tables: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        r.setdefault("q_value", math.nan)
        if math.isfinite(r.get("p_value", math.nan)):
            tables.setdefault((r["axis"], r["metric"], r["label"]), []).append(i)
    for members in tables.values():
        q = bh_qvalues(np.array([rows[i]["p_value"] for i in members]))
        for i, v in zip(members, q):
            rows[i]["q_value"] = float(v)
