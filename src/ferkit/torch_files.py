"""Loading torch files safely (``weights_only=True``) with one plain line for every failure.

torch's own messages are long, name internal pickle opcodes ("Unsupported operand 65", "pop from
empty list") or advise retrying with ``weights_only=False``, which would run whatever code the
file holds. ferkit never does that, so the messages here say what is wrong with the file instead.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ferkit.errors import InputError


def safe_torch_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; an InputError naming ``what`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():  # torch's asides on a file it then refuses ("Detected pickle
            warnings.simplefilter("ignore")  # protocol 4") would print before the one line below
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and safety errors all mean "not usable"
        raise InputError(f"cannot read {what} {path}: {_reason(path, exc)}") from None


def _reason(path: Path, exc: Exception) -> str:
    text = str(exc)
    if "Unsupported global" in text:
        name = re.search(r"GLOBAL ([\w.]+)", text)
        return ("it holds Python objects" + (f" ({name.group(1)})" if name else "") + ", and ferkit loads only "
                "tensors and plain values from torch files, so that a file cannot run code")
    if not path.stat().st_size:
        return "empty file"
    if "central directory" in text or "zip archive" in text:
        return "the file is truncated or corrupt (a torch zip archive that cannot be read)"
    if not zipfile.is_zipfile(path):
        return "not a torch file (truncated, or another format)"
    if "Weights only load failed" in text:
        return ("it holds Python objects, and ferkit loads only tensors and plain values from torch files, so "
                "that a file cannot run code")
    return text.splitlines()[0] if text else type(exc).__name__
