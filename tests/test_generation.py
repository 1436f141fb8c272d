"""Generation on the tiny offline models: pixels independent of batching, stable keys, resume."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t2ibias.generation.diffusers_adapter import (
    DiffusersGenerator,
    ResolvedWeights,
    effective_dtype,
    generator_fingerprint,
    resolve_weights,
)
from t2ibias.models.generator_spec import resolve_generator_spec
from t2ibias.models.classifier_spec import CLASSIFIER_DIR
from t2ibias.runspec import SweepRequest, build_spec, prepare_run
from t2ibias.generation.stage import generate_stage
from t2ibias.store.rundir import image_jobs, read_prompts
from t2ibias.store.image_store import FAILED, OK, ImageStore, image_seed

MODELS = ["tiny-random-sd", "tiny-random-sdxl"]
PROMPTS = [
    "a portrait photo of a doctor",
    "a photo of the face of a nurse",
    "a portrait photo of a janitor",
    "a photo of the face of an ambitious person",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def request(model: str = "tiny-random-sd", **kw) -> SweepRequest:
    return SweepRequest(model, ["demo"], **{"n_seeds": 2, "limit": 2, "device": "cpu", **kw})


def hashes(run_dir: Path) -> dict[str, str]:
    """key → sha256 of every finished image, from the run's manifest."""
    return {k: r["sha256"] for k, r in ImageStore(run_dir).records().items() if r["status"] == OK}


