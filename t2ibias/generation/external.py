"""Generators handed in from Python: a diffusers pipeline the caller already loaded, or any
callable that makes images (an API model, another library). Both fill a run's image store
through the same generate stage as a pipeline t2ibias loads itself
(``generate_stage(..., generator=...)``); this module gives each a spec and a weight identity
for ``spec.json``, and adapts it to the generator interface ``generate(texts, seeds)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import canonical_json, fingerprint
from t2ibias.generation.diffusers_adapter import DiffusersGenerator, GeneratedImage, ResolvedWeights
from t2ibias.models.generator_spec import GENERATORS, GeneratorSpec, _call_defaults, resolve_generator_spec

log = logging.getLogger(__name__)

#: Weight identities of runs whose images were made outside t2ibias (``spec.json`` ``weights``).
PIPELINE_PREFIX = "pipeline:"
CALLABLE_PREFIX = "callable:"
#: Values read from each weight tensor of a pipeline for its identity: all of a small tensor
#: (biases, norms, tiny models), else this many evenly spaced ones and the last.
WEIGHT_SAMPLES = 256

#: ``f(prompts, seeds) -> images``: one PIL image per prompt, in order (None: the model refused it).
ImageMaker = Callable[[list[str], list[int]], Sequence[Any]]


def made_outside(weights_identity: str) -> str | None:
    """``"pipeline"`` or ``"callable"`` for a run whose images come from Python, else None."""
    for prefix in (PIPELINE_PREFIX, CALLABLE_PREFIX):
        if weights_identity.startswith(prefix):
            return prefix[:-1]
    return None


def _qualname(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# -- image-making callables -----------------------------------------------------------------------

def image_maker_spec(name: str, maker: Any, revision: str | None = None) -> tuple[GeneratorSpec, ResolvedWeights]:
    """The spec and weight identity of a run made by ``maker``: only ``name`` and ``revision``
    identify it, since t2ibias cannot look inside a callable."""
    if not callable(maker):
        raise UserError(f"images: {type(maker).__name__} is not callable (pass a function f(prompts, seeds) -> list of PIL images)")
    if not isinstance(name, str) or not name.strip() or name != name.strip() or "\n" in name:
        raise UserError(f"model {name!r}: name the image maker (e.g. 'my-api-model'); it is recorded in spec.json")
    if name in GENERATORS:
        raise UserError(f"model {name!r}: a registered generator id; give the images of a callable a name of its own "
                        f"(e.g. '{name}-api'), so runs of the two never share a name")
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise UserError(f"revision {revision!r}: must be non-empty text, e.g. the version or date of the image maker")
    rev = revision or "unversioned"
    spec = GeneratorSpec(
        id=name, source=f"{CALLABLE_PREFIX}{name}", pipeline="Python callable", revision=rev, dtype="n/a",
        steps=0, guidance=None, height=0, width=0,  # type: ignore[arg-type]  # the callable's own business
        licence="unknown (images made by a Python callable)",
        notes=(f"images made by the Python callable {getattr(maker, '__qualname__', _qualname(maker))} handed to t2ibias "
               f"as {name!r} (revision {rev}); t2ibias sees only that name and revision, so a changed image maker "
               "needs a new revision or a new run"),
    )
    return spec, ResolvedWeights("", None, f"{CALLABLE_PREFIX}{name}@{rev}", "")


class CallableGenerator:
    """Adapts an image maker ``f(prompts, seeds)`` to the generator interface, checking what it returns."""

    def __init__(self, maker: ImageMaker) -> None:
        self.maker = maker
        self.name = getattr(maker, "__qualname__", type(maker).__name__)

    def generate(self, prompts: list[str], seeds: list[int]) -> list[GeneratedImage]:
        from PIL import Image

        out = self.maker(list(prompts), list(seeds))
        fix = "return a list with one PIL image per prompt, in order (None for one the model refused)"
        if isinstance(out, (str, bytes, Image.Image)) or not isinstance(out, Sequence):
            raise UserError(f"images={self.name}: returned one {type(out).__name__}, not a list, for {len(prompts)} prompts ({fix})")
        if len(out) != len(prompts):
            raise UserError(f"images={self.name}: returned {len(out)} images for {len(prompts)} prompts ({fix})")
        results = []
        for i, image in enumerate(out):
            if image is not None and not isinstance(image, Image.Image):
                raise UserError(f"images={self.name}: item {i} is a {type(image).__name__}, not a PIL image "
                                "(convert arrays with PIL.Image.fromarray)")
            results.append(GeneratedImage(image, image is None))
        return results


# -- loaded diffusers pipelines -------------------------------------------------------------------

def _plain_config(config: Any) -> dict[str, Any]:
    """A component's config without the keys that say where or with which version it was loaded."""
    items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in items.items() if not str(k).startswith("_") and k != "transformers_version"}


