"""Group proportions corrected for a classifier's known confusions.

A classifier that calls 10 % of women "masc" inflates the share of men it counts in a generated
set. Given the audit's confusion counts (true class × predicted label, from ``t2ibias audit``)
the observed share q of each predicted label is, in expectation, q = Pᵀ π, where
P[t, p] = P(predicted p | true t) and π the true shares. Inverting that gives corrected shares:
for two classes this is the Rogan-Gladen estimator π = (q + specificity − 1) / (sensitivity +
specificity − 1) (Rogan & Gladen 1978); for k classes it is the confusion-matrix inversion of
black-box shift estimation (Lipton et al. 2018). The estimate is kept on the simplex: when the
plain inverse has a negative share or the matrix is singular, the least-squares solution with
π ≥ 0 and Σπ = 1 is used (``scipy.optimize.nnls`` on the system stacked with a heavily weighted
sum-to-one row) and the row says ``clipped``; a condition number of P above ``COND_LIMIT``
(noise in q amplified that much) sets ``ill_conditioned``.

Intervals carry both uncertainties: every bootstrap replicate resamples each true class's audit
row multinomially (its size fixed) and the observed labels, then inverts; percentile intervals of
the replicates. Observed labels pooled over prompts are resampled as they were sampled: prompts
with replacement, then images within each drawn prompt (the two-stage cluster bootstrap of
:func:`t2ibias.stats.bootstrap.pooled_replicates`), since images of one prompt share its share
and are not independent. The raw share's interval is Clopper–Pearson's for one set of images and
Korn–Graubard's with the between-prompt variance when pooled over prompts
(:mod:`t2ibias.stats.binomial`).

Abstentions are left out on both sides: the audit's rows are conditioned on the classifier
answering and the observed counts keep answered units only. This assumes the classifier abstains
equally often whatever the true class; the audit's per-class ``abstain_rate`` shows whether it
does. True classes the classifier has no label for (FACET's ``non_binary``, ``na``) are not
modelled: the corrected shares are shares among the classifier's labels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from t2ibias.core.errors import UserError
from t2ibias.core.vocab import ABSTAIN
from t2ibias.stats.binomial import clopper_pearson, cluster_shares
from t2ibias.stats.bootstrap import percentile_intervals, pooled_replicates, resample_counts, resample_counts_many
from t2ibias.stats.rng import seeded

COND_LIMIT = 100.0
_SUM_WEIGHT = 1e4


def _confusion(confusion: dict[str, Any], where: str) -> tuple[list[str], list[str], np.ndarray]:
    conf = confusion.get("confusion", confusion) if isinstance(confusion, dict) else None
    if not isinstance(conf, dict) or not all(isinstance(conf.get(k), list) for k in ("true", "pred", "counts")):
        raise UserError(f"{where}: needs lists true, pred and counts (pass an attribute's confusion from audit.json)")
    true, pred = [str(t) for t in conf["true"]], [str(p) for p in conf["pred"]]
    try:
        counts = np.asarray(conf["counts"], dtype=float)
    except (TypeError, ValueError):
        raise UserError(f"{where}: counts must be numbers (pass an attribute's confusion from audit.json)") from None
    if counts.shape != (len(true), len(pred)):
        raise UserError(f"{where}: counts must be {len(true)} rows of {len(pred)} numbers, got shape {counts.shape} (re-run `t2ibias audit`)")
    if not np.all(np.isfinite(counts)) or (counts < 0).any() or np.any(counts != np.round(counts)):
        raise UserError(f"{where}: counts must be non-negative integers (re-run `t2ibias audit`)")
    return true, pred, counts.astype(np.int64)


def simplex_inverse(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, bool]:
    """π on the simplex with Pᵀπ ≈ q; also whether the constrained solver was needed.

    ``p`` (k, k) has rows P(pred | true) summing to 1 and ``q`` (k,) sums to 1. When Pᵀ is
    invertible and its inverse applied to q has no negative share, that inverse is the answer
    (it sums to 1 by construction); otherwise the non-negative least-squares solution of the
    system stacked with a sum-to-one row, renormalized.
    """
    a = np.asarray(p, dtype=float).T
    q = np.asarray(q, dtype=float)
    k = len(q)
    if np.linalg.cond(a) < 1e12:
        pi = np.linalg.solve(a, q)
        if np.all(pi >= -1e-12):
            pi = np.clip(pi, 0.0, None)
            return pi / pi.sum(), False
    stacked = np.vstack([a, np.full((1, k), _SUM_WEIGHT)])
    pi, _ = nnls(stacked, np.append(q, _SUM_WEIGHT))
    total = pi.sum()
    return (pi / total if total > 0 else np.full(k, 1.0 / k)), True


def _invert_many(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """π for a batch of (B, k, k) matrices and (B, k) shares; NaN where an input is not finite."""
    b, k = q.shape
    out = np.full((b, k), np.nan)
    ok = np.isfinite(p).all(axis=(1, 2)) & np.isfinite(q).all(axis=1)
    if not ok.any():
        return out
    a = np.swapaxes(p, 1, 2)
    with np.errstate(all="ignore"):
        cond = np.where(ok, np.linalg.cond(np.where(ok[:, None, None], a, np.eye(k))), np.inf)
    fast = ok & (cond < 1e12)
    if fast.any():
        out[fast] = np.linalg.solve(a[fast], q[fast][..., None])[..., 0]
    slow = ok & (~fast | (out < -1e-12).any(axis=1))
    out[fast & ~slow] = np.clip(out[fast & ~slow], 0.0, None)
    out[fast & ~slow] /= out[fast & ~slow].sum(axis=1, keepdims=True)
    for i in np.flatnonzero(slow):
        out[i] = simplex_inverse(p[i], q[i])[0]
    return out


def _observed_counts(observed: Any, labels: list[str], where: str) -> tuple[np.ndarray, int]:
    """(counts over ``labels``, abstentions) of one mapping of labels to counts."""
    if not isinstance(observed, dict):
        raise UserError(f"{where}: must map labels to counts")
    obs = np.zeros(len(labels), dtype=np.int64)
    n_abstain = 0
    for key, value in observed.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v) or v < 0 or v != round(v):
            raise UserError(f"{where}: label {key!r}: count {value!r} is not a non-negative integer (fix the count)")
        if str(key) == ABSTAIN:
            n_abstain += int(v)
        elif str(key) in labels:
            obs[labels.index(str(key))] += int(v)
        else:
            raise UserError(f"{where}: label {key!r} is not among the audit's labels {', '.join(labels)} "
                            "(audit the classifier that produced these labels, or rename the label)")
    return obs, n_abstain


def corrected_proportions(observed: dict[str, int] | list[dict[str, int]], confusion: dict[str, Any], *,
                          n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                          where: str = "observed") -> list[dict[str, Any]]:
    """Raw and confusion-corrected shares of each label, with bootstrap intervals.

    ``observed`` maps predicted labels (and optionally ``abstain``) to counts in a generated set
    of independent images, or is a list of such mappings, one per prompt, pooled (prompts, then
    images within prompts, are resampled); ``confusion`` is an audit attribute's ``confusion``
    ({"true", "pred", "counts"}) or the whole attribute entry of audit.json. One row per label of
    the audit (the ``pred`` columns other than ``abstain``): label, n (observed count),
    n_answered, n_abstain, raw, raw_ci_low, raw_ci_high, raw_method, corrected, ci_low, ci_high,
    method, n_prompts, n_audit (answered audit people of that true class), recall
    (P(pred = label | true = label) in the audit), clipped, ill_conditioned, condition_number
    (``inf`` for a singular matrix), n_boot, note. ``where`` names the observed counts in error
    messages.
    """
    true, pred, counts = _confusion(confusion, "confusion")
    labels = [p for p in pred if p != ABSTAIN]
    if len(labels) < 2:
        raise UserError(f"confusion: pred: needs at least two labels besides {ABSTAIN!r}, got {labels} (pass a classifier attribute's confusion)")
    missing = [lab for lab in labels if lab not in true]
    if missing:
        raise UserError(f"confusion: label {missing[0]!r} has no true-class row (the audit cannot say how that class is "
                        "read; audit with FACET classes named like the classifier's labels)")
    pooled = isinstance(observed, (list, tuple))
    parts = list(observed) if pooled else [observed]
    if pooled and not parts:
        raise UserError(f"{where}: no prompts to pool (give one mapping of labels to counts per prompt)")
    per = [_observed_counts(o, labels, f"{where}[{i}]" if pooled else where) for i, o in enumerate(parts)]
    by_prompt = np.stack([o for o, _ in per])  # (C, k)
    obs = by_prompt.sum(axis=0)
    n_abstain = sum(a for _, a in per)
    by_prompt = by_prompt[by_prompt.sum(axis=1) > 0]  # prompts with no answered image add nothing
    n = int(obs.sum())
    if n == 0:
        raise UserError(f"{where}: no answered predictions to correct (all counts are 0 or {ABSTAIN!r})")
    if n_boot < 0:
        raise UserError(f"n_boot: {n_boot} (use 0 or more resamples)")

    full = counts[[true.index(lab) for lab in labels]]  # (k, k+extra) rows of the labels' true classes
    answered_cols = [pred.index(lab) for lab in labels]
    rows = full[:, answered_cols]
    n_audit = rows.sum(axis=1)
    empty = [lab for lab, m in zip(labels, n_audit) if m == 0]
    if empty:
        raise UserError(f"confusion: true class {empty[0]!r} has no answered audit example (audit more people of that class)")
    p = rows / n_audit[:, None]
    q = obs / n
    cond = float(np.linalg.cond(p)) if np.all(np.isfinite(p)) else math.inf
    estimate, clipped = simplex_inverse(p, q)
    ill = not (cond <= COND_LIMIT)

    two_stage = pooled and len(by_prompt) > 1
    if two_stage:
        raw_lo, raw_hi = cluster_shares(by_prompt, by_prompt.sum(axis=1), confidence)["pooled"][1:]
    else:
        raw_lo, raw_hi = clopper_pearson(obs, n, confidence)
    lo = hi = np.full(len(labels), np.nan)
    if n_boot > 0:
        rng = seeded(seed)
        # each true class's audit row resampled with its size fixed (abstentions included, then dropped)
        row_reps = resample_counts_many(full, n_boot, rng)  # (B, k, columns)
        ans = row_reps[:, :, answered_cols].astype(float)  # (B, k, k)
        sizes = ans.sum(axis=2, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_reps = np.where(sizes > 0, ans / np.where(sizes > 0, sizes, 1.0), np.nan)
            if two_stage:
                obs_reps = pooled_replicates(by_prompt, n_boot, rng).astype(float)
                q_reps = obs_reps / obs_reps.sum(axis=1, keepdims=True)
            else:
                q_reps = resample_counts(obs, n_boot, rng) / n
        lo, hi = percentile_intervals(_invert_many(p_reps, q_reps), confidence)
    resampled = "audit rows, prompts, then images within prompts resampled" if two_stage else "audit rows and images resampled"
    method = f"percentile, {resampled}"
    raw_method = "korn-graubard over prompts" if two_stage else "clopper-pearson"

    notes = []
    if clipped and not cond < 1e12:
        notes.append("singular confusion matrix: constrained least squares picks one of many fitting estimates")
    elif clipped:
        notes.append("the plain inverse left the simplex: constrained least squares")
    if ill:
        notes.append(f"confusion matrix ill-conditioned (condition number {cond:.3g} > {COND_LIMIT:g}): the correction is unstable")
    out = []
    for i, lab in enumerate(labels):
        out.append({
            "label": lab, "n": int(obs[i]), "n_answered": n, "n_abstain": int(n_abstain),
            "raw": float(q[i]), "raw_ci_low": float(raw_lo[i]), "raw_ci_high": float(raw_hi[i]), "raw_method": raw_method,
            "corrected": float(estimate[i]), "ci_low": float(lo[i]), "ci_high": float(hi[i]), "method": method,
            "n_prompts": int(len(by_prompt)),
            "n_audit": int(n_audit[i]), "recall": float(p[i, i]),
            "clipped": bool(clipped), "ill_conditioned": bool(ill), "condition_number": cond,
            "n_boot": int(n_boot), "note": "; ".join(notes),
        })
    return out


def corrected_from_audit(observed: dict[str, int], audit: dict[str, Any] | str | Path, attribute: str, *,
                         n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                         where: str = "observed") -> list[dict[str, Any]]:
    """:func:`corrected_proportions` with the confusion of ``attribute`` from an audit (a loaded
    audit.json dict, the file, or its folder), each row also naming the audited classifier."""
    from t2ibias.store.audit_file import load_audit

    source = "audit"
    if not isinstance(audit, dict):
        source = str(audit)
        audit = load_audit(audit)
    attrs = audit.get("attributes") or {}
    if attribute not in attrs:
        raise UserError(f"{source}: attributes: no audit of {attribute!r} (audited: {', '.join(attrs) or 'none'}; "
                        "audit a classifier that returns it)")
    rows = corrected_proportions(observed, attrs[attribute]["confusion"], n_boot=n_boot, seed=seed,
                                 confidence=confidence, where=where)
    clf = audit.get("classifier") or {}
    for r in rows:
        r["audit_classifier"] = clf.get("id")
        r["audit_fingerprint"] = clf.get("fingerprint")
    return rows
