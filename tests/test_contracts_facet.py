"""Every registered FACET task, FACET model runner and prompt-set scheme meets its contract
(``tests/contracts.py``). The parameters come from the registries (facet_eval.tasks.TASKS,
facet_eval.runners.RUNNERS, the classifier registry, PROMPT_SET_SCHEMES); what a registration
needs here is only a fixture to be checked on (TASK_FIXTURES, OFFLINE_RUNNERS, SCHEME_FIXTURES),
and a registration without one fails. The last tests register broken entries and see them fail."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contracts import (
    FacetCase,
    FacetRun,
    FacetRunnerContract,
    FacetTaskContract,
    PromptSetContract,
    PromptSetSchemeContract,
    facet_model_cases,
    facet_runner_name,
    facet_runner_prefixes,
    facet_task_ids,
    failing_ids,
    prompt_set_scheme_ids,
)
from t2ibias.core.registry import Registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def registry_copy(registry: Registry[Any]) -> Registry[Any]:
    """A new registry holding the entries of ``registry``, to register test entries into."""
    copy: Registry[Any] = Registry(registry.kind, registry.list_command)
    for name in registry.names():
        copy.register(name, lambda name=name: registry.get(name))
    return copy


# ---------------------------------------------------------------- FACET tasks


def _detection(root: Path) -> tuple[Path, list[dict[str, Any]]]:
    from tests.facet_fixtures import known_dataset

    root, dets, _ = known_dataset(root)
    return root, dets


def _segmentation(root: Path) -> tuple[Path, list[dict[str, Any]]]:
    from tests.test_facet_segmentation import known_segm

    return known_segm(root)


def _classification(root: Path) -> tuple[Path, list[dict[str, Any]]]:
    from tests.test_facet_classification import known_classification

    root, preds, _ = known_classification(root)
    return root, preds


#: How to make a release and the items of a predictions file (a JSON list) for each task. A
#: registered task missing here fails test_every_task_has_a_fixture.
TASK_FIXTURES: dict[str, Callable[[Path], tuple[Path, list[dict[str, Any]]]]] = {
    "detection": _detection,
    "segmentation": _segmentation,
    "classification": _classification,
}


class FacetCases:
    """The :class:`FacetCase` of each registered task, built on first use under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cases: dict[str, FacetCase] = {}

    def get(self, task_id: str) -> FacetCase:
        from facet_eval.data import load_facet
        from facet_eval.tasks import get_task
        from tests.facet_fixtures import write_predictions

        if task_id not in self._cases:
            if task_id not in TASK_FIXTURES:
                pytest.fail(f"task {task_id}: say in TASK_FIXTURES ({__file__}) how to make a release and predictions for it")
            root, items = TASK_FIXTURES[task_id](self.folder / task_id)
            path = write_predictions(self.folder / f"{task_id}-predictions.json", items)
            task, data = get_task(task_id), load_facet(root)
            self._cases[task_id] = FacetCase(task, root, data, path, task.load_predictions(path, data))
        return self._cases[task_id]


@pytest.fixture(scope="module")
def facet_cases(tmp_path_factory: pytest.TempPathFactory) -> FacetCases:
    return FacetCases(tmp_path_factory.mktemp("facet-tasks"))


def tasks_without_fixtures() -> list[str]:
    return [t for t in facet_task_ids() if t not in TASK_FIXTURES]


def test_every_task_has_a_fixture() -> None:
    assert tasks_without_fixtures() == [], f"say in TASK_FIXTURES ({__file__}) how to check these tasks"
    assert set(TASK_FIXTURES) <= set(facet_task_ids()), "TASK_FIXTURES names a task that is not registered"


class TestFacetTasks(FacetTaskContract):
    @pytest.fixture(scope="class", params=facet_task_ids())
    @classmethod
    def facet_case(cls, request: pytest.FixtureRequest, facet_cases: FacetCases) -> FacetCase:
        return facet_cases.get(request.param)


# ---------------------------------------------------------------- FACET runners


@pytest.fixture(scope="module")
def tiny_yolo(yolo_env: None, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, str]:
    """Random-weight yolo11n checkpoints (at 128 px), by whether they give masks; seeded, since a
    random head may never rank person first and so detect nobody."""
    import torch

    from tests.test_facet_runners import _yolo_checkpoint

    d = tmp_path_factory.mktemp("yolo")
    paths = {}
    for masks, cfg in ((False, "yolo11n.yaml"), (True, "yolo11n-seg.yaml")):
        torch.manual_seed(0)
        paths[masks] = _yolo_checkpoint(d / cfg.replace(".yaml", ".pt"), cfg)
    return paths


