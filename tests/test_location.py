"""Location analysis: which place's images the location-neutral images resemble most."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pandas as pd

from t2ibias.metrics.location import location_rows


def _prompts() -> pd.DataFrame:
    rows = []
    for subject, pid0 in (("at a wedding", "w0"), ("eating dinner", "d0")):
        rows.append({"prompt_id": pid0, "family": "situation", "subject": subject, "template_id": "t", "intervention": "none", "place": None})
        for place in ("Germany", "Nigeria"):
            rows.append({"prompt_id": f"{pid0}-{place}", "family": "situation", "subject": subject, "template_id": "t",
                         "intervention": "none", "place": place})
    return pd.DataFrame(rows)


def _cloud(center: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    pts = center + 0.05 * rng.standard_normal((n, len(center)))
    return list(pts / np.linalg.norm(pts, axis=1, keepdims=True))


def test_neutral_images_are_closest_to_the_place_they_look_like():
    rng = np.random.default_rng(0)
    a, b = np.eye(8)[0], np.eye(8)[1]
    near_a = (a + 0.2 * b) / np.linalg.norm(a + 0.2 * b)
    clouds = {}
    for pid0 in ("w0", "d0"):
        clouds[pid0] = _cloud(a, 20, rng)
        clouds[f"{pid0}-Germany"] = _cloud(near_a, 20, rng)
        clouds[f"{pid0}-Nigeria"] = _cloud(b, 20, rng)
    keys = {pid: [f"{pid}/{i}" for i in range(len(v))] for pid, v in clouds.items()}
    emb = {k: v for pid, vs in clouds.items() for k, v in zip(keys[pid], vs)}
    rows = location_rows(_prompts(), keys, emb, n_resamples=300)
    by = {(r["group"], r["label"]): r for r in rows}
    assert len(rows) == 6  # 2 neutral prompts × 2 places + 2 pooled
    for g in ("w0", "d0", "all"):
        assert by[(g, "Germany")]["value"] < by[(g, "Nigeria")]["value"]
        for place in ("Germany", "Nigeria"):
            r = by[(g, place)]
            assert r["ci_low"] <= r["value"] <= r["ci_high"] and r["axis"] == "location"
    # Nigeria's cloud is orthogonal to the neutral one: cosine distance of the means is about 1
    assert math.isclose(by[("w0", "Nigeria")]["value"], 1.0, abs_tol=0.05)
    # pooled value is the mean over situations, n sums their images
    assert math.isclose(by[("all", "Germany")]["value"], (by[("w0", "Germany")]["value"] + by[("d0", "Germany")]["value"]) / 2)
    assert by[("all", "Germany")]["n"] == 40


def test_sets_without_places_and_prompts_without_images():
    prompts = _prompts()
    assert location_rows(prompts.assign(place=None), {}, {}) == []
    rows = location_rows(prompts, {}, {})
    assert rows and all(math.isnan(r["value"]) and r["note"] == "no images with embeddings" for r in rows)


def test_mean_over_prompts_resamples_prompts():
    rng = np.random.default_rng(1)
    a, b = np.eye(8)[0], np.eye(8)[1]
    clouds = {}
    for pid0, tilt in (("w0", 0.1), ("d0", 1.5)):  # the two situations sit at very different distances
        clouds[pid0] = _cloud(a, 15, rng)
        near = (a + tilt * b) / np.linalg.norm(a + tilt * b)
        clouds[f"{pid0}-Germany"] = _cloud(near, 15, rng)
        clouds[f"{pid0}-Nigeria"] = _cloud(b, 15, rng)
    keys = {pid: [f"{pid}/{i}" for i in range(len(v))] for pid, v in clouds.items()}
    emb = {k: v for pid, vs in clouds.items() for k, v in zip(keys[pid], vs)}
    rows = location_rows(_prompts(), keys, emb, n_resamples=400)
    by = {(r["group"], r["label"]): r for r in rows}
    w, d, mean = by[("w0", "Germany")], by[("d0", "Germany")], by[("all", "Germany")]
    # resampled pairs of prompts average to one of d_w, (d_w + d_d)/2, d_d: the interval spans the two prompts
    assert (mean["ci_low"], mean["ci_high"]) == pytest.approx((min(w["value"], d["value"]), max(w["value"], d["value"])))
    assert mean["method"] == "percentile, prompts resampled" and mean["aggregate"] == "mean_over_prompts"
    assert w["method"] == "percentile, images resampled in both groups" and w["aggregate"] == "prompt"
    assert w["p_value"] is None and w["q_value"] is None
    # the same seed gives the same rows
    assert location_rows(_prompts(), keys, emb, n_resamples=400) == rows
