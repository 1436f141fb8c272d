"""Every registered generator, classifier, measurer, gate, prompt set and metric meets its
contract (``tests/contracts.py``). The parameters come from the registries, never from lists
here, so a new config file or registration is checked without a test of its own; the last tests
show a broken config placed in a config folder failing its contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from contracts import (
    ClassifierConfigContract,
    GateContract,
    GeneratorConfigContract,
    MeasurerContract,
    MetricContract,
    OfflineGeneratorContract,
    PromptSetContract,
    classifier_ids,
    face_detector_ids,
    generator_ids,
    measurer_kinds,
    metric_ids,
    offline_classifier_ids,
    offline_generator_ids,
    prompt_set_ids,
)
from t2ibias.core.registry import Registry
from t2ibias.models import classifier_spec as classifier_registry
from t2ibias.models import generator_spec as generator_registry

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- generators


class TestGeneratorConfigs(GeneratorConfigContract):
    @pytest.fixture(params=generator_ids())
    def generator_id(self, request: pytest.FixtureRequest) -> str:
        return request.param


class TestOfflineGenerators(OfflineGeneratorContract):
    @pytest.fixture(scope="class", params=offline_generator_ids())
    @classmethod
    def generator(cls, request: pytest.FixtureRequest, t2ibias_cache: Path, one_torch_thread: None) -> Any:
        from t2ibias.generation.diffusers_adapter import DiffusersGenerator, effective_dtype, resolve_weights

        spec = generator_registry.GENERATORS.get(request.param)
        gen = DiffusersGenerator(spec, resolve_weights(spec), "cpu", effective_dtype(spec, "cpu"))
        gen.load()
        return gen


# ---------------------------------------------------------------- classifiers


class TestClassifierConfigs(ClassifierConfigContract):
    @pytest.fixture(params=classifier_ids())
    def classifier_id(self, request: pytest.FixtureRequest) -> str:
        return request.param


class TestOfflineClassifiers(MeasurerContract):
    """A classifier with offline weights is a measurer like any other, and what changes its
    answers (templates, label prompts) changes its fingerprint."""

    @pytest.fixture(scope="class", params=offline_classifier_ids())
    @classmethod
    def make_measurer(cls, request: pytest.FixtureRequest, t2ibias_cache: Path) -> Any:
        from t2ibias.measure.measurers import resolve_measurer

        return lambda: resolve_measurer(request.param)

    def test_what_changes_answers_changes_the_fingerprint(self, make_measurer: Any) -> None:
        import dataclasses

        from contracts import crops
        from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier

        base = make_measurer()
        spec = base.spec
        name, attr = next((n, a) for n, a in spec.attributes.items())
        swapped = dict(zip(attr.labels, reversed(list(attr.labels.values()))))
        for changed in (dataclasses.replace(spec, templates=["a blurry photo of {}."]),
                        dataclasses.replace(spec, attributes={**spec.attributes, name: dataclasses.replace(attr, labels=swapped)})):
            other = CLIPAttributeClassifier(changed, "cpu")
            assert other.fingerprint() != base.fingerprint()
            before, after = base.measure(crops()), other.measure(crops())
            assert [p[name].probs for p in before] != [p[name].probs for p in after]


# ---------------------------------------------------------------- measurers


@pytest.fixture(scope="module")
def fairface_checkpoint(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> Path:
    """A random-weight FairFace ResNet-34 (18 outputs) state_dict, as FairFace's .pt files hold."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet34(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, 18)
    path = tmp_path_factory.mktemp("fairface") / "res34_random.pt"
    torch.save(model.state_dict(), path)
    return path


#: How to name an offline instance of a measurer kind that needs more than its bare name (a
#: weights file, a tiny model); a kind missing here is built from its name alone.
OFFLINE_MEASURERS = {
    "fairface": lambda request: f"fairface:{request.getfixturevalue('fairface_checkpoint')}",
    "fairface7": lambda request: f"fairface7:{request.getfixturevalue('fairface_checkpoint')}",
    "fairface4": lambda request: f"fairface4:{request.getfixturevalue('fairface_checkpoint')}",
    "clip": lambda request: f"clip:{offline_classifier_ids()[0]}",
}


