"""The one progress factory: a rich bar on stderr, its (total, done) -> advance contract, adapters."""

from __future__ import annotations

import io

from rich.console import Console

from t2ibias.core.progress import done_of_total, progress_bar, quiet


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=100, force_terminal=False), buf


def test_progress_bar_counts_what_is_already_done():
    console, buf = _console()
    with progress_bar("measure", console) as bar:
        advance = bar(5, 2)  # 5 to do, 2 done before
        advance(3)
        advance(2)
    text = buf.getvalue()
    assert text.startswith("measure ") and "7/7" in text


def test_done_of_total_drives_one_bar_by_the_growth_of_done():
    calls: list[tuple[str, int, int]] = []

    def factory(total: int, done: int):
        calls.append(("bar", total, done))
        return lambda n: calls.append(("advance", n, 0))

    progress = done_of_total(factory)
    for done in (4, 8, 10):
        progress(done, 10)
    assert calls == [("bar", 10, 0), ("advance", 4, 0), ("advance", 4, 0), ("advance", 2, 0)]


def test_the_audit_bar_through_the_adapter():
    console, buf = _console()
    with progress_bar("audit", console) as bar:
        progress = done_of_total(bar)
        for done in (64, 120):
            progress(done, 120)
    assert "audit" in buf.getvalue() and "120/120" in buf.getvalue()


def test_quiet_shows_nothing(capsys):
    with quiet("x") as bar:
        bar(3, 0)(3)
    assert capsys.readouterr() == ("", "")


def test_progress_bar_is_a_drop_in_for_the_cli_factory():
    import inspect

    from t2ibias import cli

    assert list(inspect.signature(progress_bar).parameters)[0] == list(inspect.signature(cli._progress).parameters)[0]
    console, buf = _console()
    with progress_bar("generate", console) as mine:
        mine(4, 0)(4)
    assert "4/4" in buf.getvalue()


def test_nothing_is_drawn_before_the_first_bar():
    console, buf = _console()
    try:
        with progress_bar("measure", console):
            raise RuntimeError("failed while loading")
    except RuntimeError:
        pass
    with progress_bar("measure", console):
        pass
    assert buf.getvalue() == ""