@pytest.fixture(scope="module")
def tiny_rcnn_weights(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> Any:
    """Saved state_dicts of tiny Faster/Mask R-CNNs (by whether they give masks), with
    torchvision's builders of the paper's architectures swapped for the tiny ones for this
    module; the runner's own loading, thresholds and person filter are unchanged."""
    import torch
    import torchvision.models.detection as tvd

    from tests.test_facet_runners import tiny_rcnn

    d = tmp_path_factory.mktemp("rcnn")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tvd, "fasterrcnn_resnet50_fpn", tiny_rcnn(False))
        mp.setattr(tvd, "maskrcnn_resnet50_fpn", tiny_rcnn(True))
        paths = {}
        for masks, name in ((False, "fasterrcnn_resnet50_fpn"), (True, "maskrcnn_resnet50_fpn")):
            torch.manual_seed(0)
            paths[masks] = d / f"{name}.pth"
            torch.save(getattr(tvd, name)(weights=None, weights_backbone=None, num_classes=91).state_dict(), paths[masks])
        yield paths


def _torchvision(request: pytest.FixtureRequest, masks: bool) -> str:
    path = request.getfixturevalue("tiny_rcnn_weights")[masks]
    return f"torchvision:{'mask' if masks else 'faster'}rcnn_resnet50_fpn={path}"


#: How to name an offline-built model of each registered person runner (by prefix), given the
#: request and whether the task needs masks; a string instead says why the runner cannot be
#: built offline. A registered runner missing here fails test_every_runner_is_marked.
OFFLINE_RUNNERS: dict[str, Callable[[pytest.FixtureRequest, bool], str] | str] = {
    "": lambda request, masks: request.getfixturevalue("tiny_yolo")[masks],
    "torchvision:": _torchvision,
}


def unmarked_runners() -> list[str]:
    """Registered runners OFFLINE_RUNNERS says nothing about, and entries of it nobody registered."""
    return sorted(set(facet_runner_prefixes()) ^ set(OFFLINE_RUNNERS))


def test_every_runner_is_marked_offline_or_not() -> None:
    assert unmarked_runners() == [], f"say in OFFLINE_RUNNERS ({__file__}) how to build these runners offline, or why not"


def _case_id(case: tuple[str, str]) -> str:
    task, runner = case
    return f"{task}-{facet_runner_name(runner) if runner in facet_runner_prefixes() else runner}"


@pytest.fixture(scope="module")
def model_release_data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from facet_eval.data import load_facet
    from tests.facet_fixtures import model_release

    return load_facet(model_release(tmp_path_factory.mktemp("model-release")))


class TestFacetRunners(FacetRunnerContract):
    @pytest.fixture(scope="class", params=facet_model_cases(), ids=_case_id)
    @classmethod
    def facet_run(cls, request: pytest.FixtureRequest, model_release_data: Any, t2ibias_cache: Path) -> FacetRun:
        from facet_eval.tasks import get_task

        task_id, runner = request.param
        task = get_task(task_id)
        if task.output == "class":
            return FacetRun(task, model_release_data, runner)  # an offline classifier id
        how = OFFLINE_RUNNERS.get(runner)
        if how is None:
            pytest.fail(f"runner {runner!r}: not in OFFLINE_RUNNERS ({__file__})")
        if isinstance(how, str):
            pytest.skip(f"runner {runner!r} cannot be built offline: {how}")
        return FacetRun(task, model_release_data, how(request, task.output == "masks"))


# ---------------------------------------------------------------- prompt-set schemes

_DOFAIR_HEADER = "culture,event_name,group,dominant_{0}_list,existence_{0}_list,img_path,prompt\n"
_DOFAIR_GENDER_ROWS = (
    "Europe,Opening of a Bridge,Bridge Engineers,['male'],\"['male', 'female']\",,{vk}\n"
    "Asia,A Harvest Market,Market Traders,['female'],\"['female', 'male']\",x.png,\n"
)
_DOFAIR_VK = ("\"Generate an image depicting faces of the representative people among the Bridge Engineers in "
              "Opening of a Bridge from diverse gender groups. Most of them were men;\nwomen were also present.\"")

