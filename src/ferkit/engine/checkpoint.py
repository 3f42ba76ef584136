"""Atomic checkpoint and file writes, and the RNG state that makes a resume exact.

Everything is written to a temporary file in the target's directory and moved into place with
``os.replace``, so a run killed mid-write leaves the previous file intact, never half a file.
Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.atomic import atomic_write
from ferkit.errors import InputError
from ferkit.torch_files import safe_torch_load


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a ferkit checkpoint with ``weights_only=True``; one-line error if it is missing or bad."""
    obj = safe_torch_load(path, "checkpoint")
    if not isinstance(obj, dict):
        raise InputError(f"cannot read checkpoint {path}: it holds a {type(obj).__name__}, not a ferkit checkpoint")
    return obj


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch global RNG states as weights_only-safe values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *[float(v) for v in np_state[2:]]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
