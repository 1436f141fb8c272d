"""``--executor ray``: the images of a run made by Ray actors, one per GPU (or per CPU).

Each actor (:class:`GenerateWorker`) loads the run's pipeline once, after the same checks as a
local run (weights, dtype on its device), and makes the chunks of ``--batch-size`` jobs the
driver hands it, writing PNGs and its own manifest shard ``manifest-ray-<driver pid>-<n>.jsonl``
into the run directory, which must therefore be a path every node sees (a shared filesystem).
The driver gives each actor one chunk at a time and the next when it returns, so a fast worker
takes more and a worker that dies loses only the chunk it holds: that chunk goes back to the
front of the queue and a new actor takes the dead one's place. Images already written by the
dead worker are written again with the same bytes; their repeated manifest lines are merged on
read and compacted by the driver at the end, so the finished run has one line per key.

The measure stage runs on the same kind of workers (:class:`MeasureWorker`): the driver plans
(``measure.stage.plan_measure``), each worker measures chunks of the images into its own part
files (``measure_keys``), a lost worker's chunk is re-queued (its finished parts are skipped), and
the driver compacts the parts and writes ``measure.json`` (``finish_measure``).

A replacement (or any new worker) that no node can take — a node was lost and the others are
full — is dropped after ``T2IBIAS_RAY_PLACE_TIMEOUT`` seconds (default 120) without an answer,
and the live workers take its share. Only when no worker is left does the driver stop, with one
line; the images made so far are kept and the same command resumes.

Ray is imported only when this executor is made. Ray's own actor restarts are off
(``max_restarts=0``): the driver re-queues the lost chunk itself, which also covers a lost node.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.generation.stage import JobTally, generate_jobs, load_generator
from t2ibias.store.image_store import ImageStore
from t2ibias.store.rundir import ImageJob, read_spec

#: seconds to wait for a TCP answer from a cluster address before calling it unreachable
CONNECT_TIMEOUT_S = float(os.environ.get("T2IBIAS_RAY_CONNECT_TIMEOUT", "5"))
#: default seconds a new worker may take to be placed on a node and answer (importing t2ibias and
#: torch included; loading the pipeline is not) before the driver drops it and goes on without it;
#: ``T2IBIAS_RAY_PLACE_TIMEOUT`` sets it. That holds for a worker the live nodes have no room for
#: (a node lost); one they have room for (slow to start, or room held by another job) is waited for.
PLACE_TIMEOUT_S = 120.0
INSTALL_HINT = "install it with `pip install 't2ibias[ray]'`, or use --executor local"


def import_ray() -> Any:
    """The ``ray`` module, or :class:`UserError` saying how to get it."""
    # read once, when Ray is first imported: how many one-second tries to find a cluster (default 20)
    os.environ.setdefault("RAY_NUM_REDIS_GET_RETRIES", str(max(1, int(CONNECT_TIMEOUT_S))))
    try:
        import ray
    except ImportError as exc:
        raise UserError(f"--executor ray: Ray is not installed ({exc}; {INSTALL_HINT})") from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--address {address}: not HOST:PORT, ray://HOST:PORT or auto (e.g. --address 10.0.0.5:6379)")
    return host.strip("[]"), int(port)


def _check_reachable(address: str, timeout: float) -> None:
    """Fail in ``timeout`` seconds on an address nobody answers at: ``ray.init`` itself retries for
    a long time before giving up on an unreachable GCS or client server."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise UserError(f"--address {address}: no Ray cluster answers there ({why} after at most {timeout:g} s; "
                        "start one with `ray start --head`, or check the host and port)") from None


