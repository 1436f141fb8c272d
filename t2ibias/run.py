"""A run directory: its spec, its prompt records, and the generate stage.

Each stage reads only the files written by the stage before it, so any stage can be re-run
alone (``t2ibias generate|measure|score|report DIR``) and the report reads outputs only.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from t2ibias import __version__
from t2ibias.errors import UserError
from t2ibias.fingerprint import fingerprint
from t2ibias.generation.diffusers_adapter import (
    DiffusersGenerator,
    effective_dtype,
    generator_fingerprint,
    resolve_device,
    resolve_weights,
)
from t2ibias.generation.spec import GeneratorSpec, resolve_generator_spec
from t2ibias.hub import quiet_hub
from t2ibias.prompts.bank import PromptRecord, PromptSet, expand, resolve_prompt_set
from t2ibias.store.image_store import (
    BLOCKED,
    FAILED,
    MANIFEST_GLOB,
    OK,
    ImageStore,
    atomic_write_bytes,
    atomic_write_text,
    image_keys,
    image_seeds,
)
from t2ibias.store.lock import LOCK_FILE, RunLock

SPEC_FILE = "spec.json"
PROMPTS_FILE = "prompts.parquet"
TOKENS_FILE = "prompt_tokens.parquet"
DEFAULT_BASE_SEED = 0
#: Images one run may hold: ten times the largest sweep the suite is built for, and small enough
#: that the list of image jobs fits in memory.
MAX_IMAGES = 2_000_000

Progress = Callable[[int], None]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class SweepRequest:
    """What a user asked ``t2ibias sweep`` for."""

    model: str
    prompt_sets: list[str]
    n_seeds: int = 4
    base_seed: int = DEFAULT_BASE_SEED
    classifier: str = "tiny-random-clip"
    device: str = "auto"
    limit: int | None = None
    #: Run the heavy modules image by image so --batch-size never changes pixels (see samplewise.py).
    batch_invariant: bool = True
    #: Text generator for fact-augmented prompts (fai_vk, and fai_rk with ``docs``): URL or folder.
    llm: str | None = None
    llm_model: str | None = None
    docs: str | None = None


def build_spec(req: SweepRequest) -> tuple[dict[str, Any], list[PromptRecord], str]:
    """Resolve ids (model weights included) into the run spec and the prompt records."""
    from t2ibias.measure.classifier_spec import resolve_classifier_spec

    if req.n_seeds < 1:
        raise UserError(f"--seeds {req.n_seeds}: need at least one image per prompt")
    if req.n_seeds > MAX_IMAGES:
        raise UserError(f"--seeds {req.n_seeds}: more images than one run holds (at most {MAX_IMAGES:,}; use fewer seeds)")
    if req.limit is not None and req.limit < 1:
        raise UserError(f"--limit {req.limit}: must be a positive number of prompts")
    gspec = resolve_generator_spec(req.model)
    sets = [resolve_prompt_set(name) for name in req.prompt_sets]
    if len({s.id for s in sets}) != len(sets):
        raise UserError("--prompts: the same set is named twice (name each set once)")
    sets = fact_augment(sets, req)
    records = [r for s in sets for r in expand(s)]
    n_images = req.n_seeds * min(len(records), req.limit or len(records))
    if n_images > MAX_IMAGES:
        raise UserError(
            f"--seeds {req.n_seeds}: {n_images:,} images over {len(records):,} prompts, more than one run holds "
            f"(at most {MAX_IMAGES:,}; use fewer seeds, or split the prompts over runs with --prompts or --limit)"
        )
    cspec = resolve_classifier_spec(req.classifier)
    device = resolve_device(req.device)
    dtype = effective_dtype(gspec, device)
    from t2ibias.measure.clip_zeroshot import ensure_classifier_weights

    with quiet_hub():  # missing weights: one error line, not a minute of retries and warnings
        weights = resolve_weights(gspec)
        ensure_classifier_weights(cspec)
    gfp = generator_fingerprint(gspec, weights, dtype, req.batch_invariant)
    defining = {
        "generator_fingerprint": gfp,
        "prompts": fingerprint([r.to_dict() for r in records]),
        "n_seeds": req.n_seeds,
        "base_seed": req.base_seed,
        "classifier_fingerprint": cspec.fingerprint(),
    }
    spec = {
        "fingerprint": fingerprint(defining),
        "t2ibias_version": __version__,
        "created": now_iso(),
        "model": {**gspec.to_dict(), "dtype": dtype, "revision": weights.revision or gspec.revision},
        "weights": weights.identity,
        "generator_fingerprint": gfp,
        "model_is_random": gspec.random_weights,
        "prompt_sets": [{"id": s.id, "version": s.version, "sha256": s.sha256, "path": str(s.path)} for s in sets],
        "n_prompts": len(records),
        "n_seeds": req.n_seeds,
        "base_seed": req.base_seed,
        "classifier": {**cspec.summary(), "fingerprint": cspec.fingerprint()},
        "device": device,
        "batch_invariant": req.batch_invariant,
        "limit": req.limit,
        "defining": defining,
    }
    return spec, records, weights.folder


def fact_augment(sets: list[PromptSet], req: SweepRequest) -> list[PromptSet]:
    """Add fai_vk (and fai_rk over ``req.docs``) records from ``req.llm``; answers are cached."""
    if req.docs and not req.llm:
        raise UserError("--docs: retrieval-augmented prompts need a text generator too (add --llm)")
    if not req.llm:
        return sets
    from t2ibias.prompts.textgen import augment_with_fai_vk, create_text_generator

    textgen = create_text_generator(req.llm, req.llm_model)
    sets = [augment_with_fai_vk(s, textgen) for s in sets]
    if req.docs:
        from t2ibias.prompts.retrieval import DocumentIndex, augment_with_fai_rk

        index = DocumentIndex.from_folder(req.docs)
        sets = [augment_with_fai_rk(s, index, textgen) for s in sets]
    return sets


#: Fields of spec.json every stage relies on, with the types they must have.
SPEC_FIELDS: dict[str, tuple[type, ...]] = {
    "fingerprint": (str,), "model": (dict,), "weights": (str,), "generator_fingerprint": (str,),
    "n_seeds": (int,), "base_seed": (int,), "classifier": (dict,), "defining": (dict,),
}


def read_spec(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SPEC_FILE
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{path}: missing; {run_dir} is not a t2ibias run (start one with `t2ibias sweep --out {run_dir}`)") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise UserError(f"{path}: not valid JSON ({exc}); restore it, or start a new run with another --out") from None
    fix = "restore it, or start the run again with `t2ibias sweep`"
    if not isinstance(spec, dict):
        raise UserError(f"{path}: a JSON {type(spec).__name__}, not the run spec object `t2ibias sweep` writes ({fix})")
    for key, types in SPEC_FIELDS.items():
        value = spec.get(key)
        if key not in spec:
            raise UserError(f"{path}: field {key}: missing ({fix})")
        if not isinstance(value, types) or isinstance(value, bool):
            kind = {str: "a string", int: "an integer", dict: "an object"}[types[0]]
            raise UserError(f"{path}: field {key}: {json.dumps(value)[:40]} is not {kind} ({fix})")
    if spec["n_seeds"] < 1:
        raise UserError(f"{path}: field n_seeds: {spec['n_seeds']} is not a positive number ({fix})")
    return spec


def read_prompts(run_dir: Path, spec: dict[str, Any] | None = None) -> pd.DataFrame:
    """The run's prompt records, cut to the spec's ``limit`` when one is set."""
    path = run_dir / PROMPTS_FILE
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise UserError(f"{path}: missing (re-run `t2ibias sweep` with the same options to rewrite it)") from None
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: unreadable ({exc}); re-run `t2ibias sweep` with the same options to rewrite it") from None
    spec = spec if spec is not None else read_spec(run_dir)
    if spec.get("limit"):
        df = df.head(int(spec["limit"]))
    return df.reset_index(drop=True)


def prepare_run(run_dir: Path, req: SweepRequest, force: bool = False) -> dict[str, Any]:
    """Write (or check) ``spec.json`` and ``prompts.parquet``; refuse a directory of another spec.

    With ``force``, a directory holding another t2ibias run is cleared of that run's own files
    (:func:`clear_run`) first; anything else in it is kept. Everything is checked before anything
    is deleted or written, under the run's lock.
    """
    run_dir = Path(run_dir)
    with RunLock(run_dir, "sweep", create=True):
        spec, records, weights_folder = build_spec(req)
        spec_path = run_dir / SPEC_FILE
        clear = False
        if spec_path.exists():
            old = read_spec(run_dir)
            if old.get("fingerprint") != spec["fingerprint"]:
                if not force:
                    changed = [k for k in spec["defining"] if old.get("defining", {}).get(k) != spec["defining"][k]]
                    raise UserError(
                        f"--out {run_dir}: holds a run of another spec (differs in {', '.join(changed) or 'fingerprint'}); "
                        "choose another --out, or pass --force to delete it and start over"
                    )
                check_clearable(run_dir, old)
                clear = True
            else:
                spec["created"] = old.get("created", spec["created"])
        elif any(p.name != LOCK_FILE for p in run_dir.iterdir()):
            extra = " (--force deletes only the files of a t2ibias run, and there is no spec.json here)" if force else ""
            raise UserError(f"--out {run_dir}: exists and is not a t2ibias run (choose an empty or new directory){extra}")
        prompts = pd.DataFrame([r.to_dict() for r in records])
        tokens = None
        if weights_folder:
            from t2ibias.prompts.tokens import count_prompt_tokens, truncation_summary

            tokens = count_prompt_tokens(weights_folder, prompts, spec["model"].get("call_kwargs", {}).get("max_sequence_length"))
            spec["prompt_truncation"] = truncation_summary(tokens)
        if clear:
            clear_run(run_dir)
        atomic_write_text(spec_path, json.dumps(spec, indent=2) + "\n")
        _write_parquet(run_dir / PROMPTS_FILE, prompts)
        if tokens is not None:
            _write_parquet(run_dir / TOKENS_FILE, tokens)
    return spec


def run_output_names() -> tuple[str, ...]:
    """File names a run writes at its top level (images and manifest shards aside)."""
    from t2ibias.measure.stage import EMBEDDINGS_FILE, MEASURE_FILE, MEASUREMENTS_FILE, MEASURERS_FILE
    from t2ibias.metrics.instrument import INSTRUMENT_FILE
    from t2ibias.metrics.score import IMAGE_LABELS_FILE, METRICS_FILE

    return (SPEC_FILE, PROMPTS_FILE, TOKENS_FILE, MEASUREMENTS_FILE, EMBEDDINGS_FILE, MEASURE_FILE, MEASURERS_FILE,
            IMAGE_LABELS_FILE, METRICS_FILE, "metrics.csv", INSTRUMENT_FILE, "report.html", "model_card.md")


_IMAGE_NAME = re.compile(r"^[0-9a-f]{32}\.png$")
_TEMP_NAME = re.compile(r"^\..+\.tmp$")


def _is_t2ibias_spec(doc: Any) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("fingerprint"), str) and isinstance(doc.get("defining"), dict)
            and "t2ibias_version" in doc)


def check_clearable(run_dir: Path, spec: Any) -> None:
    """Refuse to clear anything but a t2ibias run's own folder (never the working or home directory)."""
    target = run_dir.resolve()
    for name, protected in (("the working directory", Path.cwd().resolve()), ("the home directory", Path.home().resolve())):
        if target == protected or target in protected.parents:
            raise UserError(
                f"--out {run_dir}: is {name}{' or a folder above it' if target != protected else ''}; "
                "--force clears only a run's own folder (pass it, e.g. --out runs/NAME)"
            )
    if not _is_t2ibias_spec(spec):
        raise UserError(f"{run_dir / SPEC_FILE}: not the spec of a t2ibias run, so --force deletes nothing here (choose another --out)")


