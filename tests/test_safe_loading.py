"""No model file the project opens can run code: every loading path, through the command a user types.

Each case hands a booby-trapped file (a pickle whose ``__reduce__`` would create a marker file,
built here at test time) to a CLI entry point and checks what the user sees: exit 2, exactly one
``error:`` line, no traceback, and no marker. A static scan of the sources keeps new loading
code on the same safe path.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest

from tests.facet_fixtures import person, write_facet, write_images

REPO = Path(__file__).resolve().parent.parent
SOURCES = [REPO / "t2ibias", REPO / "facet_eval"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- hostile files, made here ------------------------------------------------------------------------

class ShellPayload:
    """Unpickling calls ``os.system`` (a blocked module)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class BoundMethodPayload:
    """Unpickling calls ``getattr(PosixPath(marker), 'touch')()``: both names are on ultralytics'
    restricted allow-list, so only the restriction on what getattr may fetch stops it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return self.marker.touch, ()


class ExecPayload:
    """Unpickling calls ``builtins.exec`` on source that writes the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


PAYLOADS = {"shell": ShellPayload, "getattr": BoundMethodPayload, "exec": ExecPayload}


def evil_file(path: Path, marker: Path, payload: str = "shell", fmt: str = "zip") -> Path:
    """A checkpoint-looking file whose unpickling runs ``payload``: ``torch.save`` (zip) or a bare pickle."""
    import torch

    obj = {"model": PAYLOADS[payload](marker), "state_dict": {"w": torch.zeros(2)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "zip":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=4))
    assert not marker.exists()
    return path


def refused(code: int, err: str, marker: Path, *words: str) -> str:
    """The one ``error:`` line of a refusal (exit 2, no traceback), and the payload never ran."""
    assert not marker.exists(), "the payload ran"
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def t2ibias_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    import logging
    import sys

    from tests.test_cli import in_process

    # log handlers made during an earlier in-process call (the CLI's, diffusers' own) hold that
    # call's captured stderr, closed since: point them at this call's
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    for handler in {h for lg in loggers for h in lg.handlers}:
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
            monkeypatch.setattr(handler, "stream", sys.stderr)
            if "flush" in vars(handler):  # diffusers binds its handler's flush to that stream too
                monkeypatch.setattr(handler, "flush", sys.stderr.flush)

    return in_process(monkeypatch, capsys, *args)


def facet_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from tests.test_facet_cli import run

    return run(monkeypatch, capsys, *args)


# -- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def facet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("facet")
    write_facet(root, [person(1, 1, [10, 10, 40, 60], "nurse", gender_presentation_masc=1)], [1])
    ann = root / "annotations"
    coco = json.loads((ann / "coco_boxes.json").read_text())
    coco["images"][0].update(width=96, height=96)
    (ann / "coco_boxes.json").write_text(json.dumps(coco))
    import numpy as np
    from pycocotools import mask as mask_utils

    m = np.zeros((96, 96), dtype=np.uint8)
    m[10:70, 10:50] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    mask = {"size": [96, 96], "counts": rle["counts"].decode("ascii")}
    (ann / "coco_masks.json").write_text(json.dumps({
        "images": coco["images"], "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"id": 101, "person_id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": mask}],
    }))
    write_images(root, [1], size=(96, 96))
    return root


@pytest.fixture(scope="module")
def face_run(tmp_path_factory) -> Path:
    from tests.run_fixtures import make_face_run

    return make_face_run(tmp_path_factory.mktemp("runs") / "run")[0]


@pytest.fixture
def run_copy(face_run, tmp_path) -> Path:
    return Path(shutil.copytree(face_run, tmp_path / "run"))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PAYLOAD_RAN"


def clip_config(tmp_path: Path, checkpoint: Path) -> Path:
    """A classifier file: the tiny CLIP architecture with ``pretrained:`` pointing at ``checkpoint``."""
    tiny = (REPO / "t2ibias" / "configs" / "classifiers" / "tiny-random-clip.yaml").read_text()
    assert 'pretrained: "tiny:"' in tiny
    path = tmp_path / "hostile-clip.yaml"
    path.write_text(tiny.replace('pretrained: "tiny:"', f"pretrained: {json.dumps(str(checkpoint))}"))
    return path


def tiny_pipeline_copy(tmp_path: Path) -> Path:
    from t2ibias.models.tiny import tiny_model_dir

    return Path(shutil.copytree(tiny_model_dir("tiny-random-sd"), tmp_path / "pipeline"))


