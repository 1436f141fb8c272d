"""The package installs: a wheel carries the prompt bank, the reference tables, configs and templates,
and a copy installed into a fresh venv (no source tree on its path) runs the offline demo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from t2ibias.core import paths

REPO = Path(__file__).resolve().parents[1]
DATA_FOLDERS = ("prompts", "annotations")
_SKIP = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


def _setuptools_config() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def _data_files(folder: str) -> list[str]:
    """The files of a top-level data folder that a wheel must carry (every file git would hold)."""
    return sorted(p.name for p in (REPO / folder).iterdir() if p.is_file())


# -- fast: the build configuration and the lookup ------------------------------------------------

def test_package_list_names_every_package_on_disk():
    from setuptools import find_namespace_packages

    config = _setuptools_config()
    data = {f"t2ibias._data.{name}" for name in DATA_FOLDERS}
    assert {config["package-dir"][pkg] for pkg in data} == set(DATA_FOLDERS)
    on_disk = set(find_namespace_packages(where=str(REPO), include=["t2ibias*", "facet_eval*"], exclude=["*__pycache__*"]))
    listed = set(config["packages"])
    missing = sorted(on_disk - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml (or the wheel lacks them)"
    assert sorted(listed - on_disk - data) == []


def test_data_folders_come_from_the_checkout_unless_the_package_carries_them(tmp_path, monkeypatch):
    monkeypatch.delenv("T2IBIAS_PROMPTS", raising=False)
    assert paths.prompts_dir() == paths.REPO_DIR / "prompts"
    assert paths.annotations_dir() == paths.REPO_DIR / "annotations"
    (tmp_path / "_data" / "prompts").mkdir(parents=True)
    monkeypatch.setattr(paths, "files", lambda package: tmp_path)
    assert paths.prompts_dir() == tmp_path / "_data" / "prompts"
    assert paths.annotations_dir() == paths.REPO_DIR / "annotations"  # not shipped there: the checkout's
    monkeypatch.setenv("T2IBIAS_PROMPTS", str(tmp_path / "bank"))
    assert paths.prompts_dir() == tmp_path / "bank"


# -- slow: build, install into a fresh venv, run --------------------------------------------------

def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _source_copy(dest: Path) -> Path:
    """The files git holds (tracked, plus new ones not ignored), so nothing built or cached leaks in."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(REPO, dest, ignore=_SKIP)
        return dest
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _wheel(source: Path, out: Path) -> Path:
    # --no-build-isolation: the test venv's setuptools builds it, offline.
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", out, source])
    (wheel,) = out.glob("t2ibias-*.whl")
    return wheel


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A wheel built from the source tree (what `pip install .` does) and one built from the sdist."""
    root = tmp_path_factory.mktemp("build")
    source = _source_copy(root / "src")
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    sdist = root / "sdist" / _run([sys.executable, "-c", code, root / "sdist"], cwd=source).stdout.split()[-1]
    with tarfile.open(sdist) as tar:
        tar.extractall(root / "unpacked", filter="data")
        sdist_names = tar.getnames()
    (unpacked,) = (root / "unpacked").iterdir()
    return {
        "source": source,
        "tree": _wheel(source, root / "from-tree"),
        "sdist": _wheel(unpacked, root / "from-sdist"),
        "sdist_names": sdist_names,
    }


@pytest.mark.slow
def test_sdist_and_wheels_carry_the_data_folders(built):
    top = built["sdist_names"][0].split("/")[0]
    for folder in DATA_FOLDERS:
        for name in _data_files(folder):
            assert f"{top}/{folder}/{name}" in built["sdist_names"]
    tree = set(zipfile.ZipFile(built["tree"]).namelist())
    sdist = set(zipfile.ZipFile(built["sdist"]).namelist())
    assert {n for n in tree if ".dist-info/" not in n} == {n for n in sdist if ".dist-info/" not in n}
    for folder in DATA_FOLDERS:
        for name in _data_files(folder):
            assert f"t2ibias/_data/{folder}/{name}" in tree
    shipped = {str(p.relative_to(REPO)) for d in ("t2ibias/configs", "t2ibias/report/templates", "facet_eval/templates")
               for p in (REPO / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped and shipped <= tree
    assert not any(n.startswith(("prompts/", "annotations/", "tests/")) for n in tree)


@pytest.fixture(scope="module")
def fresh(built, tmp_path_factory):
    """A venv holding only the wheel; the dependencies come from this venv's site-packages by a plain
    path line in a .pth (which runs none of the .pth files there, so no editable-install finder)."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", built["tree"]])
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    # Written after the install, so pip does not see this venv's (editable) t2ibias as installed there.
    (site / "shared-deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "T2IBIAS_PROMPTS", "PYTHONSAFEPATH")}
    env.update(T2IBIAS_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cwd = root / "cwd"
    cwd.mkdir()
    return {"venv": venv, "python": python, "bin": venv / "bin", "env": env, "cwd": cwd}


def _in_fresh(fresh, *args) -> subprocess.CompletedProcess:
    return _run(list(args), cwd=fresh["cwd"], env=fresh["env"])


@pytest.mark.slow
def test_installed_copy_is_the_wheel_not_the_checkout(fresh):
    code = ("import json, sys, t2ibias, t2ibias.core.paths as p; print(json.dumps({'file': t2ibias.__file__,"
            " 'editable': [m for m in sys.modules if 'editable' in m], 'prompts': str(p.prompts_dir()),"
            " 'annotations': str(p.annotations_dir())}))")
    got = json.loads(_in_fresh(fresh, fresh["python"], "-c", code).stdout)
    package = Path(got["file"]).resolve().parent
    assert package.is_relative_to(fresh["venv"].resolve())
    assert got["editable"] == []
    for key in DATA_FOLDERS:
        assert Path(got[key]).resolve() == package / "_data" / key
        assert sorted(p.name for p in Path(got[key]).iterdir()) == _data_files(key)


@pytest.mark.slow
def test_installed_copy_lists_every_prompt_set_and_reference_table(fresh):
    sets = sorted(p.stem for p in (REPO / "prompts").glob("*.yaml"))
    listed = json.loads(_in_fresh(fresh, fresh["bin"] / "t2ibias", "ls", "prompts", "--json").stdout)
    assert sorted(row["id"] for row in listed) == sets
    table = _in_fresh(fresh, fresh["bin"] / "t2ibias", "ls", "prompts").stdout
    assert all(s in table for s in sets)
    # Every table is found and every subject's reference row resolves; the swatches come from their CSV.
    code = """
import json
from t2ibias.prompts import bank, references
from t2ibias.measure import skin_tone
named, rows = set(references.KEY_COLUMNS), 0
for name in bank.prompt_sets().names():
    for r in bank.expand(bank.resolve_prompt_set(name)):
        if r.reference_table and r.reference:
            references.reference_distribution(r.reference_table, r.reference)
            named.add(r.reference_table)
            rows += 1
print(json.dumps({"known": references._known_tables(), "rows": rows,
                  "sizes": {t: len(references.load_reference_table(t)) for t in sorted(named)},
                  "swatches": list(skin_tone.load_mst_swatches()) == list(skin_tone.MST_HEX),
                  "mst": (skin_tone.annotations_dir() / "monk_skin_tone.csv").is_file()}))
"""
    got = json.loads(_in_fresh(fresh, fresh["python"], "-c", code).stdout)
    assert got["known"] == sorted(p.stem for p in (REPO / "annotations").glob("*.csv"))
    assert got["sizes"] and all(n > 0 for n in got["sizes"].values())
    assert got["rows"] > 0 and got["mst"] and got["swatches"]


@pytest.mark.slow
def test_installed_copy_runs_the_demo_sweep_like_the_checkout(fresh, tmp_path):
    args = ["sweep", "--model", "tiny-random-sd", "--prompts", "demo", "--limit", "2", "--seeds", "1", "--device", "cpu"]
    _in_fresh(fresh, fresh["bin"] / "t2ibias", *args, "--out", "run")
    out = fresh["cwd"] / "run"
    for name in ("spec.json", "metrics.json", "report.html", "model_card.md"):
        assert (out / name).is_file(), name
    # The same run from the source checkout gives the same numbers.
    env = {**fresh["env"], "PYTHONPATH": str(REPO), "T2IBIAS_CACHE": str(tmp_path / "cache")}
    _run([sys.executable, "-c", "from t2ibias.cli import main; main()", *args, "--out", tmp_path / "run"], cwd=tmp_path, env=env)
    assert (out / "metrics.json").read_bytes() == (tmp_path / "run" / "metrics.json").read_bytes()


@pytest.mark.slow
def test_editable_install_reads_the_folders_of_the_checkout(built, tmp_path):
    source = built["source"]
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # What `pip install -e .` does, with this venv's setuptools as the backend (the fresh one has none).
    code = "import sys; from setuptools import build_meta as b; print(b.build_editable(sys.argv[1]))"
    wheel = tmp_path / "dist" / _run([sys.executable, "-c", code, tmp_path / "dist"], cwd=source).stdout.split()[-1]
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel])
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "shared-deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "T2IBIAS_PROMPTS")}
    code = ("import json, t2ibias, t2ibias.core.paths as p; print(json.dumps([t2ibias.__file__,"
            " str(p.prompts_dir()), str(p.annotations_dir())]))")
    file, prompts, annotations = json.loads(_run([python, "-c", code], cwd=tmp_path, env=env).stdout)
    assert Path(file).resolve() == source.resolve() / "t2ibias" / "__init__.py"
    assert Path(prompts) == source.resolve() / "prompts"
    assert Path(annotations) == source.resolve() / "annotations"
    listed = json.loads(_run([venv / "bin" / "t2ibias", "ls", "prompts", "--json"], cwd=tmp_path, env=env).stdout)
    assert sorted(row["id"] for row in listed) == sorted(p.stem for p in (REPO / "prompts").glob("*.yaml"))
