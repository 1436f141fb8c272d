"""The Python API: :func:`sweep` runs every stage into a run directory, :func:`open_run` opens
one, and a :class:`Run`'s stage methods re-run one stage, the way ``t2ibias sweep`` and
``t2ibias generate|measure|score|report DIR`` do on the command line (which call these same
methods). A diffusers pipeline already loaded in memory, or any function that makes images, can
make a run's images instead of a pipeline t2ibias loads itself.

Nothing heavy (torch, diffusers) is imported until a function needs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from t2ibias.core.errors import UserError, check_output_dir

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from t2ibias.generation.stage import GenerateResult
    from t2ibias.models.generator_spec import GeneratorSpec

__all__ = ["sweep", "prepare", "open_run", "compare", "Run", "GenerationFailed", "ImageMaker"]

#: The attribute classifier of a run whose generator has real weights, and of one with random weights.
DEFAULT_CLASSIFIER = "clip-vit-l-14-openai"
RANDOM_CLASSIFIER = "tiny-random-clip"
#: Images per pipeline call and per classifier call when ``batch_size`` is not given.
GENERATE_BATCH, MEASURE_BATCH = 4, 16

PathLike = Union[str, os.PathLike]
#: ``f(prompts, seeds) -> images``: one PIL image per prompt, in order (None for one the model refused).
ImageMaker = Callable[[list[str], list[int]], Sequence[Any]]
#: A progress-bar factory: ``factory(total, already_done)`` returns ``advance(n)``.
ProgressFactory = Callable[[int, int], Callable[[int], None]]


class GenerationFailed(RuntimeError):
    """Every image of a run failed (nothing made now or before); ``result`` says why, by reason."""

    def __init__(self, result: GenerateResult, retry: str) -> None:
        super().__init__(f"generate: {result.failure_summary()}; fix the cause, then {retry} retries them")
        self.result = result


def default_classifier(spec: GeneratorSpec) -> str:
    """The classifier a sweep uses when none is named, as ``t2ibias sweep`` picks it: a generator
    with random weights (the offline demo) gets the random CLIP, which needs no download."""
    return RANDOM_CLASSIFIER if spec.random_weights else DEFAULT_CLASSIFIER


def default_out_dir(model: str, prompt_sets: Sequence[str]) -> Path:
    """``runs/<model>__<prompt sets>``, as ``t2ibias sweep`` names a run without ``--out``."""
    name = Path(model).name if Path(model).exists() else model
    if model.startswith("replay:"):
        name = "replay-" + Path(model[len("replay:"):]).expanduser().resolve().name
    return Path("runs") / f"{name}__{'+'.join(Path(p).stem for p in prompt_sets)}"


def _names(value: PathLike | Sequence[PathLike] | None, field: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    if not all(isinstance(v, (str, os.PathLike)) for v in items):
        raise UserError(f"{field}: {value!r} is not a name or a list of names (e.g. {field}=['demo'])")
    return [os.fspath(v) for v in items]


def _model_name(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if callable(model) and not hasattr(model, "components"):
        raise UserError(f"model: a {type(model).__name__}; pass an image maker as images=f and a name for it as model")
    raise UserError(f"model: a {type(model).__name__}; pass a loaded pipeline as pipeline=pipe and a name for it as "
                    "model (a registered id such as 'sdxl' takes that model's call settings)")


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise UserError(f"--batch-size {batch_size}: must be at least 1")


def plan_run(model: Any, prompts: Any, seeds: int, base_seed: int, classifier: str | None, out: PathLike | None,
             device: str, limit: int | None, pipeline: Any, images: ImageMaker | None, revision: str | None,
             llm: str | None, llm_model: str | None, docs: PathLike | None, fast_batching: bool,
             out_flag: str = "out") -> tuple[Path, Any]:
    """Check the options and resolve the defaults (generator, classifier, out), writing nothing:
    the run directory and the request :func:`t2ibias.runspec.prepare_run` turns into its spec."""
    from t2ibias.runspec import SweepRequest

    name = _model_name(model)
    sets = _names(prompts, "prompts")
    replay = None
    if name.startswith("replay:"):  # images made elsewhere: prompts and images from the folder's index
        from t2ibias.generation.replay import plan_replay

        if pipeline is not None or images is not None or llm or docs:
            raise UserError(f"model {name}: a replay run takes its images and prompts from the folder's index "
                            "(drop pipeline, images, llm and docs)")
        replay = plan_replay(name, sets, "--model" if out_flag == "--out" else "model")
        seeds = replay.max_images
        sets = sets or [replay.prompt_sets[0]["id"]]
    if not sets:
        raise UserError("prompts: no prompt set named (pass one or more ids, e.g. prompts='demo'; `t2ibias ls prompts` lists them)")
    if pipeline is not None and images is not None:
        raise UserError("pipeline and images: pass one of them (a loaded diffusers pipeline, or a function that makes images)")
    if revision is not None and images is None:
        raise UserError(f"revision {revision!r}: only for images=f (a registered model pins its revision in its YAML, "
                        "a pipeline is identified by its own configs and weights)")
    model_spec = weights = None
    if pipeline is not None:
        from t2ibias.generation.external import pipeline_spec

        model_spec, weights = pipeline_spec(name, pipeline)
    elif images is not None:
        from t2ibias.generation.external import image_maker_spec

        model_spec, weights = image_maker_spec(name, images, revision)
    elif replay is not None:
        model_spec, weights = replay.spec, replay.weights
    out_dir = Path(out) if out is not None else default_out_dir(name, sets)
    check_output_dir(out_dir, out_flag)
    if classifier is None:
        from t2ibias.models.generator_spec import resolve_generator_spec

        classifier = default_classifier(model_spec or resolve_generator_spec(name))
    request = SweepRequest(name, sets, seeds, base_seed, classifier, device, limit, not fast_batching, llm, llm_model,
                           os.fspath(docs) if docs else None, model_spec=model_spec, model_weights=weights, replay=replay)
    return out_dir, request


def prepare(
    model: PathLike,
    prompts: PathLike | Sequence[PathLike] = "demo",
    *,
    seeds: int = 4,
    base_seed: int = 0,
    classifier: str | None = None,
    out: PathLike | None = None,
    device: str = "auto",
    limit: int | None = None,
    force: bool = False,
    pipeline: Any = None,
    images: ImageMaker | None = None,
    revision: str | None = None,
    llm: str | None = None,
    llm_model: str | None = None,
    docs: PathLike | None = None,
    fast_batching: bool = False,
) -> Run:
    r"""
    Write a run directory's `spec.json` and `prompts.parquet` and make nothing else: what
    [`sweep`] does before its stages, to look at a run's spec and prompts before a long sweep.
    Arguments are those of [`sweep`].

    Returns:
        [`Run`]: the prepared run; [`Run.generate`] makes its images.
    """
    from t2ibias.store.lock import RunLock
    from t2ibias.runspec import prepare_run

    out_dir, request = plan_run(model, prompts, seeds, base_seed, classifier, out, device, limit, pipeline, images,
                             revision, llm, llm_model, docs, fast_batching)
    with RunLock(out_dir, "sweep", create=True):
        prepare_run(out_dir, request, force=force)
        return Run(out_dir)


def sweep(
    model: PathLike,
    prompts: PathLike | Sequence[PathLike] = "demo",
    *,
    seeds: int = 4,
    base_seed: int = 0,
    classifier: str | None = None,
    out: PathLike | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    limit: int | None = None,
    min_n: int = 50,
    force: bool = False,
    pipeline: Any = None,
    images: ImageMaker | None = None,
    revision: str | None = None,
    llm: str | None = None,
    llm_model: str | None = None,
    docs: PathLike | None = None,
    fast_batching: bool = False,
    person_detector: str | None = None,
    also: Sequence[str] | None = None,
    face_detector: str | None = None,
    executor: Any = None,
    address: str | None = None,
    gpus_per_worker: float | None = None,
) -> Run:
    r"""
    Run every stage into one run directory: prompts → generate (missing images only) → measure →
    score → report, exactly as `t2ibias sweep` does with the same options (the same files, the
    same bytes of `metrics.json`). Run it again to resume: images already made are kept.

    Args:
        model (`str` or `os.PathLike`):
            A generator id (`t2ibias ls models`), a generator YAML file or a local diffusers folder.
            With `pipeline` or `images`, the name the run records for the generator (see there).
            `"replay:DIR"` measures images made elsewhere, listed by `DIR/index.csv` or `index.jsonl`
            (`seeds` is then the index's own count per prompt).
        prompts (`str` or `List[str]`, *optional*, defaults to `"demo"`):
            Prompt set ids (`t2ibias ls prompts`) or YAML files. For `replay:DIR`, the set the
            index's rows are matched to, or None for the index's own prompts.
        seeds (`int`, *optional*, defaults to 4):
            Images per prompt (seeds 0..N-1 of each prompt).
        base_seed (`int`, *optional*, defaults to 0):
            Base of every per-image seed.
        classifier (`str`, *optional*):
            Attribute classifier id (`t2ibias ls classifiers`) or YAML file. Defaults to
            `"clip-vit-l-14-openai"`, or `"tiny-random-clip"` for a generator with random weights.
        out (`str` or `os.PathLike`, *optional*):
            The run directory. Defaults to `runs/<model>__<prompt sets>`.
        device (`str`, *optional*, defaults to `"auto"`):
            `"auto"` (a GPU when one is visible), `"cpu"` or `"cuda"`. A `pipeline` passed in runs
            where it is; `device` then places the classifier only.
        batch_size (`int`, *optional*):
            Images per pipeline call and per classifier call. Defaults to 4 to generate and 16 to
            measure. Never changes an image (unless `fast_batching`).
        limit (`int`, *optional*):
            Use only the first `limit` prompts (images made so far are kept when it is lifted).
        min_n (`int`, *optional*, defaults to 50):
            A per-prompt figure on fewer images is shown but flagged `n < min_n` and never ranked.
        force (`bool`, *optional*, defaults to `False`):
            Clear an `out` that holds another run's spec and start over.
        pipeline ([`~diffusers.DiffusionPipeline`], *optional*):
            A pipeline already loaded, used instead of loading weights. If `model` is a registered
            id, a YAML file or a folder, its call settings (steps, guidance, size, scheduler) are
            used; any other name takes the pipeline class's own defaults. The run identifies the
            pipeline by its class, its components' classes and configs, its tokenizers, dtype and a
            sample of every weight tensor's values; it cannot see edits to weight values between
            the sampled ones, replaced `forward` methods, hooks, or LoRA scales set with
            `set_adapters` — after such a change, start a new run (another `out`). The pipeline is
            not moved; what the run changes on it (sample-wise modules, a configured scheduler,
            the progress bar) is put back afterwards.
        images (`Callable[[List[str], List[int]], List[PIL.Image.Image]]`, *optional*):
            Any image maker (an API model, another library): called with a batch of prompts and
            their seeds, it returns one PIL image per prompt in order (`None` for one the model
            refused: counted as blocked). `model` names it in `spec.json` and cannot be a
            registered id; an exception it raises counts the batch as failed (made again on the
            next run), a wrong number or type of images raises [`UserError`].
        revision (`str`, *optional*):
            With `images`, the version of the image maker, recorded in the run's fingerprint;
            change it when the image maker changes, or its old images are kept.
        llm (`str`, *optional*):
            Text generator for fact-augmented prompts (adds `fai_vk`): an OpenAI-compatible
            endpoint URL or a local causal-LM folder. Answers are cached.
        llm_model (`str`, *optional*):
            The model name to ask at an `llm` endpoint.
        docs (`str` or `os.PathLike`, *optional*):
            A folder of `.txt`/`.md` documents: adds `fai_rk` prompts from BM25-retrieved passages
            (needs `llm`).
        fast_batching (`bool`, *optional*, defaults to `False`):
            Batch kernels across images: faster on a GPU, but an image's last bits then depend on
            `batch_size` (part of the spec).
        person_detector (`str`, *optional*):
            A YOLO person gate in front of the face gate: a local `.pt` file or an ultralytics
            release name.
        also (`List[str]`, *optional*):
            Second measurers on every face crop, for agreement: `"pixel-mst"`, `"fairface:PATH"`.
        face_detector (`str`, *optional*):
            A registered face detector (`t2ibias ls gates`): `"haar"` (the default), `"dlib-cnn"`
            (FairFace's detection and alignment) or `"mtcnn"`.
        executor (`str` or executor, *optional*, defaults to `"local"`):
            Where the images are made and measured, as `--executor`: `"local"` (this process) or
            `"ray"` (one Ray worker per GPU, or per CPU without GPUs; `pip install 't2ibias[ray]'`
            and a run directory every node sees), looked up in `t2ibias.executors.EXECUTORS`. A
            name is connected before anything is written and released when the sweep returns.
            An executor object (`t2ibias.executors.create_executor("ray", workers=2)`) is used as
            it is and left open for the caller to close. Not with `pipeline` or `images`: the
            workers load the run's own pipeline.
        address (`str`, *optional*):
            With `executor="ray"`, the cluster, as `--address`: `"auto"` (the one `ray start` made
            on this machine), `"HOST:PORT"` (a head node's GCS address) or `"ray://HOST:PORT"`
            (Ray Client). Defaults to `RAY_ADDRESS`, else a cluster `ray start` made here, else a
            new one started for the sweep.
        gpus_per_worker (`float`, *optional*):
            With `executor="ray"`, GPUs per worker, as `--gpus-per-worker` (0 for CPU workers;
            defaults to 1 when the cluster has GPUs, else 0).

    Returns:
        [`Run`]: the run directory, with its images, measurements, `metrics.json`, `report.html`
        and `model_card.md` written.

    Raises:
        [`~t2ibias.core.errors.UserError`]: bad input (unknown id, malformed file, an `out`
        holding another run), with one line naming the option and the fix; messages name options
        by their command-line flags (`--seeds`). Nothing already written is lost.
        [`GenerationFailed`]: every image failed.

    Examples:

    ```py
    >>> import t2ibias

    >>> run = t2ibias.sweep("tiny-random-sd", "demo", seeds=2, limit=2, device="cpu", out="runs/demo")
    >>> [r for r in run.metrics if r["metric"] == "total_variation_uniform" and r["group_by"] == "all"]

    >>> from PIL import Image
    >>> def make_images(prompts, seeds):  # any image maker, e.g. a call to an API model
    ...     return [Image.new("RGB", (64, 64), "gray") for _ in prompts]
    >>> run = t2ibias.sweep("my-model", "demo", images=make_images, classifier="tiny-random-clip")

    >>> run = t2ibias.sweep("sdxl", "occupations_v1", seeds=50, out="/shared/runs/sdxl",
    ...                     executor="ray", address="auto", gpus_per_worker=1)  # a Ray cluster's GPUs
    ```
    """
    from contextlib import ExitStack

    from t2ibias.metrics.score import check_options
    from t2ibias.store.lock import RunLock
    from t2ibias.runspec import prepare_run

    check_options("clopper-pearson", 0.95, min_n)
    _check_batch_size(batch_size)
    out_dir, request = plan_run(model, prompts, seeds, base_seed, classifier, out, device, limit, pipeline, images,
                             revision, llm, llm_model, docs, fast_batching)
    also = _names(also, "also")
    if person_detector or also or face_detector:
        from t2ibias.measure.measurers import resolve_crop_measurer
        from t2ibias.measure.stage import create_gate, open_measurers

        # missing or bad weights fail before anything is written
        open_measurers(create_gate(person_detector, face_detector=face_detector or "haar"),
                       [resolve_crop_measurer(name) for name in also])
    with ExitStack() as stack:
        ex = _sweep_executor(stack, executor, address, gpus_per_worker, pipeline is not None or images is not None)
        stack.enter_context(RunLock(out_dir, "sweep", create=True))
        prepare_run(out_dir, request, force=force)
        run = Run(out_dir)
        run.generate(device, GENERATE_BATCH if batch_size is None else batch_size, pipeline=pipeline, images=images,
                     executor=ex)
        run.measure(device, MEASURE_BATCH if batch_size is None else batch_size, person_detector=person_detector, also=also,
                    face_detector=face_detector, executor=ex)
        run.score(min_n=min_n)
        run.report()
    return run


def _sweep_executor(stack: Any, executor: Any, address: str | None, gpus_per_worker: float | None,
                    borrowed: bool) -> Any:
    """The executor :func:`sweep` hands its stages (None: this process), checked and connected
    before anything is written; one made here from a name is closed by ``stack``."""
    if executor is None or isinstance(executor, str):
        from t2ibias.executors import create_executor

        name = executor or "local"
        if name != "local" and borrowed:
            raise UserError(f"--executor {name}: its workers load the run's own pipeline; pass pipeline= or images= "
                            "without executor=")
        made = stack.enter_context(create_executor(name, address=address, gpus_per_worker=gpus_per_worker))
        return None if name == "local" else made
    if not callable(getattr(executor, "generate", None)) or not callable(getattr(executor, "close", None)):
        raise UserError(f"executor: a {type(executor).__name__} is not an executor (pass 'local', 'ray' or an object "
                        "from t2ibias.executors.create_executor)")
    for flag, value in (("address", address), ("gpus_per_worker", gpus_per_worker)):
        if value is not None:
            raise UserError(f"{flag}: set it when making the executor (create_executor('ray', {flag}=...)), "
                            "not next to an executor object")
    return executor


def open_run(path: PathLike) -> Run:
    r"""
    Open a run directory made by [`sweep`] or `t2ibias sweep`.

    Args:
        path (`str` or `os.PathLike`): the run directory.

    Returns:
        [`Run`]: its files and stage methods.

    Raises:
        [`~t2ibias.core.errors.UserError`]: `path` holds no readable `spec.json`.

    Examples:

    ```py
    >>> run = t2ibias.open_run("runs/demo")
    >>> run.score(ci="wilson", min_n=10)  # re-score from the measurements; nothing is generated
    >>> run.report()
    PosixPath('runs/demo/report.html')
    ```
    """
    return Run(path)


def compare(runs: Sequence[PathLike | Run], out: PathLike, *, json: PathLike | None = None, confidence: float = 0.95,
            allow_different_measurers: bool = False, summary: list[str] | None = None) -> dict[str, Path]:
    r"""
    Compare scored runs, as `t2ibias compare RUN RUN ... --out FILE.html` does (the same files,
    the same bytes).

    Runs are matched on prompt text and seed index, so only shared prompts and seeds enter. Written:
    the compare page `out`, `leaderboard.json` and `leaderboard.html` beside it, and with `json`
    every per-model, paired and rank row.

    Args:
        runs: two or more run directories, or [`Run`]s.
        out (`str` or `os.PathLike`): the compare page.
        json (`str` or `os.PathLike`, *optional*): where to write the rows as JSON.
        confidence (`float`, defaults to 0.95): confidence level of every interval.
        allow_different_measurers (`bool`, defaults to `False`): compare runs measured with different
            classifiers or gates; every figure then says so.
        summary (`list[str]`, *optional*): receives the headline lines the command prints (shared
            prompts and images, then per attribute the models in rank order with their figure).

    Returns:
        `dict[str, Path]`: `compare`, `leaderboard`, `leaderboard_page` (and `json`) → the path written.

    Raises:
        [`~t2ibias.core.errors.UserError`]: fewer than two runs, a run not scored, runs sharing no
            prompt, runs measured differently (without `allow_different_measurers`), an output that
            cannot be written; nothing is written then.

    Examples:

    ```py
    >>> t2ibias.compare(["runs/sd15", "runs/sdxl"], "runs/compare/compare.html")["leaderboard"]
    PosixPath('runs/compare/leaderboard.json')
    ```
    """
    from t2ibias.comparison.report import compare_runs

    paths = [r.path if isinstance(r, Run) else Path(r) for r in runs]
    return compare_runs(paths, out, json, confidence=confidence, allow_different_measurers=allow_different_measurers,
                        summary=summary)


class Run:
    r"""
    One run directory: its spec and output files, and a method per stage.

    Each stage reads only the files of the stage before it and writes its own, so any stage can
    be re-run alone: [`~Run.generate`] makes missing images, [`~Run.measure`] gates and classifies
    images not yet measured, [`~Run.score`] recomputes the metrics, [`~Run.report`] writes the
    report. Get one from [`sweep`] or [`open_run`]; a `Run` is also a path (`os.fspath(run)`).
    """

    def __init__(self, path: PathLike) -> None:
        from t2ibias.store.rundir import read_spec

        self._path = Path(path)
        self._spec = read_spec(self._path)

    def __repr__(self) -> str:
        return f"Run({str(self._path)!r}, model={self._spec['model'].get('id')!r}, fingerprint={self._spec['fingerprint']!r})"

    def __fspath__(self) -> str:
        return os.fspath(self._path)

    # -- what the run holds ----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The run directory."""
        return self._path

    @property
    def spec(self) -> dict[str, Any]:
        """`spec.json`: everything that defines the run (generator, prompt sets, seeds, classifier), with its fingerprint."""
        return self._spec

    @property
    def prompts(self) -> pd.DataFrame:
        """The run's prompt records (one row per prompt, cut to `limit`)."""
        from t2ibias.store.rundir import read_prompts

        return read_prompts(self._path, self._spec)

    @property
    def images(self) -> pd.DataFrame:
        """One row per image of the run: `key`, `prompt_id`, `text`, `image_index`, `seed`,
        `status` (`ok`, `blocked`, `failed` or `missing`) and `file` (the PNG, or None)."""
        import pandas as pd

        from t2ibias.store.image_store import OK, ImageStore
        from t2ibias.store.rundir import image_jobs

        store = ImageStore(self._path)
        records = store.records()
        rows = []
        for job in image_jobs(self._spec, self.prompts):
            rec = records.get(job.key)
            status = rec.get("status", "missing") if rec else "missing"
            rows.append({"key": job.key, "prompt_id": job.prompt_id, "text": job.text, "image_index": job.index,
                         "seed": job.seed, "status": status, "file": store.image_file(rec) if status == OK else None})
        return pd.DataFrame(rows, columns=["key", "prompt_id", "text", "image_index", "seed", "status", "file"])

    @property
    def image_labels(self) -> pd.DataFrame:
        """`image_labels.parquet`: one row per image with its label per attribute (or the bin it fell in)."""
        import pandas as pd

        from t2ibias.store.rundir import IMAGE_LABELS_FILE

        try:
            return pd.read_parquet(self._need(IMAGE_LABELS_FILE, "score"))
        except UserError:
            raise
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise UserError(f"{self._path / IMAGE_LABELS_FILE}: unreadable ({exc}); run `run.score()` to rewrite it") from None

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The rows of `metrics.json` (`metric, axis, group_by, group, label, value, ci_low,
        ci_high, n, ...`); `pandas.DataFrame(run.metrics)` makes a table of them."""
        from t2ibias.store.rundir import METRICS_FILE

        return self._json(METRICS_FILE, "score")["rows"]

    @property
    def instrument(self) -> dict[str, Any]:
        """`instrument.json`: the classifier's own error (audit, corrected shares, agreement between measurers)."""
        from t2ibias.store.rundir import INSTRUMENT_FILE

        return self._json(INSTRUMENT_FILE, "score")

    def _need(self, name: str, stage: str) -> Path:
        path = self._path / name
        if not path.is_file():
            raise UserError(f"{path}: missing (run `run.{stage}()` or `t2ibias {stage} {self._path}` first)")
        return path

    def _json(self, name: str, stage: str) -> dict[str, Any]:
        path = self._need(name, stage)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable JSON ({exc}); run `run.{stage}()` to rewrite it") from None
        if not isinstance(doc, dict):
            raise UserError(f"{path}: not a JSON object; run `run.{stage}()` to rewrite it")
        return doc

    # -- stages ----------------------------------------------------------------------------------

    def generate(
        self,
        device: str = "auto",
        batch_size: int = GENERATE_BATCH,
        *,
        pipeline: Any = None,
        images: ImageMaker | None = None,
        progress: ProgressFactory | None = None,
        executor: Any = None,
    ) -> GenerateResult:
        r"""
        Make the images the run lacks (missing, failed or corrupt ones); nothing else. The
        run's pipeline is loaded only if something is missing.

        Args:
            device (`str`, *optional*, defaults to `"auto"`): where t2ibias runs the run's own pipeline.
            batch_size (`int`, *optional*, defaults to 4): images per call; never changes an image.
            pipeline ([`~diffusers.DiffusionPipeline`], *optional*): for a run made with a pipeline
                passed in, that pipeline again (checked against the run's record of it).
            images (`Callable`, *optional*): for a run made by an image maker, the image maker.
            progress (`Callable[[int, int], Callable[[int], None]]`, *optional*): a progress-bar
                factory, called as `progress(total, already_done)`; returns `advance(n)`.
            executor (*optional*): where the run's own pipeline makes the images, from
                `t2ibias.executors.create_executor("ray", address=...)`; this process makes them by default.

        Returns:
            [`~t2ibias.generation.stage.GenerateResult`]: images made now, already there,
            blocked and failed (`failure_summary()` says why); failed ones are made again next time.

        Raises:
            [`GenerationFailed`]: every image of the run failed.
        """
        from t2ibias.generation.external import made_outside
        from t2ibias.generation.stage import generate_stage
        from t2ibias.models.generator_spec import GeneratorSpec

        _check_batch_size(batch_size)
        spec = self._spec
        outside = made_outside(spec["weights"])
        if pipeline is not None and images is not None:
            raise UserError("pipeline and images: pass one of them (the run's own generator, if it was passed in)")
        if executor is not None and (pipeline is not None or images is not None):
            raise UserError("executor: its workers load the run's own pipeline; pass pipeline= or images= without it")
        if pipeline is not None:
            from t2ibias.generation.external import BorrowedPipeline, pipeline_identity

            identity = pipeline_identity(pipeline)
            if identity != spec["weights"]:
                fix = ("pass the pipeline the run was made with, or start a new run with another out" if outside == "pipeline"
                       else "call generate() without pipeline= to load the run's own weights")
                raise UserError(f"pipeline: not the generator of {self._path} (the run's images come from "
                                f"{spec['weights']}, this pipeline is {identity}); {fix}")
            with BorrowedPipeline(pipeline, GeneratorSpec(**spec["model"]), bool(spec.get("batch_invariant", True))) as gen:
                result = generate_stage(self._path, device=device, batch_size=batch_size, progress=progress, generator=gen)
        elif images is not None:
            if outside != "callable":
                raise UserError(f"images: {self._path} was made by {spec['weights']}, not by an image maker "
                                "(call generate() without images=)")
            from t2ibias.generation.external import CallableGenerator

            result = generate_stage(self._path, device=device, batch_size=batch_size, progress=progress,
                                    generator=CallableGenerator(images))
        else:
            result = generate_stage(self._path, device=device, batch_size=batch_size, progress=progress, executor=executor)
        if spec["weights"].startswith("replay:"):
            from t2ibias.generation.replay import note_generate_failures

            note_generate_failures(self._path)  # images whose data failed to decode join replay_problems.json
        if result.all_failed:
            raise GenerationFailed(result, "`run.generate()`")
        return result

    def measure(
        self,
        device: str = "auto",
        batch_size: int = MEASURE_BATCH,
        *,
        person_detector: str | None = None,
        face_detector: str | None = None,
        person_conf: float | None = None,
        also: Sequence[str] | None = None,
        workers: int | None = None,
        fairface: PathLike | None = None,
        progress: ProgressFactory | None = None,
        executor: Any = None,
    ) -> dict[str, int]:
        r"""
        Gate and classify every image not yet measured by the run's classifier (and `also`'s measurers).

        Args:
            device (`str`, *optional*, defaults to `"auto"`): where the classifier runs.
            batch_size (`int`, *optional*, defaults to 16): crops per classifier call.
            person_detector (`str`, *optional*): a YOLO person gate in front of the face gate (a
                `.pt` file or an ultralytics release name; `"none"` removes it). Defaults to the
                gate the run was last measured with.
            person_conf (`float`, *optional*): its confidence threshold (0.25, or the recorded one).
            face_detector (`str`, *optional*): a registered face detector (`t2ibias ls gates`);
                defaults to the one the run was last measured with (`"haar"` for a new run).
            also (`List[str]`, *optional*): second measurers on every face crop (`"pixel-mst"`,
                `"fairface:PATH"`).
            workers (`int`, *optional*): threads that read, gate and preprocess upcoming batches
                (defaults to half the CPU cores, from 2 to 8).
            fairface (`str` or `os.PathLike`, *optional*): a CSV FairFace's `predict.py` wrote for
                the run's images, imported first.
            progress (`Callable`, *optional*): a progress-bar factory, as in [`~Run.generate`].
            executor (*optional*): an executor whose workers measure (`create_executor("ray")`): this
                process plans and finishes, the workers measure chunks of the images (`fairface`
                imports stay in this process).

        Returns:
            `Dict[str, int]`: images `measured` now and `cached`, `faces` (and `people`) found.
        """
        from t2ibias.core.device import resolve_device
        from t2ibias.measure.measurers import resolve_crop_measurer
        from t2ibias.measure.stage import measure_stage

        _check_batch_size(batch_size)
        if person_conf is not None and not 0 <= person_conf <= 1:  # NaN fails this too
            raise UserError(f"--person-conf {person_conf}: not a probability (use a number between 0 and 1, e.g. 0.25)")
        extras = [resolve_crop_measurer(name, resolve_device(device)) for name in _names(also, "also")]
        if executor is not None and hasattr(executor, "measure") and fairface is None:
            from t2ibias.measure.stage import finish_measure, plan_measure
            from t2ibias.store.lock import RunLock

            with RunLock(self._path, "measure"):
                plan = plan_measure(self._path, device, batch_size, person_detector=person_detector, person_conf=person_conf,
                                    extra_measurers=extras, worker_device=executor.worker_device(device),
                                    face_detector=face_detector)
                advance = progress(len(plan.keys), plan.cached) if progress and plan.keys else (lambda n: None)
                return finish_measure(plan, executor.measure(plan, advance, workers))
        return measure_stage(self._path, device=device, batch_size=batch_size, progress=progress,
                             person_detector=person_detector, person_conf=person_conf, extra_measurers=extras,
                             face_detector=face_detector,
                             workers=workers, fairface_csv=Path(fairface) if fairface is not None else None)

    def score(
        self,
        ci: str = "clopper-pearson",
        *,
        audit: PathLike | None = None,
        confidence: float = 0.95,
        min_n: int = 50,
    ) -> dict[str, Any]:
        r"""
        Recompute `image_labels.parquet`, `metrics.json`, `metrics.csv` and `instrument.json` from
        the measurements (cheap; nothing is generated or measured).

        Args:
            ci (`str`, *optional*, defaults to `"clopper-pearson"`): the interval of a share in
                one prompt: `"clopper-pearson"`, `"wilson"` or `"jeffreys"`.
            audit (`str` or `os.PathLike`, *optional*): an `audit.json` (or its folder) to correct with.
            confidence (`float`, *optional*, defaults to 0.95): confidence level of every interval.
            min_n (`int`, *optional*, defaults to 50): per-prompt figures on fewer images are flagged.

        Returns:
            `Dict[str, Any]`: the `metrics.json` document (its `rows` are [`Run.metrics`]).
        """
        from t2ibias.metrics.score import check_options, score_stage
        from t2ibias.store.lock import RunLock

        check_options(ci, confidence, min_n)
        with RunLock(self._path, "score"):
            return score_stage(self._path, ci, audit=Path(audit) if audit is not None else None,
                               confidence=confidence, min_n=min_n)

    def report(self) -> Path:
        r"""
        Write `report.html` and `model_card.md` from the run's output files.

        Returns:
            `Path`: the report (the model card is beside it).
        """
        from t2ibias.report.html import write_model_card, write_report
        from t2ibias.store.lock import RunLock

        with RunLock(self._path, "report"):
            path = write_report(self._path)
            write_model_card(self._path)
        return path
