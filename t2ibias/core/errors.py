"""Errors caused by user input.

The command line prints the message of a :class:`UserError` as one line on stderr and exits
with status 2, without a traceback. Messages name the thing that is wrong and how to fix it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2

#: Write failures that are the user's environment, not a bug: what to do about each.
_OS_FIXES = {
    errno.ENOSPC: "free disk space or choose another location",
    errno.EDQUOT: "free space in your quota or choose another location",
    errno.EACCES: "choose a location you may write to, or fix its permissions",
    errno.EPERM: "choose a location you may write to, or fix its permissions",
    errno.EROFS: "the disk is mounted read-only; choose a location on a writable disk",
    errno.ENOTDIR: "a file stands where a folder is needed; choose another location",
    errno.EISDIR: "a folder stands where a file is needed; choose another location",
    errno.ENAMETOOLONG: "use a shorter path",
}
USER_OS_ERRORS = frozenset(_OS_FIXES)


class UserError(Exception):
    """Bad input (unknown id, malformed file, mismatched run directory, missing weights)."""


class UnknownIdError(UserError, KeyError):
    """An id that no registry entry has; the message carries a "did you mean" hint."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


def os_error_message(exc: OSError, field: str | None = None) -> str:
    """One line for a failed read or write: the path, what the system said, and the fix."""
    where = exc.filename if exc.filename is not None else (field or "output")
    what = exc.strerror or str(exc)
    fix = _OS_FIXES.get(exc.errno or 0, "check the path")
    prefix = f"{field}: " if field and str(where) != field else ""
    return f"{prefix}{where}: {what.lower()} ({fix})"


@contextmanager
def writing(field: str) -> Iterator[None]:
    """Turn a disk-full, permission or read-only failure inside the block into a UserError
    naming the path and the option (``field``) that chose it."""
    try:
        yield
    except OSError as exc:
        if exc.errno in USER_OS_ERRORS:
            raise UserError(os_error_message(exc, field)) from None
        raise


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | Path, field: str) -> None:
    """Refuse an output folder that cannot be written, before any work is done: a file where
    the folder should be (or above it), or a folder (or its nearest existing parent) that is not
    writable or sits on a read-only disk."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{field} {path}: is a file, not a folder (choose a folder, or remove the file)")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"{field} {path}: {base} is a file, so no folder can be made under it (choose another folder)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{field} {path}: {base} is not writable (choose a folder you may write to, or fix its permissions)")


def check_output_file(path: str | Path, field: str) -> None:
    """Refuse an output file that cannot be written, before any work is done: a folder in its
    place, a file where a parent folder should be, or a parent that is not writable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{field} {path}: is a folder, not a file (name a file, e.g. {path / 'out.json'})")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{field} {path}: is not writable (choose another file, or fix its permissions)")
    check_output_dir(path.parent, field)


def decode_error_message(path: str | Path, encoding: str = "utf-8") -> str:
    """Where a text file stops being UTF-8 (byte offset and line), and how to convert it."""
    path = Path(path)
    data = path.read_bytes()
    try:
        data.decode(encoding)
        return f"{path}: not readable as {encoding.upper()} text (save it as UTF-8)"
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start:exc.start + 1].hex()
        hint = "it looks like UTF-16; " if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        return (f"{path}:{line}: byte {exc.start} (0x{bad}) is not UTF-8 ({hint}save the file as UTF-8, "
                f"e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}-utf8{path.suffix}`)")


def usage_error_message(exc: Exception) -> str:
    """One line for a bad flag or argument (a click ``UsageError``): what is wrong and where help is."""
    ctx = getattr(exc, "ctx", None)
    message = " ".join(exc.format_message().split()).rstrip(".")  # type: ignore[attr-defined]
    return f"{message} (see `{ctx.command_path} --help`)" if ctx is not None else message


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """click's NoArgsIsHelpError, UsageError and Abort: typer raises those of the click it
    bundles (``typer._click``) when it has one, else those of click itself."""
    import importlib

    mods = []
    for name in ("typer._click.exceptions", "typer.exceptions", "click.exceptions"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            continue

    def of(cls: str) -> tuple[type, ...]:
        return tuple(dict.fromkeys(getattr(m, cls) for m in mods if hasattr(m, cls)))

    return of("NoArgsIsHelpError"), of("UsageError"), of("Abort")


def run_cli(app: Any, prog_name: str, report: Callable[[str], None], unexpected_hint: str | None = None) -> int:
    """Run a typer ``app`` as a console script and return its exit status.

    Bad input of every kind ends as one ``error:`` line through ``report`` and status 2: a
    :class:`UserError`, a bad flag or argument, and a disk-full, permission or read-only failure.
    With ``unexpected_hint``, any other exception is one ``error:`` line too (plus the hint, e.g.
    where to report it) and status 1, instead of a traceback.
    """
    no_args, usage, abort = _click_exceptions()
    try:
        code = app(prog_name=prog_name, standalone_mode=False)
    except UserError as exc:
        report(f"error: {exc}")
        return EXIT_USER_ERROR
    except no_args as exc:
        exc.show()
        return exc.exit_code
    except usage as exc:
        report(f"error: {usage_error_message(exc)}")
        return EXIT_USER_ERROR
    except abort:
        report("aborted")
        return 1
    except OSError as exc:
        if exc.errno not in USER_OS_ERRORS:
            if unexpected_hint is None:
                raise
            report(f"error: {type(exc).__name__}: {exc} ({unexpected_hint})")
            return 1
        report(f"error: {os_error_message(exc)}")
        return EXIT_USER_ERROR
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if unexpected_hint is None:
            raise
        text = " ".join(str(exc).split()) or "no message"
        report(f"error: {type(exc).__name__}: {text[:300]} ({unexpected_hint})")
        return 1
    return code if isinstance(code, int) else 0


def report_problems(problems: list[str], report: Callable[[str], None]) -> None:
    """Print a validator's problems: the first as the one ``error:`` line (with how many follow),
    every other one on its own indented line below it."""
    lines = [line for p in problems for line in str(p).splitlines() if line.strip()]
    if not lines:
        return
    more = f" (and {len(lines) - 1} more problem(s) below)" if len(lines) > 1 else ""
    report(f"error: {lines[0]}{more}")
    for line in lines[1:]:
        report(f"  {line}")