# -- ultralytics checkpoints -------------------------------------------------------------------------

@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("fmt", ["zip", "pickle"])
def test_facet_detect_yolo_checkpoint(payload, fmt, facet_root, yolo_env, tmp_path, marker, monkeypatch, capsys):
    evil = evil_file(tmp_path / "best.pt", marker, payload, fmt)
    code, _, err = facet_cli(monkeypatch, capsys, "detect", "--facet-root", str(facet_root), "--model", str(evil),
                             "--out", str(tmp_path / "out"), "--device", "cpu")
    line = refused(code, err, marker, str(evil))
    assert not (tmp_path / "out").exists()
    if fmt == "zip" and payload != "getattr":
        assert "could run code" in line and "model.save()" in line


def test_facet_segment_yolo_checkpoint(facet_root, yolo_env, tmp_path, marker, monkeypatch, capsys):
    evil = evil_file(tmp_path / "best-seg.pt", marker)
    code, _, err = facet_cli(monkeypatch, capsys, "segment", "--facet-root", str(facet_root), "--model", str(evil),
                             "--out", str(tmp_path / "out"), "--device", "cpu")
    refused(code, err, marker, "posix.system", "could run code")


def test_facet_detect_yolo_definition_with_code(facet_root, yolo_env, tmp_path, marker, monkeypatch, capsys):
    """A model .yaml whose activation is Python source: ultralytics would eval() it outside restricted mode."""
    cfg = tmp_path / "evil-yolo.yaml"
    cfg.write_text("nc: 80\nactivation: __import__('os').system('touch " + str(marker) + "')\n"
                   "backbone:\n  - [-1, 1, Conv, [16, 3, 2]]\nhead:\n  - [[0], 1, Detect, [nc]]\n")
    code, _, err = facet_cli(monkeypatch, capsys, "detect", "--facet-root", str(facet_root), "--model", str(cfg),
                             "--out", str(tmp_path / "out"), "--device", "cpu")
    refused(code, err, marker, "activation")


def test_facet_detect_exported_yolo_formats_are_refused(facet_root, yolo_env, tmp_path, marker, monkeypatch, capsys):
    exported = tmp_path / "best.torchscript"
    exported.write_bytes(b"a TorchScript program")
    code, _, err = facet_cli(monkeypatch, capsys, "detect", "--facet-root", str(facet_root), "--model", str(exported),
                             "--out", str(tmp_path / "out"), "--device", "cpu")
    refused(code, err, marker, "can carry code")


@pytest.mark.parametrize("payload", ["shell", "getattr"])
def test_measure_person_detector(payload, run_copy, yolo_env, tmp_path, marker, monkeypatch, capsys):
    evil = evil_file(tmp_path / "person.pt", marker, payload)
    code, _, err = t2ibias_cli(monkeypatch, capsys, "measure", str(run_copy), "--person-detector", str(evil), "--device", "cpu")
    refused(code, err, marker, "person detector", str(evil))


def test_real_yolo_checkpoint_still_loads_in_restricted_mode(yolo_env, tmp_path):
    """A checkpoint saved by ultralytics' own ``model.save()`` loads, with restricted loading in force
    even though ultralytics was imported before it was asked for."""
    import torch
    import ultralytics.nn.tasks as tasks

    from t2ibias.core.safe_load import load_yolo, ultralytics_yolo

    YOLO = ultralytics_yolo()
    torch.manual_seed(0)
    model = YOLO("yolo11n.yaml")
    model.model.names = {i: ("person" if i == 0 else f"c{i}") for i in range(80)}
    model.save(str(tmp_path / "ok.pt"))
    loaded = load_yolo(str(tmp_path / "ok.pt"), "test")
    assert loaded.names[0] == "person" and loaded.task == "detect"
    assert tasks.SAFE_LOAD is True and os.environ["ULTRALYTICS_SAFE_LOAD"] == "1"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # forced only while loading


# -- state dicts: torchvision, FairFace ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["zip", "pickle"])
def test_facet_detect_torchvision_state_dict(fmt, facet_root, tmp_path, marker, monkeypatch, capsys):
    evil = evil_file(tmp_path / "frcnn.pth", marker, "exec", fmt)
    code, _, err = facet_cli(monkeypatch, capsys, "detect", "--facet-root", str(facet_root), "--model",
                             f"torchvision:fasterrcnn_resnet50_fpn={evil}", "--out", str(tmp_path / "out"), "--device", "cpu")
    line = refused(code, err, marker, str(evil))
    assert "builtins.exec" in line and "safetensors" in line


