"""The ``facet-eval`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from facet_eval import __version__
from t2ibias.errors import UserError, check_output_dir, check_output_file, report_problems, run_cli, writing

app = typer.Typer(help="Evaluate vision models on FACET, disaggregated by perceived attributes.", add_completion=False,
                  pretty_exceptions_enable=False)
err = Console(stderr=True)
UNEXPECTED_HINT = "an unexpected failure, not bad input: please report it with the command you ran"


@app.callback(invoke_without_command=True)
def _main(version: bool = typer.Option(False, "--version", help="Print the version.")) -> None:
    if version:
        typer.echo(f"facet-eval {__version__}")


def _check_run_options(out: Path, seed: int) -> None:
    """Refuse an unusable --out or --seed before loading or computing anything."""
    check_output_dir(out, "--out")
    if seed < 0:
        raise UserError(f"--seed: {seed} is negative (use 0 or a positive integer)")


def _parse_intersect(text: str | None) -> list[tuple[str, str]]:
    if not text:
        return []
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise UserError(f"--intersect: expected two attributes as A,B, got {text!r} (e.g. gender_presentation,skin_tone_bucket)")
    return [(parts[0], parts[1])]


ModelOpt = Annotated[str | None, typer.Option("--model", metavar="ID", help=(
    "Run a person model on the release images: an ultralytics checkpoint (local .pt, or a release name such as "
    "yolo11x.pt / yolo11x-seg.pt, downloaded when online) or torchvision:fasterrcnn_resnet50_fpn / "
    "torchvision:maskrcnn_resnet50_fpn[=WEIGHTS.pth]."))]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N (with --model).")]
PersonClassOpt = Annotated[int | None, typer.Option("--person-class", metavar="N", help="The model's class index for people, when it has no class named 'person' (with --model).")]


def _person_predictions(task: str, data, out: Path, model: str | None, predictions: Path | None, device: str,
                        batch_size: int, person_class: int | None) -> tuple[list, dict]:
    """Predictions from --predictions FILE or from running --model (written to <out>/predictions.json)."""
    from facet_eval.detection import load_predictions
    from facet_eval.segmentation import load_segm_predictions

    if (model is None) == (predictions is None):
        raise UserError(f"{'detect' if task == 'detection' else 'segment'}: pass exactly one of --model ID or --predictions FILE")
    run: dict = {"task": task, "facet_root": str(data.root.resolve())}
    if predictions is not None:
        load = load_predictions if task == "detection" else load_segm_predictions
        run["predictions"] = str(predictions.resolve())
        return load(predictions, data), run
    from facet_eval.runners import predict_people, write_predictions

    if batch_size < 1:
        raise UserError(f"--batch-size: {batch_size} is not a positive number (use e.g. 16)")
    info: dict = {}
    n_images = len(data.images)
    step = max(1, n_images // 10)

    def progress(done: int, total: int) -> None:
        if done == total or done // step != (done - batch_size) // step:
            err.print(f"{task}: {done}/{total} images", highlight=False)

    preds = predict_people(data, model, task=task, device=device, batch_size=batch_size,
                           person_class=person_class, progress=progress, info=info)
    with writing("--out"):
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(preds, out / "predictions.json")
    run.update(model={"name": info.get("name", model), "parameters": info.get("parameters", {})},
               device=info.get("device"), software=info.get("software"), n_images=info.get("n_images"),
               batch_size=batch_size, predictions="predictions.json")
    return preds, run


def _finish(rows: list, out: Path, run: dict, seed: int) -> None:
    """Write metrics.json, metrics.csv and run.json, print the summary."""
    from facet_eval.disaggregate import write_outputs
    from t2ibias.store.image_store import atomic_write_text

    with writing("--out"):
        write_outputs(rows, out)
        run["seed"] = seed
        atomic_write_text(out / "run.json", json.dumps(run, indent=1, default=str) + "\n")
    typer.echo(f"wrote {out / 'metrics.json'}, metrics.csv and run.json ({len(rows)} rows)")


@app.command()
def detect(
    facet_root: Annotated[Path, typer.Option("--facet-root", help="FACET root holding annotations/ (and imgs_*/ for --model).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for metrics.json, metrics.csv, run.json (and predictions.json with --model).")],
    predictions: Annotated[Path | None, typer.Option("--predictions", metavar="FILE", help="COCO results JSON [{image_id, bbox, score}] of person boxes (category ignored).")] = None,
    model: ModelOpt = None,
    intersect: Annotated[str | None, typer.Option("--intersect", help="Also score intersections of two attributes: A,B.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model batch (with --model).")] = 16,
    person_class: PersonClassOpt = None,
) -> None:
    """Class-agnostic person detection: AR50, AR75, mAR per group, per class, with disparities."""
    from facet_eval.data import load_facet
    from facet_eval.detection import evaluate_detection

    _check_run_options(out, seed)
    pairs = _parse_intersect(intersect)
    data = load_facet(facet_root)
    preds, run = _person_predictions("detection", data, out, model, predictions, device, batch_size, person_class)
    _finish(evaluate_detection(data, preds, intersections=pairs, seed=seed), out, run, seed)


@app.command()
def segment(
    facet_root: Annotated[Path, typer.Option("--facet-root", help="FACET root holding annotations/ (with coco_masks.json; imgs_*/ for --model).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for metrics.json, metrics.csv, run.json (and predictions.json with --model).")],
    predictions: Annotated[Path | None, typer.Option("--predictions", metavar="FILE", help="COCO results JSON [{image_id, segmentation (RLE), score}] of person masks (category ignored).")] = None,
    model: ModelOpt = None,
    intersect: Annotated[str | None, typer.Option("--intersect", help="Also score intersections of two attributes: A,B.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model batch (with --model).")] = 8,
    person_class: PersonClassOpt = None,
) -> None:
    """Class-agnostic person segmentation (mask IoU, people with a person mask only): AR50, AR75, mAR per group."""
    from facet_eval.data import load_facet
    from facet_eval.segmentation import evaluate_segmentation

    _check_run_options(out, seed)
    pairs = _parse_intersect(intersect)
    data = load_facet(facet_root)
    if not data.masks:
        raise UserError(f"{facet_root / 'annotations' / 'coco_masks.json'}: no person masks found (segmentation needs the release's coco_masks.json)")
    preds, run = _person_predictions("segmentation", data, out, model, predictions, device, batch_size, person_class)
    _finish(evaluate_segmentation(data, preds, intersections=pairs, seed=seed), out, run, seed)


@app.command()
def classify(
    facet_root: Annotated[Path, typer.Option("--facet-root", help="FACET root holding annotations/ (and imgs_*/ for --model).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for metrics.json, metrics.csv, largest_gaps.csv, run.json.")],
    model: Annotated[str | None, typer.Option("--model", metavar="ID", help="open_clip zero-shot classifier: a t2ibias classifier id or YAML path [default: clip-vit-b-32-openai when no --predictions].")] = None,
    predictions: Annotated[Path | None, typer.Option("--predictions", metavar="FILE", help="JSON list (or .csv) of {person_id, class} or {image_id, class} for the single-person images.")] = None,
    intersect: Annotated[str | None, typer.Option("--intersect", help="Also score intersections of two attributes: A,B.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N (with --model).")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model batch (with --model).")] = 64,
) -> None:
    """Person classification on single-person images: recall@1 per class and group, disparities, largest gaps."""
    from facet_eval.classification import (
        evaluate_classification,
        largest_gaps,
        load_class_predictions,
        print_largest_gaps,
        single_person_mask,
        write_class_predictions,
        write_largest_gaps,
    )
    from facet_eval.runners.clip import DEFAULT_MODEL, predict_with_clip
    from facet_eval.data import load_facet
    from facet_eval.disaggregate import write_outputs
    from facet_eval.groups import group_membership
    from facet_eval.groups import intersect as intersect_groups
    from t2ibias.store.image_store import atomic_write_text

    if model is not None and predictions is not None:
        raise UserError("classify: pass either --model ID or --predictions FILE, not both")
    if batch_size < 1:
        raise UserError(f"--batch-size: {batch_size} is not a positive number (use e.g. 64)")
    _check_run_options(out, seed)
    pairs = _parse_intersect(intersect)
    data = load_facet(facet_root)
    membership = group_membership(data.people)
    for a, b in pairs:
        intersect_groups(membership, a, b)
    n_single = int(single_person_mask(data).sum())
    if n_single == 0:
        raise UserError(f"{facet_root / 'annotations' / 'annotations.csv'}: no image has exactly one annotated person "
                        "(classification scores people alone in an image; check the FACET root)")
    run: dict = {"task": "classification", "facet_root": str(facet_root.resolve()), "seed": seed,
                 "n_single_person_people": n_single}
    if predictions is not None:
        preds = load_class_predictions(predictions, data)
        run["predictions"] = str(predictions.resolve())
    else:
        model_id = model or DEFAULT_MODEL
        step = max(1, n_single // 10)

        def progress(done: int, total: int) -> None:
            if done == total or done // step != (done - batch_size) // step:
                err.print(f"classified {done}/{total} images", highlight=False)

        preds, info = predict_with_clip(data, model_id, device=device, batch_size=batch_size, progress=progress)
        if info["parameters"].get("random_weights"):
            err.print(f"note: {model_id} has random weights; its numbers are meaningless by construction", highlight=False, markup=False)
        run.update(model={"name": info["name"], "parameters": info["parameters"]}, device=info["device"],
                   batch_size=batch_size, software={"torch": info["torch"], "open_clip": info["open_clip"]},
                   predictions="predictions.json")
    rows = evaluate_classification(data, preds, intersections=pairs, seed=seed)
    gaps = largest_gaps(rows)
    with writing("--out"):
        out.mkdir(parents=True, exist_ok=True)
        if predictions is None:
            write_class_predictions(preds, out / "predictions.json")
        write_outputs(rows, out)
        write_largest_gaps(gaps, out / "largest_gaps.csv")
        print_largest_gaps(gaps)
        atomic_write_text(out / "run.json", json.dumps(run, indent=1) + "\n")
    typer.echo(f"wrote {out / 'metrics.json'}, metrics.csv, largest_gaps.csv and run.json ({len(rows)} rows, "
               f"{n_single} single-person people)")


@app.command()
def submit(
    out_dir: Annotated[Path, typer.Argument(help="An evaluation output folder (with metrics.json).")],
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="Where to write the submission JSON.")],
    model_name: Annotated[str | None, typer.Option("--model-name", help="Model name [default: from run.json].")] = None,
    facet_root: Annotated[Path | None, typer.Option("--facet-root", metavar="DIR", help="The FACET release the evaluation used, for annotation checksums.")] = None,
) -> None:
    """Package an evaluation as a versioned leaderboard submission."""
    from facet_eval.submission import make_submission, write_submission

    check_output_file(out, "--out")
    sub = make_submission(out_dir, model_name=model_name, facet_root=facet_root)
    with writing("--out"):
        path = write_submission(sub, out)
    typer.echo(f"wrote {path}")


@app.command()
def validate(submission: Annotated[Path, typer.Argument(help="A submission JSON file.")]) -> None:
    """Check a submission: schema, row ranges, and the summary recomputed from its rows; exit 2 on any problem."""
    from facet_eval.submission import validate_submission

    problems = validate_submission(submission)
    if problems:
        report_problems(problems, lambda line: typer.echo(line, err=True))
        raise typer.Exit(2)
    typer.echo(f"ok  {submission}")


@app.command()
def leaderboard(
    submissions: Annotated[list[Path], typer.Argument(help="Submission JSON files.")],
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="The HTML page to write.")],
) -> None:
    """Rank submissions by the overall main metric (mAR; recall for classification) and by worst-group gap per attribute, in one self-contained page."""
    from facet_eval.leaderboard import write_leaderboard

    check_output_file(out, "--out")
    with writing("--out"):
        path = write_leaderboard(submissions, out)
    typer.echo(f"wrote {path}")


def main() -> None:
    """Console entry point: bad input prints one ``error:`` line and exits 2; an unexpected
    failure prints one ``error:`` line asking for a report and exits 1; never a traceback."""
    sys.exit(run_cli(app, "facet-eval", lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True), UNEXPECTED_HINT))


if __name__ == "__main__":
    main()
