"""Run integrity: what --force may delete, one writer per run, failed stages that leave the run as it
was, exit statuses that tell the truth, one-line weight errors, Ctrl-C, and honest reports."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2ibias.store.lock import LOCK_FILE, RunLock, read_lock_holder
from tests.test_cli import SLOW_GENERATE, env, error_line, hashes, in_process

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SWEEP = ["sweep", "--model", "tiny-random-sd", "--prompts", "demo", "--seeds", "1", "--limit", "2", "--device", "cpu"]
N_DEMO_PROMPTS = 10


def snapshot(root: Path) -> dict[str, str]:
    """relative path → sha256 of every file under ``root`` (folders by their presence)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def scored(tmp_path_factory, t2ibias_cache) -> Path:
    """A finished two-prompt, one-seed ``--limit 2`` sweep of tiny-random-sd (every stage's files)."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(sys, "argv", ["t2ibias", *SWEEP, "--out", str(run)])
        from t2ibias.cli import main

        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
    finally:
        mp.undo()
    assert (run / "report.html").is_file() and not (run / LOCK_FILE).exists()
    return run


def copy_of(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    return where


# -- --force deletes only what a run wrote ---------------------------------------------------------


def user_files(folder: Path) -> dict[str, str]:
    """Files a user keeps in a folder, with names a run also writes (report.html, metrics.json...)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"thesis.tex": "my thesis", "report.html": "<p>my own report</p>", "metrics.json": "{\"mine\": 1}",
             "images/holiday.png": "not a run image", "data/spec.json": "{}"}
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return files


@pytest.mark.parametrize("spec_text", [None, '{"name": "my own spec"}', "[1, 2]", "not json"],
                         ids=["no-spec", "foreign-spec", "spec-list", "spec-not-json"])
def test_force_on_a_folder_that_is_not_a_run_deletes_nothing(spec_text, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "work"
    user_files(folder)
    if spec_text is not None:
        (folder / "spec.json").write_text(spec_text)
    before = snapshot(folder)
    code, _, err = in_process(monkeypatch, capsys, *SWEEP, "--out", str(folder), "--force")
    line = error_line(code, err)
    assert str(folder) in line
    assert snapshot(folder) == before


def test_force_on_the_working_or_home_directory_is_refused(scored, tmp_path, monkeypatch, capsys):
    run = copy_of(scored, tmp_path / "home" / "run")
    (run / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    other = [*SWEEP, "--base-seed", "7"]  # another spec, so --force would delete
    monkeypatch.chdir(run)
    code, _, err = in_process(monkeypatch, capsys, *other, "--out", ".", "--force")
    assert "working directory" in error_line(code, err)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(run))
    code, _, err = in_process(monkeypatch, capsys, *other, "--out", str(run), "--force")
    assert "home directory" in error_line(code, err)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a folder above home
    code, _, err = in_process(monkeypatch, capsys, *other, "--out", str(tmp_path), "--force")
    assert error_line(code, err)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_out_that_is_a_file_is_refused_and_kept(force, tmp_path, monkeypatch, capsys):
    target = tmp_path / "results.txt"
    target.write_text("precious")
    code, _, err = in_process(monkeypatch, capsys, *SWEEP, "--out", str(target), *(["--force"] if force else []))
    line = error_line(code, err)
    assert str(target) in line and "file" in line
    assert target.read_text() == "precious"


def test_force_replaces_a_run_but_keeps_the_users_own_files(scored, tmp_path, monkeypatch, capsys):
    run = copy_of(scored, tmp_path / "run")
    old_images = set(hashes(run))
    (run / "notes.txt").write_text("keep me")
    (run / "images" / "README").write_text("keep me too")
    (run / "plots").mkdir()
    (run / "plots" / "fig.pdf").write_text("a figure")
    other = [*SWEEP, "--base-seed", "7"]
    code, _, err = in_process(monkeypatch, capsys, *other, "--out", str(run), "--force")
    assert code == 0, err
    assert json.loads((run / "spec.json").read_text())["base_seed"] == 7
    assert (run / "notes.txt").read_text() == "keep me"
    assert (run / "images" / "README").read_text() == "keep me too"
    assert (run / "plots" / "fig.pdf").read_text() == "a figure"
    new_images = set(hashes(run))
    assert old_images.isdisjoint(new_images)
    assert sorted(p.stem for p in run.glob("images/*/*.png")) == sorted(new_images)  # old images deleted


def test_clear_run_deletes_only_run_files(scored, tmp_path):
    from t2ibias.store.rundir import clear_run

    run = copy_of(scored, tmp_path / "run")
    stray = run / "images" / "ab" / "not-a-key.png"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"x")
    deleted = clear_run(run)
    assert {p.name for p in deleted} >= {"spec.json", "prompts.parquet", "manifest-0.jsonl", "metrics.json", "report.html"}
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == ["images/ab/not-a-key.png"]


