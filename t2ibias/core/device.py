"""Which torch device a command runs on."""

from __future__ import annotations

from t2ibias.core.errors import UserError


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is visible (use --device cpu, or check CUDA_VISIBLE_DEVICES)")
        return device
    raise UserError(f"--device {device}: unknown device (use auto, cpu, cuda or cuda:N)")
