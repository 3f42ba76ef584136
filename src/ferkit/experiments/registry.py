"""The experiment kinds: ``kind`` name -> the class that runs such configs.

At the bottom of :mod:`ferkit.experiments` (it imports nothing from it), so the core and every kind
can import it without a cycle; the package's ``__init__`` imports the built-in kinds, which register
themselves here.
"""

from __future__ import annotations

from typing import Any

from ferkit.errors import ConfigError
from ferkit.registry import add_unique

#: experiment kind name -> its class (see ferkit.experiments.core.ExperimentKind)
KINDS: dict[str, Any] = {}


def register_kind(cls: type) -> type:
    """Class decorator: make ``cls`` the runner of the experiment configs whose ``kind`` is ``cls.name``."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} needs a name")
    return add_unique(KINDS, cls.name, cls, "experiment kind")


def get_kind(name: str) -> type:
    """The class of an experiment kind."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown experiment kind {name!r} (known: {', '.join(sorted(KINDS))})") from None


def list_kinds() -> list[str]:
    """The registered kinds (what an experiment config's ``kind`` may say)."""
    return sorted(KINDS)
