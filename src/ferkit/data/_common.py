"""Small helpers the readers share: path checks, csv column checks, split names."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ferkit.errors import ConfigError, InputError

#: How many offending paths a reader lists in its meta (the count is always complete).
SHOW_PATHS = 10

#: Split names (lower-case) that mean "the rows a model is trained on"; noise only touches these.
TRAINING_SPLITS = frozenset({"training", "train"})


def as_path(path: str | os.PathLike[str] | None, dataset: str) -> Path:
    if path is None or str(path) == "":
        raise ConfigError(f"{dataset}: no path given (the dataset's file or folder)")
    return Path(path).expanduser()


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is an existing file, else InputError('<what> <path> not found')."""
    if not path.exists():
        raise InputError(f"{what} {path} not found")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, expected a file")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        problem = "not found" if not path.exists() else "is not a folder"
        raise InputError(f"{what} {path} {problem}")
    return path


def read_csv(path: Path, required: Sequence[str], what: str, optional: Sequence[str] = (),
             dtype: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The ``required`` (+ present ``optional``) columns of a csv; InputError naming missing ones."""
    try:
        header = pd.read_csv(path, nrows=0)
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{what} {path} is not a readable csv: {str(exc).splitlines()[0]}") from None
    found = [str(c) for c in header.columns]
    missing = [c for c in required if c not in found]
    if missing:
        raise InputError(f"{what} {path} has no column {', '.join(map(repr, missing))} "
                         f"(columns found: {', '.join(found) or 'none'})")
    cols = list(required) + [c for c in optional if c in found]
    try:
        return pd.read_csv(path, usecols=cols, dtype=dict(dtype or {}), keep_default_na=False,
                           na_values=[""])
    except (OSError, EOFError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{what} {path} could not be parsed: {str(exc).splitlines()[0]}") from None


def pick_split(split: str | None, aliases: Mapping[str, str], dataset: str) -> str | None:
    """The dataset's own name for ``split`` (case-insensitive, aliases allowed); None = all rows."""
    if split is None or str(split).lower() in ("", "all"):
        return None
    key = str(split).strip().lower()
    if key in aliases:
        return aliases[key]
    names = sorted(set(aliases.values()))
    raise ConfigError(f"{dataset} has no split {split!r} (known: {', '.join(names)}; None for all rows)")


def is_training_split(split: str | None) -> bool:
    return split is not None and str(split).lower() in TRAINING_SPLITS


def first_paths(paths: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if len(out) >= SHOW_PATHS:
            break
        out.append(str(p))
    return out


def check_size(image_size: int, dataset: str) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 8:
        raise ConfigError(f"{dataset}: image_size must be an integer >= 8, not {image_size!r}")
    return int(image_size)