# -- one writer per run ------------------------------------------------------------------------------


HOLD = (
    "import sys\n"
    "from t2ibias.store.lock import RunLock\n"
    "with RunLock(sys.argv[1], 'sweep'):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


@pytest.fixture
def held(scored, tmp_path):
    """A copy of the run whose lock another process holds (until the test ends)."""
    run = copy_of(scored, tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env=env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield run, proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


@pytest.mark.parametrize("command", [[*SWEEP, "--out", "{run}"], ["generate", "{run}", "--device", "cpu"],
                                     ["measure", "{run}", "--device", "cpu"], ["score", "{run}"], ["report", "{run}"]],
                         ids=["sweep", "generate", "measure", "score", "report"])
def test_a_second_writer_is_refused_naming_the_holder(command, held, monkeypatch, capsys):
    run, pid = held
    before = snapshot(run)
    code, _, err = in_process(monkeypatch, capsys, *[a.format(run=run) for a in command])
    line = error_line(code, err)
    assert f"pid {pid}" in line and socket.gethostname() in line and "t2ibias sweep" in line
    assert snapshot(run) == before


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "no-flock"])
def test_a_stale_lock_of_a_dead_process_is_taken_over(flock, scored, tmp_path, monkeypatch, capsys):
    from t2ibias.store import lock

    if not flock:
        monkeypatch.setattr(lock, "fcntl", None)
    run = copy_of(scored, tmp_path / "run")
    stale = {"pid": dead_pid(), "host": socket.gethostname(), "stage": "sweep", "since": "2020-01-01T00:00:00+00:00"}
    (run / LOCK_FILE).write_text(json.dumps(stale))
    code, _, err = in_process(monkeypatch, capsys, "report", str(run))
    assert code == 0, err
    assert not (run / LOCK_FILE).exists()


def test_without_flock_a_live_holder_or_another_host_is_refused(tmp_path, monkeypatch):
    from t2ibias.store import lock

    monkeypatch.setattr(lock, "fcntl", None)
    for holder in ({"pid": os.getppid(), "host": socket.gethostname()}, {"pid": 1, "host": "another-machine"}):
        (tmp_path / LOCK_FILE).write_text(json.dumps(holder))
        with pytest.raises(lock.RunLockedError, match=f"pid {holder['pid']} on {holder['host']}"):
            RunLock(tmp_path).acquire()
        assert read_lock_holder(tmp_path) == holder  # the holder's file is left alone


