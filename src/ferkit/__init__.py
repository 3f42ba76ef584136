"""ferkit: facial expression recognition, trained reproducibly and run offline on a CPU."""

from __future__ import annotations

__version__ = "0.1.0"

from ferkit.labels import CANONICAL  # noqa: E402

__all__ = ["CANONICAL", "__version__"]
