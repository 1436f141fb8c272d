"""YAML bombs are refused fast with one line naming the file and line; ordinary anchors still load.

A recursive alias has no finite value, and a "billion laughs" file of a few hundred bytes nests
aliases until it stands for billions of values: both must fail in well under a second, in
little memory, wherever the project reads YAML (prompt sets, generator and classifier configs,
YOLO model definitions).
"""

from __future__ import annotations

import json
import re
import time
import tracemalloc
from pathlib import Path

import pytest

from t2ibias.core.errors import UserError
from t2ibias.core.yamlio import ALIAS_VALUE_BUDGET, load_located_yaml
from tests.test_safe_loading import t2ibias_cli

REPO = Path(__file__).resolve().parent.parent
#: A refusal through a CLI, imports done: a fraction of a second alone, bounded loosely for shared
#: machines (the bombs used to run past two minutes and gigabytes).
CLI_SECONDS = 10.0


def laughs(levels: int = 9, width: int = 9, key: str = "lol") -> str:
    """The classic bomb: each level is a list of ``width`` aliases to the level below."""
    lines = [f"{key}0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"{key}{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "billion-laughs": (laughs(), 5),
    "recursive-sequence": ("families: &x\n  - *x\n", 2),
    "recursive-mapping": ("id: x\nfamilies: &f\n  occupation:\n    subjects: [a]\n    nested: *f\n", 5),
}


def refusal(code: int, err: str, path: Path, line: int) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    flat = err.replace("\n", " ")
    assert re.search(rf"{re.escape(str(path))}:{line}: ", flat), err
    assert "alias" in flat, err
    return flat


@pytest.fixture(scope="module", autouse=True)
def warm_cli():
    """One `t2ibias validate` first, so the timings below measure the refusal, not the CLI's imports."""
    import contextlib
    import io
    import sys

    import facet_eval.runners  # noqa: F401
    from t2ibias.cli import main
    from t2ibias.core.device import resolve_device

    resolve_device("cpu")  # imports torch
    argv = sys.argv
    sys.argv = ["t2ibias", "validate", str(REPO / "prompts" / "demo.yaml")]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main()
    except SystemExit as exc:
        assert not exc.code
    finally:
        sys.argv = argv


def error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_fail_fast_in_little_memory(name, tmp_path):
    text, line = BOMBS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(UserError) as info:
            load_located_yaml(path)
        elapsed = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5, elapsed
    assert peak < 5_000_000, peak
    assert str(info.value).startswith(f"{path}:{line}: alias")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_validate_refuses_bombs(name, tmp_path, monkeypatch, capsys):
    text, line = BOMBS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    t = time.perf_counter()
    code, out, err = t2ibias_cli(monkeypatch, capsys, "validate", str(path))
    assert time.perf_counter() - t < CLI_SECONDS
    refusal(code, err, path, line)
    assert len(err.strip().splitlines()) == 1, err


def test_aliases_up_to_the_budget_load_and_past_it_are_refused(tmp_path):
    """The budget counts every value an alias repeats: just under loads, just over is refused."""
    block = 99  # an anchored list of 99 values is 100 nodes with the list itself
    per_alias = block + 1
    fits = ALIAS_VALUE_BUDGET // per_alias

    def doc(n_aliases: int) -> str:
        return ("base: &b [" + ", ".join(str(i) for i in range(block)) + "]\nuses:\n"
                + "".join("  - *b\n" for _ in range(n_aliases)))

    ok = tmp_path / "ok.yaml"
    ok.write_text(doc(fits))
    data = load_located_yaml(ok).data
    assert len(data["uses"]) == fits and data["uses"][-1] == list(range(block))
    over = tmp_path / "over.yaml"
    over.write_text(doc(fits + 1))
    with pytest.raises(UserError, match=rf"^{re.escape(str(over))}:{fits + 3}: aliases expand to more than"):
        load_located_yaml(over)


def test_prompt_set_with_anchors_still_validates(tmp_path, monkeypatch, capsys):
    path = tmp_path / "shared_templates.yaml"
    path.write_text(
        "id: shared_templates\nversion: 1\ndescription: Two families sharing one set of templates.\n"
        "provenance:\n  - Written for a test.\n"
        "families:\n"
        "  occupation:\n"
        "    templates: &templates\n"
        '      portrait: "a portrait photo of a {subject}"\n'
        '      face: "a photo of the face of a {subject}"\n'
        "    subjects: [doctor, nurse]\n"
        "  role:\n"
        "    templates: *templates\n"
        "    subjects: [teacher]\n"
    )
    code, out, err = t2ibias_cli(monkeypatch, capsys, "validate", str(path))
    assert code == 0, err
    assert "prompt set shared_templates v1: 3 subjects, 6 records" in " ".join(out.split())
    located = load_located_yaml(path)
    assert located.line("families", "role", "templates") == 13


def test_classifier_with_include_and_anchors_still_validates(tmp_path, monkeypatch, capsys):
    path = tmp_path / "shared-labels.yaml"
    path.write_text(
        "include: tiny-random-clip\n"
        "arch: t2ibias-tiny-clip\n"
        "templates: &templates\n"
        '  - "a photo of {}."\n'
        '  - "a portrait of {}."\n'
        "preprocess: &pre\n"
        "  image_size: 64\n"
        "  mean: [0.48145466, 0.4578275, 0.40821073]\n"
        "  std: [0.26862954, 0.26130258, 0.27577711]\n"
        "  interpolation: bicubic\n"
        "  resize_mode: shortest\n"
        "attributes:\n"
        "  person:\n"
        "    description: Whether the image shows a person.\n"
        "    abstain_margin: 0.2\n"
        "    labels: &person\n"
        '      person: ["a person", "people"]\n'
        '      no_person: ["an empty scene", "an object"]\n'
        "  person_again:\n"
        "    description: The same question asked twice, sharing its labels.\n"
        "    abstain_margin: 0.1\n"
        "    labels: *person\n"
    )
    code, out, err = t2ibias_cli(monkeypatch, capsys, "validate", str(path))
    assert code == 0, err
    assert "classifier shared-labels" in out and "person_again" in " ".join(out.split())


def test_sweep_refuses_a_prompt_set_bomb_before_writing(tmp_path, monkeypatch, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("id: bomb\nversion: 1\n" + laughs(key="x"))
    out_dir = tmp_path / "run"
    t = time.perf_counter()
    code, _, err = t2ibias_cli(monkeypatch, capsys, "sweep", "--model", "tiny-random-sd", "--prompts", str(bomb),
                               "--classifier", "tiny-random-clip", "--device", "cpu", "--out", str(out_dir))
    assert time.perf_counter() - t < CLI_SECONDS
    line = error_line(code, err)
    assert f"{bomb}:7: aliases expand" in line
    assert not (out_dir / "spec.json").exists()


def test_sweep_refuses_a_generator_config_bomb(tmp_path, monkeypatch, capsys):
    gen = tmp_path / "bomb-gen.yaml"
    gen.write_text((REPO / "t2ibias" / "configs" / "generators" / "tiny-random-sd.yaml").read_text()
                   + "call_kwargs: &c [*c]\n")
    code, _, err = t2ibias_cli(monkeypatch, capsys, "sweep", "--model", str(gen), "--prompts", "demo",
                               "--classifier", "tiny-random-clip", "--device", "cpu", "--out", str(tmp_path / "run"))
    line = error_line(code, err)
    assert f"{gen}:" in line and "recursive alias" in line


def test_included_classifier_bomb_names_its_own_file(tmp_path, monkeypatch, capsys):
    parent = tmp_path / "parent.yaml"
    parent.write_text((REPO / "t2ibias" / "configs" / "classifiers" / "tiny-random-clip.yaml").read_text()
                      + laughs(levels=6, key="extra"))
    child = tmp_path / "child.yaml"
    child.write_text(f"include: {json.dumps(str(parent))}\narch: t2ibias-tiny-clip\nlogit_scale: 50.0\n")
    code, _, err = t2ibias_cli(monkeypatch, capsys, "validate", str(child))
    assert code == 2 and "Traceback" not in err, err
    assert str(parent) in err.replace("\n", " ")


def test_facet_detect_refuses_a_yolo_definition_bomb(tmp_path, monkeypatch, capsys):
    from tests.facet_fixtures import person, write_facet, write_images
    from tests.test_facet_cli import run

    root = tmp_path / "facet"
    write_facet(root, [person(1, 1, [10, 10, 40, 60])], [1])
    write_images(root, [1], size=(64, 64))
    cfg = tmp_path / "bomb-yolo.yaml"
    cfg.write_text("nc: 80\n" + laughs(key="pad"))
    t = time.perf_counter()
    code, _, err = run(monkeypatch, capsys, "detect", "--facet-root", str(root), "--model", str(cfg),
                       "--out", str(tmp_path / "out"), "--device", "cpu")
    assert time.perf_counter() - t < CLI_SECONDS
    line = error_line(code, err)
    assert f"{cfg}:6: aliases expand" in line
