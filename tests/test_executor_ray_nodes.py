"""`--executor ray` when a node of the cluster is lost: a real two-node Ray cluster on this machine
(``ray.cluster_utils.Cluster``: a raylet per node), one of whose raylets is killed mid-sweep.

With a node left that holds a worker, the sweep finishes there and the run equals a local one;
with no node left that can take a worker, the driver stops with one line after the placement
timeout, exit 2, and the same command resumes once the cluster has room again.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from t2ibias.generation.stage import generate_stage
from tests.test_executor_ray import cli, finished, make_run

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 't2ibias[ray]')")

# a lost node is declared dead after ~1.5 s of failed health checks (Ray's default: ~15 s)
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                   "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture
def make_cluster(one_torch_thread):
    """Start a local multi-node cluster: ``make_cluster(head_cpus, *node_cpus)`` → (cluster, nodes)."""
    from ray.cluster_utils import Cluster

    made: list[Cluster] = []

    def make(head_cpus: int, *node_cpus: int):
        if ray.is_initialized():
            ray.shutdown()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False,
                                                                 "_system_config": FAST_NODE_DEATH})
        made.append(cluster)
        nodes = [cluster.add_node(num_cpus=n) for n in node_cpus]
        cluster.wait_for_nodes()
        return cluster, nodes

    yield make
    if ray.is_initialized():
        ray.shutdown()
    for cluster in made:
        cluster.shutdown()


@pytest.fixture(scope="module")
def local_12(tmp_path_factory, one_torch_thread):
    """A local run of 4 prompts × 3 seeds (what every Ray run of the same spec must equal)."""
    run = make_run(tmp_path_factory.mktemp("local") / "run", 4, 3)
    assert generate_stage(run, device="cpu", batch_size=4).generated == 12
    return finished(run)


def _parent(pid: int) -> int | None:
    """``pid``'s parent, from ``/proc`` (None once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _ancestors(pid: int) -> list[int]:
    """``pid``'s parent, grandparent, …"""
    out = []
    while pid > 1 and (pid := _parent(pid)) is not None:
        out.append(pid)
    return out


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    parent = {int(p.name): _parent(int(p.name)) for p in Path("/proc").glob("[0-9]*")}
    out, frontier = [], [pid]
    while frontier:
        frontier = [c for c, p in parent.items() if p in frontier]
        out += frontier
    return out


def _lose(cluster, node) -> None:
    """A machine gone: the processes the node's raylet started (its workers) SIGKILLed with it,
    not left to notice their raylet's death on their own."""
    for pid in _descendants(node.all_processes["raylet"][0].process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cluster.remove_node(node, allow_graceful=False)


@pytest.mark.slow
def test_node_lost_mid_sweep_finishes_on_the_node_left(tmp_path, make_cluster, local_12):
    """Two worker nodes of one CPU (the head takes none). The node of the first worker to write
    an image is lost at once (its worker process and its raylet SIGKILLed, as when a machine
    goes): whatever that worker held is made again on the other node, whose worker may still
    be loading then, so the test does not depend on which worker is faster."""
    from t2ibias.executors.ray import RayExecutor

    cluster, nodes = make_cluster(0, 1, 1)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    run = make_run(tmp_path / "run", 4, 3)  # 12 chunks of one image
    lost: list[tuple[float, str]] = []
    stage_over = threading.Event()

    def lose_the_first_writers_node(ex: RayExecutor) -> None:
        while not stage_over.is_set():
            shards = [p for p in run.glob("manifest-ray-*.jsonl") if p.read_text().strip()]
            if shards:
                break
            time.sleep(0.005)
        else:
            return
        name = shards[0].name.removeprefix("manifest-").removesuffix(".jsonl")
        pid = ex.worker_pids[name]
        node = next(n for n in nodes if n.all_processes["raylet"][0].process.pid in _ancestors(pid))
        _lose(cluster, node)  # its worker (pid) with it
        lost.append((time.monotonic(), name))

    with RayExecutor(workers=2, place_timeout=5) as ex:
        killer = threading.Thread(target=lose_the_first_writers_node, args=(ex,), daemon=True)
        killer.start()
        try:
            result = generate_stage(run, device="cpu", batch_size=1, executor=ex)
        finally:
            stage_over.set()
    killer.join(5)
    assert lost, "no node was lost: no worker wrote an image"
    print(f"node lost: {ex.lost_workers} worker lost ({lost[0][1]}), {ex.dropped_workers} replacement dropped, "
          f"finished {time.monotonic() - lost[0][0]:.1f} s after the node went")
    deadline = time.monotonic() + 30  # the head declares the node dead after a few failed health checks
    while len([n for n in ray.nodes() if n["Alive"]]) != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert ex.lost_workers == 1  # the worker on the lost node; its replacement found no room
    assert (result.generated, result.failed) == (12, 0)
    assert finished(run) == local_12  # same keys, same bytes, one manifest line per key


@pytest.mark.slow
def test_no_node_left_stops_in_one_line_and_resumes(tmp_path, capsys, make_cluster, monkeypatch):
    cluster, (only,) = make_cluster(0, 2)  # the head takes no worker: both are on the node that goes
    monkeypatch.setenv("T2IBIAS_RAY_PLACE_TIMEOUT", "4")
    run = make_run(tmp_path / "run", 6, 2)  # 12 images, one per chunk
    lost = threading.Event()

    def lose_the_node() -> None:
        end = time.monotonic() + 300
        while time.monotonic() < end and sum(len(p.read_text().splitlines()) for p in run.glob("manifest*.jsonl")) < 2:
            time.sleep(0.02)
        _lose(cluster, only)
        lost.set()

    killer = threading.Thread(target=lose_the_node, daemon=True)
    killer.start()
    start = time.monotonic()
    code, err = cli(capsys, "generate", str(run), "--executor", "ray", "--address", cluster.address, "--device", "cpu",
                    "--batch-size", "1")
    killer.join(5)
    assert lost.is_set() and code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: --executor ray: no Ray worker could be placed: each needs 1 CPU, the 1 live node has 0 CPU free")
    assert last.endswith("images made so far are kept, rerun to resume")
    assert err.count("error:") == 1
    print(f"no node left: stopped {time.monotonic() - start:.1f} s after the start: {last}")

    cluster.add_node(num_cpus=2)  # room again: the same command resumes
    code, err = cli(capsys, "generate", str(run), "--executor", "ray", "--address", cluster.address, "--device", "cpu",
                    "--batch-size", "1")
    assert code == 0, err
    new, kept = map(int, re.search(r"generate: (\d+) new, (\d+) already in the store", err).groups())
    assert kept >= 2 and new + kept == 12
    local = make_run(tmp_path / "local", 6, 2)
    generate_stage(local, device="cpu", batch_size=4)
    assert finished(run) == finished(local)
