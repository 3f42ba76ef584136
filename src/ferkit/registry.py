"""The one rule every registry follows: a name is registered once.

Methods, backbones, dataset readers, detectors, label graphs and named models all add
themselves to a table by name. Registering the same object again (a module imported twice) is
harmless; a different object under a taken name is a ConfigError, never a silent replacement.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ferkit.errors import ConfigError

T = TypeVar("T")


def add_unique(table: dict[str, Any], name: str, obj: T, what: str) -> T:
    """``table[name] = obj`` unless ``name`` already holds something else (``what``: 'method', ...)."""
    if name in table and table[name] is not obj and table[name] != obj:
        raise ConfigError(f"{what} {name!r} is already registered")
    table[name] = obj
    return obj
