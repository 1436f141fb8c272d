"""One writer per run directory: an advisory lock file that names its holder.

A process that writes into a run (``sweep``, ``generate``, ``measure``, ``score``, ``report``)
holds ``t2ibias.lock`` in the run directory for as long as it writes. The file holds the
holder's pid, host, stage and start time, so a second writer is refused with one line naming
the holder. The lock itself is an ``flock`` on that file, which the kernel drops when the holder
dies, so a lock left by a killed process is taken over without asking anyone to delete it.
Where the filesystem has no ``flock``, a lock naming a dead process on this host is taken over.

The lock belongs to the driver process: executors' workers write their own manifest shards
under it without taking it. Within one process the lock is re-entrant, so a command holding it
can call stage functions that take it again.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError

try:
    import fcntl
except ImportError:  # no flock on this platform: the pid/host check alone decides
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "t2ibias.lock"

_held: dict[str, tuple[int, int]] = {}  # resolved run dir -> (fd, depth), for this process
_guard = threading.Lock()


class RunLockedError(UserError):
    """Another process is writing into the run directory."""


def read_lock_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """What the lock file of ``run_dir`` says about its holder (pid, host, stage, since), or None."""
    try:
        text = (Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _holder_text(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    stage = f"`t2ibias {holder['stage']}`" if holder.get("stage") else "a t2ibias process"
    since = f" since {holder['since']}" if holder.get("since") else ""
    return f"{stage} (pid {holder.get('pid')} on {holder.get('host')}{since})"


class RunLock:
    """Exclusive lock on one run directory, as a context manager: ``with RunLock(run, "sweep"):``.

    ``create`` makes the directory when it is missing, and removes it again on release if it is
    still empty (a sweep that fails on bad input leaves nothing behind).
    """

    def __init__(self, run_dir: str | Path, stage: str = "", create: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.create = create
        self._key: str | None = None
        self._created: Path | None = None

    @property
    def path(self) -> Path:
        return self.run_dir / LOCK_FILE

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _refuse(self) -> RunLockedError:
        return RunLockedError(
            f"{self.run_dir}: is being written by {_holder_text(read_lock_holder(self.run_dir))}; "
            "wait for it to finish, or stop it and run this again"
        )

    def acquire(self) -> None:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise UserError(f"{self.run_dir}: is a file, not a run directory (choose a directory for --out)")
        if not self.run_dir.exists():
            if not self.create:
                raise UserError(f"{self.run_dir}: no such run directory (start one with `t2ibias sweep --out {self.run_dir}`)")
            missing = self.run_dir
            while not missing.parent.exists() and missing.parent != missing:
                missing = missing.parent
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"{self.run_dir}: cannot create the run directory ({exc.strerror or exc}); choose another --out") from None
            self._created = missing
        key = str(self.run_dir.resolve())
        with _guard:
            if key in _held:
                fd, depth = _held[key]
                _held[key] = (fd, depth + 1)
                self._key = key
                return
            try:
                fd = self._lock_fd()
            except BaseException:
                self._remove_created()
                raise
            _held[key] = (fd, 1)
            self._key = key

    def _lock_fd(self) -> int:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise UserError(
                    f"{self.path}: cannot create the run's lock file ({exc.strerror or exc}); "
                    "the run directory must be writable"
                ) from None
            try:
                if not self._try_lock(fd):
                    raise self._refuse()
                try:  # the file may have been removed (released) between open and lock: retry on the new one
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                info = {"pid": os.getpid(), "host": socket.gethostname(), "stage": self.stage,
                        "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
                return fd
            except BaseException:
                os.close(fd)
                raise

    def _try_lock(self, fd: int) -> bool:
        """Take the flock; where there is none, decide from the holder the file names."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
        holder = read_lock_holder(self.run_dir)
        if not holder or holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            return True
        if holder.get("host") != socket.gethostname():
            return False  # cannot tell whether a process on another machine is alive
        return not _process_alive(holder.get("pid"))

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        with _guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
                return
            del _held[key]
            try:
                os.unlink(self.path)  # while still holding it: a waiter then retries on a fresh file
            except OSError:
                pass
            os.close(fd)
        self._remove_created()

    def _remove_created(self) -> None:
        """Remove the folders :meth:`acquire` made, innermost first, as long as they are empty."""
        if self._created is None:
            return
        top, self._created = self._created, None
        folder = self.run_dir
        while True:
            try:
                folder.rmdir()  # only ever removes an empty directory
            except OSError:
                return
            if folder == top or folder.parent == folder:
                return
            folder = folder.parent

