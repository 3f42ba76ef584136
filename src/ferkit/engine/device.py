"""Device choice in one place: ``auto`` picks CUDA, then MPS, then CPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), not by oneDNN's emulation.

    Measured on this project's 2-core AMX CPU (``benchmarks/throughput.py``): bf16 autocast
    trains the larger backbones 1.3-2.7x faster than fp32. On a 2-core AVX-512 CPU without those
    instructions (no ``avx512_bf16`` / ``amx_bf16`` flag) oneDNN still reports bf16 as supported,
    by emulation, and the same autocast trained MobileNet's upper blocks 2x slower than fp32, so
    the CPU's own flags decide, not oneDNN's answer.
    """
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, amp: str | bool) -> torch.dtype | None:
    """The autocast dtype for mixed precision, or None.

    ``auto`` / ``True``: bf16 on CUDA, and on CPUs with native bf16 (:func:`cpu_has_fast_bf16`);
    ``bf16`` forces bf16, ``fp16`` float16 (CUDA only), ``off`` / ``False`` full precision.
    """
    if amp in (False, "off", "none", None, "fp32"):
        return None
    if amp not in (True, "auto", "bf16", "fp16"):
        raise ConfigError(f"train.amp must be auto, bf16, fp16 or off, not {amp!r}")
    if device.type == "cuda":
        return torch.float16 if amp == "fp16" else torch.bfloat16
    if device.type == "cpu" and (amp == "bf16" or (amp in ("auto", True) and cpu_has_fast_bf16())):
        return torch.bfloat16
    return None


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block and restored after it (None: as is).

    torch's setting is process-wide: a library that changed it for good would slow down or
    oversubscribe whatever else the user's process runs, so ferkit only holds it while it computes.
    """
    before = torch.get_num_threads()
    if not n or int(n) == before:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
