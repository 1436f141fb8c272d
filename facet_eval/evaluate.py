"""One FACET evaluation into an output folder, the same steps for every task.

Check the options, load the release, let the task check it, get predictions (read a file, or run
a model and keep its predictions as ``predictions.json``), score them, then write
``metrics.json``, ``metrics.csv``, the task's extra files and ``run.json`` (what was run, on what,
with which seed). The task supplies each step (:class:`facet_eval.tasks.Task`); this module only
orders them, so every ``facet-eval`` evaluation command behaves the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facet_eval.tasks import RunOptions, Say, Task, get_task
from t2ibias.core.errors import UserError, check_output_dir, writing
from t2ibias.core.progress import Bars, quiet

__all__ = ["RunOptions", "evaluate_folder", "parse_intersect"]


def check_run_options(out: Path, seed: int) -> None:
    """Refuse an unusable --out or --seed before loading or computing anything."""
    check_output_dir(out, "--out")
    if seed < 0:
        raise UserError(f"--seed: {seed} is negative (use 0 or a positive integer)")


def parse_intersect(text: str | None) -> list[tuple[str, str]]:
    """``"A,B"`` → ``[("A", "B")]``; no text → no intersections."""
    if not text:
        return []
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise UserError(f"--intersect: expected two attributes as A,B, got {text!r} (e.g. gender_presentation,skin_tone_bucket)")
    return [(parts[0], parts[1])]


def evaluate_folder(task_id: str, opts: RunOptions, say: Say, bars: Bars = quiet) -> str:
    """Evaluate task ``task_id`` as ``opts`` asks and write its outputs under ``opts.out``; ``say``
    gets notes, and a model run shows its progress on a bar of ``bars`` (none by default; the
    command line passes :func:`t2ibias.core.progress.progress_bar`). Returns the line naming what
    was written."""
    from facet_eval.data import load_facet

    task = get_task(task_id)
    task.check_options(opts)
    check_run_options(opts.out, opts.seed)
    intersections = parse_intersect(opts.intersect)
    data = load_facet(opts.facet_root)
    run = task.prepare(data, opts, intersections)
    predictions = _predictions(task, data, opts, run, say, bars)
    rows = task.evaluate(data, predictions, intersections, opts.seed)
    _write_outputs(task, rows, opts.out, run, opts.seed)
    files = ", ".join(("metrics.csv", *task.extra_files))
    return f"wrote {opts.out / 'metrics.json'}, {files} and run.json ({len(rows)} rows{task.counts(run)})"


def _predictions(task: Task, data: Any, opts: RunOptions, run: dict[str, Any], say: Say, bars: Bars) -> Any:
    """The predictions file's contents, or a model run's predictions, written to
    ``<out>/predictions.json`` at once so a later failure keeps them; ``run`` gets their fields."""
    if opts.predictions is not None:
        run["predictions"] = str(opts.predictions.resolve())
        return task.load_predictions(opts.predictions, data)
    predictions, fields = task.predict(data, opts, say, bars)
    with writing("--out"):
        opts.out.mkdir(parents=True, exist_ok=True)
        task.write_predictions(predictions, opts.out / "predictions.json")
    run.update(fields)
    return predictions


def _write_outputs(task: Task, rows: list[dict[str, Any]], out: Path, run: dict[str, Any], seed: int) -> None:
    """metrics.json, metrics.csv (and their printed summary), the task's extra files, run.json."""
    from facet_eval.disaggregate import write_outputs
    from t2ibias.core.files import atomic_write_text

    with writing("--out"):
        write_outputs(rows, out)
        task.write_extra(rows, out)
        run["seed"] = seed
        atomic_write_text(out / "run.json", json.dumps(run, indent=1, default=str) + "\n")
