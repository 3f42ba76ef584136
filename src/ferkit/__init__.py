"""ferkit: facial expression recognition, trained reproducibly and run offline on a CPU."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from ferkit.labels import CANONICAL  # noqa: E402

__all__ = ["CANONICAL", "Recognizer", "__version__", "list_models"]


def __getattr__(name: str) -> Any:
    """``Recognizer`` and ``list_models`` load on first use, so ``import ferkit`` stays cheap."""
    if name == "Recognizer":
        from ferkit.inference.recognizer import Recognizer

        return Recognizer
    if name == "list_models":
        from ferkit.zoo import list_models

        return list_models
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")
