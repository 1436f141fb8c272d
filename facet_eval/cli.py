"""The ``facet-eval`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from facet_eval import __version__
from t2ibias.core.errors import check_output_file, report_problems, run_cli, writing

app = typer.Typer(help="Evaluate vision models on FACET, disaggregated by perceived attributes.", add_completion=False,
                  pretty_exceptions_enable=False)
err = Console(stderr=True)
UNEXPECTED_HINT = "an unexpected failure, not bad input: please report it with the command you ran"


@app.callback(invoke_without_command=True)
def _main(version: bool = typer.Option(False, "--version", help="Print the version.")) -> None:
    if version:
        typer.echo(f"facet-eval {__version__}")


ModelOpt = Annotated[str | None, typer.Option("--model", metavar="ID", help=(
    "Run a person model on the release images: an ultralytics checkpoint (local .pt, or a release name such as "
    "yolo11x.pt / yolo11x-seg.pt, downloaded when online) or torchvision:fasterrcnn_resnet50_fpn / "
    "torchvision:maskrcnn_resnet50_fpn[=WEIGHTS.pth]."))]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N (with --model).")]
PersonClassOpt = Annotated[int | None, typer.Option("--person-class", metavar="N", help="The model's class index for people, when it has no class named 'person' (with --model).")]


def _evaluate(task: str, **options: Any) -> None:
    """Run one evaluation (:func:`facet_eval.evaluate.evaluate_folder`) and print what it wrote."""
    from facet_eval.evaluate import RunOptions, evaluate_folder
    from t2ibias.core.progress import progress_bar

    typer.echo(evaluate_folder(task, RunOptions(**options), say=_say, bars=progress_bar))


def _say(line: str) -> None:
    err.print(line, highlight=False, markup=False)


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
    _evaluate("detection", facet_root=facet_root, out=out, model=model, predictions=predictions, intersect=intersect,
              seed=seed, device=device, batch_size=batch_size, person_class=person_class)


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
    _evaluate("segmentation", facet_root=facet_root, out=out, model=model, predictions=predictions,
              intersect=intersect, seed=seed, device=device, batch_size=batch_size, person_class=person_class)


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
    _evaluate("classification", facet_root=facet_root, out=out, model=model, predictions=predictions,
              intersect=intersect, seed=seed, device=device, batch_size=batch_size)


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
