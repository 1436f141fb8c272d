"""Progress of long loops, the same in every command: on stderr, never on stdout — a rich bar
with images/s and time left on a terminal (:func:`progress_bar`), and off a terminal (nohup, CI,
a log file) a plain line every N seconds (:func:`progress_log`; ``T2IBIAS_PROGRESS_SECONDS``,
default 30)::

    generate: 1200/90000 images (1.3 %), 2.41 img/s, ETA 10:14:03, 0 failed

Stages and engines do not draw anything themselves; they take a *factory*
``(total, already_done) -> advance`` (:data:`Factory`) and call ``advance(n)`` as items finish.
A command makes one with :func:`progress_bar` (``with progress_bar("measure") as bar:``), a
library caller passes :func:`quiet` or nothing. Engines that report ``progress(done, total)``
instead get :func:`done_of_total` of a factory.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

#: ``advance(n)``: n more items are done
Advance = Callable[[int], None]
#: ``factory(total, already_done) -> advance``: one bar (or none) for ``total`` items still to do
Factory = Callable[[int, int], Advance]
#: ``bars(label)``: a context manager yielding a :data:`Factory` (:func:`progress_bar` or :func:`quiet`)
Bars = Callable[[str], AbstractContextManager[Factory]]


def stderr_console() -> Any:
    """A rich console on stderr, 140 columns wide when stderr is not a terminal (logs, CI)."""
    from rich.console import Console

    return Console(stderr=True, width=None if sys.stderr.isatty() else 140)


@contextmanager
def progress_bar(label: str, console: Any = None) -> Iterator[Factory]:
    """A rich progress bar (label, bar, done/total, elapsed, remaining) on ``console`` (default
    :func:`stderr_console`), kept on screen when done; yields its :data:`Factory`. Nothing is
    drawn until the factory is first called, so a stage with nothing to do, or one that fails
    before it starts, leaves stderr as it was."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with ExitStack() as stack:
        bars: list[Any] = []

        def factory(total: int, done: int) -> Advance:
            if not bars:
                bars.append(stack.enter_context(Progress(
                    TextColumn(f"{label:<9}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[failed]}"),
                    console=console if console is not None else stderr_console(), transient=False,
                )))
            bar = bars[0]
            task = bar.add_task(label, total=total + done, completed=done, rate="", failed="")
            start, state = time.monotonic(), {"n": 0, "failed": 0}

            def advance(n: int, failed: int = 0) -> None:
                state["n"] += n
                state["failed"] += failed
                elapsed = time.monotonic() - start
                bar.update(task, advance=n, rate=f"{state['n'] / elapsed:.2f} img/s" if elapsed > 0 else "",
                           failed=f"{state['failed']} failed" if state["failed"] else "")

            advance.counts_failures = True  # type: ignore[attr-defined]
            return advance

        yield factory


#: Seconds between two progress lines off a terminal, unless ``T2IBIAS_PROGRESS_SECONDS`` says otherwise.
DEFAULT_LOG_SECONDS = 30.0


def log_seconds() -> float:
    """``T2IBIAS_PROGRESS_SECONDS`` as a positive number of seconds, else :data:`DEFAULT_LOG_SECONDS`."""
    raw = os.environ.get("T2IBIAS_PROGRESS_SECONDS", "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_LOG_SECONDS
    return value if value > 0 and value == value else DEFAULT_LOG_SECONDS


def _clock_text(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@contextmanager
def progress_log(label: str, write: Callable[[str], None] | None = None, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic, unit: str = "images") -> Iterator[Factory]:
    """Plain progress lines for logs: one when the loop starts, one at most every ``every`` seconds
    (default :func:`log_seconds`) as items finish, and one at the end — ``label: done/total unit
    (pct), rate img/s, ETA h:mm:ss, k failed``. Rate and ETA count only this run's items.
    ``write`` takes a line (default: stderr); ``clock`` is injectable for tests."""
    every = log_seconds() if every is None else every
    emit = write or (lambda line: print(line, file=sys.stderr, flush=True))
    state: dict[str, Any] = {}

    def line() -> str:
        done, total, elapsed = state["done"], state["total"], clock() - state["start"]
        new = done - state["before"]
        rate = new / elapsed if elapsed > 0 else 0.0
        left = total - done
        eta = _clock_text(left / rate) if rate > 0 else ("0:00:00" if left == 0 else "unknown")
        pct = 100.0 * done / total if total else 100.0
        return (f"{label}: {done}/{total} {unit} ({pct:.1f} %), {rate:.2f} img/s, ETA {eta}, "
                f"{state['failed']} failed")

    def factory(total: int, done: int) -> Advance:
        state.update(total=total + done, done=done, before=done, failed=0, start=clock())
        state["last"] = state["start"]
        emit(line())

        def advance(n: int, failed: int = 0) -> None:
            state["done"] += n
            state["failed"] += failed
            now = clock()
            if now - state["last"] >= every and state["done"] < state["total"]:
                state["last"] = now
                emit(line())
            elif state["done"] >= state["total"] and not state.get("ended"):
                state["ended"] = True
                emit(line())

        advance.counts_failures = True  # type: ignore[attr-defined]
        return advance

    yield factory


def report(advance: Advance, n: int, failed: int = 0) -> None:
    """``advance(n)``, telling the failures among them to a factory of this module that counts them
    (a factory passed in from Python may take ``n`` only)."""
    if getattr(advance, "counts_failures", False):
        advance(n, failed)  # type: ignore[call-arg]
    else:
        advance(n)


@contextmanager
def quiet(label: str = "") -> Iterator[Factory]:
    """No progress shown: a :data:`Factory` whose ``advance`` does nothing."""

    def factory(total: int, done: int) -> Advance:
        return lambda n: None

    yield factory


def done_of_total(factory: Factory) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that drives one bar of ``factory``: the bar starts at
    the first call, with that call's ``total``, and advances by the growth of ``done``."""
    state: dict[str, Any] = {}

    def progress(done: int, total: int) -> None:
        if "advance" not in state:
            state["advance"], state["done"] = factory(total, 0), 0
        state["advance"](done - state["done"])
        state["done"] = done

    return progress