def offline_measurer_name(kind: str, request: pytest.FixtureRequest) -> str:
    make = OFFLINE_MEASURERS.get(kind)
    return make(request) if make else kind


def test_every_measurer_kind_can_be_built_offline(request: pytest.FixtureRequest) -> None:
    from t2ibias.measure.measurers import resolve_measurer

    failed = {}
    for kind in measurer_kinds():
        try:
            resolve_measurer(offline_measurer_name(kind, request))
        except Exception as exc:  # noqa: BLE001 (any failure means: say how to build it offline)
            failed[kind] = f"{type(exc).__name__}: {exc}"
    assert not failed, f"say how to build measurer kind(s) offline in OFFLINE_MEASURERS ({__file__}): {failed}"


class TestMeasurers(MeasurerContract):
    @pytest.fixture(scope="class", params=measurer_kinds())
    @classmethod
    def make_measurer(cls, request: pytest.FixtureRequest, t2ibias_cache: Path) -> Any:
        from t2ibias.measure.measurers import MEASURERS, resolve_measurer

        name = offline_measurer_name(request.param, request)
        kind = MEASURERS.get(request.param)
        assert kind.build is MEASURERS.get(name.partition(":")[0]).build
        return lambda: resolve_measurer(name)

    def test_face_crop_kinds_run_beside_the_classifier(self, make_measurer: Any, request: pytest.FixtureRequest) -> None:
        from t2ibias.core.errors import UserError
        from t2ibias.measure.measurers import MEASURERS, resolve_crop_measurer

        kind = MEASURERS.get(request.node.callspec.params["make_measurer"])
        name = offline_measurer_name(kind.name, request)
        if kind.face_crops:
            assert resolve_crop_measurer(name).fingerprint() == make_measurer().fingerprint()
        else:
            with pytest.raises(UserError, match="unknown"):
                resolve_crop_measurer(name)


# ---------------------------------------------------------------- gates


def _gate_param(name: str) -> Any:
    """A registered face detector; skipped where its extra is missing, dlib's CNN slow (seconds an image)."""
    from t2ibias.measure.gate import face_detector_unavailable

    why = face_detector_unavailable(name)
    marks = [pytest.mark.skip(reason=f"{name} unavailable: {why}")] if why else []
    return pytest.param(name, marks=[*marks, pytest.mark.slow] if name == "dlib-cnn" else marks)


class TestGates(GateContract):
    @pytest.fixture(params=[_gate_param(n) for n in face_detector_ids()])
    def make_gate(self, request: pytest.FixtureRequest) -> Any:
        from t2ibias.measure.gate import PersonFaceGate, create_gate

        if request.param == "dlib-cnn":  # downscaled: FairFace's 800 px with upsampling take ~10 s an image
            from t2ibias.measure.dlib_faces import DlibCnnFaceGate

            return lambda: PersonFaceGate(face=DlibCnnFaceGate(max_size=400, upsample=0))
        return lambda: create_gate(face_detector=request.param)


@pytest.mark.parametrize("name", face_detector_ids())
def test_ls_gates_lists_every_face_detector(name: str) -> None:
    from typer.testing import CliRunner

    from t2ibias.cli import app
    from t2ibias.measure.gate import DEFAULT_FACE_DETECTOR, create_face_detector

    result = CliRunner().invoke(app, ["ls", "gates", "--json"])
    assert result.exit_code == 0, result.output
    item = {i["id"]: i for i in json.loads(result.stdout)}[name]
    assert item["role"] == "face" and item["definition"] and item["default"] == (name == DEFAULT_FACE_DETECTOR)
    assert item["config"] == create_face_detector(name).config()


def test_unknown_face_detector_names_the_listing() -> None:
    from t2ibias.core.errors import UnknownIdError
    from t2ibias.measure.gate import create_gate

    with pytest.raises(UnknownIdError, match=r"did you mean 'haar'\? \(`t2ibias ls gates` lists them\)"):
        create_gate(face_detector="hair")


# ---------------------------------------------------------------- prompt sets


