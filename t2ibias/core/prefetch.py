"""The one read-ahead pool: decode (or prepare) the next batches on worker threads while the caller
works on the current one, in order, with memory bounded by a few batches.

:func:`prefetch_map` runs one function per job (a whole batch); :func:`prefetch_batches` decodes
items one by one into batches of a size. A decoding error is raised when its batch is reached, not
before: the batches ahead of it are still delivered. Use the generators inside
``contextlib.closing`` (or run them to the end) so that the pool is shut down at once when the
caller stops early.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from t2ibias.core.errors import UserError
from t2ibias.core.safe_load import first_line

Job = TypeVar("Job")
Result = TypeVar("Result")
Item = TypeVar("Item")
Decoded = TypeVar("Decoded")

_END = object()


def _read_ahead(jobs: Iterable[Job], submit: Callable[[Job], Any], collect: Callable[[Any], Result],
                ahead: int) -> Iterator[Result]:
    """``collect(submit(job))`` of every job in order, keeping ``ahead`` submitted jobs beyond the
    one being collected."""
    upcoming = iter(jobs)
    pending: deque[Any] = deque()
    for job in upcoming:
        pending.append(submit(job))
        if len(pending) >= max(1, ahead):
            break
    while pending:
        current = pending.popleft()
        following = next(upcoming, _END)
        if following is not _END:
            pending.append(submit(following))
        yield collect(current)


def prefetch_map(work: Callable[[Job], Result], jobs: Iterable[Job], workers: int, ahead: int = 1,
                 thread_name: str = "t2ibias-prefetch") -> Iterator[Result]:
    """``work(job)`` of every job, in order, on a pool of ``workers`` threads; while the caller holds
    one result, ``ahead`` later jobs are submitted (at most)."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=thread_name)
    try:
        yield from _read_ahead(jobs, lambda job: pool.submit(work, job), lambda f: f.result(), ahead)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prefetch_batches(items: Sequence[Item], decode: Callable[[Item], Decoded], batch_size: int, workers: int,
                     ahead: int = 1, *, name: Callable[[Item], str] | None = None, fix: str = "replace the file",
                     thread_name: str = "t2ibias-decode") -> Iterator[list[Decoded]]:
    """``decode`` of every item, one list per batch of ``batch_size`` items, in order; the items of
    the next ``ahead`` batches are decoded on ``workers`` threads meanwhile.

    ``decode`` should raise :class:`UserError` naming the file it could not read. Given ``name``
    (item → its file), any other exception of ``decode`` becomes one too:
    ``<file>: cannot read image: <first line of the error> (<fix>)``.
    """
    batches = [items[k:k + batch_size] for k in range(0, len(items), batch_size)]
    if not batches:
        return

    def one(item: Item) -> Decoded:
        try:
            return decode(item)
        except UserError:
            raise
        except Exception as exc:
            if name is None:
                raise
            raise UserError(f"{name(item)}: cannot read image: {first_line(exc)} ({fix})") from None

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=thread_name)
    try:
        yield from _read_ahead(batches, lambda batch: [pool.submit(one, item) for item in batch],
                               lambda futures: [f.result() for f in futures], ahead)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
