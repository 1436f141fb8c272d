"""The Python API (``t2ibias.sweep``, ``t2ibias.open_run``, ``Run``): the same run as the command
line, stage methods on an existing run, and images from a loaded pipeline or from any callable."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import t2ibias
from t2ibias.api import GenerationFailed, prepare
from t2ibias.cli import app
from t2ibias.core.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SEEDS, LIMIT = 2, 2
OPTIONS = {"seeds": SEEDS, "limit": LIMIT, "device": "cpu"}
CLI_OPTIONS = ["--seeds", str(SEEDS), "--limit", str(LIMIT), "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*args: str) -> None:
    """``t2ibias ARGS`` in this process; raises what the command raises."""
    app(args=list(args), prog_name="t2ibias", standalone_mode=False)


def png_bytes(run: t2ibias.Run) -> dict[tuple[str, int], bytes]:
    return {(r.prompt_id, r.image_index): Path(r.file).read_bytes() for r in run.images.itertuples() if r.status == "ok"}


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, t2ibias_cache) -> Path:
    out = tmp_path_factory.mktemp("api") / "cli"
    cli("sweep", "--model", "tiny-random-sd", "--prompts", "demo", *CLI_OPTIONS, "--out", str(out))
    return out


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, t2ibias_cache) -> t2ibias.Run:
    return t2ibias.sweep("tiny-random-sd", "demo", out=tmp_path_factory.mktemp("api") / "api", **OPTIONS)


# -- the same run as the command line ------------------------------------------------------------

def test_sweep_from_python_writes_the_bytes_the_command_line_writes(cli_run, api_run):
    for name in ("metrics.json", "metrics.csv", "instrument.json", "image_labels.parquet", "measurements.parquet"):
        assert (api_run.path / name).read_bytes() == (cli_run / name).read_bytes(), name
    spec, cli_spec = (json.loads((d / "spec.json").read_text()) for d in (api_run.path, cli_run))
    assert {k: v for k, v in spec.items() if k != "created"} == {k: v for k, v in cli_spec.items() if k != "created"}
    assert png_bytes(api_run) == png_bytes(t2ibias.open_run(cli_run))
    assert (api_run.path / "report.html").is_file() and (api_run.path / "model_card.md").is_file()


def test_a_run_reads_its_files(api_run):
    run = t2ibias.open_run(api_run.path)
    assert run.spec["fingerprint"] == api_run.spec["fingerprint"] and run.spec["classifier"]["id"] == "tiny-random-clip"
    assert len(run.prompts) == LIMIT
    images = run.images
    assert len(images) == SEEDS * LIMIT and set(images["status"]) == {"ok"}
    assert all(Path(f).is_file() for f in images["file"])
    assert set(run.image_labels["key"]) == set(images["key"])
    assert run.metrics == json.loads((run.path / "metrics.json").read_text())["rows"]
    assert isinstance(run.instrument, dict)
    assert "tiny-random-sd" in repr(run) and Path(run) == run.path


def test_stage_methods_rerun_one_stage(api_run, tmp_path):
    run = t2ibias.open_run(shutil.copytree(api_run.path, tmp_path / "run"))
    original = (run.path / "metrics.json").read_bytes()
    g = run.generate(device="cpu")
    assert (g.generated, g.already_done, g.failed) == (0, SEEDS * LIMIT, 0)
    m = run.measure(device="cpu")
    assert (m["measured"], m["cached"]) == (0, SEEDS * LIMIT)
    doc = run.score(ci="wilson", min_n=2)
    assert doc["intervals"]["share_method"] == "wilson" and doc["intervals"]["min_n"] == 2
    assert run.metrics == doc["rows"] and (run.path / "metrics.json").read_bytes() != original
    run.score()
    assert (run.path / "metrics.json").read_bytes() == original
    (run.path / "report.html").unlink()
    assert run.report() == run.path / "report.html" and run.report().is_file()


# -- images made in Python -------------------------------------------------------------------------

class Squares:
    """An image maker whose images are known: one small image per (prompt, seed); refuses one prompt."""

    def __init__(self, refuse: str | None = None) -> None:
        self.calls: list[tuple[list[str], list[int]]] = []
        self.made: dict[tuple[str, int], Image.Image] = {}
        self.refuse = refuse

    def __call__(self, prompts: list[str], seeds: list[int]) -> list[Image.Image | None]:
        self.calls.append((prompts, seeds))
        out: list[Image.Image | None] = []
        for text, seed in zip(prompts, seeds):
            if text == self.refuse:
                out.append(None)
                continue
            image = Image.new("RGB", (24, 40), (seed % 251, len(text) % 251, seed // 7 % 251))
            image.putpixel((3, 5), (1, 2, 3))
            self.made[(text, seed)] = image
            out.append(image)
        return out


def test_an_image_maker_makes_a_run_of_exactly_the_images_it_returned(tmp_path):
    first = prepare("tiny-random-sd", out=tmp_path / "probe", limit=LIMIT).prompts["text"].iloc[0]
    maker = Squares(refuse=first)
    run = t2ibias.sweep("squares", "demo", images=maker, revision="v1", batch_size=3, classifier="tiny-random-clip",
                        out=tmp_path / "run", **OPTIONS)
    assert [len(p) for p, _ in maker.calls] == [3, 1]
    assert run.spec["model"]["id"] == "squares" and run.spec["model"]["revision"] == "v1"
    assert run.spec["weights"] == "callable:squares@v1"
    images = run.images
    assert (images["status"] == "blocked").sum() == SEEDS and (images["status"] == "ok").sum() == SEEDS * (LIMIT - 1)
    for row in images[images["status"] == "ok"].itertuples():
        with Image.open(row.file) as stored:
            want = maker.made[(row.text, row.seed)]
            assert (stored.mode, stored.size, stored.tobytes()) == (want.mode, want.size, want.tobytes())
    assert (run.path / "metrics.json").is_file()

    # a missing image is made again by the same maker, from Python only
    gone = images[images["status"] == "ok"].iloc[0]
    Path(gone["file"]).unlink()
    with pytest.raises(UserError) as exc:
        cli("generate", str(run.path))
    assert "open_run" in one_line(exc) and "images=f" in str(exc.value)
    again = Squares()
    assert run.generate(images=again).generated == 1 and again.calls == [([gone["text"]], [gone["seed"]])]
    assert png_bytes(run)[(gone["prompt_id"], gone["image_index"])] == Path(gone["file"]).read_bytes()


def test_an_image_maker_that_always_raises_fails_the_sweep_saying_why(tmp_path):
    def down(prompts, seeds):
        raise ConnectionError("503 Service Unavailable")

    with pytest.raises(GenerationFailed) as exc:
        t2ibias.sweep("down", images=down, classifier="tiny-random-clip", out=tmp_path / "run", **OPTIONS)
    assert "ConnectionError: 503 Service Unavailable" in str(exc.value)
    assert exc.value.result.failed == SEEDS * LIMIT and not (tmp_path / "run" / "metrics.json").exists()


@pytest.fixture(scope="module")
def tiny_pipe(t2ibias_cache):
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as dlogging

    from t2ibias.models.tiny import tiny_model_dir

    dlogging.disable_progress_bar()
    return DiffusionPipeline.from_pretrained(tiny_model_dir("tiny-random-sd"))


def test_a_loaded_pipeline_makes_the_images_loading_by_id_makes(tiny_pipe, api_run, tmp_path):
    scheduler, unet_attrs = tiny_pipe.scheduler, dict(tiny_pipe.unet.__dict__)
    run = t2ibias.sweep("tiny-random-sd", "demo", pipeline=tiny_pipe, batch_size=3, out=tmp_path / "run", **OPTIONS)
    assert png_bytes(run) == png_bytes(api_run)
    assert run.spec["weights"].startswith("pipeline:") and run.spec["weights"] != api_run.spec["weights"]
    assert run.spec["model"]["steps"] == api_run.spec["model"]["steps"] and run.spec["model"]["revision"] == "in-memory"
    # the pipeline is given back as it was lent
    assert tiny_pipe.scheduler is scheduler and tiny_pipe.unet.__dict__.keys() == unet_attrs.keys()
    assert "forward" not in tiny_pipe.unet.__dict__ and "_progress_bar_config" not in tiny_pipe.__dict__

    # it can make the run's missing images again; a run made by id refuses it
    key = next(iter(png_bytes(run)))
    before = png_bytes(run)[key]
    Path(run.images.set_index(["prompt_id", "image_index"]).loc[key, "file"]).unlink()
    assert run.generate(pipeline=tiny_pipe).generated == 1 and png_bytes(run)[key] == before
    with pytest.raises(UserError) as exc:
        t2ibias.open_run(api_run.path).generate(pipeline=tiny_pipe)
    assert "without pipeline=" in one_line(exc)


def test_a_pipeline_is_identified_by_its_configs_and_weights(tiny_pipe):
    import torch
    from diffusers import DiffusionPipeline, EulerDiscreteScheduler

    from t2ibias.generation.external import pipeline_identity

    copy = DiffusionPipeline.from_pretrained(tiny_pipe.name_or_path)
    assert pipeline_identity(copy) == pipeline_identity(tiny_pipe)
    with torch.no_grad():
        copy.unet.conv_in.weight.mul_(1.01)
    assert pipeline_identity(copy) != pipeline_identity(tiny_pipe)
    other = DiffusionPipeline.from_pretrained(tiny_pipe.name_or_path)
    other.scheduler = EulerDiscreteScheduler.from_config(other.scheduler.config)
    assert pipeline_identity(other) != pipeline_identity(tiny_pipe)


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, needles", [
    ({"model": "no-such-model"}, ["'no-such-model'", "t2ibias ls models"]),
    ({"model": "tiny-random-sd", "prompts": "no-such-set"}, ["'no-such-set'", "t2ibias ls prompts"]),
    ({"model": "sdxl", "images": Squares()}, ["registered generator id"]),
    ({"model": "squares", "images": "not callable"}, ["not callable"]),
    ({"model": "tiny-random-sd", "revision": "v2"}, ["only for images="]),
    ({"model": Squares()}, ["images=f"]),
    ({"model": "tiny-random-sd", "seeds": 0}, ["--seeds 0"]),
    ({"model": "tiny-random-sd", "batch_size": 0}, ["--batch-size 0"]),
])
def test_bad_input_raises_one_line_and_writes_nothing(kwargs, needles, tmp_path):
    with pytest.raises(UserError) as exc:
        t2ibias.sweep(**{"out": tmp_path / "run", **kwargs})
    line = one_line(exc)
    assert all(n in line for n in needles), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("returned, needle", [
    (lambda prompts: [Image.new("RGB", (8, 8))] * (len(prompts) - 1), "returned 2 images for 3 prompts"),
    (lambda prompts: Image.new("RGB", (8, 8)), "returned one Image, not a list, for 3 prompts"),
    (lambda prompts: ["a.png"] * len(prompts), "item 0 is a str, not a PIL image"),
])
def test_an_image_maker_returning_the_wrong_thing_raises_one_line(returned, needle, tmp_path):
    def maker(prompts, seeds):
        return returned(prompts)

    with pytest.raises(UserError) as exc:
        t2ibias.sweep("wrong", images=maker, batch_size=3, classifier="tiny-random-clip", out=tmp_path / "run", **OPTIONS)
    assert needle in one_line(exc)


def test_a_run_refuses_another_generator_and_a_non_run_is_refused(api_run, tmp_path):
    with pytest.raises(UserError) as exc:
        t2ibias.open_run(api_run.path).generate(images=Squares())
    assert "without images=" in one_line(exc)
    with pytest.raises(UserError) as exc:
        t2ibias.open_run(tmp_path)
    assert "spec.json" in one_line(exc)
    with pytest.raises(UserError) as exc:
        t2ibias.sweep("tiny-random-sd", pipeline=object(), out=tmp_path / "run")
    assert "DiffusionPipeline" in one_line(exc)


# -- the package --------------------------------------------------------------------------------

def test_the_api_is_imported_on_first_use_and_sweep_stays_the_function():
    code = (
        "import sys, t2ibias.core.errors, t2ibias\n"
        "assert 'torch' not in sys.modules and 't2ibias.api' not in sys.modules, sorted(sys.modules)\n"
        "from t2ibias.runspec import SweepRequest\n"  # the submodule of the same name must not shadow the function
        "from t2ibias import open_run, Run\n"
        "assert t2ibias.sweep.__module__ == 't2ibias.api' and callable(open_run) and Run.__name__ == 'Run'\n"
        "assert 'torch' not in sys.modules\n"
        "print(t2ibias.__version__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == t2ibias.__version__
    assert {"sweep", "open_run", "Run", "__version__"} <= set(dir(t2ibias))


def test_the_readme_example_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    for run in ("api-demo", "gray-squares", "api-pipe"):
        assert (tmp_path / "runs" / run / "report.html").is_file(), run
    assert json.loads((tmp_path / "runs" / "api-demo" / "metrics.json").read_text())["intervals"]["share_method"] == "wilson"
    board = json.loads((tmp_path / "runs" / "api-compare" / "leaderboard.json").read_text())
    assert [m["model"] for m in board["models"]] and (tmp_path / "runs" / "api-compare" / "compare.html").is_file()