def test_facet_detect_torchvision_hub_cache(facet_root, tmp_path, marker, monkeypatch, capsys):
    """torchvision reads its COCO weights from the torch hub cache with full unpickling unless forced not to."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    home = tmp_path / "torch-home"
    cached = home / "hub" / "checkpoints" / Path(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url).name
    evil_file(cached, marker, "shell")
    monkeypatch.setenv("TORCH_HOME", str(home))
    code, _, err = facet_cli(monkeypatch, capsys, "detect", "--facet-root", str(facet_root), "--model",
                             "torchvision:fasterrcnn_resnet50_fpn", "--out", str(tmp_path / "out"), "--device", "cpu")
    refused(code, err, marker, cached.name, "posix.system")


@pytest.mark.parametrize("measurer", ["fairface", "fairface4"])
def test_measure_also_fairface(measurer, run_copy, tmp_path, marker, monkeypatch, capsys):
    evil = evil_file(tmp_path / "res34_fair_align_multi_7_20190809.pt", marker, "exec")
    code, _, err = t2ibias_cli(monkeypatch, capsys, "measure", str(run_copy), "--also", f"{measurer}:{evil}", "--device", "cpu")
    refused(code, err, marker, str(evil), "builtins.exec")


def test_measure_fairface_whole_model_pickle_says_how_to_convert(run_copy, tmp_path, marker, monkeypatch, capsys):
    """A FairFace checkpoint saved as a whole module (not a state dict) cannot be read safely: the line says how to convert."""
    import torch
    import torchvision

    whole = tmp_path / "fairface-whole.pt"
    torch.save(torchvision.models.resnet34(num_classes=18), whole)
    code, _, err = t2ibias_cli(monkeypatch, capsys, "measure", str(run_copy), "--also", f"fairface:{whole}", "--device", "cpu")
    line = refused(code, err, marker, "torchvision.models.resnet.ResNet", "save_file(model.state_dict()")
    assert line.index("torchvision.models.resnet.ResNet") < line.index("torch.nn.")  # the telling name first


# -- open_clip classifier checkpoints ------------------------------------------------------------------

def test_facet_classify_clip_pretrained_checkpoint(facet_root, tmp_path, marker, monkeypatch, capsys):
    cfg = clip_config(tmp_path, evil_file(tmp_path / "clip.pt", marker, "shell"))
    code, _, err = facet_cli(monkeypatch, capsys, "classify", "--facet-root", str(facet_root), "--model", str(cfg),
                             "--out", str(tmp_path / "out"), "--device", "cpu")
    refused(code, err, marker, "posix.system", "pretrained")


def test_audit_clip_pretrained_checkpoint(facet_root, tmp_path, marker, monkeypatch, capsys):
    cfg = clip_config(tmp_path, evil_file(tmp_path / "clip.bin", marker, "exec", "pickle"))
    code, _, err = t2ibias_cli(monkeypatch, capsys, "audit", "--classifier", str(cfg), "--facet-root", str(facet_root),
                               "--crops", "person", "--out", str(tmp_path / "audit"), "--device", "cpu")
    refused(code, err, marker, "builtins.exec")


# -- diffusers / transformers folders ----------------------------------------------------------------

@pytest.mark.parametrize("component", ["unet", "text_encoder"])
def test_sweep_diffusers_folder_with_pickled_weights(component, tmp_path, marker, monkeypatch, capsys):
    """A local pipeline folder whose weights are .bin pickles instead of safetensors (diffusers' and
    transformers' loaders both)."""
    folder = tiny_pipeline_copy(tmp_path)
    for f in (folder / component).glob("*.safetensors"):
        f.unlink()
    name = "diffusion_pytorch_model.bin" if component == "unet" else "pytorch_model.bin"
    evil_file(folder / component / name, marker, "shell")
    code, _, err = t2ibias_cli(monkeypatch, capsys, "sweep", "--model", str(folder), "--prompts", "demo", "--seeds", "1",
                               "--limit", "1", "--device", "cpu", "--classifier", "tiny-random-clip", "--out", str(tmp_path / "run"))
    refused(code, err, marker, name, "posix.system", "safe_serialization=True")


def test_sweep_diffusers_folder_with_custom_pipeline_code(tmp_path, marker, monkeypatch, capsys):
    folder = tiny_pipeline_copy(tmp_path)
    (folder / "evil_pipeline.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = ["evil_pipeline", "EvilPipeline"]
    (folder / "model_index.json").write_text(json.dumps(index))
    code, _, err = t2ibias_cli(monkeypatch, capsys, "sweep", "--model", str(folder), "--prompts", "demo", "--seeds", "1",
                               "--limit", "1", "--device", "cpu", "--classifier", "tiny-random-clip", "--out", str(tmp_path / "run"))
    refused(code, err, marker, "custom code")


def test_sweep_tokenizer_with_custom_code(tmp_path, marker, monkeypatch, capsys):
    """Prompt token counting opens each tokenizer of the pipeline: code it names is not run."""
    folder = tiny_pipeline_copy(tmp_path)
    tok = folder / "tokenizer"
    (tok / "evil_tokenizer.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    cfg = json.loads((tok / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["evil_tokenizer.EvilTokenizer", None]}
    cfg.pop("tokenizer_class", None)
    (tok / "tokenizer_config.json").write_text(json.dumps(cfg))
    code, _, err = t2ibias_cli(monkeypatch, capsys, "sweep", "--model", str(folder), "--prompts", "demo", "--seeds", "1",
                               "--limit", "1", "--device", "cpu", "--classifier", "tiny-random-clip", "--out", str(tmp_path / "run"))
    refused(code, err, marker, "tokenizer")


@pytest.fixture
def evil_lm(tmp_path, marker) -> Path:
    from t2ibias.prompts.textgen import build_tiny_causal_lm

    folder = build_tiny_causal_lm(tmp_path / "lm")
    (folder / "model.safetensors").unlink()
    evil_file(folder / "pytorch_model.bin", marker, "exec")
    return folder


def test_sweep_llm_folder_with_pickled_weights(evil_lm, tmp_path, marker, monkeypatch, capsys):
    code, _, err = t2ibias_cli(monkeypatch, capsys, "sweep", "--model", "tiny-random-sd", "--prompts", "demo", "--seeds", "1",
                               "--limit", "1", "--device", "cpu", "--llm", str(evil_lm), "--out", str(tmp_path / "run"))
    refused(code, err, marker, "pytorch_model.bin", "builtins.exec")


def test_sweep_llm_folder_with_custom_model_code(tmp_path, marker, monkeypatch, capsys):
    from t2ibias.prompts.textgen import build_tiny_causal_lm

    folder = build_tiny_causal_lm(tmp_path / "lm")
    (folder / "evil_model.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "evil-lm"  # no built-in class: only the folder's own code could load it
    cfg["auto_map"] = {"AutoConfig": "evil_model.EvilConfig", "AutoModelForCausalLM": "evil_model.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    code, _, err = t2ibias_cli(monkeypatch, capsys, "sweep", "--model", "tiny-random-sd", "--prompts", "demo", "--seeds", "1",
                               "--limit", "1", "--device", "cpu", "--llm", str(folder), "--out", str(tmp_path / "run"))
    refused(code, err, marker, str(folder))


# -- the helper itself ---------------------------------------------------------------------------------

def test_weights_only_loads_overrides_callers_and_restores_the_environment(tmp_path, marker, monkeypatch):
    import torch

    from t2ibias.core.safe_load import weights_only_loads

    evil = evil_file(tmp_path / "x.pt", marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with weights_only_loads(), weights_only_loads():
        with pytest.raises(pickle.UnpicklingError):
            torch.load(evil, weights_only=False)  # what torch.hub and ultralytics pass
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1" and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_plain_state_dicts_and_safetensors_still_load(tmp_path):
    import torch
    from safetensors.torch import save_file

    from t2ibias.core.safe_load import code_references, load_weights_file

    state = {"w": torch.arange(3.0)}
    torch.save(state, tmp_path / "a.pth")
    torch.save(state, tmp_path / "b.pth", _use_new_zipfile_serialization=False)
    save_file(state, tmp_path / "c.safetensors")
    for name in ("a.pth", "b.pth", "c.safetensors"):
        assert torch.equal(load_weights_file(tmp_path / name, "test")["w"], state["w"])
        assert code_references(tmp_path / name) == []


# -- present and future: no new unsafe loading path ---------------------------------------------------

SAFE_HELPER = REPO / "t2ibias" / "core" / "safe_load.py"
#: Calls into libraries that read weight files themselves: each must run inside ``weights_only_loads()``.
GUARDED_LOADERS = {"from_pretrained", "create_model_and_transforms", "create_model_from_pretrained",
                   "load_state_dict_from_url", "get_state_dict", "load_checkpoint"}
#: Never called on anything the project opens.
FORBIDDEN = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"), ("dill", "load"),
    ("dill", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"), ("joblib", "load"), ("pd", "read_pickle"),
    ("pandas", "read_pickle"), ("jit", "load"), ("hub", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
    ("marshal", "loads"), ("shelve", "open"), ("yaml", "load_all"),
}


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, parents


def _name(func: ast.AST) -> tuple[str, str]:
    if isinstance(func, ast.Attribute):
        owner = func.value
        base = owner.attr if isinstance(owner, ast.Attribute) else owner.id if isinstance(owner, ast.Name) else "?"
        return base, func.attr
    if isinstance(func, ast.Name):
        return "", func.id
    return "", ""


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _inside_guard(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.With):
            for item in node.items:
                if isinstance(item.context_expr, ast.Call) and _name(item.context_expr.func)[1] == "weights_only_loads":
                    return True
    return False


def unsafe_loading_calls() -> list[str]:
    """Every loader call in the package sources that could unpickle code, as ``file:line: why``."""
    found = []
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(REPO)
            for call, parents in _calls(path):
                owner, name = _name(call.func)
                where = f"{rel}:{call.lineno}"
                if (owner, name) in FORBIDDEN or (owner == "" and name in ("eval", "exec")):
                    found.append(f"{where}: {owner + '.' if owner else ''}{name}() can run code from what it reads")
                elif name == "load" and owner == "torch" and not _is_const(_kw(call, "weights_only"), True):
                    found.append(f"{where}: torch.load without weights_only=True")
                elif name == "load" and owner in ("np", "numpy") and not _is_const(_kw(call, "allow_pickle"), False) \
                        and _kw(call, "allow_pickle") is not None:
                    found.append(f"{where}: numpy.load with allow_pickle")
                elif name == "load" and owner == "yaml":
                    loader = _kw(call, "Loader")
                    if not (isinstance(loader, (ast.Name, ast.Attribute)) and "Safe" in ast.unparse(loader)):
                        found.append(f"{where}: yaml.load without a safe loader")
                elif name == "YOLO" and path != SAFE_HELPER:
                    found.append(f"{where}: YOLO() outside t2ibias.core.safe_load.load_yolo")
                elif name in GUARDED_LOADERS and not _inside_guard(call, parents):
                    found.append(f"{where}: {name}() outside `with weights_only_loads():`")
                elif name == "from_pretrained" and not _is_const(_kw(call, "trust_remote_code"), False):
                    found.append(f"{where}: from_pretrained without trust_remote_code=False")
                elif _kw(call, "trust_remote_code") is not None and not _is_const(_kw(call, "trust_remote_code"), False):
                    found.append(f"{where}: trust_remote_code other than False")
                elif _kw(call, "weights") is not None and not _is_const(_kw(call, "weights"), None) \
                        and owner not in ("np", "numpy") and not _inside_guard(call, parents):
                    found.append(f"{where}: a torchvision builder given weights outside `with weights_only_loads():`")
    return found


def test_sources_have_no_unsafe_loading_path():
    assert unsafe_loading_calls() == []


def test_the_source_scan_finds_unsafe_calls(tmp_path, monkeypatch):
    """The scan itself catches each kind of unsafe call (so an empty result above means something)."""
    pkg = tmp_path / "t2ibias"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "import pickle, torch, yaml\n"
        "from ultralytics import YOLO\n"
        "from diffusers import DiffusionPipeline\n"
        "pickle.loads(b'')\n"
        "torch.load('x')\n"
        "torch.load('x', weights_only=False)\n"
        "yaml.load('a', Loader=yaml.Loader)\n"
        "YOLO('x.pt')\n"
        "DiffusionPipeline.from_pretrained('x', trust_remote_code=False)\n"
        "builder(weights=w)\n"
        "with weights_only_loads():\n"
        "    DiffusionPipeline.from_pretrained('x')\n"
        "    builder(weights=w)\n"
    )
    monkeypatch.setitem(globals(), "SOURCES", [pkg])
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    found = unsafe_loading_calls()
    lines = sorted(int(re.match(r"t2ibias/bad\.py:(\d+)", f).group(1)) for f in found)
    assert lines == [4, 5, 6, 7, 8, 9, 10, 12], found
