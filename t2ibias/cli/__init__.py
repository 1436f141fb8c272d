"""The ``t2ibias`` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from t2ibias.core.version import __version__
from t2ibias.core.errors import EXIT_USER_ERROR, UserError, report_problems, run_cli

app = typer.Typer(
    help="Measure social bias in text-to-image models: prompts → generate → measure → score → report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

RunDir = Annotated[Path, typer.Argument(help="A run directory made by `t2ibias sweep`.")]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda", help="auto (a GPU when one is visible), cpu or cuda.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", metavar="N", help="Images per pipeline / classifier call. Never changes an image (unless --fast-batching).")]
CompileOpt = Annotated[Optional[str], typer.Option("--compile", metavar="MODE", help="torch.compile the denoiser (default, reduce-overhead, max-autotune): faster on a GPU; part of the spec, as it can change an image's last bits.")]
GENERATE_BATCH, MEASURE_BATCH = 4, 16  # sweep's batch sizes when --batch-size is not given


class PrintWhat(str, Enum):
    headline = "headline"
    all = "all"


class Kind(str, Enum):
    models = "models"
    prompts = "prompts"
    classifiers = "classifiers"
    metrics = "metrics"
    gates = "gates"


#: How much a stage says on stderr: 0 --quiet (warnings and errors only), 1 default, 2 --verbose.
VERBOSITY = {"level": 1}
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no per-stage lines on stderr; warnings, errors and the summary stay.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Progress as plain log lines even on a terminal (every T2IBIAS_PROGRESS_SECONDS, default 30), and the libraries' info logs.")]


def _verbosity(quiet: bool, verbose: bool) -> None:
    import logging

    if quiet and verbose:
        raise UserError("--quiet and --verbose: pick one")
    VERBOSITY["level"] = 0 if quiet else 2 if verbose else 1
    if verbose:
        logging.getLogger("t2ibias").setLevel(logging.INFO)


def _say(*args: object, **kwargs: object) -> None:
    """A per-stage line on stderr, unless --quiet."""
    if VERBOSITY["level"] > 0:
        err.print(*args, **kwargs)  # type: ignore[arg-type]


def _progress(label: str) -> AbstractContextManager[Callable[[int, int], Callable[[int], None]]]:
    """Progress on this CLI's stderr: a rich bar with rate and time left on a terminal, plain log
    lines every few seconds off one (or with --verbose), nothing with --quiet."""
    from t2ibias.core.progress import progress_bar, progress_log, quiet

    if VERBOSITY["level"] == 0:
        return quiet(label)
    if err.is_terminal and VERBOSITY["level"] == 1:
        return progress_bar(label, err)
    return progress_log(label, lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True))


PersonDetectorOpt = Annotated[Optional[str], typer.Option("--person-detector", metavar="PATH|NAME", help="YOLO person gate in front of the face gate: a local .pt file or an ultralytics release name (yolo11n.pt, downloaded when online); `none` removes it [default: the run's last gate, none for a new run].")]
PersonConfOpt = Annotated[Optional[float], typer.Option("--person-conf", metavar="P", help="Confidence threshold of the person gate [default: 0.25, or the run's recorded one].")]
AlsoOpt = Annotated[Optional[list[str]], typer.Option("--also", metavar="MEASURER", help="A second measurer on every face crop, for agreement: pixel-mst, fairface:PATH or fairface4:PATH (a FairFace ResNet-34 checkpoint); repeat for several.")]
CiOpt = Annotated[str, typer.Option("--ci", metavar="clopper-pearson|wilson|jeffreys", help="Interval of a share in one prompt: exact Clopper-Pearson (coverage at least nominal at every n), Wilson or Jeffreys. Skew statistics always use intervals that hold at balance.")]
ConfidenceOpt = Annotated[float, typer.Option("--confidence", metavar="C", help="Confidence level of every interval, strictly between 0 and 1.")]
MinNOpt = Annotated[int, typer.Option("--min-n", metavar="N", help="A per-prompt figure on fewer images is shown but flagged `n < min_n` and never ranked (FACET's rule).")]
FaceDetectorOpt = Annotated[Optional[str], typer.Option("--face-detector", metavar="ID", help="The face gate (`t2ibias ls gates`): haar, dlib-cnn (FairFace's detection and 300 px aligned chips) or mtcnn [default: the run's last gate, haar for a new run].")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", metavar="N", help="Threads that read, gate and preprocess upcoming batches [default: half the CPU cores, from 2 to 8].")]
ExecutorOpt = Annotated[str, typer.Option("--executor", metavar="local|ray", help="Where images are made: this process, or Ray workers (one per GPU, or per CPU without GPUs; needs `pip install 't2ibias[ray]'` and a run directory every node sees).")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", metavar="auto|ray://HOST:PORT|HOST:PORT", help="Ray cluster to use with --executor ray [default: RAY_ADDRESS, else the cluster `ray start` made on this machine, else a new one here].")]
GpusPerWorkerOpt = Annotated[Optional[float], typer.Option("--gpus-per-worker", metavar="N", help="GPUs per Ray worker; 0 for CPU workers [default: 1 when the cluster has GPUs, else 0].")]


def _open_executor(name: str, address: str | None, gpus_per_worker: float | None):  # noqa: ANN202
    """The executor of ``--executor`` (a context manager); bad options or an unreachable cluster fail here."""
    from t2ibias.executors import create_executor

    return create_executor(name, address=address, gpus_per_worker=gpus_per_worker)


@app.command()
def sweep(
    model: Annotated[str, typer.Option("--model", metavar="ID|FOLDER|replay:DIR", help="Generator id (`t2ibias ls models`), a generator YAML file, a local diffusers folder, or replay:DIR (images made elsewhere, listed by DIR/index.csv or index.jsonl).")],
    prompts: Annotated[list[str], typer.Option("--prompts", metavar="SET", help="Prompt set id (`t2ibias ls prompts`) or YAML file; repeat for several [default: demo; for replay:DIR the index's own prompts, or with --prompts that set's records matched by text].")] = [],  # noqa: B006
    seeds: Annotated[int, typer.Option("--seeds", metavar="N", help="Images per prompt (seeds 0..N-1 of each prompt).")] = 4,
    base_seed: Annotated[int, typer.Option("--base-seed", metavar="N", help="Base of every per-image seed.")] = 0,
    classifier: Annotated[Optional[str], typer.Option("--classifier", metavar="ID", help="Attribute classifier id (`t2ibias ls classifiers`) or YAML file, frozen into the run's spec (an `audit:` it names is copied into the run) [default: clip-vit-l-14-openai; tiny-random-clip for tiny-random models].")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="Run directory [default: runs/<model>__<prompt sets>].")] = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", metavar="N", help=f"Images per pipeline and per classifier call [default: {GENERATE_BATCH} to generate, {MEASURE_BATCH} to measure]. Never changes an image (unless --fast-batching).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", metavar="N", help="Use only the first N prompts (images made so far are kept when the limit is lifted).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Delete an --out holding another run's spec and start over.")] = False,
    llm: Annotated[Optional[str], typer.Option("--llm", metavar="URL|FOLDER", help="Text generator for fact-augmented prompts (adds fai_vk): an OpenAI-compatible endpoint URL or a local causal-LM folder. Answers are cached.")] = None,
    llm_model: Annotated[Optional[str], typer.Option("--llm-model", metavar="NAME", help="Model name to ask at an --llm endpoint.")] = None,
    docs: Annotated[Optional[Path], typer.Option("--docs", metavar="DIR", help="Folder of .txt/.md documents: adds fai_rk prompts from BM25-retrieved passages (needs --llm).")] = None,
    fast_batching: Annotated[bool, typer.Option("--fast-batching", help="Batch kernels across images: faster on a GPU, but an image's last bits then depend on --batch-size (part of the spec).")] = False,
    compile_mode: CompileOpt = None,
    person_detector: PersonDetectorOpt = None,
    also: AlsoOpt = None,
    min_n: MinNOpt = 50,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    face_detector: FaceDetectorOpt = None,
) -> None:
    """Run every stage: prompts → generate (missing images only) → measure → score → report."""
    _verbosity(quiet, verbose)
    from t2ibias.api import plan_run
    from t2ibias.metrics.score import check_options, share_halfwidth, share_seeds_for
    from t2ibias.runspec import prepare_run
    from t2ibias.store.lock import RunLock

    check_options("clopper-pearson", 0.95, min_n)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    prompts = list(prompts) or ([] if model.startswith("replay:") else ["demo"])
    out_dir, request = plan_run(model, prompts, seeds, base_seed, classifier, out_dir, device, limit, None, None,
                                None, llm, llm_model, docs, fast_batching, out_flag="--out")
    if compile_mode is not None:
        from t2ibias.models.generator_spec import resolve_generator_spec, with_compile

        request.model_spec = with_compile(request.model_spec or resolve_generator_spec(model), compile_mode)
    if person_detector or also or face_detector:
        from t2ibias.measure.measurers import resolve_crop_measurer
        from t2ibias.measure.stage import create_gate, open_measurers

        # missing or bad weights fail before anything is written
        open_measurers(create_gate(person_detector, face_detector=face_detector or "haar"),
                       [resolve_crop_measurer(name) for name in also or []])
    with _interrupted_note(), RunLock(out_dir, "sweep", create=True), _open_executor(executor, address, gpus_per_worker) as ex:
        spec = prepare_run(out_dir, request, force=force)
        if request.replay is not None:
            err.print(f"{request.replay.summary_line()} (see {out_dir / 'replay_problems.json'})", markup=False, highlight=False)
        if spec.get("prompt_truncation"):
            err.print(f"[yellow]warning: {escape(str(spec['prompt_truncation']))}[/yellow]", highlight=False)
        if spec.get("model_is_random"):
            err.print(f"[yellow]{escape(str(spec['model']['id']))} has random weights: this run exercises the pipeline; its numbers mean nothing.[/yellow]")
        half = share_halfwidth(int(spec["n_seeds"]))
        line = (f"per-prompt shares will carry 95 % intervals about ±{half:.2f} wide at {spec['n_seeds']} images per prompt "
                "(exact, at a share of ½)")
        if half > 0.15:
            line = f"warning: {line}; ±0.15 needs about {share_seeds_for(0.15)} images per prompt (--seeds)"
        err.print(line, style="yellow" if half > 0.15 else None, highlight=False, markup=False)
        if spec["model"].get("revision") == "local":
            err.print(f"note: {spec['model']['notes']}", style="yellow", markup=False, highlight=False)
        _stages(out_dir, device, GENERATE_BATCH if batch_size is None else batch_size,
                measure_opts=MeasureOptions(person_detector, None, also, face_detector=face_detector),
                measure_batch_size=MEASURE_BATCH if batch_size is None else batch_size, min_n=min_n, executor=ex)


@contextmanager
def _interrupted_note() -> Iterator[None]:
    """On Ctrl-C, say what was kept and exit 130 (typer would otherwise exit silently)."""
    try:
        yield
    except KeyboardInterrupt:
        err.print("interrupted: finished images are kept; run the same command again to resume")
        raise typer.Exit(130) from None


class MeasureOptions:
    """What `measure` (and `sweep`) pass to the measure stage besides device and batch size."""

    def __init__(self, person_detector: str | None = None, person_conf: float | None = None, also: list[str] | None = None,
                 workers: int | None = None, fairface: Path | None = None, face_detector: str | None = None) -> None:
        self.person_detector = person_detector
        self.person_conf = person_conf
        self.also = list(also or [])
        self.workers = workers
        self.fairface = fairface
        self.face_detector = face_detector


def _stages(run_dir: Path, device: str, batch_size: int, only: str | None = None, ci: str = "clopper-pearson",
            measure_opts: MeasureOptions | None = None, audit: Path | None = None,
            measure_batch_size: int | None = None, confidence: float = 0.95, min_n: int = 50, executor: object = None,
            print_all: bool = False) -> None:
    from t2ibias.metrics.score import check_options
    from t2ibias.store.rundir import read_spec
    from t2ibias.store.lock import RunLock

    check_options(ci, confidence, min_n)
    read_spec(run_dir)  # a directory that is not a run fails here, before any progress bar
    with _interrupted_note(), RunLock(run_dir, only or "sweep"):
        _run_stages(run_dir, device, batch_size, only, ci, measure_opts or MeasureOptions(), audit,
                    batch_size if measure_batch_size is None else measure_batch_size, confidence, min_n, executor, print_all)


def _run_stages(run_dir: Path, device: str, batch_size: int, only: str | None, ci: str, mo: MeasureOptions,
                audit: Path | None, measure_batch_size: int, confidence: float = 0.95, min_n: int = 50,
                executor: object = None, print_all: bool = False) -> None:
    """The stages of ``only`` (all of them when None) through the Python API's :class:`~t2ibias.api.Run`,
    with progress bars and a line per stage."""
    from t2ibias.api import GenerationFailed, open_run

    run = open_run(run_dir)
    if only in (None, "generate"):
        failed = False
        with _progress("generate") as bar:
            try:
                g = run.generate(device, batch_size, progress=bar, executor=executor)
            except GenerationFailed as exc:
                g, failed = exc.result, True
        _say(
            f"generate: {g.generated} new, {g.already_done} already in the store, {g.blocked} blocked, "
            f"{g.failed} failed of {g.total} images ({g.seconds:.1f} s)"
        )
        if failed:
            err.print(f"error: generate: {g.failure_summary()}; fix the cause, then `t2ibias generate {run_dir}` retries them",
                      highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(1)
        if g.failed:
            err.print(f"warning: generate: {g.failure_summary()}; they count as failed until `t2ibias generate {run_dir}` remakes them",
                      style="yellow", highlight=False, markup=False, soft_wrap=True)
    if only in (None, "measure"):
        with _progress("measure") as bar:
            m = run.measure(device, measure_batch_size, progress=bar, person_detector=mo.person_detector,
                            person_conf=mo.person_conf, also=mo.also, workers=mo.workers, fairface=mo.fairface,
                            face_detector=mo.face_detector, executor=executor)
        if mo.fairface is not None:
            _say(f"measure: imported {m['fairface_imported']} FairFace faces from {mo.fairface}", markup=False)
        def many(n: int, noun: str, nouns: str) -> str:
            return f"{n} {noun if n == 1 else nouns}"
        people = f", {many(m['people'], 'person', 'people')}" if m.get("people") else ""
        _say(f"measure: {many(m['measured'], 'image', 'images')} measured ({many(m['faces'], 'face', 'faces')}{people} found), "
             f"{m['cached']} cached")
    if only in (None, "score"):
        from t2ibias.report.summary import print_summary

        run.score(ci, audit=audit, confidence=confidence, min_n=min_n)
        print_summary(run_dir, out, err, full=print_all)
    if only in (None, "report"):
        report = run.report()
        out.print(f"report: {report}", markup=False)
        out.print(f"model card: {run_dir / 'model_card.md'}", markup=False)


@app.command()
def generate(run_dir: RunDir, device: DeviceOpt = "auto", batch_size: BatchOpt = 4, executor: ExecutorOpt = "local",
             address: AddressOpt = None, gpus_per_worker: GpusPerWorkerOpt = None, quiet: QuietOpt = False,
             verbose: VerboseOpt = False) -> None:
    """Make the images a run lacks (missing, failed or cut-short ones; `validate --deep` finds changed ones); nothing else."""
    _verbosity(quiet, verbose)
    from t2ibias.store.lock import RunLock
    from t2ibias.store.rundir import read_spec

    read_spec(run_dir)
    with RunLock(run_dir, "generate"), _open_executor(executor, address, gpus_per_worker) as ex:
        _stages(run_dir, device, batch_size, "generate", executor=ex)


@app.command()
def measure(
    run_dir: RunDir,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 16,
    person_detector: PersonDetectorOpt = None,
    person_conf: PersonConfOpt = None,
    also: AlsoOpt = None,
    fairface: Annotated[Optional[Path], typer.Option("--fairface", metavar="FILE.csv", help="Import the CSV FairFace's predict.py wrote for this run's images/ (faces matched by image file name).")] = None,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    face_detector: FaceDetectorOpt = None,
) -> None:
    """Gate and classify every image not yet measured by the run's classifier (and --also measurers)."""
    _verbosity(quiet, verbose)
    from t2ibias.store.lock import RunLock
    from t2ibias.store.rundir import read_spec

    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    if person_conf is not None and not 0 <= person_conf <= 1:  # NaN fails this too
        raise UserError(f"--person-conf {person_conf}: not a probability (use a number between 0 and 1, e.g. 0.25)")
    read_spec(run_dir)
    with RunLock(run_dir, "measure"), _open_executor(executor, address, gpus_per_worker) as ex:
        _stages(run_dir, device, batch_size, "measure", measure_opts=MeasureOptions(person_detector, person_conf, also, workers, fairface, face_detector),
                executor=ex)