def _weights_digest(module: Any) -> str:
    """Hash of every tensor's name, shape and dtype and of its values: all of them up to
    ``4 * WEIGHT_SAMPLES``, else ``WEIGHT_SAMPLES`` evenly spaced ones and the last (picked where the
    tensor lives, so only the picked values are copied to the CPU)."""
    import hashlib

    import torch

    names, samples = [], []
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            names.append((name, list(tensor.shape), str(tensor.dtype), tensor.device.type == "meta"))
            if tensor.device.type == "meta" or tensor.numel() == 0:
                continue
            flat = tensor.reshape(-1)
            if flat.numel() > 4 * WEIGHT_SAMPLES:
                flat = torch.cat([flat[:: flat.numel() // WEIGHT_SAMPLES][:WEIGHT_SAMPLES], flat[-1:]])
            samples.append(flat.to(torch.float64).cpu())
    h = hashlib.sha256(canonical_json(names).encode())
    if samples:
        h.update(torch.cat(samples).numpy().tobytes())
    return h.hexdigest()[:16]


def _component_identity(component: Any) -> Any:
    if component is None or isinstance(component, (bool, int, float, str)):
        return component
    import torch

    entry: dict[str, Any] = {"class": _qualname(component)}
    config = getattr(component, "config", None)
    if config is not None:
        entry["config"] = _plain_config(config)
    elif hasattr(component, "get_vocab"):  # tokenizers
        entry["vocab"] = fingerprint(sorted(component.get_vocab().items()))
        entry["model_max_length"] = getattr(component, "model_max_length", None)
    elif hasattr(component, "to_dict"):  # image processors
        entry["config"] = _plain_config(component)
    if isinstance(component, torch.nn.Module):
        entry["weights"] = _weights_digest(component)
        processors = getattr(component, "attn_processors", None)
        if isinstance(processors, dict):
            entry["attention_processors"] = sorted({_qualname(p) for p in processors.values()})
    return entry


def pipeline_identity(pipe: Any) -> str:
    """``pipeline:<hash>`` of a loaded pipeline's class, its configs, its components' classes,
    configs, tokenizer vocabularies, attention processors and dtypes, and a sample of every weight
    tensor's values.

    It does not see: edits to a few values of a large weight tensor between the sampled ones
    (a fine-tune or a fused LoRA changes them all, and is seen), replaced ``forward``
    methods, hooks or callbacks, LoRA adapter scales set with ``set_adapters``, and attributes
    that live outside the configs; changes of that kind need a new run (another ``out``).
    """
    _check_pipeline(pipe)
    content = {
        "class": _qualname(pipe),
        "config": _plain_config(pipe.config),
        "dtype": str(pipe.dtype),
        "components": {name: _component_identity(c) for name, c in sorted(pipe.components.items())},
    }
    return PIPELINE_PREFIX + fingerprint(content)


def _check_pipeline(pipe: Any) -> None:
    from diffusers import DiffusionPipeline

    if not isinstance(pipe, DiffusionPipeline):
        raise UserError(f"pipeline: a {type(pipe).__name__}, not a diffusers DiffusionPipeline "
                        "(for any other image maker pass images=f, a function f(prompts, seeds) -> list of PIL images)")


def _native_size(pipe: Any) -> int | None:
    """The side of the images the pipeline makes by default: denoiser sample size × VAE scale factor."""
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    size = getattr(getattr(denoiser, "config", None), "sample_size", None)
    factor = getattr(pipe, "vae_scale_factor", None)
    if isinstance(size, int) and isinstance(factor, int) and size > 0 and factor > 0:
        return size * factor
    return None


def _is_settings_source(model: str) -> bool:
    """A registered id, a generator YAML file or a local diffusers folder (not a free name)."""
    path = Path(model).expanduser()
    return model in GENERATORS or path.is_dir() or (path.suffix in (".yaml", ".yml") and path.is_file())


def pipeline_spec(model: str, pipe: Any) -> tuple[GeneratorSpec, ResolvedWeights]:
    """The spec and weight identity of a run made by a loaded ``pipe``.

    Call settings (steps, guidance, size, scheduler, call arguments) come from ``model`` when it
    is a registered id, a generator YAML file or a local diffusers folder; for any other name,
    from the pipeline class's own call defaults and its components' configs. The weights are
    the pipeline's own, identified by :func:`pipeline_identity`.
    """
    if not isinstance(model, str) or not model.strip():
        raise UserError(f"model {model!r}: name the pipeline (a registered id such as 'sdxl' takes that model's settings)")
    identity = pipeline_identity(pipe)
    cls = type(pipe).__name__
    dtype = str(pipe.dtype).removeprefix("torch.")
    where = str(getattr(pipe, "name_or_path", "") or "")
    folder = where if where and Path(where).is_dir() else ""  # prompt token counts read its tokenizers
    if _is_settings_source(model):
        base = resolve_generator_spec(model)
        if base.pipeline != cls:
            log.warning("model %s: a %s was passed in, configured as %s", model, cls, base.pipeline)
        origin = f"call settings from generator {base.id!r}"
    else:
        steps, guidance = _call_defaults(cls)
        defaults = GeneratorSpec(id="", source="", pipeline=cls)
        size = _native_size(pipe) or defaults.height
        base = replace(defaults, id=model, steps=defaults.steps if steps is None else steps,
                       guidance=defaults.guidance if guidance is None else guidance, height=size, width=size,
                       licence="unknown (a pipeline passed in from Python: check the licence of its weights)",
                       random_weights=bool(folder) and (Path(folder) / "t2ibias_tiny.json").is_file())
        origin = f"steps, guidance and size from {cls}'s own defaults"
    spec = replace(base, source=f"{PIPELINE_PREFIX}{where or cls}", pipeline=cls, revision="in-memory", variant=None,
                   dtype=dtype, notes=f"a {cls} passed in from Python (loaded from {where or 'an unknown place'}), "
                                      f"identified by its configs and a sample of its weights; {origin}")
    return spec, ResolvedWeights("", None, identity, folder)


#: Instance attributes of a pipeline's modules that making them sample-wise sets.
_SAMPLEWISE_ATTRS = ("forward", "_t2ibias_samplewise", "use_slicing")


class BorrowedPipeline:
    """Makes images with a pipeline the caller loaded exactly as :class:`DiffusersGenerator`
    makes them with one it loads (same call, one CPU ``torch.Generator`` per image, sample-wise
    modules), where the pipeline is (it is never moved). What it changes for that (its modules'
    ``forward``, VAE slicing, a configured scheduler, the progress bar) is put back by
    :meth:`close`; use it as a context manager."""

    def __init__(self, pipe: Any, spec: GeneratorSpec, batch_invariant: bool = True) -> None:
        _check_pipeline(pipe)
        self.pipe = pipe
        self.spec = spec
        self.batch_invariant = batch_invariant
        self._generator: DiffusersGenerator | None = None
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> BorrowedPipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def generate(self, prompts: list[str], seeds: list[int]) -> list[GeneratedImage]:
        if self._generator is None:
            self._generator = self._borrow()
        return self._generator.generate(prompts, seeds)

    def _borrow(self) -> DiffusersGenerator:
        import torch

        pipe, spec = self.pipe, self.spec
        modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
        if any(getattr(m, "_t2ibias_samplewise", False) for m in modules):
            raise UserError("pipeline: its modules are already set up by another t2ibias generator (a pipeline t2ibias "
                            "loaded, or one still lent to a run); pass a pipeline loaded with DiffusionPipeline.from_pretrained")
        saved = [(m, {k: m.__dict__[k] for k in _SAMPLEWISE_ATTRS if k in m.__dict__}) for m in modules]

        def restore_modules() -> None:
            for module, attrs in saved:
                for k in _SAMPLEWISE_ATTRS:
                    module.__dict__.pop(k, None)
                module.__dict__.update(attrs)

        self._undo.append(restore_modules)
        progress = pipe.__dict__.get("_progress_bar_config")
        self._undo.append(lambda: pipe.__dict__.pop("_progress_bar_config", None) if progress is None
                          else pipe.__dict__.__setitem__("_progress_bar_config", progress))
        if spec.scheduler:
            import diffusers

            cls = getattr(diffusers, spec.scheduler, None)
            if cls is None:
                raise UserError(f"model {spec.id!r}: unknown scheduler {spec.scheduler!r} (a diffusers scheduler class name)")
            scheduler = pipe.scheduler
            pipe.scheduler = cls.from_config(scheduler.config, **spec.scheduler_config)
            self._undo.append(lambda: setattr(pipe, "scheduler", scheduler))
        generator = DiffusersGenerator(spec, ResolvedWeights("", None, "", ""), str(pipe.device), spec.dtype, self.batch_invariant)
        if self.batch_invariant:
            from t2ibias.generation.samplewise import make_pipeline_samplewise

            generator._samplewise = make_pipeline_samplewise(pipe)
        pipe.set_progress_bar_config(disable=True)
        generator.pipe = pipe
        return generator

    def close(self) -> None:
        """Give the pipeline back as it was lent."""
        while self._undo:
            self._undo.pop()()
        self._generator = None

