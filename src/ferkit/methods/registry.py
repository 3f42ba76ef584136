"""The method registry: ``method.name`` in a config -> its :class:`~ferkit.methods.base.Method` class.

At the bottom of :mod:`ferkit.methods` (it imports only the base class), so every method module can
register itself here without importing the package that imports it; the package's ``__init__``
imports the built-in methods.
"""

from __future__ import annotations

from ferkit.errors import ConfigError
from ferkit.methods.base import Method
from ferkit.registry import add_unique

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available as ``method.name: <cls.name>`` in configs."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    return add_unique(METHODS, cls.name, cls, "method")


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}' (known: {', '.join(sorted(METHODS))})") from None


def list_methods() -> list[str]:
    return sorted(METHODS)
