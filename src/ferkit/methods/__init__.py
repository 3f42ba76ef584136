"""Training methods, registered by name: ``@register_method`` on a :class:`Method` subclass.

A new method is one module that registers itself (:mod:`ferkit.methods.registry`) and one line here.
"""

from __future__ import annotations

from ferkit.methods import (  # noqa: F401  (each registers itself)
    adacm,
    apsm,
    ce,
    eac,
    fixmatch,
    mixmatch,
    pseudolabel,
    rald,
    remixmatch,
    rul,
    scn,
)
from ferkit.methods.base import Method
from ferkit.methods.registry import METHODS, get_method, list_methods, register_method

__all__ = ["METHODS", "Method", "get_method", "list_methods", "register_method"]
