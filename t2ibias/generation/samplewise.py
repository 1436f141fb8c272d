"""Sample-wise execution: make each image's pixels independent of the batch it was made in.

Matrix and convolution kernels pick different code paths for different batch sizes (a 1-row
GEMM is a GEMV; oneDNN and cuDNN choose algorithms by shape), so the same latent denoised in a
batch of 4 and alone can differ in the last bits, and after rounding to 8 bits, in a few pixels.
Running the heavy modules (text encoders, denoiser, VAE decoder) one sample at a time inside a
batched pipeline call removes that dependence while keeping one pipeline call per batch.
"""

from __future__ import annotations

from typing import Any

import torch

#: Keyword arguments that never carry a batch dimension (FLUX's position ids are [seq, 3]).
_NO_BATCH_KWARGS = frozenset({"txt_ids", "img_ids", "timestep_cond"})


def _take(value: Any, i: int, batch: int) -> Any:
    if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch:
        return value[i : i + 1]
    if isinstance(value, dict):
        return {k: _take(v, i, batch) for k, v in value.items()}
    return value


def _cat(parts: list[Any]) -> Any:
    first = parts[0]
    if torch.is_tensor(first):
        return torch.cat(parts, dim=0)
    if isinstance(first, tuple) and not hasattr(first, "keys"):
        return type(first)(_cat([p[j] for p in parts]) for j in range(len(first)))
    if hasattr(first, "keys") and hasattr(first, "__getitem__"):  # diffusers/transformers ModelOutput
        merged = {k: _cat([p[k] for p in parts]) for k in first.keys() if first[k] is not None}
        return type(first)(**merged)
    if first is None:
        return None
    raise TypeError(f"cannot merge sample-wise outputs of type {type(first).__name__}")


def _batch_size(args: tuple, kwargs: dict) -> int | None:
    for value in list(args) + [v for k, v in kwargs.items() if k not in _NO_BATCH_KWARGS]:
        if torch.is_tensor(value) and value.ndim > 0:
            return int(value.shape[0])
    return None


def make_samplewise(module: torch.nn.Module) -> None:
    """Replace ``module.forward`` with one that runs each batch element alone and concatenates."""
    if getattr(module, "_t2ibias_samplewise", False):
        return
    forward = module.forward

    def samplewise_forward(*args: Any, **kwargs: Any) -> Any:
        batch = _batch_size(args, kwargs)
        if batch is None or batch == 1:
            return forward(*args, **kwargs)
        parts = []
        for i in range(batch):
            a = tuple(_take(v, i, batch) for v in args)
            kw = {k: (v if k in _NO_BATCH_KWARGS else _take(v, i, batch)) for k, v in kwargs.items()}
            parts.append(forward(*a, **kw))
        return _cat(parts)

    module.forward = samplewise_forward  # type: ignore[method-assign]
    module._t2ibias_samplewise = True  # type: ignore[attr-defined]


def make_pipeline_samplewise(pipe: Any) -> list[str]:
    """Make a diffusers pipeline's heavy components sample-wise; returns the names changed."""
    changed = []
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3", "unet", "transformer", "prior"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            make_samplewise(module)
            changed.append(name)
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
        changed.append("vae")
    return changed
