"""Example photos shipped with ferkit (sources and licences in LICENSES.md).

>>> from ferkit import examples
>>> examples.path("astronaut")            # doctest: +SKIP
PosixPath('.../ferkit/examples/astronaut.jpg')
"""

from __future__ import annotations

from pathlib import Path

from ferkit.errors import InputError

HERE = Path(__file__).resolve().parent
_EXTS = (".jpg", ".jpeg", ".png", ".mp4")


def names() -> list[str]:
    """The example files' names (without extension)."""
    return sorted(p.stem for p in HERE.iterdir() if p.suffix.lower() in _EXTS)


def path(name: str = "astronaut") -> Path:
    """The path of an example photo, by name with or without extension (``astronaut``, ``coffee``...)."""
    cand = HERE / name
    if cand.suffix and cand.is_file():
        return cand
    for ext in _EXTS:
        if (HERE / f"{name}{ext}").is_file():
            return HERE / f"{name}{ext}"
    raise InputError(f"no example named '{name}' (examples: {', '.join(names())})")
