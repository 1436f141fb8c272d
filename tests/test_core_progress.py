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


def test_off_a_terminal_a_plain_line_every_n_seconds_with_rate_eta_and_failures():
    from t2ibias.core.progress import progress_log, report

    now = [100.0]
    lines: list[str] = []
    with progress_log("generate", lines.append, every=30, clock=lambda: now[0]) as factory:
        advance = factory(90, 10)  # 90 to do, 10 in the store already
        assert lines == ["generate: 10/100 images (10.0 %), 0.00 img/s, ETA unknown, 0 failed"]
        now[0] += 10
        report(advance, 20)  # 10 s in: not yet time for a line
        assert len(lines) == 1
        now[0] += 20
        report(advance, 40, failed=4)  # 30 s in: 60 new images, 2 img/s, 30 left → 15 s
        assert lines[-1] == "generate: 70/100 images (70.0 %), 2.00 img/s, ETA 0:00:15, 4 failed"
        now[0] += 5
        report(advance, 10)
        assert len(lines) == 2
        now[0] += 10
        report(advance, 20)  # the last images: a closing line whatever the interval
    assert lines[-1] == "generate: 100/100 images (100.0 %), 2.00 img/s, ETA 0:00:00, 4 failed"
    assert len(lines) == 3


def test_the_log_interval_comes_from_the_environment(monkeypatch):
    from t2ibias.core.progress import DEFAULT_LOG_SECONDS, log_seconds

    monkeypatch.setenv("T2IBIAS_PROGRESS_SECONDS", "5")
    assert log_seconds() == 5.0
    for bad in ("0", "-3", "soon", "nan"):
        monkeypatch.setenv("T2IBIAS_PROGRESS_SECONDS", bad)
        assert log_seconds() == DEFAULT_LOG_SECONDS


def test_the_bar_shows_the_rate_and_failures():
    from t2ibias.core.progress import report

    console, buf = _console()
    with progress_bar("generate", console) as bar:
        advance = bar(4, 0)
        report(advance, 2, failed=1)
        report(advance, 2)
    text = buf.getvalue()
    assert "4/4" in text and "img/s" in text and "1 failed" in text


def test_a_factory_from_python_that_takes_n_only_still_works():
    from t2ibias.core.progress import report

    got: list[int] = []
    report(got.append, 3, failed=1)
    assert got == [3]