def connect(ray: Any, address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> tuple[bool, str]:
    """Connect this process to a Ray cluster. Returns (whether this call started or joined it, and
    so should shut it down; what Ray printed meanwhile). Already connected (``ray.init`` called by
    the caller): kept as is.

    Ray's C++ client logs a line on stderr for every retry while it looks for a cluster; what Ray
    prints while connecting is held back and returned, so that a failure is the one ``error:``
    line and the caller shows the rest once the cluster proved usable.
    """
    if ray.is_initialized():
        return False, ""
    if address not in (None, "auto", "local"):
        _check_reachable(address, timeout)
    import logging
    import tempfile

    with tempfile.TemporaryFile() as said:
        try:
            with _stderr_to(said):
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                         configure_logging=False)
        except ConnectionError as exc:
            raise UserError(f"--address {address}: cannot connect to a Ray cluster ({_first_line(exc)}; start one with "
                            "`ray start --head`, or leave --address out to start one on this machine)") from None
        except Exception as exc:  # e.g. ray:// without Ray Client installed, a malformed address
            raise UserError(f"--address {address}: Ray refused it ({type(exc).__name__}: {_first_line(exc)})") from None
        said.seek(0)
        return True, said.read().decode("utf-8", "replace")


@contextmanager
def _stderr_to(file: Any) -> Iterator[None]:
    """Send file descriptor 2 (what C++ libraries write to) to ``file`` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def worker_room(nodes: list[dict], gpus_per_worker: float) -> int:
    """How many workers ``nodes`` (``Resources`` of live nodes) hold in all, node by node: each
    worker asks for 1 CPU, and ``gpus_per_worker`` GPUs when that is above 0."""
    def fits(r: dict) -> int:
        cpu = int(float(r.get("CPU", 0)) + 1e-9)
        return min(cpu, int(float(r.get("GPU", 0)) / gpus_per_worker + 1e-9)) if gpus_per_worker > 0 else cpu
    return sum(fits(r) for r in nodes)


def plan_workers(ray: Any, gpus_per_worker: float | None, workers: int | None) -> tuple[float, int]:
    """(GPUs per worker, number of workers) for the cluster Ray is connected to.

    With GPUs in the cluster, one worker per ``gpus_per_worker`` GPUs (default 1) of each node, as
    far as its CPUs go (each worker takes one); without, or with ``--gpus-per-worker 0``, one worker
    per CPU of the cluster (each with one intra-op thread). :func:`worker_room` counts them;
    ``workers`` caps the count.
    """
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    node_gpus = [float(r.get("GPU", 0)) for r in nodes]
    most = max(node_gpus, default=0.0)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if most >= 1 else 0.0
    if gpus_per_worker < 0:
        raise UserError(f"--gpus-per-worker {gpus_per_worker:g}: must be 0 (CPU workers) or more")
    if gpus_per_worker > most:
        fix = (f"its largest node has {most:g}; use at most {most:g}, or 0 for CPU workers" if most else
               "it has no GPU; use --gpus-per-worker 0 (CPU workers), or a cluster with GPUs")
        raise UserError(f"--gpus-per-worker {gpus_per_worker:g}: more GPUs than one node of the Ray cluster has "
                        f"({fix})")
    possible = worker_room(nodes, gpus_per_worker)
    if possible < 1:
        raise UserError("--executor ray: the Ray cluster has no free CPU for a worker (add a node, or use --executor local)")
    if workers is not None:
        if workers < 1:
            raise UserError(f"--workers {workers}: must be at least 1")
        if workers > possible:
            raise UserError(f"--workers {workers}: the Ray cluster has room for {possible} workers "
                            f"({'GPUs' if gpus_per_worker else 'CPUs'}); use at most {possible}")
        possible = workers
    return float(gpus_per_worker), possible


class GenerateWorker:
    """A Ray actor: the run's pipeline loaded once, making chunks of jobs into its own manifest shard.

    Making it is cheap, so that its first answer (:meth:`pid`) says it was placed on a node; it
    loads the pipeline in :meth:`ready`, after the same checks as a local run. A
    :class:`UserError` while loading (changed weights, a dtype the device cannot keep) is kept
    and returned by :meth:`ready`, so the driver can say it in one line.
    """

    def __init__(self, run_dir: str, device: str, shard: str, threads: int) -> None:
        self.error: str | None = None
        self.run_dir = Path(run_dir)
        self.device, self.shard, self.threads = device, shard, threads
        self.generator: Any = None

    def ready(self) -> dict[str, Any]:
        if self.generator is None and self.error is None:
            if self.threads:
                import torch

                torch.set_num_threads(self.threads)  # images depend on the intra-op thread count on the CPU
            self.store = ImageStore(self.run_dir, worker=self.shard)
            try:
                self.spec = read_spec(self.run_dir)
                self.generator = load_generator(self.run_dir, self.spec, self.device)
            except UserError as exc:
                self.error = str(exc)
        return {"pid": os.getpid(), "host": socket.gethostname(), "error": self.error}

    def pid(self) -> int:
        return os.getpid()

    def generate(self, jobs: list[tuple]) -> dict[str, Any]:
        if self.error is not None:
            return {"user_error": self.error}
        tally = generate_jobs(self.store, self.spec, [ImageJob(*j) for j in jobs], self.generator, len(jobs))
        return tally.to_dict()


class RayExecutor:
    """Ray actors over the cluster at ``address`` (see :func:`connect`); sized by :func:`plan_workers`."""

    name = "ray"

    def __init__(self, address: str | None = None, gpus_per_worker: float | None = None, workers: int | None = None,
                 place_timeout: float | None = None) -> None:
        #: seconds a new worker may take to be placed on a node and answer before it is dropped
        if place_timeout is None:
            given = os.environ.get("T2IBIAS_RAY_PLACE_TIMEOUT", "")
            try:
                place_timeout = float(given) if given.strip() else PLACE_TIMEOUT_S
            except ValueError:
                raise UserError(f"T2IBIAS_RAY_PLACE_TIMEOUT={given}: not a number of seconds (e.g. 120)") from None
        if not place_timeout > 0:
            raise UserError(f"place_timeout {place_timeout:g}: must be more than 0 seconds")
        self.place_timeout = float(place_timeout)
        self.ray = import_ray()
        self.address = address
        self._actors: dict[str, Any] = {}
        self._owns, said = connect(self.ray, address)
        try:
            self.gpus_per_worker, self.workers = plan_workers(self.ray, gpus_per_worker, workers)
        except BaseException:
            self.close()
            raise
        sys.stderr.write(said)
        #: pid of each live actor, by shard name (tests kill one of them)
        self.worker_pids: dict[str, int] = {}
        #: actors that died during the last :meth:`generate` or :meth:`measure` (each one replaced)
        self.lost_workers = 0
        #: replacements dropped because no node could take them within :attr:`place_timeout`
        self.dropped_workers = 0

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._kill_all()
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns = False

    def _kill_all(self) -> None:
        for actor in self._actors.values():
            try:
                self.ray.kill(actor)
            except Exception:  # already gone
                pass
        self._actors.clear()

    def generate(self, run_dir: Path, spec: dict[str, Any], jobs: list[ImageJob], device: str, batch_size: int,
                 advance: Callable[[int], None]) -> JobTally:
        remote = self.ray.remote(GenerateWorker).options(
            num_cpus=1, num_gpus=self.gpus_per_worker, max_restarts=0, max_task_retries=0)
        names = (f"ray-{os.getpid()}-{i}" for i in range(1_000_000))  # one shard per actor, unique per driver
        threads = 0 if self.gpus_per_worker else 1  # a CPU worker has one CPU: one intra-op thread
        where = str(Path(run_dir).resolve())

        def spawn() -> tuple[str, Any]:
            name = next(names)
            return name, remote.remote(where, device, name, threads)

        tally = JobTally()

        def done(chunk: list, out: dict[str, Any]) -> None:
            tally.add(JobTally.from_dict(out))
            advance(len(chunk))

        queue = deque([tuple(j) for j in jobs[i : i + batch_size]] for i in range(0, len(jobs), batch_size))
        self._drive(queue, spawn, lambda actor, name, chunk: actor.generate.remote(chunk), done, "", load=True)
        return tally

    def _drive(self, queue: deque, spawn: Callable[[], tuple[str, Any]], submit: Callable[[Any, str, list], Any],
               done: Callable[[list, dict[str, Any]], None], what: str, load: bool) -> None:
        """Hand the chunks of ``queue`` to actors made by ``spawn``, one chunk per actor at a time,
        until every chunk is done (``done(chunk, result)``).

        An actor is *placed* when it first answers (``pid``); then, with ``load``, it loads its
        pipeline (``ready``) before it gets work. A dead actor's chunk goes back to the front of the
        queue and a replacement is started. An actor not placed within :attr:`place_timeout`
        seconds while the live nodes lack the room for it (:meth:`_room`; e.g. after losing a node)
        is killed and dropped, and the live actors take its share; with none left, the driver stops
        with a :class:`UserError` and the images made so far stay for a rerun to resume. An actor the
        live nodes have room for is slow to start (a busy node, a cold import) or waits for room
        another job holds, as Ray's own scheduler waits for feasible work: it gets another
        :attr:`place_timeout`, with one line on stderr the first time.
        """
        ray = self.ray
        from ray.exceptions import RayActorError

        waiting: dict[Any, tuple[str, str, list | None]] = {}  # ref → (kind, actor name, chunk)
        unplaced: dict[str, float] = {}  # actor name → deadline to answer by
        idle: list[str] = []
        losses = 0
        said_waiting = False
        self.lost_workers = self.dropped_workers = 0

        def start() -> None:
            name, actor = spawn()
            self._actors[name] = actor
            unplaced[name] = time.monotonic() + self.place_timeout
            waiting[actor.pid.remote()] = ("placed", name, None)
            if load:
                waiting[actor.ready.remote()] = ("loaded", name, None)

        def forget(name: str) -> None:
            """Drop an actor: kill it, put back the chunk it held, stop waiting for its answers."""
            for ref, (kind, owner, chunk) in list(waiting.items()):
                if owner == name:
                    del waiting[ref]
                    if chunk is not None:
                        queue.appendleft(chunk)  # only this chunk was lost: another worker makes it
            actor = self._actors.pop(name, None)
            if actor is not None:
                try:
                    ray.kill(actor)
                except Exception:  # already gone
                    pass
            self.worker_pids.pop(name, None)
            unplaced.pop(name, None)
            if name in idle:
                idle.remove(name)

        for _ in range(min(self.workers, len(queue))):
            start()
        try:
            while queue or any(kind == "chunk" for kind, _, _ in waiting.values()):
                while idle and queue:
                    name = idle.pop()
                    chunk = queue.popleft()
                    waiting[submit(self._actors[name], name, chunk)] = ("chunk", name, chunk)
                if not waiting and queue:
                    raise UserError(f"--executor ray: no Ray {what}worker could be placed: {self._lack()} "
                                    f"(waited {self.place_timeout:g} s, T2IBIAS_RAY_PLACE_TIMEOUT; {self.lost_workers} "
                                    "lost); images made so far are kept, rerun to resume")
                timeout = max(0.0, min(unplaced.values()) - time.monotonic()) if unplaced else None
                ready, _ = ray.wait(list(waiting), num_returns=1, timeout=timeout)
                for ref in ready:
                    if ref not in waiting:  # its actor was dropped meanwhile
                        continue
                    kind, name, chunk = waiting.pop(ref)
                    try:
                        out = ray.get(ref)
                    except RayActorError as exc:
                        losses += 1
                        self.lost_workers += 1
                        if chunk is not None:
                            queue.appendleft(chunk)
                        forget(name)
                        if losses > 2 * self.workers + 3:
                            raise UserError(f"--executor ray: {losses} {what}workers died ({_first_line(exc)}); "
                                            "see the Ray logs under /tmp/ray/session_latest/logs, then run the "
                                            "same command again to resume") from None
                        if queue:
                            start()
                        continue
                    if kind == "placed":
                        unplaced.pop(name, None)
                        self.worker_pids[name] = out
                        if not load:
                            idle.append(name)
                    elif kind == "loaded":
                        if out["error"]:
                            raise UserError(out["error"])
                        idle.append(name)
                    else:
                        if "user_error" in out:
                            raise UserError(out["user_error"])
                        done(chunk, out)
                        idle.append(name)
                now = time.monotonic()
                if any(deadline <= now for deadline in unplaced.values()):
                    # a worker the live nodes can hold is slow to start, or its room is held by another
                    # job for now: waited for, as Ray waits; one they cannot hold (a node lost) is dropped
                    room = self._room() - (len(self._actors) - len(unplaced))  # what placed actors leave
                    for name in sorted(unplaced, key=unplaced.__getitem__):
                        if room > 0:
                            room -= 1
                            if unplaced[name] <= now:
                                unplaced[name] = now + self.place_timeout
                                if not said_waiting:
                                    said_waiting = True
                                    sys.stderr.write(f"--executor ray: {len(unplaced)} {what}worker(s) not started after "
                                                     f"{self.place_timeout:g} s, though the cluster has room for them "
                                                     "(a busy node, or another job holding it): waiting\n")
                        elif unplaced[name] <= now:
                            self.dropped_workers += 1
                            forget(name)  # the live workers take its share
        finally:
            self._kill_all()

    def _room(self) -> int:
        """How many workers the live nodes of the cluster hold in all (:func:`worker_room`); 0 when
        the cluster does not answer."""
        try:
            nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        except Exception:  # the cluster itself is gone
            return 0
        return worker_room(nodes, self.gpus_per_worker or 0.0)

    def _lack(self) -> str:
        """What a new worker needs and what the live nodes of the cluster have."""
        try:
            nodes = [n for n in self.ray.nodes() if n.get("Alive")]
            free = self.ray.available_resources()
        except Exception as exc:  # the cluster itself is gone
            return f"the cluster does not answer ({_first_line(exc)})"
        need = f"{self.gpus_per_worker:g} GPU" if self.gpus_per_worker else "1 CPU"
        have = f"{free.get('GPU', 0):g} GPU" if self.gpus_per_worker else f"{free.get('CPU', 0):g} CPU"
        nodes_have = "1 live node has" if len(nodes) == 1 else f"{len(nodes)} live nodes have"
        return f"each needs {need}, the {nodes_have} {have} free"

    def live_pids(self) -> dict[str, int]:
        """Shard name → pid of every actor that has loaded its pipeline (asks them)."""
        names = list(self._actors)
        pids = self.ray.get([self._actors[n].pid.remote() for n in names])
        return dict(zip(names, pids))

    def worker_device(self, device: str) -> str:
        """Where the workers measure: CUDA when they hold GPUs (``--device auto`` or ``cuda``), else the CPU."""
        if device in ("auto", "cuda") or device.startswith("cuda:"):
            return "cuda" if self.gpus_per_worker else "cpu"
        return device

    def measure(self, plan: Any, advance: Callable[[int], None], threads: int | None = None) -> list[dict[str, Any]]:
        """Measure ``plan.keys`` (a ``measure.stage.MeasurePlan``) on the workers, a chunk each at a
        time, a lost worker's chunk re-queued (its finished part files are kept and skipped);
        returns what each chunk's ``measure_keys`` returned, for ``finish_measure``."""
        keys = list(plan.keys)
        if not keys:
            return []
        gpu = bool(self.gpus_per_worker)
        remote = self.ray.remote(MeasureWorker).options(num_cpus=1, num_gpus=self.gpus_per_worker, max_restarts=0,
                                                        max_task_retries=0)
        size = max(plan.batch_size, -(-len(keys) // (4 * self.workers)))  # about 4 chunks per worker: each loads the measurers
        queue = deque(keys[i : i + size] for i in range(0, len(keys), size))
        names = (f"ray-{os.getpid()}-m{i}" for i in range(1_000_000))

        def spawn() -> tuple[str, Any]:
            return next(names), remote.remote(threads or (2 if gpu else 1), 0 if gpu else 1)

        results: list[dict[str, Any]] = []

        def done(chunk: list, out: dict[str, Any]) -> None:
            results.append(out)
            advance(len(chunk))

        self._drive(queue, spawn, lambda actor, name, chunk: actor.measure.remote(plan, chunk, name), done, "measure ",
                    load=False)
        return results


class MeasureWorker:
    """A Ray actor that measures chunks of a run's images (``measure.stage.measure_keys``) into its
    own part files; the driver plans and finishes (``plan_measure`` / ``finish_measure``)."""

    def __init__(self, threads: int, cpu_threads: int) -> None:
        if cpu_threads:
            import torch

            torch.set_num_threads(cpu_threads)
        self.threads = threads

    def pid(self) -> int:
        return os.getpid()

    def measure(self, plan: Any, keys: list[str], name: str) -> dict[str, Any]:
        from t2ibias.measure.stage import measure_keys

        try:
            return measure_keys(plan, keys, name, workers=self.threads)
        except UserError as exc:
            return {"user_error": str(exc)}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
