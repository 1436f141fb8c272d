"""The diffusers adapter: resolve weights, load a pipeline, make images one seed per image."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import fingerprint
from t2ibias.models.generator_spec import TINY_PREFIX, GeneratorSpec
from t2ibias.core.safe_load import first_line, refuse_code_in_folder, weights_only_loads

log = logging.getLogger(__name__)
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the weights of a spec are, and an identity that changes whenever they change."""

    load_from: str  # a local folder, or a hub id (then ``revision`` is a commit)
    revision: str | None
    identity: str  # e.g. "hub:owner/name@<commit>", "local:<hash>", "tiny:tiny-random-sd-v1"
    #: The folder on this machine holding the files (the hub snapshot for hub models).
    folder: str = ""


def effective_dtype(spec: GeneratorSpec, device: str) -> str:
    """Half precision on a GPU as configured; float32 on the CPU, where fp16 kernels are slow or missing."""
    return spec.dtype if device.startswith("cuda") else "float32"


def _folder_identity(folder: Path) -> str:
    """Hash of every config file's bytes and every other file's name and size (weights are large)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        h.update(rel.encode())
        if path.suffix in (".json", ".txt", ".yaml") and path.stat().st_size < 1_000_000:
            h.update(path.read_bytes())
        else:
            h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:16]


def _missing_weights_message(spec: GeneratorSpec, reason: str) -> str:
    gated = " (gated: accept its licence on the hub and set HF_TOKEN)" if "gated" in reason.lower() or "401" in reason else ""
    return (
        f"model {spec.id!r}: weights for {spec.source}@{spec.revision} are not in the local Hugging Face cache "
        f"and could not be downloaded{gated}; download them where there is network "
        f"(`hf download {spec.source}`) or pass a local diffusers folder: --model path/to/folder"
    )


def resolve_weights(spec: GeneratorSpec, allow_download: bool = True) -> ResolvedWeights:
    """Find (or fetch) the weights and pin the exact revision before any image key is computed."""
    if spec.is_tiny:
        from t2ibias.models.tiny import TINY_BUILD_VERSION, TINY_BUILDERS, tiny_model_dir

        name = spec.source[len(TINY_PREFIX):]
        if name not in TINY_BUILDERS:
            raise UserError(f"model {spec.id!r}: unknown tiny model {name!r} (one of {', '.join(TINY_BUILDERS)})")
        folder = tiny_model_dir(name)
        return ResolvedWeights(str(folder), None, f"tiny:{name}-v{TINY_BUILD_VERSION}", str(folder))
    local = Path(spec.source).expanduser()
    if local.is_dir():
        return ResolvedWeights(str(local.resolve()), None, f"local:{_folder_identity(local)}", str(local.resolve()))
    from diffusers import DiffusionPipeline

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or not allow_download
    kwargs: dict[str, Any] = {"revision": spec.revision}
    if spec.variant:
        kwargs["variant"] = spec.variant
    try:
        try:
            folder = DiffusionPipeline.download(spec.source, local_files_only=True, **kwargs)
        except Exception:
            if offline:
                raise
            folder = DiffusionPipeline.download(spec.source, **kwargs)
    except Exception as exc:  # hub errors come in many types (OSError, HTTP errors, EntryNotFound)
        raise UserError(_missing_weights_message(spec, str(exc))) from None
    commit = Path(folder).name if _SHA.match(Path(folder).name) else spec.revision
    return ResolvedWeights(spec.source, commit, f"hub:{spec.source}@{commit}", str(folder))


def generator_fingerprint(spec: GeneratorSpec, weights: ResolvedWeights, dtype: str, batch_invariant: bool = True) -> str:
    """Identity of everything that shapes pixels: weights, pipeline, dtype, scheduler, call params,
    whether images run sample-wise (batch-invariant) or in batched kernels, and the speed levers
    that are set (``compile``, ``channels_last``, ``vae_tiling``, ``vae_slicing``, ``tf32``: each can
    change bits). A spec with every lever at its default has the fingerprint it had before levers existed."""
    parts: dict[str, Any] = {
        "weights": weights.identity,
        "execution": "samplewise" if batch_invariant else "batched",
        "pipeline": spec.pipeline,
        "variant": spec.variant,
        "dtype": dtype,
        "scheduler": spec.scheduler,
        "scheduler_config": spec.scheduler_config,
        "params": spec.generation_params(),
    }
    levers = spec.speed_levers()
    if levers:
        parts["levers"] = levers
    return fingerprint(parts)


def apply_speed_levers(pipe: Any, spec: GeneratorSpec, device: str) -> None:
    """Set the spec's speed levers on a loaded pipeline (before it is made sample-wise, so that a
    compiled denoiser runs one fixed-shape call per image there)."""
    import torch

    heavy = [m for m in (getattr(pipe, n, None) for n in ("unet", "transformer")) if isinstance(m, torch.nn.Module)]
    vae = getattr(pipe, "vae", None)
    if spec.channels_last:
        for module in heavy + ([vae] if isinstance(vae, torch.nn.Module) else []):
            module.to(memory_format=torch.channels_last)
    if spec.tf32 and device.startswith("cuda"):
        # process-wide switches: every fp32 matmul/convolution of this process may use TF32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if vae is not None and spec.vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if vae is not None and spec.vae_slicing and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if spec.compile:
        for module in heavy:
            module.forward = torch.compile(module.forward, mode=None if spec.compile == "default" else spec.compile)


def dtype_kwarg() -> str:
    """``dtype`` on diffusers versions that deprecate ``torch_dtype``, else ``torch_dtype``."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image.Image
    blocked: bool  # blacked out by the pipeline's safety checker