def clear_run(run_dir: Path) -> list[Path]:
    """Delete the files a run writes (spec, prompts, images, manifest shards, measurements, metrics,
    report) and nothing else: files of other names, and folders left non-empty by them, stay.
    Returns what was deleted."""
    deleted: list[Path] = []

    def unlink(path: Path) -> None:
        if path.is_symlink() or path.is_file():
            path.unlink()
            deleted.append(path)

    for name in run_output_names():
        unlink(run_dir / name)
    for path in run_dir.glob(MANIFEST_GLOB):
        unlink(path)
    for path in run_dir.iterdir():
        if _TEMP_NAME.match(path.name):
            unlink(path)
    images = run_dir / "images"
    if images.is_dir() and not images.is_symlink():
        for folder in images.iterdir():
            if folder.is_symlink() or not folder.is_dir() or not re.fullmatch(r"[0-9a-f]{2}", folder.name):
                continue
            for path in folder.iterdir():
                if (_IMAGE_NAME.match(path.name) and path.name.startswith(folder.name)) or _TEMP_NAME.match(path.name):
                    unlink(path)
            _rmdir_if_empty(folder)
        _rmdir_if_empty(images)
    return deleted


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


class ImageJob(NamedTuple):
    """One image of a run (a tuple: cheap to make by the hundred thousand)."""

    key: str
    prompt_id: str
    text: str
    index: int
    seed: int


