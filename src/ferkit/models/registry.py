"""Backbone registry and the ``build_model`` factory.

A new backbone is one decorated function taking ``in_channels``, ``image_size`` and its own
keyword options and returning a :class:`~ferkit.models.base.Backbone` whose ``options``
attribute holds the resolved options (so ``FERModel.config()`` can rebuild it)::

    @register_model("my_net")
    def my_net(in_channels: int = 1, image_size: int = 48, width: int = 32) -> Backbone: ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ferkit.errors import ConfigError
from ferkit.models.base import Backbone, FERModel
from ferkit.registry import add_unique

BackboneFn = Callable[..., Backbone]

#: name -> backbone constructor
MODELS: dict[str, BackboneFn] = {}


def register_model(name: str | None = None) -> Callable[[BackboneFn], BackboneFn]:
    """Decorator registering a backbone constructor under ``name`` (default: the function name)."""

    def deco(fn: BackboneFn) -> BackboneFn:
        return add_unique(MODELS, name or fn.__name__, fn, "backbone")

    return deco


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(MODELS)


def backbone_options(name: str) -> dict[str, Any]:
    """The options a backbone accepts (besides in_channels / image_size) with their defaults."""
    fn = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.name not in ("in_channels", "image_size") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _lookup(name: str) -> BackboneFn:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(list_backbones())}") from None


def build_model(name: str, num_classes: int, in_channels: int = 1, image_size: int = 48,
                dropout: float | None = None, **kwargs: Any) -> FERModel:
    """Build a registered backbone with a ``num_classes`` linear head.

    ``dropout`` (before ``fc``) defaults to the backbone's ``default_dropout``; other keywords
    go to the backbone (``stem``, ``width``, ``patch_size``, ...). Unknown names or options
    raise ConfigError naming what is accepted.
    """
    fn = _lookup(name)
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if int(in_channels) not in (1, 3):
        raise ConfigError(f"in_channels must be 1 or 3, got {in_channels}")
    if int(image_size) < 8:
        raise ConfigError(f"image_size must be >= 8, got {image_size}")
    allowed = backbone_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}; "
            f"accepted: {', '.join(['dropout', *allowed]) }"
        )
    backbone = fn(in_channels=int(in_channels), image_size=int(image_size), **kwargs)
    if not hasattr(backbone, "options"):
        backbone.options = dict(kwargs)
    if dropout is None:
        dropout = backbone.default_dropout
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    return FERModel(backbone, int(num_classes), name=name, in_channels=int(in_channels),
                    image_size=int(image_size), dropout=float(dropout))