def test_the_lock_is_reentrant_in_one_process_and_free_after(tmp_path):
    run = tmp_path / "new" / "run"
    with RunLock(run, "sweep", create=True):
        with RunLock(run, "generate"):
            assert read_lock_holder(run)["stage"] == "sweep"
        assert read_lock_holder(run)["pid"] == os.getpid()
        other = subprocess.run([sys.executable, "-c", HOLD, str(run)], env=env(), input="", capture_output=True, text=True)
        assert other.returncode != 0 and "is being written by" in other.stderr
        (run / "spec.json").write_text("{}")
    assert not (run / LOCK_FILE).exists()
    again = subprocess.run([sys.executable, "-c", HOLD, str(run)], env=env(), input="", capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.strip() == "held", again.stderr


def test_a_lock_that_made_the_folder_removes_it_when_nothing_was_written(tmp_path):
    run = tmp_path / "a" / "b"
    with RunLock(run, "sweep", create=True):
        assert run.is_dir()
    assert not (tmp_path / "a").exists()


# -- a failed stage leaves the run as it was -----------------------------------------------------------


def bad_checkpoint(folder: Path) -> Path:
    path = folder / "yolo-broken.pt"
    path.write_bytes(b"PK\x03\x04 this is no checkpoint" * 20)
    return path


@pytest.mark.parametrize("args", [["--person-detector", "{bad}"], ["--person-detector", "{missing}"],
                                  ["--also", "fairface:{bad}"]], ids=["bad-detector", "missing-detector", "bad-fairface"])
def test_measure_with_bad_weights_leaves_the_run_byte_identical(args, scored, tmp_path, monkeypatch, capsys):
    run = copy_of(scored, tmp_path / "run")
    bad = bad_checkpoint(tmp_path)
    before = snapshot(run)
    filled = [a.format(bad=bad, missing=tmp_path / "nope" / "yolo.pt") for a in args]
    code, _, err = in_process(monkeypatch, capsys, "measure", str(run), "--device", "cpu", *filled)
    error_line(code, err)
    assert snapshot(run) == before
    for command in (["score", str(run)], ["measure", str(run), "--device", "cpu"]):
        code, _, err = in_process(monkeypatch, capsys, *command)
        assert code == 0, err


def test_sweep_with_a_bad_detector_changes_nothing(scored, tmp_path, monkeypatch, capsys):
    run = copy_of(scored, tmp_path / "run")
    before = snapshot(run)
    code, _, err = in_process(monkeypatch, capsys, *SWEEP, "--out", str(run), "--person-detector", str(bad_checkpoint(tmp_path)))
    error_line(code, err)
    assert snapshot(run) == before
    code, _, err = in_process(monkeypatch, capsys, *SWEEP, "--out", str(tmp_path / "new"), "--person-detector",
                              str(bad_checkpoint(tmp_path)))
    error_line(code, err)
    assert not (tmp_path / "new").exists()


# -- exit status tells the truth -------------------------------------------------------------------


def generator_yaml(folder: Path, **fields: str) -> Path:
    base = {"source": "tiny:tiny-random-sd", "pipeline": "StableDiffusionPipeline", "dtype": "float32", "steps": "2",
            "guidance": "7.5", "height": "64", "width": "64", "random_weights": "true"}
    base.update(fields)
    path = folder / "my-model.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in base.items()))
    return path


@pytest.mark.parametrize("fields, needle", [({"guidance": "seven"}, "guidance"), ({"guidance": "'7.5'"}, "guidance"),
                                            ({"height": "63"}, "height"), ({"width": "65"}, "width"),
                                            ({"steps": "2.5"}, "steps"), ({"call_kwargs": "[1]"}, "call_kwargs"),
                                            ({"scheduler": "7"}, "scheduler")],
                         ids=["guidance-word", "guidance-string", "height-63", "width-65", "steps-float", "kwargs-list",
                              "scheduler-number"])
def test_a_generator_field_of_the_wrong_type_fails_before_anything_runs(fields, needle, tmp_path, monkeypatch, capsys):
    path = generator_yaml(tmp_path, **fields)
    run = tmp_path / "run"
    code, _, err = in_process(monkeypatch, capsys, "sweep", "--model", str(path), "--seeds", "1", "--limit", "1",
                              "--device", "cpu", "--out", str(run))
    line = error_line(code, err)
    line_no = 1 + next(i for i, text in enumerate(path.read_text().splitlines()) if text.startswith(f"{needle}:"))
    assert f"{path}:{line_no}" in line and needle in line
    assert not run.exists()
    code, _, err = in_process(monkeypatch, capsys, "validate", str(path))
    assert code == 2 and needle in err


def test_a_sweep_whose_every_image_fails_exits_1_saying_why(tmp_path, monkeypatch, capsys):
    from t2ibias.generation import diffusers_adapter

    def broken(self, prompts, seeds):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(diffusers_adapter.DiffusersGenerator, "generate", broken)
    run = tmp_path / "run"
    code, out, err = in_process(monkeypatch, capsys, *SWEEP, "--out", str(run))
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "2 of 2 images failed" in lines[0] and "RuntimeError: CUDA out of memory" in lines[0]
    assert "report:" not in out and not (run / "metrics.json").exists()
    assert not (run / LOCK_FILE).exists()


def test_a_partly_failed_generate_warns_with_the_count(scored, tmp_path, monkeypatch, capsys):
    from t2ibias.generation import diffusers_adapter

    run = copy_of(scored, tmp_path / "run")
    shards = sorted(run.glob("manifest*.jsonl"))
    first = shards[0].read_text().splitlines()[0]
    for shard in shards:
        shard.unlink()
    (run / "manifest-0.jsonl").write_text(first + "\n")  # one image left to make
    monkeypatch.setattr(diffusers_adapter.DiffusersGenerator, "generate",
                        lambda self, prompts, seeds: (_ for _ in ()).throw(ValueError("bad size")))
    code, _, err = in_process(monkeypatch, capsys, "generate", str(run), "--device", "cpu")
    assert code == 0, err
    assert "warning: generate: 1 of 2 images failed (1× ValueError: bad size)" in " ".join(err.split())


# -- one line for missing weights, and Ctrl-C -------------------------------------------------------


TWO_SWEEPS = (
    "import sys\n"
    "from t2ibias.cli import main\n"
    "for args in ([\"--model\", \"tiny-random-sd\", \"--classifier\", \"clip-vit-l-14-openai\"], [\"--model\", \"sdxl\"]):\n"
    "    sys.argv = [\"t2ibias\", \"sweep\", *args, \"--out\", sys.argv[1]]\n"
    "    try:\n"
    "        main()\n"
    "    except SystemExit as exc:\n"
    "        print(f\"exit {exc.code}\", file=sys.stderr, flush=True)\n"
)


def test_missing_classifier_and_generator_weights_print_one_line_each(tmp_path, t2ibias_cache):
    from t2ibias.models.tiny import tiny_model_dir

    tiny_model_dir("tiny-random-sd")  # built once per session, not inside the command under test
    hub = tmp_path / "hf"
    hub.mkdir()
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", TWO_SWEEPS, str(tmp_path / "run")], cwd=tmp_path,
                          env=env(HF_HOME=str(hub), HF_HUB_CACHE=str(hub / "hub")), capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "exit 2", "error", "exit 2"], proc.stderr
    assert "classifier 'clip-vit-l-14-openai'" in lines[0] and "weights" in lines[0]
    assert "model 'sdxl'" in lines[2] and "weights" in lines[2]
    assert time.monotonic() - start < 150
    assert not (tmp_path / "run").exists()


