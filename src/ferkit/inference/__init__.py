"""Photos and videos to expressions: face detection, alignment, the Recognizer, result tables.

``Recognizer`` and ``list_models`` are the public entry points (also as ``ferkit.Recognizer``
and ``ferkit.list_models``); they are imported lazily so ``import ferkit`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Recognizer", "list_models", "list_detectors"]


def __getattr__(name: str) -> Any:
    if name == "Recognizer":
        from ferkit.inference.recognizer import Recognizer

        return Recognizer
    if name == "list_models":
        from ferkit.zoo import list_models

        return list_models
    if name == "list_detectors":
        from ferkit.inference.detect import list_detectors

        return list_detectors
    raise AttributeError(f"module 'ferkit.inference' has no attribute {name!r}")
