"""The generate stage: make every image of a run that its store lacks."""

from __future__ import annotations

import io
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from t2ibias.core.device import resolve_device
from t2ibias.core.errors import UserError
from t2ibias.core.hub import quiet_hub
from t2ibias.core.progress import report
from t2ibias.generation.diffusers_adapter import DiffusersGenerator, effective_dtype, resolve_weights
from t2ibias.generation.external import made_outside
from t2ibias.models.generator_spec import GeneratorSpec
from t2ibias.store.image_store import BLOCKED, FAILED, OK, ImageStore
from t2ibias.store.lock import RunLock
from t2ibias.store.rundir import ImageJob, image_jobs, now_iso, read_prompts, read_spec

Progress = Callable[[int], None]
#: Threads that encode PNGs (zlib releases the GIL); one writer thread still stores them in order.
PNG_THREADS = max(1, min(8, (os.cpu_count() or 2) // 2))


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


class Generator(Protocol):
    """What the generate stage calls: one image per (text, seed), in order."""

    def generate(self, texts: list[str], seeds: list[int]) -> Sequence[Any]:
        """Return one result per text with ``.image`` (a PIL image, or None when blocked) and ``.blocked``."""
        ...


class GenerateExecutor(Protocol):
    """Where the images of a run are made (``t2ibias.executors``): given the jobs the store lacks,
    make them with :func:`generate_jobs` wherever it runs and return their :class:`JobTally`."""

    def generate(self, run_dir: Path, spec: dict[str, Any], jobs: list[ImageJob], device: str, batch_size: int,
                 advance: Progress) -> JobTally:
        ...


@dataclass
class JobTally:
    """What one call of :func:`generate_jobs` did: images per status and failure reasons."""

    ok: int = 0
    blocked: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, other: JobTally) -> None:
        self.ok += other.ok
        self.blocked += other.blocked
        self.failed += other.failed
        for why, n in other.errors.items():
            self.errors[why] = self.errors.get(why, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "blocked": self.blocked, "failed": self.failed, "errors": dict(self.errors)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> JobTally:
        return cls(int(doc["ok"]), int(doc["blocked"]), int(doc["failed"]), dict(doc["errors"]))


def generate_stage(
    run_dir: Path,
    device: str = "auto",
    batch_size: int = 4,
    progress: Callable[[int, int], Progress] | None = None,
    generator: Generator | None = None,
    executor: GenerateExecutor | None = None,
) -> GenerateResult:
    """Make every image the store lacks; the pipeline is loaded only if something is missing.

    ``generator`` makes the images instead of the run's own pipeline (e.g. one the caller already
    loaded, or an image-making callable; see ``generation/external.py``): any object with
    ``generate(texts, seeds)``. It is used as given, so checking that it is the run's generator is
    the caller's job; without it, a run whose images come from Python refuses to load anything.

    ``executor`` makes the missing images elsewhere (``t2ibias.executors``, e.g. Ray workers that
    each load the run's pipeline once and write their own manifest shard); this process holds the
    run's lock throughout and compacts the shards at the end. Without it, this process makes them.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    if executor is not None and generator is not None:
        raise UserError("an executor loads the run's own pipeline on its workers; a generator passed in from Python "
                        "runs in this process only (leave out the executor)")
    with RunLock(run_dir, "generate"):
        return _generate(Path(run_dir), device, batch_size, progress, generator, executor)


def _generate(run_dir: Path, device: str, batch_size: int, progress: Callable[[int, int], Progress] | None,
              generator: Generator | None = None, executor: GenerateExecutor | None = None) -> GenerateResult:
    t0 = time.perf_counter()
    spec = read_spec(run_dir)
    prompts = read_prompts(run_dir, spec)
    jobs = image_jobs(spec, prompts)
    store = ImageStore(run_dir)
    store.remove_temp_files()
    done = store.done_keys(j.key for j in jobs)
    todo = [j for j in jobs if j.key not in done]
    tally = JobTally()
    if todo:
        advance = progress(len(todo), len(done)) if progress else (lambda n: None)
        if executor is not None:
            check_generator(run_dir, spec)
            tally = executor.generate(run_dir, spec, todo, device, batch_size, advance)
            store.remove_temp_files()  # left by a worker that was killed mid-write
        else:
            if generator is None:
                generator = load_generator(run_dir, spec, device)
            tally = generate_jobs(store, spec, todo, generator, batch_size, advance)
    store.compact()
    return GenerateResult(len(jobs), len(done), tally.ok, tally.blocked, tally.failed, time.perf_counter() - t0,
                          dict(tally.errors))


def generate_jobs(store: ImageStore, spec: dict[str, Any], jobs: list[ImageJob], generator: Generator, batch_size: int,
                  advance: Progress | None = None) -> JobTally:
    """Make ``jobs`` with ``generator`` in batches of ``batch_size``: each image goes into the store and
    its line into the store's manifest shard (``manifest-<worker>.jsonl``), flushed before the next
    batch is reported to ``advance``. The shard stays open for the next call (the caller closes the
    store); an executor's worker calls this once per chunk with its own shard."""
    counts = {OK: 0, BLOCKED: 0, FAILED: 0}
    errors: Counter[str] = Counter()
    advance = advance or (lambda n: None)
    pending: list[Future] = []
    # encode (in parallel) + write (one thread, in order) overlap the next batch
    with ThreadPoolExecutor(max_workers=1) as writer, ThreadPoolExecutor(max_workers=PNG_THREADS) as encoder:
        for batch in _chunks(jobs, batch_size):
            start = time.perf_counter()
            try:
                results = generator.generate([j.text for j in batch], [j.seed for j in batch])
                error = None
            except (KeyboardInterrupt, UserError):
                raise
            except Exception as exc:  # e.g. CUDA out of memory: record, retry on the next run
                results, error = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            per_image = (time.perf_counter() - start) / len(batch)
            failed_before = counts[FAILED]
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
                failure = error if results is None else getattr(results[i], "error", None)  # one image of a batch (replay:)
                if results is not None:
                    row.update(getattr(results[i], "source", None) or {})
                if failure:
                    status, image = FAILED, None
                    row["error"] = failure
                    errors[str(failure)] += 1
                else:
                    status = BLOCKED if results[i].blocked else OK
                    image = None if status == BLOCKED else results[i].image
                    if results[i].image is not None:  # an image maker may give no image for a refused prompt
                        row.update(width=results[i].image.width, height=results[i].image.height)
                counts[status] += 1
                row["status"] = status
                png = encoder.submit(_png_bytes, image) if image is not None else None
                pending.append(writer.submit(_store_one, store, job.key, png, row))
            for fut in [f for f in pending if f.done()]:
                fut.result()
            pending = [f for f in pending if not f.done()]
            report(advance, len(batch), failed=counts[FAILED] - failed_before)
        for fut in pending:
            fut.result()
    return JobTally(counts[OK], counts[BLOCKED], counts[FAILED], dict(errors))


def check_generator(run_dir: Path, spec: dict[str, Any]) -> None:
    """Refuse a run whose images come from Python: nothing but the caller can make them."""
    outside = made_outside(spec["weights"])
    if outside:
        how = "pipeline=pipe" if outside == "pipeline" else "images=f"
        raise UserError(
            f"{run_dir}: its images come from a {outside} passed in from Python ({spec['weights']}), which t2ibias "
            f"cannot load; make the missing ones with t2ibias.open_run({str(run_dir)!r}).generate({how})"
        )


def load_generator(run_dir: Path, spec: dict[str, Any], device: str) -> DiffusersGenerator:
    """The run's own pipeline, loaded after checking that it still makes the run's images."""
    if spec["weights"].startswith("replay:"):  # images made elsewhere, copied from the folder the spec names
        from t2ibias.generation.replay import ReplayGenerator

        return ReplayGenerator(run_dir, spec)  # type: ignore[return-value]
    gspec = GeneratorSpec(**spec["model"])
    check_generator(run_dir, spec)
    dev = resolve_device(device)
    if effective_dtype(gspec, dev) != gspec.dtype:
        raise UserError(
            f"{run_dir}: was made with {gspec.dtype} weights, which --device {dev} would run in "
            f"{effective_dtype(gspec, dev)} and so change the images; use the run's device ({spec['device']})"
        )
    with quiet_hub():
        weights = resolve_weights(gspec)
    if weights.identity != spec["weights"]:
        raise UserError(
            f"{run_dir}: the weights changed since this run started ({spec['weights']} → {weights.identity}); "
            "start a new run with another --out"
        )
    generator = DiffusersGenerator(gspec, weights, dev, gspec.dtype, bool(spec.get("batch_invariant", True)))
    with quiet_hub():
        generator.load()
    return generator


def _store_one(store: ImageStore, key: str, png: Future | None, row: dict[str, Any]) -> None:
    store.put(key, png.result() if png is not None else None, row)