def image_jobs(spec: dict[str, Any], prompts: pd.DataFrame) -> list[ImageJob]:
    """Every image of the run, prompt-major; keys and seeds depend on nothing but the spec."""
    gfp = spec["generator_fingerprint"]
    params = GeneratorSpec(**{k: v for k, v in spec["model"].items()}).generation_params()
    indices = list(range(int(spec["n_seeds"])))
    base_seed = int(spec["base_seed"])
    jobs = []
    for pid, text in zip(prompts["prompt_id"], prompts["text"]):
        seeds = image_seeds(base_seed, pid, indices)
        keys = image_keys(gfp, text, seeds, params)
        jobs.extend(ImageJob(k, pid, text, i, s) for k, i, s in zip(keys, indices, seeds))
    return jobs


def _chunks(items: list[ImageJob], size: int) -> Iterator[list[ImageJob]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class GenerateResult:
    total: int
    already_done: int
    generated: int
    blocked: int
    failed: int
    seconds: float
    #: Why images failed: error text → number of images.
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def all_failed(self) -> bool:
        """Every image of the run failed: nothing was made now and nothing was made before."""
        return self.failed > 0 and self.generated == 0 and self.blocked == 0 and self.already_done == 0

    def failure_summary(self) -> str:
        """``N of M images failed (k× reason; ...)``, most frequent reason first."""
        reasons = "; ".join(f"{n}× {why}" for why, n in sorted(self.errors.items(), key=lambda kv: -kv[1])[:3])
        more = f"; {len(self.errors) - 3} other reasons" if len(self.errors) > 3 else ""
        return f"{self.failed} of {self.total} images failed ({reasons or 'no reason recorded'}{more})"


def generate_stage(
    run_dir: Path,
    device: str = "auto",
    batch_size: int = 4,
    progress: Callable[[int, int], Progress] | None = None,
) -> GenerateResult:
    """Make every image the store lacks; the pipeline is loaded only if something is missing."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    with RunLock(run_dir, "generate"):
        return _generate(Path(run_dir), device, batch_size, progress)


def _generate(run_dir: Path, device: str, batch_size: int, progress: Callable[[int, int], Progress] | None) -> GenerateResult:
    t0 = time.perf_counter()
    spec = read_spec(run_dir)
    prompts = read_prompts(run_dir, spec)
    jobs = image_jobs(spec, prompts)
    store = ImageStore(run_dir)
    store.remove_temp_files()
    done = store.done_keys(j.key for j in jobs)
    todo = [j for j in jobs if j.key not in done]
    counts = {OK: 0, BLOCKED: 0, FAILED: 0}
    errors: Counter[str] = Counter()
    if todo:
        gspec = GeneratorSpec(**{**spec["model"], "dtype": spec["model"]["dtype"]})
        dev = resolve_device(device)
        if effective_dtype(gspec, dev) != gspec.dtype:
            raise UserError(
                f"{run_dir}: was made with {gspec.dtype} weights, which --device {dev} would run in "
                f"{effective_dtype(gspec, dev)} and so change the images; use the run's device ({spec['device']})"
            )
        with quiet_hub():
            weights = resolve_weights(GeneratorSpec(**{**spec["model"], "revision": spec["model"]["revision"]}))
        if weights.identity != spec["weights"]:
            raise UserError(
                f"{run_dir}: the weights changed since this run started ({spec['weights']} → {weights.identity}); "
                "start a new run with another --out"
            )
        generator = DiffusersGenerator(gspec, weights, dev, gspec.dtype, bool(spec.get("batch_invariant", True)))
        with quiet_hub():
            generator.load()
        advance = progress(len(todo), len(done)) if progress else (lambda n: None)
        pending: list[Future] = []
        with ThreadPoolExecutor(max_workers=1) as writer:  # encode + write overlap the next batch
            for batch in _chunks(todo, batch_size):
                start = time.perf_counter()
                try:
                    results = generator.generate([j.text for j in batch], [j.seed for j in batch])
                    error = None
                except (KeyboardInterrupt, UserError):
                    raise
                except Exception as exc:  # e.g. CUDA out of memory: record, retry on the next run
                    results, error = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                per_image = (time.perf_counter() - start) / len(batch)
                for i, job in enumerate(batch):
                    row = {
                        "prompt_id": job.prompt_id,
                        "image_index": job.index,
                        "seed": job.seed,
                        "generator_fingerprint": spec["generator_fingerprint"],
                        "seconds": round(per_image, 4),
                        "batch_size": len(batch),
                        "created": now_iso(),
                    }
                    if results is None:
                        status, image = FAILED, None
                        row["error"] = error
                        errors[str(error)] += 1
                    else:
                        status = BLOCKED if results[i].blocked else OK
                        image = None if status == BLOCKED else results[i].image
                        row.update(width=results[i].image.width, height=results[i].image.height)
                    counts[status] += 1
                    row["status"] = status
                    pending.append(writer.submit(_store_one, store, job.key, image, row))
                for fut in [f for f in pending if f.done()]:
                    fut.result()
                pending = [f for f in pending if not f.done()]
                advance(len(batch))
            for fut in pending:
                fut.result()
    store.compact()
    return GenerateResult(len(jobs), len(done), counts[OK], counts[BLOCKED], counts[FAILED], time.perf_counter() - t0, dict(errors))


def _store_one(store: ImageStore, key: str, image: Any, row: dict[str, Any]) -> None:
    store.put(key, _png_bytes(image) if image is not None else None, row)
