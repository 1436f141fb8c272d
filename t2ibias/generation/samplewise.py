"""Sample-wise execution: make each image's pixels independent of the batch it was made in.

Matrix and convolution kernels pick different code paths for different batch sizes (a 1-row
GEMM is a GEMV; oneDNN and cuDNN choose algorithms by shape), so the same latent denoised in a
batch of 4 and alone can differ in the last bits, and after rounding to 8 bits, in a few pixels.
Running the heavy modules (text encoders, denoiser, VAE decoder) one image at a time inside a
batched pipeline call removes that dependence while keeping one pipeline call per batch.

With classifier-free guidance the denoiser sees ``[uncond_0..uncond_{n-1}, cond_0..cond_{n-1}]``;
the two rows of image ``i`` run together, exactly as they do when that image is made alone.
"""

from __future__ import annotations

from typing import Any

import torch

#: Keyword arguments that never carry a batch dimension (FLUX's position ids are [seq, 3]).
_NO_BATCH_KWARGS = frozenset({"txt_ids", "img_ids", "timestep_cond"})


class SampleWise:
    """Wraps modules of one pipeline; ``n_images`` is set to the size of the current call."""

    def __init__(self) -> None:
        self.n_images: int | None = None

    def row_groups(self, batch: int) -> list[list[int]]:
        n = self.n_images
        if n and batch == 2 * n:  # classifier-free guidance: image i is rows i and n + i
            return [[i, n + i] for i in range(n)]
        return [[i] for i in range(batch)]

    def wrap(self, module: torch.nn.Module) -> None:
        if getattr(module, "_t2ibias_samplewise", False):
            return
        forward = module.forward

        def samplewise_forward(*args: Any, **kwargs: Any) -> Any:
            batch = _batch_size(args, kwargs)
            if batch is None or batch == 1:
                return forward(*args, **kwargs)
            groups = self.row_groups(batch)
            if len(groups) == 1:
                return forward(*args, **kwargs)
            parts = []
            for rows in groups:
                a = tuple(_take(v, rows, batch) for v in args)
                kw = {k: (v if k in _NO_BATCH_KWARGS else _take(v, rows, batch)) for k, v in kwargs.items()}
                parts.append(forward(*a, **kw))
            merged = _cat(parts)
            order = [r for rows in groups for r in rows]
            if order != list(range(batch)):  # undo the grouping: row order as the caller passed it
                inverse = torch.empty(batch, dtype=torch.long)
                inverse[torch.tensor(order)] = torch.arange(batch)
                merged = _reorder(merged, inverse)
            return merged

        module.forward = samplewise_forward  # type: ignore[method-assign]
        module._t2ibias_samplewise = True  # type: ignore[attr-defined]


def _take(value: Any, rows: list[int], batch: int) -> Any:
    if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch:
        return value[rows[0] : rows[0] + 1] if len(rows) == 1 else value[rows]
    if isinstance(value, dict):
        return {k: _take(v, rows, batch) for k, v in value.items()}
    return value


def _map(value: Any, fn: Any) -> Any:
    if torch.is_tensor(value):
        return fn(value)
    if isinstance(value, tuple) and not hasattr(value, "keys"):
        return type(value)(_map(v, fn) for v in value)
    if hasattr(value, "keys") and hasattr(value, "__getitem__"):  # diffusers/transformers ModelOutput
        return type(value)(**{k: _map(value[k], fn) for k in value.keys() if value[k] is not None})
    return value


def _reorder(value: Any, index: torch.Tensor) -> Any:
    return _map(value, lambda t: t[index.to(t.device)] if t.ndim > 0 and t.shape[0] == len(index) else t)


def _cat(parts: list[Any]) -> Any:
    first = parts[0]
    if torch.is_tensor(first):
        return torch.cat(parts, dim=0)
    if isinstance(first, tuple) and not hasattr(first, "keys"):
        return type(first)(_cat([p[j] for p in parts]) for j in range(len(first)))
    if hasattr(first, "keys") and hasattr(first, "__getitem__"):
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


def make_pipeline_samplewise(pipe: Any) -> SampleWise:
    """Make a diffusers pipeline's heavy components sample-wise; set ``.n_images`` before each call."""
    sw = SampleWise()
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3", "unet", "transformer", "prior"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            sw.wrap(module)
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    return sw
