"""The reader registry and :func:`load_dataset`, the one entry point the trainer and CLI call.

A reader is one function ``reader(path, split=None, *, cache=True, **its_options) -> FaceDataset``
registered under a name with :func:`register_dataset`; its keyword options are the options
``load_dataset`` accepts for that name, so a typo in a config is a ConfigError, not a silent no-op.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any, TypeVar

from ferkit.data._common import is_training_split
from ferkit.data.noise import inject_noise
from ferkit.data.types import FaceDataset
from ferkit.errors import ConfigError
from ferkit.registry import add_unique

Reader = Callable[..., FaceDataset]
R = TypeVar("R", bound=Reader)

#: name -> reader function (see :func:`register_dataset`).
DATASETS: dict[str, Reader] = {}


def register_dataset(name: str) -> Callable[[R], R]:
    """Decorator registering a reader under ``name`` (lower-case), e.g. ``@register_dataset("fer2013")``."""

    def deco(fn: R) -> R:
        return add_unique(DATASETS, name.lower(), fn, "dataset reader")

    return deco


def reader_options(name: str) -> tuple[str, ...]:
    """The keyword options a registered reader accepts (besides ``cache``, ``noise``, ``noise_seed``)."""
    sig = inspect.signature(_reader(name))
    return tuple(p.name for p in sig.parameters.values()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "cache")


def _reader(name: str) -> Reader:
    try:
        return DATASETS[str(name).lower()]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})") from None


def load_dataset(name: str, path: str | os.PathLike[str] | None, split: str | None = None,
                 **options: Any) -> FaceDataset:
    """Read dataset ``name`` from ``path`` (``split`` None = every row) through the decode-once cache.

    Common options: ``cache=False`` skips the cache; ``noise=p, noise_seed=s`` flips each
    training label with probability ``p`` to another class (see :func:`inject_noise`). Noise is
    applied only when ``split`` is a training split (``Training``/``train``): evaluation rows are
    never touched, and for any other split ``meta["noise_rate"]`` is 0 and ``meta["noise_note"]``
    says why. The clean labels stay in ``meta["clean_labels"]``, the flips in ``meta["flipped"]``.
    Every other option goes to the reader; an option it does not take is a ConfigError.
    """
    reader = _reader(name)
    cache = bool(options.pop("cache", True))
    noise = float(options.pop("noise", 0.0) or 0.0)
    noise_seed = int(options.pop("noise_seed", 0) or 0)
    accepted = reader_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"dataset {name!r} has no option {', '.join(map(repr, unknown))} "
                          f"(options: {', '.join(accepted + ('cache', 'noise', 'noise_seed'))})")
    data = reader(path, split, cache=cache, **options)
    if noise > 0:
        if is_training_split(data.split):
            noisy, flipped = inject_noise(data.labels, noise, data.num_classes, noise_seed)
            data.meta.update(clean_labels=data.labels, flipped=flipped, noise_rate=noise,
                             noise_seed=noise_seed)
            data.labels = noisy
        else:
            data.meta.update(noise_rate=0.0, noise_note=f"noise not applied: split {data.split!r} is not a "
                                                        "training split (evaluation rows are never touched)")
    return data