@app.command()
def score(
    run_dir: RunDir,
    ci: CiOpt = "clopper-pearson",
    audit: Annotated[Optional[Path], typer.Option("--audit", metavar="FILE|DIR", help="An audit.json (or its folder) to correct with; it is copied into the run as audit.json, which later scores keep using [default: the run's audit.json, if any].")] = None,
    confidence: ConfidenceOpt = 0.95,
    min_n: MinNOpt = 50,
    print_: Annotated[PrintWhat, typer.Option("--print", help="headline: one table that fits a screen (all prompts, per family and intervention); all: a line per prompt too.")] = "headline",
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Recompute image labels, metrics.json and instrument.json from the measurements; print the summary."""
    _verbosity(quiet, verbose)
    _stages(run_dir, "cpu", 1, "score", ci=ci, audit=audit, confidence=confidence, min_n=min_n, print_all=print_ == "all")


@app.command()
def report(run_dir: RunDir) -> None:
    """Write report.html and model_card.md from the run's output files."""
    _stages(run_dir, "cpu", 1, "report")


@app.command("ls")
def ls(
    kind: Annotated[Kind, typer.Argument(help="What to list.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List generator models, prompt sets, classifiers, metrics or face gates."""
    from t2ibias.models.generator_spec import GENERATORS
    from t2ibias.models.classifier_spec import CLASSIFIERS
    from t2ibias.prompts.bank import expand, prompt_sets

    items: list[dict]
    if kind is Kind.models:
        items = [{"id": n, "source": s.source, "pipeline": s.pipeline, "dtype": s.dtype, "steps": s.steps,
                  "guidance": s.guidance, "size": f"{s.width}x{s.height}", "licence": s.licence}
                 for n in GENERATORS for s in [GENERATORS.get(n)]]
    elif kind is Kind.prompts:
        reg = prompt_sets()
        items = [{"id": n, "family": ",".join(s.families), "version": s.version, "n_subjects": s.n_subjects,
                  "n_records": len(expand(s))} for n in reg for s in [reg.get(n)]]
    elif kind is Kind.classifiers:
        items = [{"id": n, "arch": s.arch, "pretrained": s.pretrained, "attributes": ",".join(s.attributes),
                  "random_weights": s.random_weights} for n in CLASSIFIERS for s in [CLASSIFIERS.get(n)]]
    elif kind is Kind.gates:
        from t2ibias.measure.gate import DEFAULT_FACE_DETECTOR, face_detectors

        items = [{"id": d.id, "role": "face", "default": d.id == DEFAULT_FACE_DETECTOR, "definition": d.definition,
                  "needs": d.needs, "available": d.unavailable is None, "unavailable": d.unavailable or "",
                  "config": d.config} for d in face_detectors()]
    else:
        from t2ibias.metrics.registry import metrics

        items = [{"id": m.id, "family": m.family, "higher_is_better": m.higher_is_better, "interval": m.interval or "none",
                  "output": m.output, "definition": m.definition} for m in metrics()]
    if as_json:
        out.print_json(json.dumps(items))
        return
    table = Table(show_header=True)
    for col in items[0] if items else ["id"]:
        table.add_column(col, overflow="fold")
    for item in items:
        table.add_row(*[escape(str(v)) for v in item.values()])
    out.print(table)


def _validate_file(path: Path) -> str:
    from t2ibias.models.generator_spec import load_generator_spec_file
    from t2ibias.models.classifier_spec import load_classifier_spec_file
    from t2ibias.prompts.bank import expand, load_prompt_set, prompt_set_problems
    from t2ibias.core.yamlio import load_located_yaml

    data = load_located_yaml(path).data
    if isinstance(data, dict) and "families" in data:
        s = load_prompt_set(path)
        problems = prompt_set_problems(s)
        if problems:
            raise UserError("\n".join(problems))
        return f"prompt set {s.id} v{s.version}: {s.n_subjects} subjects, {len(expand(s))} records"
    if isinstance(data, dict) and "pipeline" in data:
        g = load_generator_spec_file(path)
        return f"generator {g.id}: {g.pipeline} from {g.source}"
    if isinstance(data, dict) and "arch" in data:
        c = load_classifier_spec_file(path)
        return f"classifier {c.id}: {c.arch} ({', '.join(c.attributes)})"
    raise UserError(f"{path}:1: not a prompt set (no `families:`), generator (no `pipeline:`) or classifier (no `arch:`) file")


@app.command()
def validate(path: Annotated[Path, typer.Argument(help="A prompt-set, generator or classifier YAML file, a folder of them, a run directory, or a leaderboard.json of `t2ibias compare`.")],
             deep: Annotated[bool, typer.Option("--deep", help="Run directories: re-hash every image and drop the manifest lines of those that do not match, so `generate` remakes them (exit 1 when it dropped any).")] = False) -> None:
    """Check files without running anything; every problem as `file:line: what (fix)`, exit 2."""
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_dir() and ((path / "spec.json").exists() or (path / "prompts.parquet").exists() or any(path.glob("manifest*.jsonl"))):
        from t2ibias.store.rundir import validate_run

        if deep:
            from t2ibias.store.lock import RunLock
            from t2ibias.store.repair import deep_check

            with RunLock(path, "validate"):
                found = deep_check(path)
            for line in found.problems:
                err.print(line, markup=False, highlight=False, soft_wrap=True)
            out.print(found.summary(path), markup=False, highlight=False, soft_wrap=True)
            if found.problems:
                raise typer.Exit(1)
        out.print(f"ok  {validate_run(path)}", markup=False)
        return
    if path.is_file() and path.suffix == ".json":
        from t2ibias.cli.compare import validate_json

        return validate_json(path, out, err)
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path}: no YAML files to validate")
    problems = []
    for f in files:
        try:
            out.print(f"ok  {f}: {_validate_file(f)}", markup=False, highlight=False)
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        report_problems(problems, lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True))
        raise typer.Exit(EXIT_USER_ERROR)


def _register_factuality() -> None:
    from t2ibias.cli.factuality import factuality

    app.command("factuality", help="DoFaiR factuality of generated images: dominant/involved demographic accuracy, F1, diversity divergence, success rate.")(factuality)


_register_factuality()


def _register_audit() -> None:
    from t2ibias.cli.audit import audit

    app.command("audit")(audit)


_register_audit()
from t2ibias.cli.compare import compare as _compare  # noqa: E402

app.command("compare")(_compare)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"t2ibias {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Measure social bias in text-to-image models."""


def main() -> None:
    """Console entry point: user errors print one line and exit 2, with no traceback."""
    import logging
    import os
    import warnings

    os.environ.setdefault("YOLO_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("root").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        code = run_cli(app, "t2ibias", lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True))
    except KeyboardInterrupt:
        err.print("interrupted: finished images are kept; run the same command again to resume")
        sys.exit(130)
    sys.exit(code)


if __name__ == "__main__":
    main()
