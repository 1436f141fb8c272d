"""Open model files without running code stored in them.

A pickle-based checkpoint (``.pt``, ``.pth``, ``.bin``) can name any Python callable, and a plain
unpickler calls it while reading the file. Every weights file the project opens goes through
here: torch's restricted ``weights_only`` unpickler (tensors and plain containers only) or
safetensors for state dicts, ultralytics' restricted mode for YOLO checkpoints, and
:func:`weights_only_loads` around libraries that read checkpoints themselves. A file that cannot
be read this way is refused with one line saying how to convert it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import pickletools
import re
import threading
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError

#: How to turn a checkpoint that needs code to unpickle into one that does not.
CONVERT_STATE_DICT = (
    "where the file is trusted, load it once and save the tensors alone: "
    "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors') or torch.save(model.state_dict(), 'weights.pth')"
)
CONVERT_FOLDER = (
    "where the folder is trusted, load it once and save it again with save_pretrained(FOLDER, safe_serialization=True), "
    "which writes .safetensors weights"
)
CONVERT_YOLO = (
    "use a checkpoint written by ultralytics' own model.save() or an official release such as yolo11n.pt; "
    "a file with other Python objects in it can only be trusted, not checked"
)
#: Suffixes of files a pickle-based loader reads.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
#: Local YOLO files that load without running code: checkpoints (restricted unpickling) and
#: model definitions (ultralytics builds them without eval in restricted mode). Exported formats
#: (TorchScript, TensorFlow, TensorRT, ...) are programs and are refused.
YOLO_CHECKPOINT_SUFFIXES = (".pt",)
YOLO_DEFINITION_SUFFIXES = (".yaml", ".yml")

_force_lock = threading.Lock()
_force_depth = 0
_force_saved: dict[str, str | None] = {}
_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NOT = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Inside, every ``torch.load`` uses the restricted unpickler, whatever its caller passes.

    Libraries that read checkpoints themselves (torchvision's hub cache, open_clip, diffusers,
    transformers, ultralytics) each pick their own ``weights_only`` default; torch's
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` overrides them all for the duration. Nested and concurrent
    uses share one setting, restored when the last one ends.
    """
    global _force_depth
    with _force_lock:
        if _force_depth == 0:
            _force_saved.clear()
            _force_saved.update({k: os.environ.get(k) for k in (_FORCE, _FORCE_NOT)})
            os.environ[_FORCE] = "1"
            os.environ.pop(_FORCE_NOT, None)  # torch refuses to run with both set
        _force_depth += 1
    try:
        with warnings.catch_warnings():
            # the restricted unpickler warns about pickle protocols; the outcome is what matters
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
            yield
    finally:
        with _force_lock:
            _force_depth -= 1
            if _force_depth == 0:
                for key, value in _force_saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


def code_references(path: str | Path) -> list[str]:
    """The Python callables a pickle-based file names beyond plain tensors and containers.

    Read statically (nothing is unpickled). ``[]`` for a file that names none, or that is not a
    pickle at all. Names torch allows in restricted loading are left out (for a ``torch.save``
    zip, also those a library registered with it, such as ultralytics' model classes).
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            import torch

            try:
                return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
            except (ValueError, RuntimeError, KeyError, OSError):
                return []  # TorchScript or a zip that is not a checkpoint: not a pickle to judge
        return _raw_pickle_globals(path)
    except OSError:
        return []


def _allowed_globals() -> set[str]:
    """What torch's restricted unpickler allows by default (tensor rebuilding, plain containers)."""
    try:
        from torch import _weights_only_unpickler as wou

        return set(wou._get_allowed_globals())
    except Exception:  # a torch without this table: report every name
        return set()


def _raw_pickle_globals(path: Path, max_pickles: int = 5) -> list[str]:
    """Globals named by the pickles at the start of a non-zip file (legacy torch.save writes several)."""
    found: set[str] = set()
    with open(path, "rb") as fh:
        for _ in range(max_pickles):
            strings: list[str] = []
            memo: dict[int, Any] = {}
            last: Any = None
            try:
                for op, arg, _pos in pickletools.genops(fh):
                    name = op.name
                    if name == "GLOBAL" or name == "INST":
                        found.add(str(arg).replace(" ", ".", 1))
                    elif name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.add(f"{strings[-2]}.{strings[-1]}")
                    elif "UNICODE" in name or name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                        last = str(arg)
                        strings.append(last)
                    elif name == "MEMOIZE":
                        memo[len(memo)] = last
                    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                        memo[int(arg)] = last
                    elif name in ("GET", "BINGET", "LONG_BINGET"):
                        value = memo.get(int(arg))
                        if isinstance(value, str):
                            strings.append(value)
                        last = value
                    else:
                        last = None
                    if name == "STOP":
                        break
            except Exception:  # not (or no longer) a pickle: the rest is storage bytes
                break
    return sorted(found - _allowed_globals())