def test_an_unreachable_hub_is_treated_as_offline_quietly(monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub import utils as hub_utils

    from t2ibias.core import hub

    class Down:
        def head(self, *a, **k):
            raise OSError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_utils, "get_session", lambda: Down())
    monkeypatch.setattr(hub, "_reachable", {})
    with hub.quiet_hub():
        assert constants.HF_HUB_OFFLINE is True
        assert logging.getLogger("huggingface_hub").getEffectiveLevel() == logging.ERROR
    assert constants.HF_HUB_OFFLINE is False




@pytest.mark.slow
def test_ctrl_c_mid_generate_says_what_is_kept_and_exits_130(tmp_path):
    run = tmp_path / "run"
    args = ["sweep", "--model", "tiny-random-sd", "--prompts", "demo", "--seeds", "2", "--device", "cpu",
            "--batch-size", "1", "--out", str(run)]
    with open(tmp_path / "stderr.txt", "wb") as errors:
        proc = subprocess.Popen([sys.executable, "-c", SLOW_GENERATE, *args], cwd=tmp_path, env=env(),
                                stdout=subprocess.DEVNULL, stderr=errors)
        try:
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline and len(hashes(run)) < 2:
                time.sleep(0.01)
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, stderr
    assert "interrupted: finished images are kept" in stderr and "Traceback" not in stderr
    assert 2 <= len(hashes(run)) < N_DEMO_PROMPTS * 2
    assert not (run / LOCK_FILE).exists()


