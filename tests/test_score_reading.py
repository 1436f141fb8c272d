"""The narrow readers the score stage uses at scale give what the full readers give."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from t2ibias.metrics.skew import max_min_gap, normalized_entropy, total_variation_uniform
from t2ibias.stats.projection import box_projection, box_projections, least_skewed_point, simultaneous_box, vertices
from t2ibias.store.image_store import ImageStore
from t2ibias.store.rundir import image_jobs, image_table, part_name, parts_dir, read_measurements


def _write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_statuses_are_the_merged_manifests_statuses_with_malformed_lines_counted(tmp_path):
    _write(tmp_path / "manifest.jsonl", [{"key": "a", "status": "ok", "path": "x"}, {"key": "b", "status": "failed"}])
    # a clean shard (read by Arrow) and one cut short by a crash (read line by line)
    _write(tmp_path / "manifest-1.jsonl", [{"key": "b", "status": "ok", "bytes": 3}, {"key": "c", "status": "blocked"}])
    _write(tmp_path / "manifest-2.jsonl", [{"key": "a", "status": "blocked"}, {"key": "", "status": "ok"}], tail='{"key": "d", "sta')
    store = ImageStore(tmp_path)
    full = {k: r.get("status") for k, r in store.records().items()}
    malformed = store.malformed_lines
    assert store.statuses() == full == {"a": "blocked", "b": "ok", "c": "blocked"}
    assert store.malformed_lines == malformed == 2


def test_measurement_columns_read_alone_equal_the_full_table_cut(tmp_path):
    base = pd.DataFrame({"key": ["k1", "k2"], "measurer": ["m", "m"], "unit": ["image", "image"], "face_index": [0, 0],
                         "attribute": ["g", "g"], "label": ["a", "b"], "score": [0.1, 0.2], "probs": ["{}", "{}"]})
    base.to_parquet(tmp_path / "measurements.parquet", index=False)
    parts_dir(tmp_path).mkdir()
    base.iloc[[1]].assign(label="c", score=0.9).to_parquet(parts_dir(tmp_path) / part_name("w", 1), index=False)
    cols = ["key", "measurer", "unit", "face_index", "attribute", "label", "score"]
    narrow = read_measurements(tmp_path, columns=cols)
    assert list(narrow.columns) == cols
    pd.testing.assert_frame_equal(narrow, read_measurements(tmp_path)[cols])
    assert narrow["label"].tolist() == ["a", "c"]  # the part's row wins


def test_image_table_lists_the_jobs_keys_prompts_and_indices():
    from t2ibias.models.generator_spec import resolve_generator_spec

    gen = resolve_generator_spec("tiny-random-sd")
    spec = {"generator_fingerprint": "g", "model": gen.to_dict(), "n_seeds": 3, "base_seed": 7}
    prompts = pd.DataFrame({"prompt_id": ["p1", "p2"], "text": ["a", "b"]})
    jobs = image_jobs(spec, prompts)
    table = image_table(spec, prompts)
    assert table["key"].tolist() == [j.key for j in jobs]
    assert table["prompt_id"].tolist() == [j.prompt_id for j in jobs]
    assert table["image_index"].tolist() == [j.index for j in jobs] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_shared_projections_equal_each_statistic_over_every_vertex(k):
    rng = np.random.default_rng(k)
    counts = rng.multinomial(40, rng.dirichlet(np.ones(k)), size=300).astype(float)  # several chunks at k = 5
    lo, hi = simultaneous_box(counts)
    stats = [(total_variation_uniform, False, True), (normalized_entropy, True, False), (max_min_gap, False, False)]
    got = box_projections(lo, hi, stats)
    verts, feasible = vertices(lo, hi)
    point = least_skewed_point(lo, hi, np.full(k, 1.0 / k))
    for (stat, concave, tv_ref), (a, b) in zip(stats, got):
        vals = np.where(feasible, stat(verts), np.inf if concave else -np.inf)
        worst = vals.min(axis=1) if concave else vals.max(axis=1)
        if tv_ref:
            q = np.clip(np.full(k, 1.0 / k), lo, hi)
            best = 0.5 * (np.abs(q - 1.0 / k).sum(axis=-1) + np.abs(1.0 - q.sum(axis=-1)))
        else:
            best = stat(point)
        np.testing.assert_allclose(a, worst if concave else best, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b, best if concave else worst, rtol=0, atol=1e-12)
        alone = box_projection(lo, hi, stat, concave=concave, tv_ref=tv_ref)
        assert np.array_equal(alone[0], a) and np.array_equal(alone[1], b)


def test_a_measurement_row_without_a_key_labels_no_image():
    from t2ibias.metrics.score import join_labels

    images = pd.DataFrame({"key": ["a", "b"], "prompt_id": ["p", "p"], "image_index": [0, 1], "status": ["ok", "ok"]})
    meas = pd.DataFrame({"key": ["a", None], "unit": ["face", "face"], "face_index": [0, 0], "attribute": ["g", "g"],
                         "label": ["x", "y"], "score": [0.1, 0.2]})
    out = join_labels(images, meas, ["g"], person_gate=True)
    assert out["label"].tolist() == ["x", "no_person"]
    assert out["n_faces"].tolist() == [1, 0]
