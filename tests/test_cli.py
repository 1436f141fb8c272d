"""The ``t2ibias`` command line, run the way a user runs it: end to end, resume, errors, listings."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2ibias.cli import main

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "prompts" / "demo.yaml"
N_PROMPTS, N_SEEDS = 10, 2  # every demo prompt: enough images for a kill to land mid-run
SWEEP = ["sweep", "--model", "tiny-random-sd", "--prompts", "demo", "--seeds", str(N_SEEDS), "--device", "cpu"]
SUBCOMMANDS = ["sweep", "generate", "measure", "score", "report", "ls", "validate"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def env(**extra: str) -> dict[str, str]:
    """The test session's environment (its T2IBIAS_CACHE included), offline, one torch thread."""
    e = dict(os.environ)
    e.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", COLUMNS="200", TOKENIZERS_PARALLELISM="false")
    e.update(extra)
    assert e.get("T2IBIAS_CACHE"), "the session fixture sets T2IBIAS_CACHE"
    return e


#: ``t2ibias ARGS`` with every generate batch slowed by 0.3 s, for a signal that must land mid-run.
SLOW_GENERATE = (
    "import sys, time\n"
    "from t2ibias.generation import diffusers_adapter as d\n"
    "fast = d.DiffusersGenerator.generate\n"
    "d.DiffusersGenerator.generate = lambda self, *a, **k: (time.sleep(0.3), fast(self, *a, **k))[1]\n"
    "from t2ibias.cli import main\n"
    "sys.argv = ['t2ibias', *sys.argv[1:]]\n"
    "main()\n"
)