def refuse_code(path: str | Path, what: str, fix: str = CONVERT_STATE_DICT) -> None:
    """UserError when ``path`` names callables a restricted load refuses; nothing when it names none."""
    refs = sorted(code_references(path), key=lambda name: (name.startswith("torch."), name))
    if refs:
        shown = ", ".join(refs[:3]) + (" …" if len(refs) > 3 else "")
        raise UserError(f"{what}: {path} holds pickled Python objects ({shown}) that could run code when loaded, "
                        f"so it is not opened ({fix})")


def refuse_code_in_folder(folder: str | Path, what: str, fix: str = CONVERT_FOLDER) -> None:
    """:func:`refuse_code` for every pickle-format weights file in a model folder (after a failed load:
    it tells a file a restricted load refused apart from a damaged one)."""
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix in PICKLE_SUFFIXES and path.is_file():
            refuse_code(path, what, fix)


def load_weights_file(path: str | Path, what: str, fix: str = CONVERT_STATE_DICT) -> Any:
    """The contents of a ``.safetensors`` file or of a ``torch.save`` file read with the restricted unpickler.

    A file that needs any other callable to unpickle raises a UserError naming them and ``fix``;
    other failures (a truncated or foreign file) propagate for the caller to word.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    import torch

    try:
        with weights_only_loads():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        refuse_code(path, what, fix)
        raise ValueError("not a torch.save file, or a damaged one") from None


def load_yolo(weights: str, what: str, definitions: bool = False) -> Any:
    """``ultralytics.YOLO(weights)`` with ultralytics' restricted loading in force.

    ``weights`` is a local ``.pt`` checkpoint (with ``definitions``, also a model ``.yaml``) or
    an ultralytics release name ending in ``.pt``. Ultralytics unpickles with no restriction
    unless ``ULTRALYTICS_SAFE_LOAD`` is set when it is first imported; the flag is set here, and
    put in force on an ultralytics imported earlier without it. A checkpoint that holds objects
    outside ultralytics' allow-list raises a UserError; other load failures propagate.
    """
    path = Path(weights).expanduser()
    suffixes = YOLO_CHECKPOINT_SUFFIXES + (YOLO_DEFINITION_SUFFIXES if definitions else ())
    if path.suffix.lower() not in suffixes:
        kinds = "a .pt checkpoint" + (" or a .yaml model definition" if definitions else "")
        raise UserError(f"{what}: {weights} is not {kinds}; exported formats (TorchScript, ONNX, TensorFlow, "
                        "TensorRT ...) can carry code and are not loaded (pass the .pt checkpoint they were exported from)")
    if path.suffix.lower() in YOLO_DEFINITION_SUFFIXES and path.is_file():
        from t2ibias.core.yamlio import load_located_yaml

        load_located_yaml(path)  # syntax errors and alias bombs as one line, before ultralytics parses it
    YOLO = ultralytics_yolo()
    try:
        with weights_only_loads():
            return YOLO(str(path) if path.is_file() else weights)
    except (TypeError, pickle.UnpicklingError) as exc:
        cause = exc if isinstance(exc, pickle.UnpicklingError) else exc.__cause__
        if isinstance(cause, pickle.UnpicklingError) and path.is_file():
            refs = code_references(path)
            if refs or any(word in str(cause) for word in ("blocked", "allowed global", "GLOBAL")):
                shown = f" ({', '.join(refs[:3])}{' …' if len(refs) > 3 else ''})" if refs else ""
                raise UserError(f"{what}: {weights} holds Python objects{shown} outside ultralytics' checkpoint format, "
                                f"which could run code when loaded, so it is not opened ({CONVERT_YOLO})") from None
            raise ValueError("not a torch.save checkpoint, or a damaged one") from None
        raise


def ultralytics_safe_mode() -> None:
    """Turn on ultralytics' restricted checkpoint loading for this process, before or after its import."""
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils as utils

    if not hasattr(tasks, "_SafeLoad") or not getattr(tasks._SafeLoad, "SUPPORTED", False):
        import ultralytics

        raise UserError(f"ultralytics {ultralytics.__version__} has no restricted loading (ULTRALYTICS_SAFE_LOAD), so it "
                        "cannot open a checkpoint without running code in it (upgrade ultralytics, and torch to 2.6 or later)")
    # ultralytics reads the flag once, at import: an import before this call left it off
    utils.SAFE_LOAD = True
    tasks.SAFE_LOAD = True


def ultralytics_yolo() -> Any:
    """``ultralytics.YOLO`` in restricted mode, with PIL's own ``Image.open`` put back.

    Importing ultralytics swaps ``PIL.Image.open`` process-wide for a wrapper that, on a file PIL
    cannot identify, tries to install an optional HEIF plugin and fails with ImportError; every
    other reader of images in t2ibias expects PIL's own errors.
    """
    ultralytics_safe_mode()
    from PIL import Image
    from ultralytics import YOLO
    from ultralytics.utils import patches

    original = getattr(patches, "_image_open", None)
    if original is not None and Image.open is getattr(patches, "image_open", None):
        Image.open = original
    return YOLO


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), ANSI colours removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