#: Per registered prompt-set scheme: files to write into a folder, names that must resolve and
#: names that must fail (``{folder}`` is that folder). A registered scheme missing here fails
#: test_every_scheme_has_a_fixture.
SCHEME_FIXTURES: dict[str, dict[str, Any]] = {
    "dofair": {
        "files": {
            "race.csv": _DOFAIR_HEADER.format("race")
            + "Africa,Founding of a Town,Local Farmers,['Black'],\"['Black', 'Latino']\",,\n"
            + "Asia,A River Festival,Boat Builders,\"['East Asian', 'Indian']\",\"['East Asian', 'Indian', 'White']\",x.png,\n",
            "gender.csv": _DOFAIR_HEADER.format("gender") + _DOFAIR_GENDER_ROWS.format(vk=""),
            "gender_vk.csv": _DOFAIR_HEADER.format("gender") + _DOFAIR_GENDER_ROWS.format(vk=_DOFAIR_VK),
            "unknown_label.csv": _DOFAIR_HEADER.format("race") + "Asia,An Event,Some People,['Martian'],['Martian'],,\n",
            "header_only.csv": _DOFAIR_HEADER.format("race"),
        },
        "good": ["dofair:{folder}/race.csv", "dofair:{folder}/gender.csv,fai_vk={folder}/gender_vk.csv"],
        "bad": ["dofair:{folder}/absent.csv", "dofair:{folder}/unknown_label.csv", "dofair:{folder}/header_only.csv",
                "dofair:{folder}/race.csv,fai_rk={folder}/gender_vk.csv", "dofair:{folder}/race.csv,fai_vk=",
                "dofair:{folder}/gender.csv,fai_vk={folder}/race.csv", "dofair: ,fai_vk={folder}/gender_vk.csv"],
    },
}