def t2ibias(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """``python -m t2ibias.cli ARGS`` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "t2ibias.cli", *args],
        cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=300,
    )


def _exit_code(*args: str) -> int:
    """The exit status of ``t2ibias ARGS`` through the console entry point, in this process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["t2ibias", *args])
        try:
            main()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def in_process(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``t2ibias ARGS`` through the console entry point, in this process (no import cost)."""
    code = _exit_code(*args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(code: int, stderr: str) -> str:
    """The one ``error:`` line of a user error (exit 2, no traceback)."""
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def hashes(run_dir: Path) -> dict[str, str]:
    rows = {}
    for path in sorted(run_dir.glob("manifest*.jsonl"), key=lambda p: (p.name != "manifest.jsonl", p.name)):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            rows[row["key"]] = row
    return {k: r["sha256"] for k, r in rows.items() if r["status"] == "ok"}


def lines_per_key(run_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in run_dir.glob("manifest*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                key = json.loads(line)["key"]
            except ValueError:
                continue
            counts[key] = counts.get(key, 0) + 1
    return counts


def listing(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def captured(*args: str) -> subprocess.CompletedProcess:
    """``t2ibias ARGS`` through the console entry point in this process, its output captured
    without capsys (which module-scoped fixtures cannot use); returned as a subprocess would be."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _exit_code(*args)
    return subprocess.CompletedProcess(["t2ibias", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def swept(tmp_path_factory, t2ibias_cache, one_torch_thread) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted ``t2ibias sweep`` of every demo prompt × 2 seeds on tiny-random-sd, in this
    process (one torch thread, as the subprocesses that compare their images with it run)."""
    root = tmp_path_factory.mktemp("cli")
    run_dir = root / "reference"
    proc = captured(*SWEEP, "--out", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    return run_dir, proc


# -- end to end ------------------------------------------------------------------------------


def test_sweep_writes_every_stage_output_and_prints_a_summary(swept):
    run_dir, proc = swept
    for name in ("spec.json", "prompts.parquet", "measurements.parquet", "image_labels.parquet",
                 "metrics.json", "report.html", "model_card.md"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    assert list(run_dir.glob("manifest*.jsonl"))
    spec = json.loads((run_dir / "spec.json").read_text())
    assert (spec["model"]["id"], spec["n_seeds"], spec["n_prompts"]) == ("tiny-random-sd", N_SEEDS, N_PROMPTS)
    assert spec["model_is_random"] is True
    images = hashes(run_dir)
    assert len(images) == N_PROMPTS * N_SEEDS
    pngs = sorted(run_dir.glob("images/*/*.png"))
    assert sorted(p.stem for p in pngs) == sorted(images)
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert hashlib.sha256(data).hexdigest() == images[png.stem]

    rows = json.loads((run_dir / "metrics.json").read_text())["rows"]
    assert rows
    required = {"metric", "axis", "group_by", "group", "value", "ci_low", "ci_high", "n", "higher_is_better", "note"}
    for row in rows:
        assert required <= set(row), row
    assert {r["group_by"] for r in rows} >= {"all", "prompt_id"}
    assert "<html" in (run_dir / "report.html").read_text().lower()

    assert proc.stdout.strip(), "no summary printed"
    assert "tiny-random-sd" in proc.stdout
    # the headline fits a screen: all prompts and each family / intervention, not every prompt
    assert "headline" in proc.stdout and "all prompts" in proc.stdout
    assert "a portrait photo of a doctor" not in proc.stdout
    assert len(proc.stdout.splitlines()) < 60
    assert str(run_dir / "report.html") in proc.stdout.replace("\n", "")
    assert "--print all" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_score_print_all_lists_every_prompt(swept, tmp_path, monkeypatch, capsys):
    run_dir = copy_run(swept[0], tmp_path / "run")
    code, out, err = in_process(monkeypatch, capsys, "score", str(run_dir), "--print", "all")
    assert code == 0, err
    assert "a portrait photo of a doctor" in out and "all prompts" in out


# -- resume ----------------------------------------------------------------------------------


@pytest.mark.slow  # a real process killed mid-run (about 15 s); CI runs it with -m slow
def test_sigkill_mid_sweep_then_resume_matches_an_uninterrupted_run(swept, tmp_path, monkeypatch, capsys):
    reference, _ = swept
    run_dir = tmp_path / "killed"
    args = [*SWEEP, "--out", str(run_dir)]
    with open(tmp_path / "stderr.txt", "wb") as errors:
        # each batch takes at least 0.3 s, so the kill lands mid-run even on a loaded machine
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_GENERATE, *args, "--batch-size", "1"],
            cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=errors,
        )
        try:
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline and len(hashes(run_dir)) < 3:
                time.sleep(0.01)
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = hashes(run_dir)
    assert 3 <= len(before) < N_PROMPTS * N_SEEDS, "the kill did not land mid-generation"
    kept = {k: (run_dir / "images" / k[:2] / f"{k}.png").stat().st_mtime_ns for k in before}

    code, _, err = in_process(monkeypatch, capsys, *args)  # the same command again
    assert code == 0, err
    after = hashes(run_dir)
    assert after == hashes(reference)
    assert {k: (run_dir / "images" / k[:2] / f"{k}.png").stat().st_mtime_ns for k in before} == kept  # not remade
    counts = lines_per_key(run_dir)
    assert set(counts) == set(after) and set(counts.values()) == {1}
    assert [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")] == []
    assert sorted(p.stem for p in run_dir.glob("images/*/*.png")) == sorted(after)
    assert (run_dir / "report.html").is_file()


def test_generate_remakes_a_png_cut_short_without_being_asked_to_re_hash(swept, tmp_path, monkeypatch, capsys):
    run_dir = copy_run(swept[0], tmp_path / "run")
    original = hashes(run_dir)
    key = sorted(original)[0]
    png = run_dir / "images" / key[:2] / f"{key}.png"
    good = png.read_bytes()
    png.write_bytes(good[: len(good) // 2])  # what a crash before the page cache was written can leave
    code, _, err = in_process(monkeypatch, capsys, "generate", str(run_dir), "--device", "cpu")
    assert code == 0, err
    assert "1 new" in err and png.read_bytes() == good
    assert hashes(run_dir) == original


def test_generate_remakes_a_corrupt_and_a_deleted_image_with_their_original_bytes(swept, tmp_path, monkeypatch, capsys):
    reference, _ = swept
    run_dir = copy_run(reference, tmp_path / "run")
    original = hashes(run_dir)
    corrupt_key, deleted_key = sorted(original)[:2]
    corrupt = run_dir / "images" / corrupt_key[:2] / f"{corrupt_key}.png"
    good_bytes = corrupt.read_bytes()
    data = bytearray(good_bytes)
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    deleted = run_dir / "images" / deleted_key[:2] / f"{deleted_key}.png"
    deleted_bytes = deleted.read_bytes()
    deleted.unlink()

    code, _, err = in_process(monkeypatch, capsys, "validate", str(run_dir))
    assert "t2ibias generate" in error_line(code, err)  # the deleted one; the same-size change needs --deep

    code, out, err = in_process(monkeypatch, capsys, "validate", str(run_dir), "--deep")
    assert code == 1
    problems = err.strip().splitlines()
    assert len(problems) == 2 and any(str(corrupt) in p and "sha256 differs" in p for p in problems)
    assert any(str(deleted) in p and "missing" in p for p in problems)
    assert "dropped 2 manifest lines" in out and f"t2ibias generate {run_dir}" in out
    assert corrupt.exists()  # nothing deleted: generate replaces it

    code, _, err = in_process(monkeypatch, capsys, "generate", str(run_dir), "--device", "cpu")
    assert code == 0, err
    assert corrupt.read_bytes() == good_bytes
    assert deleted.read_bytes() == deleted_bytes
    assert hashes(run_dir) == original
    assert set(lines_per_key(run_dir).values()) == {1}
    code, out, err = in_process(monkeypatch, capsys, "validate", str(run_dir))
    assert code == 0, err


# -- another spec in --out -------------------------------------------------------------------


def test_out_holding_another_spec_is_refused_and_left_untouched(swept, tmp_path, monkeypatch, capsys):
    run_dir = copy_run(swept[0], tmp_path / "run")
    before = listing(run_dir)
    code, _, err = in_process(monkeypatch, capsys, "sweep", "--model", "tiny-random-sd", "--prompts", "demo",
                              "--seeds", "3", "--device", "cpu", "--out", str(run_dir))
    line = error_line(code, err)
    assert str(run_dir) in line and "--force" in line
    assert listing(run_dir) == before


def test_force_starts_another_spec_over(swept, tmp_path, monkeypatch, capsys):
    run_dir = copy_run(swept[0], tmp_path / "run")
    before = listing(run_dir)
    other = ["sweep", "--model", "tiny-random-sdxl", "--prompts", "demo", "--seeds", "1", "--limit", "1",
             "--device", "cpu", "--out", str(run_dir)]
    code, _, err = in_process(monkeypatch, capsys, *other)
    line = error_line(code, err)
    assert str(run_dir) in line and "--force" in line
    assert listing(run_dir) == before

    code, _, err = in_process(monkeypatch, capsys, *other, "--force")
    assert code == 0, err
    spec = json.loads((run_dir / "spec.json").read_text())
    assert (spec["model"]["id"], spec["n_seeds"], spec["limit"]) == ("tiny-random-sdxl", 1, 1)
    images = hashes(run_dir)
    assert len(images) == 1 and images.keys().isdisjoint(hashes(swept[0]))
    assert [p.stem for p in run_dir.glob("images/*/*.png")] == list(images)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--model", "sdxll"], ["'sdxll'", "did you mean 'sdxl'"]),
        (["--model", "tiny-random-sd", "--prompts", "no-such-set"], ["'no-such-set'", "t2ibias ls prompts"]),
        (["--model", "tiny-random-sd", "--classifier", "no-such-clip"], ["'no-such-clip'", "t2ibias ls classifiers"]),
    ],
    ids=["model", "prompt-set", "classifier"],
)
def test_unknown_ids_exit_2_with_one_error_line(args, needles, tmp_path, monkeypatch, capsys):
    code, _, err = in_process(monkeypatch, capsys, "sweep", *args, "--out", str(tmp_path / "run"))
    line = error_line(code, err)
    for needle in needles:
        assert needle in line
    assert not (tmp_path / "run").exists()


def broken_prompt_file(folder: Path) -> tuple[Path, int]:
    """demo.yaml with an unclosed bracket; returns the path and the broken line."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = DEMO.read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if "subjects: [doctor" in line)
    lines[n] = lines[n].replace("]", "")
    path = folder / "demo.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, n + 1


def test_malformed_prompt_file_is_reported_as_file_and_line(tmp_path):
    path, _ = broken_prompt_file(tmp_path / "bank")
    proc = t2ibias("sweep", "--model", "tiny-random-sd", "--prompts", str(path), "--out", str(tmp_path / "run"), cwd=tmp_path)
    line = error_line(proc.returncode, proc.stderr)
    assert re.search(rf"{re.escape(str(path))}:\d+: ", line), line


def test_prompt_file_problem_names_its_exact_line(tmp_path, monkeypatch, capsys):
    lines = DEMO.read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if "subjects: [ambitious" in line)
    lines.insert(n + 1, "    colour: red")
    path = tmp_path / "demo.yaml"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = in_process(monkeypatch, capsys, "sweep", "--model", "tiny-random-sd", "--prompts", str(path),
                              "--out", str(tmp_path / "run"))
    line = error_line(code, err)
    assert f"{path}:{n + 2}: " in line and "colour" in line


# a subprocess, for its own empty HF_HOME (read when huggingface_hub is imported); about 10 s, so in CI's
# -m slow run; test_run_integrity's missing-weights test covers the same line in the default run
@pytest.mark.slow
def test_missing_hub_weights_say_so_and_suggest_a_local_folder(tmp_path):
    empty_hub = tmp_path / "hf"
    empty_hub.mkdir()
    proc = t2ibias("sweep", "--model", "sdxl", "--out", str(tmp_path / "run"),
                   cwd=tmp_path, HF_HOME=str(empty_hub), HF_HUB_CACHE=str(empty_hub / "hub"))
    line = error_line(proc.returncode, proc.stderr)
    assert "weights" in line and "--model" in line and "folder" in line
    assert not (tmp_path / "run").exists()


def test_a_local_diffusers_folder_works_as_model(tmp_path, monkeypatch, capsys, t2ibias_cache):
    from t2ibias.models.tiny import tiny_model_dir

    folder = tmp_path / "my-sd"
    shutil.copytree(tiny_model_dir("tiny-random-sd"), folder)
    run_dir = tmp_path / "run"
    code, out, err = in_process(monkeypatch, capsys, "sweep", "--model", str(folder), "--prompts", "demo",
                                "--classifier", "tiny-random-clip", "--limit", "1", "--seeds", "1",
                                "--device", "cpu", "--out", str(run_dir))
    assert code == 0, err
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["model"]["source"] == str(folder.resolve())
    assert spec["weights"].startswith("local:")
    assert (spec["model"]["height"], spec["model"]["width"]) == (64, 64)  # the folder's own size
    rows = [json.loads(line) for p in run_dir.glob("manifest*.jsonl") for line in p.read_text().splitlines()]
    assert [(r["status"], r["width"], r["height"]) for r in rows] == [("ok", 64, 64)]
    assert (run_dir / "report.html").is_file()


def test_measure_names_an_unreadable_image_and_how_to_fix_it(swept, tmp_path, monkeypatch, capsys):
    run_dir = copy_run(swept[0], tmp_path / "run")
    (run_dir / "measurements.parquet").unlink()
    key = sorted(hashes(run_dir))[0]
    png = run_dir / "images" / key[:2] / f"{key}.png"
    garbage = b"this is not a png" * 10
    png.write_bytes(garbage)
    for path in run_dir.glob("manifest*.jsonl"):  # make the manifest vouch for the garbage
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            if row["key"] == key:
                row["sha256"] = hashlib.sha256(garbage).hexdigest()
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = in_process(monkeypatch, capsys, "measure", str(run_dir), "--device", "cpu")
    line = error_line(code, err)
    assert str(png) in line and "t2ibias generate" in line


# -- listings, validation, help --------------------------------------------------------------


@pytest.mark.parametrize("kind, expected", [("models", "tiny-random-sd"), ("prompts", "demo"),
                                            ("classifiers", "tiny-random-clip"), ("metrics", "proportion")])
def test_ls_lists_each_kind(kind, expected, monkeypatch, capsys):
    code, out, err = in_process(monkeypatch, capsys, "ls", kind)
    assert code == 0, err
    assert expected in out
    code, out, err = in_process(monkeypatch, capsys, "ls", kind, "--json")
    assert code == 0, err
    items = json.loads(out)
    assert expected in {item["id"] for item in items}


def test_ls_prompts_json_in_a_subprocess(tmp_path):
    proc = t2ibias("ls", "prompts", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    assert isinstance(items, list) and items
    for item in items:
        assert set(item) >= {"id", "family", "version", "n_subjects", "n_records"}
    demo = next(i for i in items if i["id"] == "demo")
    assert (demo["n_subjects"], demo["n_records"]) == (6, 10)


def test_validate_accepts_the_demo_set_and_rejects_a_broken_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    code, out, err = in_process(monkeypatch, capsys, "validate", "prompts/demo.yaml")
    assert code == 0, err
    assert "demo" in out
    path, _ = broken_prompt_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = in_process(monkeypatch, capsys, "validate", str(path))
    assert code == 2
    assert "Traceback" not in err
    assert re.search(rf"{re.escape(str(path))}:\d+: ", err.replace("\n", "")), err


def test_help_exits_0(tmp_path, monkeypatch, capsys):
    proc = t2ibias("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in SUBCOMMANDS:
        assert name in proc.stdout
    for name in SUBCOMMANDS:
        code, out, err = in_process(monkeypatch, capsys, name, "--help")
        assert code == 0, (name, err)
        assert "Usage" in out, name
