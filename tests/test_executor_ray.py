"""`--executor ray` on a real local Ray cluster (2 CPUs): the same run as a local one, whatever the
worker count, worker deaths or driver deaths; bad executor input fails in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2ibias.generation.stage import generate_stage
from t2ibias.runspec import SweepRequest, prepare_run
from t2ibias.store.image_store import ImageStore

REPO = Path(__file__).resolve().parent.parent
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 't2ibias[ray]')")


def make_run(path: Path, limit: int, seeds: int) -> Path:
    prepare_run(path, SweepRequest(model="tiny-random-sd", prompt_sets=["demo"], n_seeds=seeds, limit=limit, device="cpu"))
    return path


def finished(run: Path) -> dict[str, bytes]:
    """key → PNG bytes of a finished run, after checking that every manifest key is listed once."""
    store = ImageStore(run)
    keys = []
    for shard in store.manifest_files():
        keys += [json.loads(line)["key"] for line in shard.read_text().splitlines() if line.strip()]
    assert len(keys) == len(set(keys)), "a key listed twice"
    records = store.records()
    assert all(r["status"] == "ok" for r in records.values())
    assert not list(run.glob("images/*/.*.tmp"))
    return {k: store.image_file(r).read_bytes() for k, r in records.items()}


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """Run the console entry point in this process: (exit status, stderr)."""
    from t2ibias.cli import main

    capsys.readouterr()  # what came before (e.g. building the tiny model) is not this command's
    argv, sys.argv = sys.argv, ["t2ibias", *args]
    try:
        with pytest.raises(SystemExit) as stop:
            main()
    finally:
        sys.argv = argv
    return int(stop.value.code or 0), capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------- bad input (fast)

def test_ray_not_installed_is_one_line(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path / "run", 1, 1)
    before = snapshot(run)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, err = cli(capsys, "generate", str(run), "--executor", "ray", "--device", "cpu")
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error: --executor ray: Ray is not installed")
    assert "t2ibias[ray]" in err
    assert snapshot(run) == before
    code, err = cli(capsys, "sweep", "--model", "tiny-random-sd", "--limit", "1", "--seeds", "1", "--device", "cpu",
                    "--out", str(tmp_path / "new"), "--executor", "ray")
    assert code == 2 and err.startswith("error: --executor ray: Ray is not installed")
    assert not (tmp_path / "new").exists()


def test_unknown_executor_and_local_only_flags(tmp_path, capsys):
    run = make_run(tmp_path / "run", 1, 1)
    before = snapshot(run)
    code, err = cli(capsys, "generate", str(run), "--executor", "rey")
    assert code == 2 and err == "error: unknown executor 'rey': did you mean 'ray'?\n"
    code, err = cli(capsys, "generate", str(run), "--gpus-per-worker", "1")
    assert code == 2 and err.startswith("error: --gpus-per-worker: only used with --executor ray")
    assert snapshot(run) == before


def test_unreachable_address_fails_fast(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "new"
    start = time.monotonic()
    code, err = cli(capsys, "sweep", "--model", "tiny-random-sd", "--limit", "1", "--seeds", "1", "--device", "cpu",
                    "--out", str(out), "--executor", "ray", "--address", f"127.0.0.1:{port}")
    assert code == 2 and time.monotonic() - start < 15
    assert err.startswith(f"error: --address 127.0.0.1:{port}: no Ray cluster answers there") and err.count("\n") == 1
    assert not out.exists()


# ------------------------------------------------------------------------------- the Python API (fast)

def test_api_sweep_resolves_the_executor_name_through_the_registry(tmp_path, monkeypatch):
    """`t2ibias.sweep(executor=NAME, address=..., gpus_per_worker=...)` makes the executor the
    registry names with those options, makes the images there, and closes it; the run equals one
    made without an executor."""
    import t2ibias
    from t2ibias.executors import EXECUTORS
    from t2ibias.executors.local import LocalExecutor

    made: list = []

    class Counting(LocalExecutor):
        name = "counting"

        def __init__(self, **options):
            self.options, self.jobs, self.closed = options, 0, False
            made.append(self)

        def generate(self, run_dir, spec, jobs, device, batch_size, advance):
            self.jobs += len(jobs)
            return super().generate(run_dir, spec, jobs, device, batch_size, advance)

        def close(self):
            self.closed = True

    monkeypatch.setitem(EXECUTORS._factories, "counting", lambda: Counting)
    common = dict(seeds=2, limit=1, device="cpu", classifier="tiny-random-clip", min_n=1)
    t2ibias.sweep("tiny-random-sd", "demo", out=tmp_path / "counted", executor="counting", address="10.0.0.5:6379",
                  gpus_per_worker=0, **common)
    (ex,) = made
    assert ex.options == {"address": "10.0.0.5:6379", "gpus_per_worker": 0, "workers": None}
    assert ex.jobs == 2 and ex.closed and len(finished(tmp_path / "counted")) == 2
    assert (tmp_path / "counted" / "metrics.json").is_file()  # every stage ran


@pytest.mark.slow
def test_api_sweep_takes_an_executor_object_and_leaves_it_open(tmp_path):
    import t2ibias
    from t2ibias.executors.local import LocalExecutor

    class Counting(LocalExecutor):
        jobs, closed = 0, False

        def generate(self, run_dir, spec, jobs, device, batch_size, advance):
            self.jobs += len(jobs)
            return super().generate(run_dir, spec, jobs, device, batch_size, advance)

        def close(self):
            self.closed = True

    common = dict(seeds=2, limit=1, device="cpu", classifier="tiny-random-clip", min_n=1)
    given = Counting()
    t2ibias.sweep("tiny-random-sd", "demo", out=tmp_path / "given", executor=given, **common)
    assert given.jobs == 2 and not given.closed
    t2ibias.sweep("tiny-random-sd", "demo", out=tmp_path / "plain", **common)
    assert finished(tmp_path / "given") == finished(tmp_path / "plain")


@pytest.mark.parametrize("options, message", [
    ({"executor": "rey"}, "unknown executor 'rey': did you mean 'ray'?"),
    ({"executor": "local", "address": "auto"}, "--address: only used with --executor ray"),
    ({"gpus_per_worker": 1}, "--gpus-per-worker: only used with --executor ray"),
    ({"executor": 42}, "executor: a int is not an executor"),
    ({"executor": "ray", "images": lambda prompts, seeds: []}, "--executor ray: its workers load the run's own pipeline"),
])
def test_api_sweep_bad_executor_input_writes_nothing(tmp_path, options, message):
    import t2ibias
    from t2ibias.core.errors import UserError

    model = "my-maker" if "images" in options else "tiny-random-sd"
    with pytest.raises(UserError) as err:
        t2ibias.sweep(model, "demo", seeds=1, limit=1, device="cpu", out=tmp_path / "new", **options)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not (tmp_path / "new").exists()


def test_api_sweep_executor_object_with_address_is_refused(tmp_path):
    import t2ibias
    from t2ibias.core.errors import UserError
    from t2ibias.executors.local import LocalExecutor

    with pytest.raises(UserError, match=r"^address: set it when making the executor"):
        t2ibias.sweep("tiny-random-sd", "demo", seeds=1, limit=1, device="cpu", out=tmp_path / "new",
                      executor=LocalExecutor(), address="auto")
    assert not (tmp_path / "new").exists()


def test_api_sweep_ray_not_installed(tmp_path, monkeypatch):
    import t2ibias
    from t2ibias.core.errors import UserError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UserError, match=r"^--executor ray: Ray is not installed .*t2ibias\[ray\]"):
        t2ibias.sweep("tiny-random-sd", "demo", seeds=1, limit=1, device="cpu", out=tmp_path / "new", executor="ray")
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------- a real cluster

@pytest.fixture(scope="module")
def cluster(one_torch_thread):
    """A 2-CPU Ray cluster on this machine for the module; yields its GCS address (HOST:PORT)."""
    if ray.is_initialized():
        ray.shutdown()
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cluster):
    """A local run of 4 prompts × 3 seeds: what every Ray run of the same spec must equal."""
    run = make_run(tmp_path_factory.mktemp("local") / "run", 4, 3)
    result = generate_stage(run, device="cpu", batch_size=4)
    assert result.generated == 12
    return finished(run)


@pytest.mark.slow
def test_ray_runs_equal_a_local_run(tmp_path, cluster, reference):
    from t2ibias.executors.ray import RayExecutor

    for workers, batch in ((1, 3), (2, 2)):
        run = make_run(tmp_path / f"w{workers}", 4, 3)
        seen = []
        with RayExecutor(workers=workers) as ex:
            result = generate_stage(run, device="cpu", batch_size=batch, executor=ex,
                                    progress=lambda total, done: seen.append((total, done)) or seen.append)
        assert (result.generated, result.failed, ex.workers) == (12, 0, workers)
        assert seen[0] == (12, 0) and sum(n for n in seen[1:]) == 12  # one progress view, every image once
        assert finished(run) == reference


@pytest.mark.slow
def test_gpus_per_worker_beyond_the_cluster(tmp_path, capsys, cluster):
    run = make_run(tmp_path / "run", 1, 1)
    before = snapshot(run)
    code, err = cli(capsys, "generate", str(run), "--executor", "ray", "--address", cluster, "--gpus-per-worker", "1")
    assert code == 2 and err.startswith("error: --gpus-per-worker 1: more GPUs than one node of the Ray cluster has")
    assert err.count("\n") == 1 and snapshot(run) == before


@pytest.mark.slow
def test_worker_killed_mid_sweep_loses_only_its_chunk(tmp_path, cluster, reference):
    from t2ibias.executors.ray import RayExecutor

    run = make_run(tmp_path / "run", 4, 3)
    with RayExecutor(workers=2) as ex:
        killed: list[int] = []

        def progress(total, done):
            def advance(n):
                if not killed:  # after the first chunk: SIGKILL every placed worker process (one is mid-chunk)
                    for pid in ex.worker_pids.values():
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
            return advance

        result = generate_stage(run, device="cpu", batch_size=2, executor=ex, progress=progress)
    assert killed and ex.lost_workers >= 1  # every worker placed by then was killed
    assert (result.generated, result.failed) == (12, 0)
    assert finished(run) == reference


def _driver(run: Path, address: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "t2ibias.cli", "generate", str(run), "--device", "cpu", "--batch-size", "1",
                             "--executor", "ray", "--address", address],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(run: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in run.glob("manifest*.jsonl"))


def _wait_for_lines(run: Path, proc: subprocess.Popen, n: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while _lines(run) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the driver made no image in time"
        time.sleep(0.02)


@pytest.mark.slow
def test_driver_killed_then_rerun_resumes(tmp_path, cluster):
    run = make_run(tmp_path / "run", 10, 6)  # 60 images, one per chunk
    driver = _driver(run, cluster)
    _wait_for_lines(run, driver, 2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    made_before = len(ImageStore(run).done_keys(ImageStore(run).records()))
    assert 0 < made_before < 60
    again = _driver(run, cluster)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    import re

    new, kept = map(int, re.search(r"generate: (\d+) new, (\d+) already in the store", err).groups())
    assert new > 0 and kept >= made_before and new + kept == 60  # resumed: nothing made twice
    local = make_run(tmp_path / "local", 10, 6)
    generate_stage(local, device="cpu", batch_size=8)
    assert finished(run) == finished(local)


@pytest.mark.slow
def test_second_driver_is_refused(tmp_path, capsys, cluster):
    run = make_run(tmp_path / "run", 10, 6)
    first = _driver(run, cluster)
    try:
        _wait_for_lines(run, first, 1)
        code, err = cli(capsys, "generate", str(run), "--executor", "ray", "--address", cluster, "--device", "cpu")
        assert code == 2 and err.count("\n") == 1
        assert err.startswith(f"error: {run}: is being written by `t2ibias generate` (pid {first.pid}")
        out, first_err = first.communicate(timeout=300)
        assert first.returncode == 0, first_err
    finally:
        if first.poll() is None:
            first.kill()
    local = make_run(tmp_path / "local", 10, 6)
    generate_stage(local, device="cpu", batch_size=8)
    assert finished(run) == finished(local)


@pytest.mark.slow
def test_sweep_on_ray_measures_on_the_workers_too(tmp_path, capsys, cluster, monkeypatch):
    import pandas as pd

    from t2ibias.measure import stage
    from t2ibias.store.rundir import read_measurements

    parts: list[str] = []
    real_finish = stage.finish_measure
    monkeypatch.setattr(stage, "finish_measure", lambda plan, results: (parts.extend(p for r in results for p in r["parts"]),
                                                                         real_finish(plan, results))[1])

    common = ["--model", "tiny-random-sd", "--prompts", "demo", "--limit", "2", "--seeds", "3", "--device", "cpu",
              "--batch-size", "2"]
    code, err = cli(capsys, "sweep", *common, "--out", str(tmp_path / "local"))
    assert code == 0, err
    code, err = cli(capsys, "sweep", *common, "--out", str(tmp_path / "ray"), "--executor", "ray", "--address", cluster)
    assert code == 0, err
    assert "measure: 6 images measured" in err
    assert parts and all(Path(p).name.startswith(f"ray-{os.getpid()}-m") for p in parts)  # written by the Ray workers
    assert finished(tmp_path / "ray") == finished(tmp_path / "local")
    assert not list((tmp_path / "ray").glob("measurements.parts/*"))  # the workers' parts were compacted

    def table(run: Path) -> pd.DataFrame:
        df = read_measurements(run)
        return df.sort_values(["key", "unit", "face_index", "attribute"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(table(tmp_path / "ray"), table(tmp_path / "local"))
    for name in ("measure.json", "metrics.csv"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


@pytest.mark.slow
def test_measure_worker_killed_loses_only_its_chunk(tmp_path, cluster):
    import pandas as pd

    from t2ibias.api import open_run
    from t2ibias.executors.ray import RayExecutor
    from t2ibias.store.rundir import read_measurements

    tables = []
    for name in ("local", "ray"):
        run = make_run(tmp_path / name, 2, 4)
        generate_stage(run, device="cpu", batch_size=4)
        if name == "local":
            open_run(run).measure("cpu", 2, workers=1)
        else:
            with RayExecutor(workers=2) as ex:
                killed: list[int] = []

                def progress(total, done):
                    def advance(n):
                        if not killed:  # after the first chunk: SIGKILL both measure workers
                            for pid in ex.worker_pids.values():
                                os.kill(pid, signal.SIGKILL)
                                killed.append(pid)
                    return advance

                m = open_run(run).measure("cpu", 2, workers=1, executor=ex, progress=progress)
            assert killed and ex.lost_workers >= 1  # every worker placed by then was killed
            assert m["measured"] + m["cached"] == 8
        df = read_measurements(run)
        tables.append(df.sort_values(["key", "unit", "face_index", "attribute"]).reset_index(drop=True))
    assert not tables[1].duplicated(["key", "measurer", "unit", "face_index", "attribute"]).any()
    pd.testing.assert_frame_equal(tables[1], tables[0])


@pytest.mark.slow
def test_api_sweep_on_ray_equals_a_local_sweep(tmp_path, cluster):
    import t2ibias

    common = dict(seeds=3, limit=2, device="cpu", batch_size=2, min_n=1)
    local = t2ibias.sweep("tiny-random-sd", "demo", out=tmp_path / "local", **common)
    on_ray = t2ibias.sweep("tiny-random-sd", "demo", out=tmp_path / "ray", executor="ray", address=cluster,
                           gpus_per_worker=0, **common)
    assert finished(on_ray.path) == finished(local.path)
    assert (on_ray.path / "metrics.csv").read_bytes() == (local.path / "metrics.csv").read_bytes()
    assert ray.is_initialized()  # the cluster this process joined before is left as it was
