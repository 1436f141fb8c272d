"""The image store: atomic writes, manifest shards, crash leftovers, compaction, seeds and keys."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from t2ibias.store.image_store import BLOCKED, FAILED, OK, ImageStore, image_key, image_seed
from t2ibias.core.files import atomic_write_bytes

PARAMS = {"steps": 2, "guidance": 7.5, "height": 64, "width": 64, "call_kwargs": {}}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def manifest_lines(root: Path) -> list[dict]:
    rows = []
    for path in sorted(root.glob("manifest*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def put_ok(store: ImageStore, key: str, png: bytes, **extra) -> dict:
    return store.put(key, png, {"status": OK, **extra})


# -- atomic writes ---------------------------------------------------------------------------


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "deep" / "dir" / "file.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new" * 10_000)
    assert target.read_bytes() == b"new" * 10_000
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_failed_atomic_write_keeps_the_old_file_and_removes_its_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "spec.json"
    atomic_write_bytes(target, b"old")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]


def test_put_writes_the_png_then_one_manifest_line_with_its_hash(tmp_path):
    store = ImageStore(tmp_path)
    png = b"\x89PNG fake image bytes"
    row = put_ok(store, "ab12cd", png, prompt_id="p1")
    store.close()
    path = tmp_path / "images" / "ab" / "ab12cd.png"
    assert path.read_bytes() == png
    assert row["path"] == "images/ab/ab12cd.png"
    assert row["sha256"] == hashlib.sha256(png).hexdigest()
    assert manifest_lines(tmp_path) == [row]
    assert temp_files(tmp_path) == []
    assert ImageStore(tmp_path).done_keys(["ab12cd", "other"]) == {"ab12cd"}


def test_leftover_temp_files_of_a_killed_writer_are_removed(tmp_path):
    store = ImageStore(tmp_path)
    put_ok(store, "ab12cd", b"png")
    store.close()
    (tmp_path / "images" / "ab" / ".ab99.png.k2j3h4.tmp").write_bytes(b"half an ima")
    (tmp_path / ".manifest.jsonl.x8y7.tmp").write_text('{"key": "ab')
    assert store.remove_temp_files() == 2
    assert temp_files(tmp_path) == []
    assert (tmp_path / "images" / "ab" / "ab12cd.png").read_bytes() == b"png"


# -- reading the manifest --------------------------------------------------------------------


def test_shards_merge_and_the_last_line_of_a_key_wins(tmp_path):
    first = ImageStore(tmp_path, worker="0")
    first.put("k1", None, {"status": FAILED, "error": "OutOfMemoryError: CUDA"})
    put_ok(first, "k1", b"one")
    first.put("k2", None, {"status": FAILED, "error": "OutOfMemoryError: CUDA"})
    first.close()
    second = ImageStore(tmp_path, worker="1")
    put_ok(second, "k2", b"two")
    second.put("k3", None, {"status": BLOCKED})
    second.close()
    reader = ImageStore(tmp_path)
    assert [p.name for p in reader.manifest_files()] == ["manifest-0.jsonl", "manifest-1.jsonl"]
    records = reader.records()
    assert {k: r["status"] for k, r in records.items()} == {"k1": OK, "k2": OK, "k3": BLOCKED}
    assert records["k2"]["sha256"] == hashlib.sha256(b"two").hexdigest()
    assert reader.done_keys(["k1", "k2", "k3", "k4"]) == {"k1", "k2", "k3"}


def test_a_truncated_last_line_is_ignored_and_the_next_append_starts_a_new_line(tmp_path):
    store = ImageStore(tmp_path)
    put_ok(store, "k1", b"one")
    put_ok(store, "k2", b"two")
    store.close()
    manifest = tmp_path / "manifest-0.jsonl"
    data = manifest.read_bytes()
    manifest.write_bytes(data[: len(data) - 25])  # killed while writing k2's line
    reader = ImageStore(tmp_path)
    assert set(reader.records()) == {"k1"}
    assert reader.done_keys(["k1", "k2"]) == {"k1"}  # k2 is made again on resume

    resumed = ImageStore(tmp_path)
    put_ok(resumed, "k2", b"two")
    put_ok(resumed, "k3", b"three")
    resumed.close()
    lines = manifest.read_text().splitlines()
    assert len(lines) == 4  # k1, the cut line, k2, k3
    assert [json.loads(line)["key"] for line in lines[2:]] == ["k2", "k3"]
    assert set(ImageStore(tmp_path).records()) == {"k1", "k2", "k3"}


def test_changed_or_missing_images_need_work_again_but_blocked_ones_do_not(tmp_path):
    store = ImageStore(tmp_path)
    put_ok(store, "aa01", b"first image")
    put_ok(store, "bb02", b"second image")
    put_ok(store, "cc03", b"third image")
    put_ok(store, "ff06", b"sixth image")
    store.put("dd04", None, {"status": BLOCKED})
    store.put("ee05", None, {"status": FAILED, "error": "RuntimeError: boom"})
    store.close()
    corrupt = tmp_path / "images" / "aa" / "aa01.png"
    corrupt.write_bytes(b"first imagf")  # same size, one byte changed
    (tmp_path / "images" / "bb" / "bb02.png").unlink()
    (tmp_path / "images" / "ff" / "ff06.png").write_bytes(b"sixth im")  # cut short by a crash
    keys = ["aa01", "bb02", "cc03", "dd04", "ee05", "ff06"]
    # the default resume check: file there with the recorded size (a same-size change needs --deep)
    assert ImageStore(tmp_path).done_keys(keys) == {"aa01", "cc03", "dd04"}
    assert ImageStore(tmp_path).done_keys(keys, deep=True) == {"cc03", "dd04"}
    assert ImageStore(tmp_path).done_keys(keys, verify=False) == {"aa01", "bb02", "cc03", "dd04", "ff06"}


def test_rows_written_before_sizes_were_recorded_are_checked_by_hash(tmp_path):
    store = ImageStore(tmp_path)
    for key, png in (("aa01", b"first image"), ("bb02", b"second image")):
        row = put_ok(store, key, png)
        assert row["bytes"] == len(png)
    store.close()
    manifest = tmp_path / "manifest-0.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "bytes"}) + "\n" for r in rows))
    (tmp_path / "images" / "aa" / "aa01.png").write_bytes(b"first imagf")
    assert ImageStore(tmp_path).done_keys(["aa01", "bb02"]) == {"bb02"}


def test_drop_removes_only_the_named_keys_lines_and_keeps_every_file(tmp_path):
    first = ImageStore(tmp_path, worker="0")
    put_ok(first, "k1", b"one")
    put_ok(first, "k2", b"two")
    first.close()
    second = ImageStore(tmp_path, worker="1")
    put_ok(second, "k2", b"two")
    second.put("k3", None, {"status": BLOCKED})
    second.close()
    files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "images").rglob("*"))
    assert ImageStore(tmp_path).drop(["k2", "nope"]) == 1
    assert sorted(p.name for p in tmp_path.glob("manifest*.jsonl")) == ["manifest.jsonl"]
    assert set(ImageStore(tmp_path).records()) == {"k1", "k3"}
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "images").rglob("*")) == files
    assert ImageStore(tmp_path).drop(["k2"]) == 0


# -- compaction ------------------------------------------------------------------------------


def test_compact_leaves_exactly_one_line_per_key(tmp_path):
    first = ImageStore(tmp_path, worker="0")
    for key in ("k1", "k2", "k3"):
        first.put(key, None, {"status": FAILED, "error": "RuntimeError"})
    put_ok(first, "k1", b"one")
    first.close()
    second = ImageStore(tmp_path, worker="1")
    put_ok(second, "k2", b"two")
    put_ok(second, "k2", b"two")
    second.close()
    with open(tmp_path / "manifest-1.jsonl", "a") as fh:
        fh.write('{"key": "k3", "sta')  # cut short by a crash
    before = ImageStore(tmp_path).records()

    assert ImageStore(tmp_path).compact() is True
    assert sorted(p.name for p in tmp_path.glob("manifest*.jsonl")) == ["manifest.jsonl"]
    rows = manifest_lines(tmp_path)
    assert sorted(r["key"] for r in rows) == ["k1", "k2", "k3"]
    assert {r["key"]: r for r in rows} == before
    assert temp_files(tmp_path) == []

    compacted = (tmp_path / "manifest.jsonl").read_bytes()
    assert ImageStore(tmp_path).compact() is False  # nothing to do
    assert (tmp_path / "manifest.jsonl").read_bytes() == compacted


def test_a_retry_after_compaction_is_not_undone_by_the_compacted_manifest(tmp_path):
    store = ImageStore(tmp_path)
    store.put("k1", None, {"status": FAILED, "error": "OutOfMemoryError"})
    store.put("k1", None, {"status": FAILED, "error": "OutOfMemoryError"})
    put_ok(store, "k2", b"two")
    assert store.compact() is True
    assert sorted(p.name for p in tmp_path.glob("manifest*.jsonl")) == ["manifest.jsonl"]

    later = ImageStore(tmp_path)  # the next run appends to a shard beside manifest.jsonl
    put_ok(later, "k1", b"one at last")
    later.close()
    assert ImageStore(tmp_path).records()["k1"]["status"] == OK
    assert ImageStore(tmp_path).done_keys(["k1", "k2"]) == {"k1", "k2"}
    assert ImageStore(tmp_path).compact() is True
    rows = manifest_lines(tmp_path)
    assert sorted((r["key"], r["status"]) for r in rows) == [("k1", OK), ("k2", OK)]


# -- seeds and keys --------------------------------------------------------------------------


def test_image_seed_depends_only_on_base_seed_prompt_id_and_index():
    seed = image_seed(0, "4f6947784e17", 3)
    assert seed == image_seed(0, "4f6947784e17", 3)
    assert isinstance(seed, int) and 0 <= seed < 2**63
    assert len({seed, image_seed(1, "4f6947784e17", 3), image_seed(0, "4f6947784e18", 3), image_seed(0, "4f6947784e17", 2)}) == 4
    many = {image_seed(0, f"p{p}", i) for p in range(50) for i in range(20)}
    assert len(many) == 1000


def test_image_key_changes_with_each_input_that_shapes_pixels():
    base = image_key("gfp-a", "a photo of a doctor", 42, PARAMS)
    assert base == image_key("gfp-a", "a photo of a doctor", 42, dict(reversed(list(PARAMS.items()))))
    variants = [
        image_key("gfp-b", "a photo of a doctor", 42, PARAMS),
        image_key("gfp-a", "a photo of a nurse", 42, PARAMS),
        image_key("gfp-a", "a photo of a doctor ", 42, PARAMS),
        image_key("gfp-a", "a photo of a doctor", 43, PARAMS),
        image_key("gfp-a", "a photo of a doctor", 42, {**PARAMS, "steps": 3}),
        image_key("gfp-a", "a photo of a doctor", 42, {**PARAMS, "guidance": 7.0}),
        image_key("gfp-a", "a photo of a doctor", 42, {**PARAMS, "height": 128}),
        image_key("gfp-a", "a photo of a doctor", 42, {**PARAMS, "width": 128}),
        image_key("gfp-a", "a photo of a doctor", 42, {**PARAMS, "call_kwargs": {"max_sequence_length": 256}}),
    ]
    assert len({base, *variants}) == len(variants) + 1
