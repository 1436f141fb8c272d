"""The Ray driver's placement rule (``RayExecutor._drive``) on a scripted stand-in for Ray: a
worker that is slow to start while the live nodes have room for it is waited for; one that no
live node has room for is dropped after the placement timeout, the others taking its share."""

from __future__ import annotations

import time
from collections import deque

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 't2ibias[ray]')")

from t2ibias.core.errors import UserError  # noqa: E402
from t2ibias.executors.ray import RayExecutor  # noqa: E402


class Ref:
    def __init__(self, value, at: float) -> None:
        self.value, self.at = value, at


class Actor:
    """Answers ``pid`` ``start_after`` seconds after it is made (never, with None); each chunk takes ``work`` s."""

    def __init__(self, cluster: Cluster, start_after: float | None, work: float) -> None:
        self.cluster, self.made, self.start_after, self.work = cluster, time.monotonic(), start_after, work
        self.pid = self._method(lambda: (1000 + len(cluster.actors), self.made + (start_after if start_after is not None else 1e9)))
        self.generate = self._method(lambda chunk: ({"chunk": chunk}, time.monotonic() + work))

    def _method(self, answer):
        class Remote:
            @staticmethod
            def remote(*args):
                value, at = answer(*args)
                return Ref(value, at)
        return Remote


class Cluster:
    """A stand-in for the ``ray`` module: ``cpus`` is what the live nodes hold in all."""

    def __init__(self, cpus: int, starts: list[float | None], work: float = 0.01) -> None:
        self.cpus, self.starts, self.work, self.actors, self.killed = cpus, list(starts), work, [], 0

    def spawn(self):
        actor = Actor(self, self.starts.pop(0) if self.starts else 0.0, self.work)
        self.actors.append(actor)
        return f"w{len(self.actors)}", actor

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": float(self.cpus)}}]

    def available_resources(self):
        return {"CPU": 0.0}

    def wait(self, refs, num_returns=1, timeout=None):
        end = time.monotonic() + (timeout if timeout is not None else 60)
        while True:
            now = time.monotonic()
            ready = [r for r in refs if r.at <= now]
            if ready or now >= end:
                return ready[:num_returns], [r for r in refs if r not in ready[:num_returns]]
            time.sleep(min(0.005, max(0.0, end - now)))

    def get(self, ref):
        return ref.value

    def kill(self, actor):
        self.killed += 1


def drive(cluster: Cluster, workers: int, chunks: int, place_timeout: float) -> tuple[RayExecutor, list]:
    ex = object.__new__(RayExecutor)
    ex.ray, ex._actors, ex.worker_pids = cluster, {}, {}
    ex.gpus_per_worker, ex.workers, ex.place_timeout = 0.0, workers, place_timeout
    ex.lost_workers = ex.dropped_workers = 0
    done: list = []
    queue = deque([i] for i in range(chunks))
    ex._drive(queue, cluster.spawn, lambda actor, name, chunk: actor.generate.remote(chunk),
              lambda chunk, out: done.append((chunk, out)), "", load=False)
    return ex, done


def test_a_worker_slow_to_start_with_room_for_it_is_waited_for(capsys):
    # two CPUs, two workers: the first starts at once, the second only at 0.35 s (timeout 0.1 s)
    cluster = Cluster(cpus=2, starts=[0.0, 0.35], work=0.1)
    ex, done = drive(cluster, workers=2, chunks=8, place_timeout=0.1)
    assert sorted(c[0] for c, _ in done) == list(range(8))
    assert ex.dropped_workers == 0 and len(ex.worker_pids) == 2  # both took part
    assert capsys.readouterr().err.count("though the cluster has room for them") == 1


def test_workers_all_slow_to_start_with_room_are_waited_for(capsys):
    # two CPUs, two workers: neither answers within the 0.1 s timeout (a loaded machine), both start at 0.35 s
    cluster = Cluster(cpus=2, starts=[0.35, 0.35], work=0.1)
    ex, done = drive(cluster, workers=2, chunks=4, place_timeout=0.1)
    assert sorted(c[0] for c, _ in done) == [0, 1, 2, 3]
    assert ex.dropped_workers == 0 and len(ex.worker_pids) == 2
    assert capsys.readouterr().err.count("though the cluster has room for them") == 1


def test_a_worker_no_node_has_room_for_is_dropped_and_the_others_go_on():
    # one CPU, two workers asked for: the second never starts and is dropped after the timeout
    cluster = Cluster(cpus=1, starts=[0.0, None], work=0.05)
    t0 = time.monotonic()
    ex, done = drive(cluster, workers=2, chunks=6, place_timeout=0.1)
    assert sorted(c[0] for c, _ in done) == list(range(6))
    assert ex.dropped_workers == 1 and list(ex.worker_pids) == ["w1"]
    assert time.monotonic() - t0 < 5


def test_no_room_at_all_stops_in_one_line():
    cluster = Cluster(cpus=0, starts=[None], work=0.05)
    with pytest.raises(UserError, match=r"no Ray worker could be placed: each needs 1 CPU, the 1 live node has 0 CPU free "
                                         r"\(waited 0.1 s"):
        drive(cluster, workers=1, chunks=2, place_timeout=0.1)


def test_worker_room_counts_each_node_by_its_cpus_and_gpus():
    from t2ibias.executors.ray import worker_room

    nodes = [{"CPU": 4.0, "GPU": 8.0}, {"CPU": 16.0, "GPU": 2.0}, {"CPU": 2.0}, {}]
    assert worker_room(nodes, 0.0) == 4 + 16 + 2  # CPU workers: one per CPU
    assert worker_room(nodes, 1.0) == 4 + 2  # one GPU each, but one CPU each too: the first node holds 4
    assert worker_room(nodes, 0.5) == 4 + 4
    assert worker_room(nodes, 2.0) == 4 + 1
