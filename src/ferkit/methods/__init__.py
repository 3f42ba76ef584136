"""Training methods, registered by name: ``@register_method`` on a :class:`Method` subclass."""

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
    _load_builtin()
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}' (known: {', '.join(sorted(METHODS))})") from None


def list_methods() -> list[str]:
    _load_builtin()
    return sorted(METHODS)


def _load_builtin() -> None:
    from ferkit.methods import adacm, apsm, ce, eac, fixmatch, mixmatch, pseudolabel, rald, remixmatch, rul, scn  # noqa: F401  (each registers itself)


__all__ = ["METHODS", "Method", "get_method", "list_methods", "register_method"]
