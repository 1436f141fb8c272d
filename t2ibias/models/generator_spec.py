"""Generator specs: one YAML file per model id in ``t2ibias/configs/generators/``.

A spec pins everything that changes pixels: where the weights come from (hub id and revision,
or a local folder), the pipeline class, dtype, scheduler, steps, guidance and size. Its
fingerprint, together with the resolved weight revision, is part of every image key, so changed
weights or settings never reuse stale images.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.core.paths import CONFIG_DIR
from t2ibias.core.registry import Registry
from t2ibias.core.yamlio import load_located_yaml

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
    #: Speed levers. Each can change an image's last bits (``torch.compile`` generates other kernels,
    #: channels-last picks other convolution algorithms, TF32 rounds fp32 matmuls on the GPU to a
    #: 10-bit mantissa, VAE tiling decodes overlapping tiles and blends them), so each one that is
    #: set enters the generator fingerprint; at their defaults the fingerprint is what it always was.
    #: ``torch.compile`` mode for the UNet/transformer: ``default``, ``reduce-overhead`` (CUDA
    #: graphs) or ``max-autotune``; None for eager.
    compile: str | None = None
    #: Run the denoiser and VAE in the channels-last memory format.
    channels_last: bool = False
    #: Decode latents in overlapping tiles (less GPU memory for large sizes; changes pixels).
    vae_tiling: bool = False
    #: Decode one image at a time also with --fast-batching (sample-wise execution always does).
    vae_slicing: bool = False
    #: Let fp32 matmuls and convolutions use TF32 on a GPU (the fp32 VAE of SDXL; no effect on the CPU).
    tf32: bool = False

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

    def speed_levers(self) -> dict[str, Any]:
        """The speed levers set away from their defaults (part of the generator fingerprint)."""
        return {name: getattr(self, name) for name, default in LEVER_DEFAULTS.items() if getattr(self, name) != default}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Speed-lever fields and their defaults; :data:`COMPILE_MODES` are the accepted ``compile`` values.
LEVER_DEFAULTS: dict[str, Any] = {"compile": None, "channels_last": False, "vae_tiling": False, "vae_slicing": False, "tf32": False}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


_FIELDS = {f.name for f in dataclasses.fields(GeneratorSpec)}
_REQUIRED = ("source", "pipeline")


#: Fields that are text (None allowed for the optional ones), mappings, or yes/no flags.
_TEXT_FIELDS = ("id", "source", "pipeline", "revision", "licence", "notes")
_OPTIONAL_TEXT_FIELDS = ("variant", "scheduler", "compile")
_MAPPING_FIELDS = ("scheduler_config", "call_kwargs")
_FLAG_FIELDS = ("random_weights", "channels_last", "vae_tiling", "vae_slicing", "tf32")


def _check_text_fields(doc: Any, data: dict[str, Any]) -> None:
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
    _check_text_fields(doc, data)
    if data.get("compile") is not None and data["compile"] not in COMPILE_MODES:
        raise UserError(f"{doc.where('compile')}: compile must be one of {', '.join(COMPILE_MODES)} (or leave it out for eager)")
    if data.get("dtype", "float16") not in DTYPES:
        raise UserError(f"{doc.where('dtype')}: dtype must be one of {', '.join(DTYPES)}")
    _check_field_types(data, doc.where)
    data = {**data, "id": data.get("id", path.stem)}
    if data["id"] != path.stem:
        raise UserError(f"{doc.where('id')}: id {data['id']!r} differs from the file name {path.stem!r} (the file name is the id)")
    return GeneratorSpec(**data)


#: Height and width must be multiples of this: the VAE's scale factor (8), times the patch size
#: for pipelines whose denoiser works on 2×2 patches.
SIZE_MULTIPLE = 8
#: The largest height or width accepted: 8× the 1024-pixel native size of the largest models here.
MAX_SIDE = 8192
_SIZE_MULTIPLES = {"StableDiffusion3Pipeline": 16, "FluxPipeline": 16}


def size_multiple(pipeline: str) -> int:
    """What height and width of images made by ``pipeline`` must be multiples of."""
    return _SIZE_MULTIPLES.get(pipeline, SIZE_MULTIPLE)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_field_types(data: dict[str, Any], where: Any) -> None:
    """Every number of a generator file has the type and range the pipeline call needs (text fields:
    :func:`_check_text_fields`): a wrong one would otherwise fail image by image, after the run started."""
    def bad(name: str, what: str) -> UserError:
        return UserError(f"{where(name)}: {name} must be {what} (got {data[name]!r})")

    if "steps" in data and (not _is_int(data["steps"]) or data["steps"] <= 0):
        raise bad("steps", "a positive integer")
    if "guidance" in data:
        g = data["guidance"]
        if not (_is_int(g) or isinstance(g, float)) or isinstance(g, bool) or not math.isfinite(g):
            raise bad("guidance", "a number such as 7.5 (0 for none)")
    multiple = size_multiple(str(data.get("pipeline", "")))
    for name in ("height", "width"):
        if name in data and (not _is_int(data[name]) or data[name] <= 0 or data[name] % multiple):
            raise bad(name, f"a positive multiple of {multiple} for {data.get('pipeline') or 'this pipeline'}")
        if name in data and data[name] > MAX_SIDE:
            raise bad(name, f"at most {MAX_SIDE} pixels (a larger image does not fit in any GPU's memory)")


GENERATORS = Registry.from_folder("model", "t2ibias ls models", GENERATOR_DIR, load_generator_spec_file)


def _spec_for_local_folder(folder: Path) -> GeneratorSpec:
    """A spec for a local diffusers folder: its pipeline class, its own size and scheduler, and the
    pipeline class's own call defaults for steps and guidance. Nothing comes from a registered
    model of the same class (not its licence, steps or scheduler); ``notes`` says where each
    setting came from, and a folder the project built with random weights is flagged as such."""
    index = folder / "model_index.json"
    try:
        cls = json.loads(index.read_text())["_class_name"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{folder}: not a diffusers pipeline folder (no readable model_index.json with _class_name); "
            "save one with `pipe.save_pretrained(folder)`"
        ) from None
    if not isinstance(cls, str) or not cls:
        raise UserError(f"{index}: _class_name: must name a diffusers pipeline class; custom code in a folder is never run "
                        "(save the folder with `pipe.save_pretrained`)")
    defaults = GeneratorSpec(id="", source="", pipeline=cls)
    steps, guidance = _call_defaults(cls)
    origin = f"{cls}'s own call defaults" if steps is not None else "t2ibias defaults (the pipeline class names none)"
    steps = defaults.steps if steps is None else steps
    guidance = defaults.guidance if guidance is None else guidance
    size = _native_size(folder)
    size_origin = "from the folder's unet/transformer and vae configs" if size else "a t2ibias default (the folder's configs name none)"
    size = size or defaults.height
    random = (folder / "t2ibias_tiny.json").is_file()
    notes = (
        f"local diffusers folder {folder.resolve()}, not a registered model: licence unknown; "
        f"steps {steps} and guidance {guidance} are {origin}; size {size}×{size} {size_origin}; "
        "to set them, write a generator YAML with `source:` this folder"
    )
    return GeneratorSpec(
        id=folder.name, source=str(folder.resolve()), pipeline=cls, revision="local", variant=None,
        dtype="float32" if random else defaults.dtype, steps=steps, guidance=guidance, height=size, width=size,
        licence="unknown (a local folder: check the licence of the weights it holds)", notes=notes,
        random_weights=random,
    )


def _call_defaults(cls: str) -> tuple[int | None, float | None]:
    """``num_inference_steps`` and ``guidance_scale`` defaults of a diffusers pipeline class's call."""
    try:
        import diffusers

        params = inspect.signature(getattr(diffusers, cls).__call__).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return None, None
    steps = params["num_inference_steps"].default if "num_inference_steps" in params else None
    guidance = params["guidance_scale"].default if "guidance_scale" in params else None
    steps = steps if _is_int(steps) and steps > 0 else None
    guidance = float(guidance) if (_is_int(guidance) or isinstance(guidance, float)) and math.isfinite(guidance) else None
    return steps, guidance


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


def with_compile(spec: GeneratorSpec, mode: str) -> GeneratorSpec:
    """``spec`` with its denoiser compiled in ``mode`` (the ``--compile`` flag)."""
    if mode not in COMPILE_MODES:
        raise UserError(f"--compile {mode}: unknown mode (one of {', '.join(COMPILE_MODES)})")
    return dataclasses.replace(spec, compile=mode)
