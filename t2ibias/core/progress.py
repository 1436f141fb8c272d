"""Progress of long loops, the same in every command: a rich bar on stderr, never on stdout.

Stages and engines do not draw anything themselves; they take a *factory*
``(total, already_done) -> advance`` (:data:`Factory`) and call ``advance(n)`` as items finish.
A command makes one with :func:`progress_bar` (``with progress_bar("measure") as bar:``), a
library caller passes :func:`quiet` or nothing. Engines that report ``progress(done, total)``
instead get :func:`done_of_total` of a factory.
"""

from __future__ import annotations

import sys
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
                    TextColumn(f"{label:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console if console is not None else stderr_console(), transient=False,
                )))
            bar = bars[0]
            task = bar.add_task(label, total=total + done, completed=done)
            return lambda n: bar.advance(task, n)

        yield factory


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