# -- output that does not mislead ------------------------------------------------------------------


def test_a_limit_run_reports_only_the_prompts_it_ran(scored):
    report = (scored / "report.html").read_text()
    card = (scored / "model_card.md").read_text()
    assert "No metrics for this prompt" not in report
    assert "only the first 2 prompts ran; 8 more" in " ".join(report.split())
    assert "`--limit 2` cut 8 more" in card
    import pandas as pd

    texts = pd.read_parquet(scored / "prompts.parquet")["text"].tolist()
    assert len(texts) == N_DEMO_PROMPTS
    assert all(t in report for t in texts[:2]) and not any(t in report for t in texts[2:])


def test_a_local_folder_is_flagged_and_takes_its_pipelines_defaults(tmp_path, t2ibias_cache):
    from t2ibias.models.generator_spec import GENERATORS, resolve_generator_spec
    from t2ibias.models.tiny import tiny_model_dir

    folder = tmp_path / "my-sd"
    shutil.copytree(tiny_model_dir("tiny-random-sd"), folder)
    (folder / "t2ibias_tiny.json").unlink()  # now just somebody's SD 1.x-shaped folder
    spec = resolve_generator_spec(str(folder))
    sd15 = GENERATORS.get("sd15")
    assert spec.licence != sd15.licence and "unknown" in spec.licence
    assert (spec.steps, spec.guidance) == (50, 7.5)  # StableDiffusionPipeline's own call defaults, said so
    assert "local diffusers folder" in spec.notes and "StableDiffusionPipeline's own call defaults" in spec.notes
    assert (spec.height, spec.width, spec.scheduler, spec.revision) == (64, 64, None, "local")
    assert not spec.random_weights
    shutil.copy(tiny_model_dir("tiny-random-sd") / "t2ibias_tiny.json", folder)
    assert resolve_generator_spec(str(folder)).random_weights  # a copy of a project-built random model


def test_report_says_a_local_generator_has_an_unknown_licence(scored, tmp_path):
    from t2ibias.report.html import write_model_card, write_report

    run = copy_of(scored, tmp_path / "run")
    spec = json.loads((run / "spec.json").read_text())
    spec["model"].update(revision="local", licence="unknown (a local folder)", notes="local diffusers folder /x, not a registered model")
    (run / "spec.json").write_text(json.dumps(spec))
    report = write_report(run).read_text()
    assert "is a local folder, not a registered model: its licence is unknown" in " ".join(report.split())
    assert "licence is unknown" in write_model_card(run).read_text()


@pytest.mark.parametrize("args, generate_batch, measure_batch",
                         [(["measure", "{run}", "--batch-size", "3"], None, 3),
                          ([*SWEEP, "--out", "{run}"], 4, 16),
                          ([*SWEEP, "--out", "{run}", "--batch-size", "2"], 2, 2)],
                         ids=["measure-3", "sweep-default", "sweep-2"])
def test_batch_sizes_are_the_users(args, generate_batch, measure_batch, scored, tmp_path, monkeypatch, capsys):
    from t2ibias.generation import stage as run_module
    from t2ibias.measure import stage

    run = copy_of(scored, tmp_path / "run")
    seen: dict[str, int] = {}
    real_measure, real_generate = stage.measure_stage, run_module.generate_stage
    monkeypatch.setattr(stage, "measure_stage", lambda *a, **k: (seen.__setitem__("measure", k["batch_size"]), real_measure(*a, **k))[1])
    monkeypatch.setattr(run_module, "generate_stage", lambda *a, **k: (seen.__setitem__("generate", k["batch_size"]), real_generate(*a, **k))[1])
    code, _, err = in_process(monkeypatch, capsys, *[a.format(run=run) for a in args])
    assert code == 0, err
    assert seen == ({"measure": measure_batch} if generate_batch is None else {"generate": generate_batch, "measure": measure_batch})
