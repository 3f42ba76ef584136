"""``ferkit serve``: a REST API (FastAPI) and a browser page around one shared ``Recognizer``.

The web dependencies are an optional extra (``pip install "ferkit[serve]"``), so importing
this package does not import FastAPI; :func:`create_app` does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """``create_app`` loads FastAPI on first use, so ``import ferkit.serve`` works without the extra."""
    if name == "create_app":
        from ferkit.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'ferkit.serve' has no attribute {name!r}")
