"""Measure checkpoints append part files and compact once; the worker seam; CLIP precision."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t2ibias.store.rundir import (
    COLUMNS,
    EMBEDDING_COLUMNS,
    EMBEDDINGS_FILE,
    MEASURE_FILE,
    MEASUREMENTS_FILE,
    part_files,
    parts_dir,
    read_measurements,
)


def _chunk(start: int, n_images: int, measurer: str = "m" * 16, attributes: tuple[str, ...] = ("gender", "race")):
    """Synthetic rows of images ``start .. start + n_images``: one image row per attribute, and a
    face row on even images; one embedding per image."""
    rows, emb = [], []
    for i in range(start, start + n_images):
        key = f"{i:032x}"
        units = [("image", -1, (np.nan,) * 4)] + ([("face", 0, (1.0, 2.0, 3.0, 4.0))] if i % 2 == 0 else [])
        for unit, index, box in units:
            for a in attributes:
                rows.append({"key": key, "measurer": measurer, "unit": unit, "face_index": index,
                             "box_x": box[0], "box_y": box[1], "box_w": box[2], "box_h": box[3], "attribute": a,
                             "label": "x", "top_label": "x", "score": 0.5 + (i % 7) / 20, "margin": 0.1,
                             "probs": json.dumps({"x": 0.6, "y": 0.4})})
        emb.append({"key": key, "measurer": measurer, "embedding": np.full(8, i % 5, dtype="float32")})
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(emb, columns=EMBEDDING_COLUMNS)


def test_appended_parts_compact_to_the_bytes_of_a_one_shot_write(tmp_path):
    from t2ibias.measure.table import PartWriter, compact_tables, write_tables

    chunks = [_chunk(i * 5, 5) for i in range(4)]
    one_shot, appended = tmp_path / "one", tmp_path / "appended"
    write_tables(one_shot, [c[0] for c in chunks], [c[1] for c in chunks])
    writer = PartWriter(appended, "local")
    for rows, emb in chunks:
        writer.write(rows, emb)
    assert [p.name for p in part_files(appended)] == [f"local-00000{i}.parquet" for i in range(4)]
    assert not (appended / MEASUREMENTS_FILE).exists()
    seen = read_measurements(appended)  # the readers see the parts before compaction
    assert len(seen) == sum(len(c[0]) for c in chunks) and list(seen["key"].unique()) == [f"{i:032x}" for i in range(20)]
    compact_tables(appended)
    for name in (MEASUREMENTS_FILE, EMBEDDINGS_FILE):
        assert (appended / name).read_bytes() == (one_shot / name).read_bytes()
        assert not parts_dir(appended, name).exists()


def test_parts_win_over_the_table_and_later_parts_over_earlier_ones(tmp_path):
    from t2ibias.measure.table import PartWriter, compact_tables, write_tables

    rows, emb = _chunk(0, 3)
    write_tables(tmp_path, [rows], [emb])
    again = rows[rows["key"] == f"{1:032x}"].assign(label="y")
    PartWriter(tmp_path, "local").write(again, emb.iloc[:0])
    PartWriter(tmp_path, "local").write(again.assign(label="z"), emb.iloc[:0])  # numbered after the first
    assert [p.name for p in part_files(tmp_path)] == ["local-000000.parquet", "local-000001.parquet"]
    for frame in (read_measurements(tmp_path), (compact_tables(tmp_path), read_measurements(tmp_path))[1]):
        assert len(frame) == len(rows)
        assert set(frame.loc[frame["key"] == f"{1:032x}", "label"]) == {"z"}
        assert set(frame.loc[frame["key"] != f"{1:032x}", "label"]) == {"x"}


def test_compaction_orders_rows_by_the_given_keys_whatever_the_worker(tmp_path):
    from t2ibias.measure.table import PartWriter, compact_tables, write_tables

    one_shot, sharded = tmp_path / "one", tmp_path / "sharded"
    rows, emb = _chunk(0, 6)
    write_tables(one_shot, [rows], [emb])
    keys = [f"{i:032x}" for i in range(6)]
    for worker, mine in (("b", keys[0::2]), ("a", keys[1::2])):  # worker "a" sorts first but holds the later keys
        PartWriter(sharded, worker).write(rows[rows["key"].isin(mine)], emb[emb["key"].isin(mine)])
    compact_tables(sharded, keys)
    for name in (MEASUREMENTS_FILE, EMBEDDINGS_FILE):
        assert (sharded / name).read_bytes() == (one_shot / name).read_bytes()


def test_write_volume_is_linear_in_checkpoints(tmp_path, monkeypatch):
    import t2ibias.measure.table as table

    written = []
    original = table.atomic_write_bytes
    monkeypatch.setattr(table, "atomic_write_bytes", lambda path, data: (written.append(len(data)), original(path, data)))

    def volume(n_checkpoints: int, run: Path) -> int:
        written.clear()
        writer = table.PartWriter(run, "local")
        for i in range(n_checkpoints):
            writer.write(*_chunk(i * 16, 16))
        table.compact_tables(run)
        return sum(written)

    small, big = volume(8, tmp_path / "n"), volume(16, tmp_path / "2n")
    assert 1.8 < big / small < 2.2  # rewriting the whole table at each checkpoint would be about 4x


def test_worker_names_are_checked(tmp_path):
    from t2ibias.core.errors import UserError
    from t2ibias.measure.table import PartWriter

    for bad in ("", "../x", "a/b", "-x", "x" * 65):
        with pytest.raises(UserError, match="worker name"):
            PartWriter(tmp_path, bad)


def test_clear_run_removes_part_files_and_nothing_else(tmp_path):
    from t2ibias.measure.table import PartWriter
    from t2ibias.store.rundir import clear_run

    PartWriter(tmp_path, "w1").write(*_chunk(0, 2))
    foreign = parts_dir(tmp_path) / "notes.txt"
    foreign.write_text("mine")
    clear_run(tmp_path)
    assert foreign.read_text() == "mine" and part_files(tmp_path) == []
    assert not parts_dir(tmp_path, EMBEDDINGS_FILE).exists()


# -- the stage on a real tiny run ------------------------------------------------------------------

@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    from tests.run_fixtures import make_face_run

    return make_face_run(tmp_path_factory.mktemp("parts") / "run")


@pytest.fixture(scope="module")
def reference(face_run, tmp_path_factory):
    """The face run measured in one go, one image per batch and per checkpoint."""
    from t2ibias.measure import stage

    run = tmp_path_factory.mktemp("ref") / "run"
    shutil.copytree(face_run[0], run)
    saved = stage.CHECKPOINT_EVERY
    stage.CHECKPOINT_EVERY = 1
    try:
        stage.measure_stage(run, device="cpu", batch_size=1)
    finally:
        stage.CHECKPOINT_EVERY = saved
    return run


class _Killed(BaseException):
    pass


def test_a_measure_killed_between_parts_resumes_without_redoing_or_losing_them(face_run, reference, tmp_path, monkeypatch):
    from t2ibias.measure import stage
    from t2ibias.measure.table import PartWriter

    run = tmp_path / "run"
    shutil.copytree(face_run[0], run)
    monkeypatch.setattr(stage, "CHECKPOINT_EVERY", 1)
    original, calls = PartWriter.write, []

    def dies_after_the_first_part(self, rows, emb):
        calls.append(1)
        if len(calls) > 1:  # the process is gone: this part and everything after it is never written
            raise _Killed
        original(self, rows, emb)

    monkeypatch.setattr(PartWriter, "write", dies_after_the_first_part)
    with pytest.raises(_Killed):
        stage.measure_stage(run, device="cpu", batch_size=1)
    assert [p.name for p in part_files(run)] == ["local-000000.parquet"]
    assert not (run / MEASUREMENTS_FILE).exists() and not (run / MEASURE_FILE).exists()
    first_key = read_measurements(run)["key"].unique().tolist()
    assert len(first_key) == 1 and len(read_measurements(run, EMBEDDINGS_FILE)) == 1  # the readers see the part

    monkeypatch.setattr(PartWriter, "write", original)
    result = stage.measure_stage(run, device="cpu", batch_size=1)
    assert result["measured"] == 1 and result["cached"] == 1  # the finished image is not measured again
    for name in (MEASUREMENTS_FILE, EMBEDDINGS_FILE):
        assert (run / name).read_bytes() == (reference / name).read_bytes()
        assert not parts_dir(run, name).exists()


def test_the_worker_seam_writes_only_its_own_parts_and_the_driver_compacts(face_run, reference, tmp_path, monkeypatch):
    from t2ibias.measure import stage
    from t2ibias.store.lock import RunLock

    run = tmp_path / "run"
    shutil.copytree(face_run[0], run)
    monkeypatch.setattr(stage, "CHECKPOINT_EVERY", 1)
    with RunLock(run, "measure"):
        plan = stage.plan_measure(run, device="cpu", batch_size=1)
        assert len(plan.keys) == 2 and plan.cached == 0
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
        results = [stage.measure_keys(plan, [plan.keys[1]], "w1"), stage.measure_keys(plan, [plan.keys[0]], "w0")]
        after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
        new = sorted(str(p.relative_to(run)) for p in set(after) - set(before))
        assert new == ["embeddings.parts/w0-000000.parquet", "embeddings.parts/w1-000000.parquet",
                       "measurements.parts/w0-000000.parquet", "measurements.parts/w1-000000.parquet"]
        assert all(after[p] == t for p, t in before.items())  # nothing else touched
        assert [r["parts"] for r in results] == [["w1-000000.parquet"], ["w0-000000.parquet"]]
        assert stage.measure_keys(plan, plan.keys, "w0")["measured"] == 0  # a retried shard skips what is written
        total = stage.finish_measure(plan, results)
    assert total["measured"] == 2 and total["faces"] == sum(r["faces"] for r in results) >= 1
    for name in (MEASUREMENTS_FILE, EMBEDDINGS_FILE, MEASURE_FILE):
        assert (run / name).read_bytes() == (reference / name).read_bytes()
    assert part_files(run) == []


def test_a_worker_with_another_measurer_than_the_plan_is_refused(face_run, tmp_path):
    import dataclasses

    from t2ibias.measure import stage

    run = tmp_path / "run"
    shutil.copytree(face_run[0], run)
    plan = stage.plan_measure(run, device="cpu")
    with pytest.raises(RuntimeError, match="not the plan's"):
        stage.measure_keys(dataclasses.replace(plan, measurer="0" * 16), plan.keys, "w0")
    assert part_files(run) == []


# -- precision ---------------------------------------------------------------------------------------

def test_clip_runs_in_float16_on_cuda_only_and_cpu_fingerprints_are_unchanged():
    from t2ibias.core.fingerprint import fingerprint
    from t2ibias.measure.gate import HaarFaceGate
    from t2ibias.measure.stage import clip_precision, measurer_fingerprint
    from t2ibias.models.classifier_spec import resolve_classifier_spec
    from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier

    assert [clip_precision(d) for d in ("cuda", "cuda:1", "cpu", "mps")] == ["float16", "float16", "float32", "float32"]
    gate, spec = HaarFaceGate(), resolve_classifier_spec("tiny-random-clip")
    before = fingerprint({"gate": gate.fingerprint(), "classifier": spec.fingerprint()})  # the formula of earlier versions
    assert measurer_fingerprint(gate, spec) == measurer_fingerprint(gate, spec, clip_precision("cpu")) == before
    half = measurer_fingerprint(gate, spec, clip_precision("cuda"))
    assert half != before and half != measurer_fingerprint(gate, spec, "bfloat16")
    assert CLIPAttributeClassifier(spec, "cpu").fingerprint() == spec.fingerprint()
    assert CLIPAttributeClassifier(spec, "cuda", precision="float16").fingerprint() != spec.fingerprint()
    with pytest.raises(ValueError, match="only on a CUDA device"):
        CLIPAttributeClassifier(spec, "cpu", precision="float16")


def test_a_cpu_measure_records_no_precision(reference):
    from t2ibias.store.rundir import read_measurers

    info = read_measurers(reference)
    assert info and all("precision" not in v for v in info.values())


def test_default_workers_are_half_the_cores_from_2_to_8(monkeypatch):
    from t2ibias.measure import stage

    got = []
    for cores in (None, 1, 2, 4, 16, 64):
        monkeypatch.setattr(stage.os, "cpu_count", lambda c=cores: c)
        got.append(stage.default_workers())
    assert got == [2, 2, 2, 2, 8, 8]


def test_a_cpu_driver_plans_for_gpu_workers_under_the_float16_measurer(face_run, tmp_path):
    from t2ibias.core.errors import UserError
    from t2ibias.measure import stage
    from t2ibias.store.rundir import read_measurers

    run = tmp_path / "run"
    shutil.copytree(face_run[0], run)
    cpu = stage.plan_measure(run, device="cpu")
    gpu = stage.plan_measure(run, device="cpu", worker_device="cuda")
    assert gpu.device == "cuda" and gpu.measurer != cpu.measurer and gpu.keys == cpu.keys
    assert read_measurers(run)[gpu.measurer]["precision"] == "float16"
    with pytest.raises(UserError, match="worker device 'gpu'"):
        stage.plan_measure(run, device="cpu", worker_device="gpu")
