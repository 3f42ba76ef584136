"""Device choice in one place: ``auto`` picks CUDA, then MPS, then CPU."""

from __future__ import annotations

import torch

from ferkit.errors import ConfigError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> torch.device (checked to exist)."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but no CUDA device is available (use --device auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' asked for, but MPS is not available (use --device auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}' (auto, cpu, cuda, cuda:N, mps)") from None


def autocast_dtype(device: torch.device, amp: str | bool) -> torch.dtype | None:
    """The autocast dtype for mixed precision, or None: bf16 on CUDA when ``auto``/``True``."""
    if amp in (False, "off", "none", None):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if amp in ("auto", True, "bf16") else torch.float16
    return None
