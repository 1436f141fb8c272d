"""Where the generate stage makes its images: in this process (``local``) or on Ray workers (``ray``).

An executor gets the jobs a run's store lacks and makes them with
:func:`t2ibias.generation.stage.generate_jobs` wherever it runs. The process that calls it (the
driver) holds the run's lock (:class:`t2ibias.store.lock.RunLock`) for the whole stage, and each
worker writes its images and its own manifest shard (``manifest-<worker>.jsonl``) into the run
directory under that lock; the driver compacts the shards when all are done. Images do not depend
on the executor, the worker count or the batch size (one generator per image, sample-wise
execution), so a run made on Ray equals a run made here.

``--executor NAME`` looks the name up in :data:`EXECUTORS`; an executor module that needs an
optional engine imports it only when it is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from t2ibias.core.errors import UserError
from t2ibias.core.registry import Registry
from t2ibias.generation.stage import JobTally
from t2ibias.store.rundir import ImageJob


class Executor(Protocol):
    """Makes a run's missing images; a context manager that releases its workers on exit."""

    #: the name ``--executor`` takes
    name: str

    def generate(self, run_dir: Path, spec: dict[str, Any], jobs: list[ImageJob], device: str, batch_size: int,
                 advance: Callable[[int], None]) -> JobTally:
        """Make ``jobs`` (images the store lacks) in chunks of ``batch_size``, calling ``advance(n)`` as
        chunks finish; the images and manifest lines land in ``run_dir``."""
        ...

    def close(self) -> None:
        """Release the workers (and a cluster this executor started)."""
        ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: Any) -> None: ...


def _local() -> Callable[..., Executor]:
    from t2ibias.executors.local import LocalExecutor

    return LocalExecutor


def _ray() -> Callable[..., Executor]:
    from t2ibias.executors.ray import RayExecutor  # imports nothing of Ray until one is made

    return RayExecutor


#: executor name → its class (called with the options of :func:`create_executor`)
EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")
EXECUTORS.register("local", _local)
EXECUTORS.register("ray", _ray)


def create_executor(name: str = "local", *, address: str | None = None, gpus_per_worker: float | None = None,
                    workers: int | None = None) -> Executor:
    """The executor ``name`` (``--executor``), connected and checked: bad options and an unreachable
    cluster fail here, before the run directory is touched."""
    factory = EXECUTORS.get(name)
    if name == "local":
        for flag, value in (("--address", address), ("--gpus-per-worker", gpus_per_worker), ("--workers", workers)):
            if value is not None:
                raise UserError(f"{flag}: only used with --executor ray (add --executor ray, or leave {flag} out)")
        return factory()
    return factory(address=address, gpus_per_worker=gpus_per_worker, workers=workers)