class DiffusersGenerator:
    """Loads a pipeline through ``DiffusionPipeline.from_pretrained`` and makes batches of images.

    Each image gets its own ``torch.Generator`` (on the CPU, so a seed means the same initial noise
    on every device). With ``batch_invariant`` (the default) the heavy modules run sample-wise, so
    neither the batch size nor the neighbours in a batch change an image: every image is bit for bit
    the one a batch-of-one call makes. Without it, kernels batch across images (faster on a GPU) and
    an image's last bits depend on the batch it was made in.
    """

    def __init__(self, spec: GeneratorSpec, weights: ResolvedWeights, device: str, dtype: str, batch_invariant: bool = True) -> None:
        self.spec = spec
        self.batch_invariant = batch_invariant
        self._samplewise: Any = None
        self.weights = weights
        self.device = device
        self.dtype = dtype
        self.pipe: Any = None

    def load(self) -> None:
        import torch
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as dlogging

        from transformers.utils import logging as tlogging

        for lib in (dlogging, tlogging):
            lib.disable_progress_bar()
            lib.set_verbosity_error()
        kwargs: dict[str, Any] = {dtype_kwarg(): getattr(torch, self.dtype)}
        if self.weights.revision:
            kwargs["revision"] = self.weights.revision
            if self.spec.variant:
                kwargs["variant"] = self.spec.variant
        try:
            with weights_only_loads():  # .bin weights: tensors only, never pickled code
                pipe = DiffusionPipeline.from_pretrained(self.weights.load_from, trust_remote_code=False, **kwargs)
        except (OSError, ValueError, EnvironmentError, pickle.UnpicklingError) as exc:
            if self.weights.folder:
                refuse_code_in_folder(self.weights.folder, f"model {self.spec.id!r}")
            raise UserError(
                f"model {self.spec.id!r}: cannot load a pipeline from {self.weights.load_from} ({first_line(exc)}); "
                "pass a folder written by `save_pretrained`"
            ) from None
        if self.spec.scheduler:
            import diffusers

            cls = getattr(diffusers, self.spec.scheduler, None)
            if cls is None:
                raise UserError(f"model {self.spec.id!r}: unknown scheduler {self.spec.scheduler!r} (a diffusers scheduler class name)")
            pipe.scheduler = cls.from_config(pipe.scheduler.config, **self.spec.scheduler_config)
        if type(pipe).__name__ != self.spec.pipeline:
            log.warning("model %s loaded as %s, configured as %s", self.spec.id, type(pipe).__name__, self.spec.pipeline)
        self.adopt(pipe.to(self.device))

    def adopt(self, pipe: Any) -> None:
        """Make images with ``pipe`` (already loaded, scheduler set, on this generator's device):
        sets the spec's speed levers and sample-wise execution on it, in place."""
        from t2ibias.generation.samplewise import make_pipeline_samplewise

        apply_speed_levers(pipe, self.spec, self.device)
        if self.batch_invariant:
            self._samplewise = make_pipeline_samplewise(pipe)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe

    def generate(self, prompts: list[str], seeds: list[int]) -> list[GeneratedImage]:
        import torch

        if self.pipe is None:
            self.load()
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        if self._samplewise is not None:
            self._samplewise.n_images = len(prompts)
        out = self.pipe(
            prompt=prompts,
            generator=generators,
            num_inference_steps=self.spec.steps,
            guidance_scale=self.spec.guidance,
            height=self.spec.height,
            width=self.spec.width,
            output_type="pil",
            **self.spec.call_kwargs,
        )
        flags = getattr(out, "nsfw_content_detected", None) or [False] * len(out.images)
        return [GeneratedImage(img, bool(flag)) for img, flag in zip(out.images, flags)]