@pytest.fixture(scope="module")
def scheme_folders(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """The folder of a scheme's fixture files, written on first use."""
    folders: dict[str, str] = {}

    def folder(scheme: str) -> str:
        if scheme not in SCHEME_FIXTURES:
            pytest.fail(f"scheme {scheme}: say in SCHEME_FIXTURES ({__file__}) which names of it resolve and which fail")
        if scheme not in folders:
            d = tmp_path_factory.mktemp(f"scheme-{scheme}")
            for name, text in SCHEME_FIXTURES[scheme]["files"].items():
                (d / name).write_text(text, encoding="utf-8")
            folders[scheme] = str(d)
        return folders[scheme]

    return folder


def schemes_without_fixtures() -> list[str]:
    return [s for s in prompt_set_scheme_ids() if s not in SCHEME_FIXTURES]


def test_every_scheme_has_a_fixture() -> None:
    assert schemes_without_fixtures() == [], f"say in SCHEME_FIXTURES ({__file__}) how to check these schemes"
    assert set(SCHEME_FIXTURES) <= set(prompt_set_scheme_ids()), "SCHEME_FIXTURES names a scheme that is not registered"


class TestPromptSetSchemes(PromptSetSchemeContract):
    @pytest.fixture(scope="class", params=prompt_set_scheme_ids())
    @classmethod
    def scheme_names(cls, request: pytest.FixtureRequest, scheme_folders: Callable[[str], str]) -> tuple[str, list[str], list[str]]:
        folder, spec = scheme_folders(request.param), SCHEME_FIXTURES[request.param]
        return request.param, [n.format(folder=folder) for n in spec["good"]], [n.format(folder=folder) for n in spec["bad"]]

    @pytest.fixture(scope="class", params=[(s, n) for s in prompt_set_scheme_ids() for n in SCHEME_FIXTURES.get(s, {}).get("good", [])],
                    ids=lambda p: p[1].replace("{folder}/", ""))
    @classmethod
    def prompt_set(cls, request: pytest.FixtureRequest, scheme_folders: Callable[[str], str]) -> Any:
        from t2ibias.prompts.bank import resolve_prompt_set

        scheme, name = request.param
        return resolve_prompt_set(name.format(folder=scheme_folders(scheme)))


# ---------------------------------------------------------------- a broken registration fails its contract


def test_a_broken_task_fails_its_contract(monkeypatch: pytest.MonkeyPatch, facet_cases: FacetCases) -> None:
    """Two detection tasks with broken evaluators, registered as a new task module would: the
    fixture check names them, and exactly the contract check each breaks fails on it alone."""
    from facet_eval import tasks
    from facet_eval.detection import DetectionEvaluator, DetectionTask

    class Forgetful(DetectionEvaluator):
        def process(self, predictions: Any) -> None:
            self._predictions = list(predictions)  # keeps only the last part

    class Sticky(DetectionEvaluator):
        def reset(self) -> None:
            self._predictions = getattr(self, "_predictions", [])  # forgets nothing

    def task_of(evaluator: type, name: str) -> DetectionTask:
        class Broken(DetectionTask):
            id = name

            def evaluator(self, data: Any, **options: Any) -> Any:
                return evaluator(data, **options)

        return Broken()

    monkeypatch.setattr(tasks, "TASKS", registry_copy(tasks.TASKS))
    broken = {t.id: tasks.register_task(t) for t in (task_of(Forgetful, "forgetful"), task_of(Sticky, "sticky"))}
    assert facet_task_ids()[-2:] == ["forgetful", "sticky"] and tasks_without_fixtures() == ["forgetful", "sticky"]
    cases = {t: facet_cases.get(t) for t in facet_task_ids() if t in TASK_FIXTURES}
    cases.update({t: dataclasses.replace(cases["detection"], task=task) for t, task in broken.items()})
    contract = FacetTaskContract()
    assert failing_ids(lambda t: contract.test_chunks_give_the_rows_of_one_call(cases[t]), facet_task_ids()) == ["forgetful"]
    assert failing_ids(lambda t: contract.test_reset_forgets_and_evaluate_repeats(cases[t]), facet_task_ids()) == ["sticky"]


def test_a_broken_runner_fails_its_contract(monkeypatch: pytest.MonkeyPatch, model_release_data: Any) -> None:
    """A runner registered without a word in OFFLINE_RUNNERS is named; one whose boxes are noise
    fails determinism, one whose scores follow the batch fails the batch-size check."""
    import facet_eval.runners as runners
    from facet_eval.runners.coco import ImageDetections
    from facet_eval.tasks import get_task

    rng = np.random.default_rng()

    def open_model(model: str, task: str, masks: bool, device: str, person_class: int | None) -> Any:
        def run(arrays: list[np.ndarray]) -> list[ImageDetections]:
            score = rng.random() if model == "fake:noise" else 1.0 / len(arrays)
            return [ImageDetections(np.array([[5.0, 5.0, 60.0, 80.0]]), np.array([score])) for _ in arrays]

        return run, {"name": model, "parameters": {"library": "none"}, "device": device, "software": {}}

    monkeypatch.setattr(runners, "RUNNERS", registry_copy(runners.RUNNERS))
    runners.RUNNERS.register("fake:", lambda: open_model)
    assert unmarked_runners() == ["fake:"]
    contract, detection = FacetRunnerContract(), get_task("detection")
    noise, batch = FacetRun(detection, model_release_data, "fake:noise"), FacetRun(detection, model_release_data, "fake:batch")
    contract.test_same_predictions_every_time(batch)
    with pytest.raises(AssertionError):
        contract.test_same_predictions_every_time(noise)
    with pytest.raises(AssertionError, match="batch size 3 changed the predictions"):  # 1/2 for images 1 and 3
        contract.test_batch_size_does_not_change_predictions(batch)


def test_a_broken_scheme_fails_its_contract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A scheme registered without a fixture is named, and its set's a/an mistake fails the
    prompt-set contract."""
    from t2ibias.prompts import bank, types

    def words(name: str) -> types.PromptSet:
        path = Path(name.partition(":")[2])
        subjects = [types.Subject(w) for w in path.read_text(encoding="utf-8").split()]
        return types.PromptSet(id="words", version=1, description="One subject per word of a file.",
                               provenance=(f"words of {path}",), path=path,
                               sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                               families={"words": {"templates": {"photo": "a photo of a {subject}"}, "subjects": subjects,
                                                   "places": []}})

    schemes = registry_copy(types.PROMPT_SET_SCHEMES)
    monkeypatch.setattr(types, "PROMPT_SET_SCHEMES", schemes)
    monkeypatch.setattr(bank, "PROMPT_SET_SCHEMES", schemes)
    schemes.register("words", lambda: words)
    assert schemes_without_fixtures() == ["words"]
    (tmp_path / "list.txt").write_text("doctor engineer\n", encoding="utf-8")
    pset = bank.resolve_prompt_set(f"words:{tmp_path / 'list.txt'}")
    contract = PromptSetSchemeContract()
    contract.test_schema_and_provenance(pset)
    with pytest.raises(AssertionError, match="article 'a engineer'"):
        contract.test_every_text_is_grammatical(pset)
    assert PromptSetContract.bank_files and not contract.bank_files
