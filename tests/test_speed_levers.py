"""Speed levers of a generator spec: optional, in the fingerprint only when set, applied on load."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import fingerprint
from t2ibias.generation.diffusers_adapter import DiffusersGenerator, ResolvedWeights, generator_fingerprint, resolve_weights
from t2ibias.models.generator_spec import GENERATORS, LEVER_DEFAULTS, load_generator_spec_file, resolve_generator_spec

HUB = ResolvedWeights("x", None, "hub:owner/name@" + "0" * 40)

#: Fingerprints from before the levers existed (same weights identity): a default spec keeps them.
BEFORE_LEVERS = {
    "tiny-random-sd": ("36c9e82e1f8d9768", "06ba925da0ffde93"),
    "tiny-random-sdxl": ("122027974695ec2c", "9e25d2718d8b001b"),
}


@pytest.mark.parametrize("model", sorted(BEFORE_LEVERS))
def test_default_levers_leave_existing_fingerprints_unchanged(model):
    spec = resolve_generator_spec(model)
    assert (generator_fingerprint(spec, HUB, spec.dtype), generator_fingerprint(spec, HUB, "float32", False)) == BEFORE_LEVERS[model]


def test_no_registered_model_sets_a_lever_so_no_registered_fingerprint_moved():
    for model in GENERATORS:
        spec = GENERATORS.get(model)
        assert spec.speed_levers() == {}, model
        old = fingerprint({"weights": HUB.identity, "execution": "samplewise", "pipeline": spec.pipeline,
                           "variant": spec.variant, "dtype": spec.dtype, "scheduler": spec.scheduler,
                           "scheduler_config": spec.scheduler_config, "params": spec.generation_params()})
        assert generator_fingerprint(spec, HUB, spec.dtype) == old, model


def test_every_lever_set_changes_the_fingerprint():
    spec = resolve_generator_spec("tiny-random-sd")
    base = generator_fingerprint(spec, HUB, "float32")
    changed = {name: dataclasses.replace(spec, **{name: "default" if name == "compile" else True}) for name in LEVER_DEFAULTS}
    prints = {generator_fingerprint(s, HUB, "float32") for s in changed.values()}
    assert base not in prints and len(prints) == len(LEVER_DEFAULTS)
    assert generator_fingerprint(dataclasses.replace(spec, compile="max-autotune"), HUB, "float32") != \
        generator_fingerprint(changed["compile"], HUB, "float32")


def _yaml(tmp_path, body: str):
    path = tmp_path / "fast.yaml"
    path.write_text("source: tiny:tiny-random-sd\npipeline: StableDiffusionPipeline\n" + body)
    return path


def test_levers_are_read_from_yaml_and_bad_values_are_one_line_errors(tmp_path):
    spec = load_generator_spec_file(_yaml(tmp_path, "compile: reduce-overhead\nchannels_last: true\nvae_tiling: true\n"))
    assert spec.speed_levers() == {"compile": "reduce-overhead", "channels_last": True, "vae_tiling": True}
    with pytest.raises(UserError, match=r"fast.yaml:4: compile must be one of default"):
        load_generator_spec_file(_yaml(tmp_path, "\ncompile: fastest\n"))
    with pytest.raises(UserError, match=r"channels_last must be true or false"):
        load_generator_spec_file(_yaml(tmp_path, "channels_last: 1\n"))


def test_channels_last_and_slicing_are_applied_and_images_stay_batch_invariant(t2ibias_cache, one_torch_thread):
    spec = dataclasses.replace(resolve_generator_spec("tiny-random-sd"), channels_last=True, vae_tiling=True, steps=2)
    gen = DiffusersGenerator(spec, resolve_weights(spec), "cpu", "float32")
    gen.load()
    assert gen.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert gen.pipe.vae.use_tiling
    prompts, seeds = ["a doctor", "a nurse", "a janitor"], [1, 2, 3]
    together = [np.asarray(r.image) for r in gen.generate(prompts, seeds)]
    alone = [np.asarray(gen.generate([p], [s])[0].image) for p, s in zip(prompts, seeds)]
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))


def test_compile_wraps_the_denoiser_before_it_is_made_samplewise(t2ibias_cache, monkeypatch):
    compiled = []

    def fake_compile(fn, mode=None):
        compiled.append((fn, mode))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    spec = dataclasses.replace(resolve_generator_spec("tiny-random-sd"), compile="reduce-overhead")
    gen = DiffusersGenerator(spec, resolve_weights(spec), "cpu", "float32")
    gen.load()
    assert [(getattr(fn, "__self__", None), mode) for fn, mode in compiled] == [(gen.pipe.unet, "reduce-overhead")]
    assert gen.pipe.unet._t2ibias_samplewise  # the sample-wise wrapper calls the compiled forward, one image per call


def _t2ibias(monkeypatch, *args: str) -> int:
    """``t2ibias ARGS`` through the console entry point, in this process; its exit status."""
    from t2ibias.cli import main

    monkeypatch.setattr("sys.argv", ["t2ibias", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code


def test_sweep_compile_flag_enters_the_spec_and_bad_modes_exit_2(t2ibias_cache, tmp_path, monkeypatch, capsys):
    from t2ibias.store.rundir import read_spec

    def plan_only(*args, **kwargs):  # stop once the spec is written: the flag's whole effect
        raise SystemExit(0)

    monkeypatch.setattr("t2ibias.cli._stages", plan_only)
    out = tmp_path / "run"
    assert _t2ibias(monkeypatch, "sweep", "--model", "tiny-random-sd", "--seeds", "1", "--out", str(out),
                    "--device", "cpu", "--compile", "reduce-overhead") == 0
    spec = read_spec(out)
    assert spec["model"]["compile"] == "reduce-overhead"
    plain = resolve_generator_spec("tiny-random-sd")
    assert spec["generator_fingerprint"] != generator_fingerprint(plain, resolve_weights(plain), "float32")
    capsys.readouterr()
    assert _t2ibias(monkeypatch, "sweep", "--model", "tiny-random-sd", "--out", str(tmp_path / "b"), "--compile", "fastest") == 2
    assert capsys.readouterr().err.strip().startswith("error: --compile fastest: unknown mode (one of default")
    assert not (tmp_path / "b").exists()
