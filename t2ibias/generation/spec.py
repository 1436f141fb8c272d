"""Generator specs: one YAML file per model id in ``t2ibias/configs/generators/``.

A spec pins everything that changes pixels: where the weights come from (hub id and revision,
or a local folder), the pipeline class, dtype, scheduler, steps, guidance and size. Its
fingerprint, together with the resolved weight revision, is part of every image key, so changed
weights or settings never reuse stale images.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2ibias.errors import UserError
from t2ibias.paths import CONFIG_DIR
from t2ibias.registry import Registry
from t2ibias.yamlio import load_located_yaml

GENERATOR_DIR = CONFIG_DIR / "generators"
TINY_PREFIX = "tiny:"
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class GeneratorSpec:
    """How to load and call one text-to-image model."""

    id: str
    #: ``owner/name`` on the Hugging Face hub, a local diffusers folder, or ``tiny:<name>``.
    source: str
    #: Pipeline class the weights are expected to load as (``DiffusionPipeline`` picks it).
    pipeline: str
    #: Branch, tag or commit on the hub; the commit it resolves to is recorded in the run.
    revision: str = "main"
    #: Weight file variant on the hub (``fp16``), or None.
    variant: str | None = None
    dtype: str = "float16"
    #: A diffusers scheduler class name to swap in, or None to keep the pipeline's own.
    scheduler: str | None = None
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    steps: int = 30
    guidance: float = 7.5
    height: int = 1024
    width: int = 1024
    #: Extra keyword arguments for the pipeline call (e.g. ``max_sequence_length``).
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    licence: str = ""
    notes: str = ""
    #: True for random-weight models: their images are noise and any number on them is meaningless.
    random_weights: bool = False

    @property
    def is_tiny(self) -> bool:
        return self.source.startswith(TINY_PREFIX)

    @property
    def is_local(self) -> bool:
        return not self.is_tiny and Path(self.source).expanduser().is_dir()

    def generation_params(self) -> dict[str, Any]:
        """The call parameters that shape an image (part of every image key)."""
        return {
            "steps": self.steps,
            "guidance": self.guidance,
            "height": self.height,
            "width": self.width,
            "call_kwargs": dict(sorted(self.call_kwargs.items())),
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name for f in dataclasses.fields(GeneratorSpec)}
_REQUIRED = ("source", "pipeline")


#: Fields that are text (None allowed for the optional ones), mappings, or yes/no flags.
_TEXT_FIELDS = ("id", "source", "pipeline", "revision", "licence", "notes")
_OPTIONAL_TEXT_FIELDS = ("variant", "scheduler")
_MAPPING_FIELDS = ("scheduler_config", "call_kwargs")
_FLAG_FIELDS = ("random_weights",)


def _check_field_types(doc: Any, data: dict[str, Any]) -> None:
    """Every text, mapping and flag field has its type (a number or list would reach the hub, the
    pipeline or the model card as something else)."""
    for name in _TEXT_FIELDS + _OPTIONAL_TEXT_FIELDS:
        value = data.get(name)
        if name in data and not isinstance(value, str) and not (value is None and name in _OPTIONAL_TEXT_FIELDS):
            raise UserError(f"{doc.where(name)}: {name} must be text, not {type(value).__name__} {value!r} "
                            f"(quote it: {name}: \"...\")")
    for name in ("source", "pipeline", "revision"):
        if name in data and not data[name].strip():
            raise UserError(f"{doc.where(name)}: {name} is empty (give a value or remove the field)")
    for name in _MAPPING_FIELDS:
        value = data.get(name, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise UserError(f"{doc.where(name)}: {name} must be a mapping of names to values (e.g. {name}: {{key: value}})")
    for name in _FLAG_FIELDS:
        if name in data and not isinstance(data[name], bool):
            raise UserError(f"{doc.where(name)}: {name} must be true or false, not {data[name]!r}")


def load_generator_spec_file(path: Path) -> GeneratorSpec:
    """Read and check one generator YAML file; errors say ``file:line: problem (fix)``."""
    doc = load_located_yaml(path)
    data = doc.data
    if not isinstance(data, dict):
        raise UserError(f"{doc.where()}: a generator config must be a mapping of fields")
    unknown = sorted(set(data) - _FIELDS - {"id"})
    if unknown:
        raise UserError(
            f"{doc.where(unknown[0])}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_FIELDS))})"
        )
    for name in _REQUIRED:
        if not data.get(name):
            raise UserError(f"{doc.where()}: missing field {name!r} (add `{name}: ...`)")
    _check_field_types(doc, data)
    if data.get("dtype", "float16") not in DTYPES:
        raise UserError(f"{doc.where('dtype')}: dtype must be one of {', '.join(DTYPES)}")
    for name in ("steps", "height", "width"):
        if name in data and (not isinstance(data[name], int) or data[name] <= 0):
            raise UserError(f"{doc.where(name)}: {name} must be a positive integer")
    data = {**data, "id": data.get("id", path.stem)}
    if data["id"] != path.stem:
        raise UserError(f"{doc.where('id')}: id {data['id']!r} differs from the file name {path.stem!r} (the file name is the id)")
    return GeneratorSpec(**data)


GENERATORS = Registry.from_folder("model", "t2ibias ls models", GENERATOR_DIR, load_generator_spec_file)


def _spec_for_local_folder(folder: Path) -> GeneratorSpec:
    """A spec for a local diffusers folder, taking call settings from the config of the same class."""
    index = folder / "model_index.json"
    try:
        cls = json.loads(index.read_text())["_class_name"]
    except (OSError, ValueError, KeyError):
        raise UserError(
            f"{folder}: not a diffusers pipeline folder (no readable model_index.json with _class_name); "
            "save one with `pipe.save_pretrained(folder)`"
        ) from None
    template = next((GENERATORS.get(n) for n in GENERATORS.names() if GENERATORS.get(n).pipeline == cls and not GENERATORS.get(n).is_tiny), None)
    base = dataclasses.asdict(template) if template else {"pipeline": cls}
    base.update(id=folder.name, source=str(folder.resolve()), pipeline=cls, revision="local", variant=None)
    size = _native_size(folder)
    if size:  # the size the folder's denoiser was trained at, not the template's
        base.update(height=size, width=size)
    base.setdefault("licence", "see the folder's own licence")
    return GeneratorSpec(**base)


def _native_size(folder: Path) -> int | None:
    """Image side the pipeline makes by default: denoiser ``sample_size`` × VAE scale factor."""
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for name in ("unet", "transformer"):
        try:
            size = json.loads((folder / name / "config.json").read_text()).get("sample_size")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size * factor
    return None


def resolve_generator_spec(model: str) -> GeneratorSpec:
    """A registered id (``sdxl``), a YAML file of one, or a local diffusers folder."""
    if model in GENERATORS:
        return GENERATORS.get(model)
    path = Path(model).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_generator_spec_file(path)
    if path.is_dir():
        return _spec_for_local_folder(path)
    if "/" in model or path.suffix:
        raise UserError(
            f"--model {model}: no such local folder or config file (pass a registered id — "
            f"`t2ibias ls models` — or a folder written by `save_pretrained`)"
        )
    return GENERATORS.get(model)  # raises with "did you mean"