class TestPromptSets(PromptSetContract):
    @pytest.fixture(scope="class", params=prompt_set_ids())
    @classmethod
    def prompt_set(cls, request: pytest.FixtureRequest) -> Any:
        from t2ibias.prompts.bank import prompt_sets

        return prompt_sets().get(request.param)


# ---------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def listed() -> dict[str, dict[str, Any]]:
    """``t2ibias ls metrics --json``, by id."""
    from typer.testing import CliRunner

    from t2ibias.cli import app

    result = CliRunner().invoke(app, ["ls", "metrics", "--json"])
    assert result.exit_code == 0, result.output
    return {item["id"]: item for item in json.loads(result.stdout)}


class TestMetrics(MetricContract):
    @pytest.fixture(params=metric_ids())
    def metric_id(self, request: pytest.FixtureRequest) -> str:
        return request.param


def test_metrics_json_describes_the_run_metrics_of_the_registry() -> None:
    from t2ibias.metrics.location import METRIC as LOCATION
    from t2ibias.metrics.registry import RUN_METRICS, metrics
    from t2ibias.metrics.score import METRIC_INFO, REFERENCE_METRIC_NAMES

    run = metrics(output=RUN_METRICS)
    assert list(METRIC_INFO) == [m.id for m in run]  # score's rows look their metric up here
    assert REFERENCE_METRIC_NAMES | {LOCATION, "count", "proportion"} <= set(METRIC_INFO)
    assert {m.family for m in run} == {"share", "skew", "peer", "reference", "location", "seed"}


def test_every_metric_the_other_writers_emit_is_registered() -> None:
    from facet_eval import classification, detection
    from t2ibias.metrics import agreement, factuality
    from t2ibias.metrics.registry import METRICS

    def family(name: str) -> str:
        return METRICS.get(name).family

    assert {family(m) for m in agreement.METRICS} == {"agreement"}
    assert {family(m) for m in factuality.METRICS} == {"factuality"}
    assert {family(f"delta_{m}") for m in factuality.TAX_METRICS} == {"factuality_tax"}
    facet = [*detection.METRICS, classification.METRIC]
    assert {family(m) for m in facet + [f"disparity_{m}" for m in facet]} == {"facet"}


def test_correction_rows_carry_the_registered_shares() -> None:
    from t2ibias.metrics.correction import corrected_proportions
    from t2ibias.metrics.registry import metrics

    confusion = {"true": ["masc", "fem"], "pred": ["masc", "fem", "abstain"], "counts": [[40, 5, 1], [6, 45, 2]]}
    rows = corrected_proportions({"masc": 30, "fem": 20}, confusion, n_boot=0)
    for m in metrics(family="correction"):
        assert all(isinstance(r[m.id], float) for r in rows), m.id


def test_audit_rows_name_registered_metrics(tmp_path: Path) -> None:
    """A small FACET audit with a fixed predictor: every metric of audit.csv is registered as audit."""
    import csv

    from facet_fixtures import person, write_facet, write_images
    from t2ibias.audit import run_audit
    from t2ibias.metrics.registry import METRICS
    from t2ibias.models.clip_zeroshot import Prediction

    class Fixed:
        def measure(self, crops: list[Any]) -> list[dict[str, Any]]:
            out = []
            for i, _ in enumerate(crops):
                g, a, s = ("masc", "fem")[i % 2], ("young", "older")[i % 2], str(3 + i % 2)
                out.append({"gender_presentation": Prediction(g, g, 0.8, 0.6, {g: 0.8, ("fem" if g == "masc" else "masc"): 0.2}),
                            "age_group": Prediction(a, a, 0.7, 0.5, {a: 0.7, "middle": 0.3}),
                            "skin_tone": Prediction(s, s, 0.6, 0.3, {s: 0.6, "5": 0.4})})
            return out

    people = [person(i + 1, i // 2 + 1, [100 + 300 * (i % 2), 100, 200, 200], visible_face=1,
                     **{f"gender_presentation_{('masc', 'fem')[i % 3 % 2]}": 1, "age_presentation_young": 1,
                        "skin_tone_3": 2, "skin_tone_4": 1, "lighting_well_lit": 1}) for i in range(8)]
    root = write_facet(tmp_path / "facet", people, [1, 2, 3, 4])
    write_images(root, [1, 2, 3, 4])
    run_audit(Fixed(), root, tmp_path / "out", classifier_id="fixed", fingerprint="fixed", n_boot=0, min_n=1, engine="vectorized")
    with open(tmp_path / "out" / "audit.csv", newline="", encoding="utf-8") as fh:
        emitted = {row["metric"] for row in csv.DictReader(fh)}
    assert {"accuracy", "within_range", "abs_error", "ece"} <= emitted
    assert {METRICS.get(m).family for m in emitted} == {"audit"}


