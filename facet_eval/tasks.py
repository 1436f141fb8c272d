"""FACET tasks: the evaluator protocol every task implements, and the registry of tasks.

A task module defines an evaluator with detectron2's protocol (``reset`` / ``process`` /
``evaluate``) and registers one :class:`Task` saying what the rest of facet_eval needs to know
about it: its id and command, its evaluator, its main metric (submissions and the leaderboard rank
by it), what a model run must give per image, and how ``facet-eval`` gets, writes and scores its
predictions (:mod:`facet_eval.evaluate` composes those steps). Adding a task is one module that
calls :func:`register_task`, plus its name in :data:`TASK_MODULES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from t2ibias.core.progress import Bars, quiet
from t2ibias.core.registry import Registry

if TYPE_CHECKING:
    from facet_eval.data import FacetData

#: The modules that register tasks, in the order tasks are listed (imported on first lookup).
TASK_MODULES = ("facet_eval.detection", "facet_eval.segmentation", "facet_eval.classification")
#: What a model run gives per image for a task: person boxes, person masks (with boxes), or a class.
OUTPUTS = ("boxes", "masks", "class")

Rows = list[dict[str, Any]]
#: One line for the user (notes), written to stderr by the command line.
Say = Callable[[str], None]


class Evaluator(Protocol):
    """detectron2's evaluator protocol: ``reset`` forgets what was processed, ``process`` takes the
    predictions for a set of images (any number of calls), ``evaluate`` returns the metric rows of
    everything processed since the last reset (see :mod:`facet_eval.disaggregate`)."""

    def reset(self) -> None: ...

    def process(self, predictions: Any) -> None: ...

    def evaluate(self) -> Rows: ...


@dataclass(frozen=True)
class RunOptions:
    """What one ``facet-eval`` evaluation command was asked: the release, the output folder, where
    predictions come from (``model`` or ``predictions``) and the knobs of a model run."""

    facet_root: Path
    out: Path
    model: str | None = None
    predictions: Path | None = None
    intersect: str | None = None
    seed: int = 0
    device: str = "auto"
    batch_size: int = 16
    person_class: int | None = None


class Task:
    """One FACET task. Subclasses set the class attributes and the hooks that have no default;
    :func:`facet_eval.evaluate.evaluate_folder` calls the hooks in the order they are listed."""

    #: the task name in rows, run.json and submissions
    id: str = ""
    #: the ``facet-eval`` command that evaluates it
    command: str = ""
    #: the metric names it is ranked by, preferred first (other tools may use a later one)
    main_metrics: tuple[str, ...] = ()
    #: what a model run gives per image, one of :data:`OUTPUTS`
    output: str = ""
    #: files the task writes beside metrics.json, metrics.csv and run.json
    extra_files: tuple[str, ...] = ()

    def evaluator(self, data: FacetData, **options: Any) -> Evaluator:
        """A fresh evaluator over ``data`` (options: intersections, n_boot, seed, per_class, confidence)."""
        raise NotImplementedError

    def check_options(self, opts: RunOptions) -> None:
        """Refuse options that cannot work, before anything is read."""

    def prepare(self, data: FacetData, opts: RunOptions, intersections: list[tuple[str, str]]) -> dict[str, Any]:
        """Check the release and the options for this task; return the opening fields of run.json."""
        raise NotImplementedError

    def load_predictions(self, path: Path, data: FacetData) -> Any:
        """Read and validate a predictions file."""
        raise NotImplementedError

    def predict(self, data: FacetData, opts: RunOptions, say: Say, bars: Bars = quiet) -> tuple[Any, dict[str, Any]]:
        """Run ``opts.model`` (or the task's default model); return its predictions and the run.json
        fields describing the run. The run's progress goes to a bar of ``bars`` (see
        :mod:`t2ibias.core.progress`; none by default)."""
        raise NotImplementedError

    def write_predictions(self, predictions: Any, path: Path) -> Path:
        """Write a model run's predictions in the format :meth:`load_predictions` reads."""
        raise NotImplementedError

    def evaluate(self, data: FacetData, predictions: Any, intersections: list[tuple[str, str]], seed: int) -> Rows:
        """The metric rows of ``predictions`` (the task module's one-call ``evaluate_<task>``)."""
        raise NotImplementedError

    def write_extra(self, rows: Rows, out: Path) -> None:
        """Write (and print) the :attr:`extra_files`."""

    def counts(self, run: dict[str, Any]) -> str:
        """What the closing "wrote ..." line adds after the row count."""
        return ""


TASKS: Registry[Task] = Registry("FACET task")


def register_task(task: Task) -> Task:
    """Add ``task`` to :data:`TASKS` (its module must be listed in :data:`TASK_MODULES`)."""
    if task.output not in OUTPUTS:
        raise ValueError(f"task {task.id!r}: output {task.output!r} is not one of {OUTPUTS}")
    TASKS.register(task.id, lambda: task)
    return task


def _load() -> None:
    for module in TASK_MODULES:
        import_module(module)


def get_task(task_id: str) -> Task:
    """The registered task ``task_id`` (UnknownIdError with a hint for an unknown one)."""
    _load()
    return TASKS.get(task_id)


def all_tasks() -> list[Task]:
    """Every registered task, in the order of :data:`TASK_MODULES`."""
    _load()
    tasks = [TASKS.get(name) for name in TASKS.names()]
    order = {m: k for k, m in enumerate(TASK_MODULES)}
    return sorted(tasks, key=lambda t: order.get(type(t).__module__, len(order)))


def task_ids() -> tuple[str, ...]:
    """The ids of every registered task, in the order of :data:`TASK_MODULES`."""
    return tuple(t.id for t in all_tasks())
