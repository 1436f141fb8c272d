"""The FACET task registry, the evaluator protocol and the runner registry."""

from __future__ import annotations

import json

import pytest

from facet_eval.classification import ClassificationEvaluator, evaluate_classification
from facet_eval.data import load_facet
from facet_eval.detection import DetectionEvaluator, evaluate_detection, load_predictions
from facet_eval.runners import RUNNERS, person_tasks, runner_for
from facet_eval.segmentation import SegmentationEvaluator, evaluate_segmentation
from facet_eval.tasks import OUTPUTS, TASKS, Task, all_tasks, get_task, register_task, task_ids
from t2ibias.core.errors import UnknownIdError
from tests.facet_fixtures import known_dataset

N_BOOT = 30


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    root, dets, _ = known_dataset(tmp_path_factory.mktemp("facet"))
    path = root / "preds.json"
    path.write_text(json.dumps(dets))
    data = load_facet(root)
    return data, load_predictions(path, data)


# ------------------------------------------------------------------ task registry
def test_tasks_are_listed_in_module_order_with_their_commands_and_metrics():
    assert task_ids() == ("detection", "segmentation", "classification")
    assert [(t.command, t.output, t.main_metrics) for t in all_tasks()] == [
        ("detect", "boxes", ("mAR",)), ("segment", "masks", ("mAR",)), ("classify", "class", ("recall", "recall@1"))]
    assert get_task("classification").extra_files == ("largest_gaps.csv",)


def test_lists_elsewhere_come_from_the_registry():
    from facet_eval import submission

    assert submission.TASKS == task_ids()
    assert submission.MAIN_METRIC == {t.id: t.main_metrics for t in all_tasks()}
    assert person_tasks() == {"detection": False, "segmentation": True}


def test_an_unknown_task_gets_a_hint():
    with pytest.raises(UnknownIdError, match="unknown FACET task 'detecton': did you mean 'detection'"):
        get_task("detecton")


def test_a_task_must_say_what_a_model_run_gives():
    class Odd(Task):
        id = "odd"
        output = "pixels"

    with pytest.raises(ValueError, match="output 'pixels' is not one of"):
        register_task(Odd())
    assert "odd" not in TASKS and OUTPUTS == ("boxes", "masks", "class")


# ------------------------------------------------------------------ evaluator protocol
def same(a, b) -> bool:
    """Rows equal value for value, NaN equal to NaN."""
    return json.dumps(a) == json.dumps(b)


def _by_image(predictions):
    groups: dict[int, list] = {}
    for d in predictions:
        groups.setdefault(d["image_id"], []).append(d)
    return list(groups.values())


def test_processing_image_by_image_gives_the_rows_of_one_call(known):
    data, preds = known
    ev = DetectionEvaluator(data, n_boot=N_BOOT, seed=4)
    for batch in _by_image(preds):
        ev.process(batch)
    assert same(ev.evaluate(), evaluate_detection(data, preds, n_boot=N_BOOT, seed=4))


def test_reset_forgets_what_was_processed(known):
    data, preds = known
    ev = DetectionEvaluator(data, n_boot=N_BOOT)
    ev.process(preds)
    ev.reset()
    empty = evaluate_detection(data, [], n_boot=N_BOOT)
    assert same(ev.evaluate(), empty)
    overall = [r for r in empty if r["metric"] == "mAR" and r["attribute"] == "all" and r["class"] is None]
    assert overall[0]["value"] == 0.0


def test_segmentation_evaluator_is_the_one_call_too(tmp_path):
    from tests.test_facet_segmentation import known_segm

    root, dets = known_segm(tmp_path / "facet")
    data = load_facet(root)
    ev = SegmentationEvaluator(data, n_boot=N_BOOT)
    for batch in _by_image(dets):
        ev.process(batch)
    assert same(ev.evaluate(), evaluate_segmentation(data, dets, n_boot=N_BOOT))


def test_classification_evaluator_takes_people_in_parts_each_once(known):
    data, _ = known
    pids = [int(p) for p in data.people["person_id"]]
    preds = {p: ("nurse", "doctor")[p % 2] for p in pids}
    ev = ClassificationEvaluator(data, n_boot=N_BOOT)
    half = len(pids) // 2
    ev.process({p: preds[p] for p in pids[:half]})
    ev.process({p: preds[p] for p in pids[half:]})
    assert same(ev.evaluate(), evaluate_classification(data, preds, n_boot=N_BOOT))
    with pytest.raises(ValueError, match=f"person {pids[0]} was already processed"):
        ev.process({pids[0]: "nurse"})


# ------------------------------------------------------------------ runner registry
def test_a_model_id_picks_the_runner_of_its_longest_prefix():
    assert RUNNERS.names() == ["", "torchvision:"]
    assert runner_for("torchvision:fasterrcnn_resnet50_fpn").__module__ == "facet_eval.runners.torchvision"
    assert runner_for("yolo11x.pt").__module__ == "facet_eval.runners.ultralytics"
    assert runner_for("/models/torchvision:odd.pt").__module__ == "facet_eval.runners.ultralytics"