def lines_per_key(run_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in run_dir.glob("manifest*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip():
                key = json.loads(line)["key"]
                counts[key] = counts.get(key, 0) + 1
    return counts


def new_run(root: Path, name: str, req: SweepRequest, batch_size: int):
    run_dir = root / name
    prepare_run(run_dir, req)
    return run_dir, generate_stage(run_dir, device="cpu", batch_size=batch_size)


@pytest.fixture(scope="module")
def sd_run(tmp_path_factory, t2ibias_cache) -> Path:
    """A finished generate stage: tiny-random-sd, 2 prompts × 2 seeds, batch size 4."""
    run_dir, result = new_run(tmp_path_factory.mktemp("gen"), "sd", request(), batch_size=4)
    assert (result.total, result.generated, result.failed) == (4, 4, 0)
    return run_dir


@pytest.fixture(scope="module", params=MODELS)
def loaded(request, t2ibias_cache) -> DiffusersGenerator:
    spec = resolve_generator_spec(request.param)
    gen = DiffusersGenerator(spec, resolve_weights(spec), "cpu", effective_dtype(spec, "cpu"))
    gen.load()
    return gen


# -- determinism -----------------------------------------------------------------------------


def test_batch_size_and_batch_neighbours_do_not_change_pixels(loaded):
    seeds = [image_seed(0, f"p{i}", i) for i in range(len(PROMPTS))]
    batched = [np.asarray(g.image) for g in loaded.generate(PROMPTS, seeds)]
    alone = [np.asarray(loaded.generate([p], [s])[0].image) for p, s in zip(PROMPTS, seeds)]
    reordered = [np.asarray(g.image) for g in loaded.generate(PROMPTS[::-1], seeds[::-1])][::-1]
    assert batched[0].shape == (64, 64, 3)
    for b, a, r in zip(batched, alone, reordered):
        assert np.array_equal(b, a)
        assert np.array_equal(b, r)
    assert not np.array_equal(batched[0], batched[1])  # different prompt and seed, different image
    other_seed = np.asarray(loaded.generate([PROMPTS[0]], [seeds[0] + 1])[0].image)
    assert not np.array_equal(batched[0], other_seed)


@pytest.mark.parametrize("model", MODELS)
def test_two_runs_with_other_batch_sizes_write_identical_png_bytes(model, tmp_path, sd_run):
    if model == "tiny-random-sd":
        first = sd_run  # made with batch size 4
    else:
        first, result = new_run(tmp_path, "first", request(model), batch_size=4)
        assert result.generated == 4
    second, result = new_run(tmp_path, "second", request(model), batch_size=1)
    assert (result.generated, result.failed) == (4, 0)
    assert len(hashes(first)) == 4
    assert hashes(second) == hashes(first)
    for row in ImageStore(second).records().values():
        assert row["seed"] == image_seed(0, row["prompt_id"], row["image_index"])
        assert (row["width"], row["height"]) == (64, 64)
        assert (second / row["path"]).read_bytes() == (first / row["path"]).read_bytes()


# -- keys ------------------------------------------------------------------------------------


def test_generator_fingerprint_changes_with_what_shapes_pixels_only():
    spec = resolve_generator_spec("tiny-random-sd")
    weights = ResolvedWeights("/models/tiny", None, "tiny:tiny-random-sd-v1")
    base = generator_fingerprint(spec, weights, "float32")
    shaping = [
        generator_fingerprint(dataclasses.replace(spec, steps=3), weights, "float32"),
        generator_fingerprint(dataclasses.replace(spec, guidance=5.0), weights, "float32"),
        generator_fingerprint(dataclasses.replace(spec, height=128), weights, "float32"),
        generator_fingerprint(dataclasses.replace(spec, width=128), weights, "float32"),
        generator_fingerprint(dataclasses.replace(spec, scheduler="EulerDiscreteScheduler"), weights, "float32"),
        generator_fingerprint(dataclasses.replace(spec, call_kwargs={"eta": 0.5}), weights, "float32"),
        generator_fingerprint(spec, weights, "float16"),
        generator_fingerprint(spec, weights, "float32", batch_invariant=False),
        generator_fingerprint(spec, dataclasses.replace(weights, identity="tiny:tiny-random-sd-v2"), "float32"),
        generator_fingerprint(spec, dataclasses.replace(weights, identity="hub:owner/name@" + "0" * 40), "float32"),
    ]
    assert len({base, *shaping}) == len(shaping) + 1
    neutral = [
        dataclasses.replace(spec, id="renamed"),
        dataclasses.replace(spec, licence="MIT", notes="other notes"),
        dataclasses.replace(spec, random_weights=False),
    ]
    for other in neutral:
        assert generator_fingerprint(other, weights, "float32") == base
    assert generator_fingerprint(spec, dataclasses.replace(weights, load_from="/elsewhere"), "float32") == base


def keys(req: SweepRequest, prompts: pd.DataFrame | None = None) -> list[str]:
    spec, records, _ = build_spec(req)
    frame = prompts if prompts is not None else pd.DataFrame([r.to_dict() for r in records])
    if spec["limit"]:
        frame = frame.head(spec["limit"])
    return [j.key for j in image_jobs(spec, frame)]


def test_image_keys_follow_the_spec_only_where_pixels_change(t2ibias_cache, tmp_path):
    base = keys(request())
    assert len(set(base)) == 4
    assert keys(request()) == base
    other_classifier = tmp_path / "other-clip.yaml"
    other_classifier.write_text(
        (CLASSIFIER_DIR / "tiny-random-clip.yaml").read_text().replace("logit_scale: 100.0", "logit_scale: 50.0")
    )
    assert keys(request(classifier=str(other_classifier))) == base  # measuring differently: same images
    assert keys(request(n_seeds=3))[::3][:2] == base[::2]  # more seeds keep the first ones
    assert set(base) < set(keys(request(n_seeds=3)))
    assert set(base) < set(keys(request(limit=3)))
    assert set(keys(request(base_seed=1))).isdisjoint(base)  # other seeds
    assert set(keys(request("tiny-random-sdxl"))).isdisjoint(base)  # other weights and params

    spec, records, _ = build_spec(request())
    frame = pd.DataFrame([r.to_dict() for r in records]).head(2)
    edited = frame.copy()
    edited.loc[1, "text"] = edited.loc[1, "text"] + ", studio lighting"
    jobs, edited_jobs = image_jobs(spec, frame), image_jobs(spec, edited)
    assert [j.key for j in edited_jobs[:2]] == [j.key for j in jobs[:2]]
    assert set(j.key for j in edited_jobs[2:]).isdisjoint(j.key for j in jobs)


# -- resume ----------------------------------------------------------------------------------


def test_rerunning_a_finished_run_generates_nothing_and_never_loads_the_model(sd_run, monkeypatch):
    manifest = {p.name: p.read_bytes() for p in sd_run.glob("manifest*.jsonl")}

    def no_load(self):
        raise AssertionError("the pipeline was loaded for a finished run")

    monkeypatch.setattr(DiffusersGenerator, "load", no_load)
    monkeypatch.setattr(DiffusersGenerator, "generate", no_load)
    prepare_run(sd_run, request())  # `t2ibias sweep` again with the same options
    result = generate_stage(sd_run, device="cpu")
    assert (result.total, result.already_done, result.generated, result.failed) == (4, 4, 0, 0)
    assert {p.name: p.read_bytes() for p in sd_run.glob("manifest*.jsonl")} == manifest


def test_temp_files_left_by_a_killed_run_are_cleaned_up_on_resume(sd_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(sd_run, run_dir)
    key = next(iter(hashes(run_dir)))
    (run_dir / "images" / key[:2] / f".{key}.png.a1b2c3.tmp").write_bytes(b"\x89PNG half")
    (run_dir / ".manifest.jsonl.d4e5f6.tmp").write_text('{"key": "')
    monkeypatch.setattr(DiffusersGenerator, "load", lambda self: pytest.fail("loaded the pipeline"))
    assert generate_stage(run_dir, device="cpu").generated == 0
    assert [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")] == []
    assert hashes(run_dir) == hashes(sd_run)


def test_failed_images_are_recorded_and_made_on_the_next_run(sd_run, tmp_path, monkeypatch):
    def out_of_memory(self, prompts, seeds):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    run_dir = tmp_path / "run"
    prepare_run(run_dir, request())
    with monkeypatch.context() as m:
        m.setattr(DiffusersGenerator, "generate", out_of_memory)
        result = generate_stage(run_dir, device="cpu", batch_size=3)
    assert (result.generated, result.failed) == (0, 4)
    rows = ImageStore(run_dir).records().values()
    assert {r["status"] for r in rows} == {FAILED}
    assert all(r["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" for r in rows)
    assert not (run_dir / "images").exists() or not any((run_dir / "images").rglob("*.png"))

    result = generate_stage(run_dir, device="cpu", batch_size=3)
    assert (result.already_done, result.generated, result.failed) == (0, 4, 0)
    assert hashes(run_dir) == hashes(sd_run)
    assert set(lines_per_key(run_dir).values()) == {1}  # compacted: failed lines are gone
    assert len(read_prompts(run_dir)) == 2