# ---------------------------------------------------------------- a broken config fails its contract


def _failing(check: Any, ids: list[str]) -> list[str]:
    """The ids whose contract check raises."""
    failed = []
    for name in ids:
        try:
            check(name)
        except Exception:  # AssertionError included
            failed.append(name)
    return failed


def test_a_broken_generator_config_fails_its_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "generators"
    shutil.copytree(generator_registry.GENERATOR_DIR, folder)
    good = (folder / "tiny-random-sd.yaml").read_text()
    (folder / "tiny-random-typo.yaml").write_text(good.replace("StableDiffusionPipeline", "StableDifusionPipeline"))
    monkeypatch.setattr(generator_registry, "GENERATOR_DIR", folder)
    monkeypatch.setattr(generator_registry, "GENERATORS",
                        Registry.from_folder("model", "t2ibias ls models", folder, generator_registry.load_generator_spec_file))
    assert "tiny-random-typo" in generator_ids() and "tiny-random-typo" in offline_generator_ids()
    assert _failing(GeneratorConfigContract().test_config_loads_and_validates, generator_ids()) == ["tiny-random-typo"]


def test_a_broken_classifier_config_fails_its_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "classifiers"
    shutil.copytree(classifier_registry.CLASSIFIER_DIR, folder)
    (folder / "tiny-random-clash.yaml").write_text((folder / "tiny-random-clip.yaml").read_text() + (
        "attributes:\n  person:\n    labels:\n      person: [\"a person\"]\n      no_person: [\"an empty scene\", \"a person\"]\n"))
    monkeypatch.setattr(classifier_registry, "CLASSIFIER_DIR", folder)
    monkeypatch.setattr(classifier_registry, "CLASSIFIERS", Registry.from_folder(
        "classifier", "t2ibias ls classifiers", folder, classifier_registry.load_classifier_spec_file))
    assert "tiny-random-clash" in classifier_ids() and "tiny-random-clash" in offline_classifier_ids()
    assert _failing(ClassifierConfigContract().test_config_loads_and_validates, classifier_ids()) == ["tiny-random-clash"]


BROKEN_SET = """id: broken_v1
version: 1
description: A set whose template forgets the article rule.
provenance: [written for a test]
families:
  occupation:
    templates:
      portrait: "a portrait photo of a {subject}"
    subjects: [doctor, engineer]
"""


def _prompt_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", folder)
    (folder / "broken_v1.yaml").write_text(BROKEN_SET)
    return folder


def test_a_broken_prompt_set_fails_its_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from t2ibias.prompts.bank import prompt_sets

    monkeypatch.setenv("T2IBIAS_PROMPTS", str(_prompt_folder(tmp_path)))
    assert "broken_v1" in prompt_set_ids()
    contract = PromptSetContract()
    assert _failing(lambda n: contract.test_every_text_is_grammatical(prompt_sets().get(n)), prompt_set_ids()) == ["broken_v1"]


@pytest.mark.slow
def test_ci_fails_on_a_broken_prompt_set_nobody_wrote_a_test_for(tmp_path: Path) -> None:
    """The contract suite itself, run as CI runs it, fails on the new file and names it."""
    env = {**os.environ, "T2IBIAS_PROMPTS": str(_prompt_folder(tmp_path)), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", str(Path(__file__)), "-q", "-p", "no:cacheprovider",
                           "-k", "TestPromptSets"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:]
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and all("broken_v1" in line for line in failed), proc.stdout[-2000:]
    assert "test_every_text_is_grammatical[broken_v1]" in proc.stdout
