"""Decode-once cache: a reader's decoded arrays kept as ``.npy`` files and memory-mapped back.

Parsing FER2013's csv or decoding thousands of JPEGs takes seconds to minutes; reading the
same arrays back from ``.npy`` with ``np.load(mmap_mode="r")`` takes milliseconds and shares
pages between processes (DDP ranks, evaluation runs). An entry is keyed by a hash of the
reader name, the sources' absolute paths with their size and mtime, and the options that
change decoding, so editing or replacing a source file simply misses the old entry.

Layout: ``$FERKIT_CACHE`` (default ``~/.cache/ferkit``) / ``<reader>-<key>/`` holding one
``.npy`` per array and ``entry.json`` (classes, split, JSON meta and the arrays' shapes).
Every file is written to a temporary name in the entry's folder and moved into place with
``os.replace``; ``entry.json`` goes last and is the commit mark, and on load every array's
shape and dtype are checked against it, so a half-written entry is never read: it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.atomic import atomic_write
from ferkit.data.types import FaceDataset

#: Bump when the on-disk layout or any reader's decoding changes, to ignore older entries.
CACHE_VERSION = 1
_ENTRY = "entry.json"
_ARRAY_FIELDS = ("images", "labels", "soft_targets")


def cache_dir() -> Path:
    """The cache root: ``$FERKIT_CACHE`` if set, else ``~/.cache/ferkit``."""
    env = os.environ.get("FERKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ferkit"


def fingerprint(path: str | os.PathLike[str], deep: bool = True) -> list[Any]:
    """What identifies a source's content cheaply: absolute path, size and mtime.

    A folder with ``deep=True`` is fingerprinted by every file below it (relative path, size,
    mtime), so adding, removing or touching an image misses the cache; ``deep=False`` uses the
    folder's own stat only (for trees too big to walk on every load, e.g. AffectNet's images).
    """
    p = Path(path).expanduser().resolve()
    st = p.stat()
    if not p.is_dir():
        return [str(p), st.st_size, st.st_mtime_ns]
    if not deep:
        return [str(p), "dir", st.st_mtime_ns]
    h = hashlib.sha256()
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for name in sorted(files):
            fp = os.path.join(root, name)
            try:
                fs = os.stat(fp)
            except OSError:
                continue
            h.update(f"{os.path.relpath(fp, p)}\0{fs.st_size}\0{fs.st_mtime_ns}\n".encode())
    return [str(p), "tree", h.hexdigest()]


def cache_key(reader: str, sources: Iterable[Any], options: Mapping[str, Any]) -> str:
    """Hex digest naming an entry; ``sources`` are :func:`fingerprint` results."""
    blob = json.dumps({"v": CACHE_VERSION, "reader": reader, "sources": list(sources),
                       "options": dict(options)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (Path, os.PathLike)):
        return str(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a cache entry's meta")


def save_entry(entry: Path, data: FaceDataset) -> None:
    """Write ``data`` as a cache entry (arrays, then ``entry.json`` last)."""
    entry.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"images": np.ascontiguousarray(data.images),
                                     "labels": np.asarray(data.labels, np.int64)}
    if data.soft_targets is not None:
        arrays["soft_targets"] = np.asarray(data.soft_targets, np.float32)
    meta_json: dict[str, Any] = {}
    meta_arrays: list[str] = []
    for k, v in data.meta.items():
        if isinstance(v, np.ndarray):
            if v.dtype == object:
                raise TypeError(f"meta[{k!r}] is an object array; store strings as a fixed-width array")
            arrays[f"meta.{k}"] = v
            meta_arrays.append(k)
        else:
            meta_json[k] = v
    shapes = {}
    for name, arr in arrays.items():
        atomic_write(entry / f"{name}.npy", lambda f, a=arr: np.save(f, a, allow_pickle=False))
        shapes[name] = [list(arr.shape), arr.dtype.str]
    manifest = {"version": CACHE_VERSION, "classes": list(data.classes), "split": data.split,
                "source": data.source, "meta": meta_json, "meta_arrays": meta_arrays, "arrays": shapes}
    text = json.dumps(manifest, default=_json_default).encode()
    atomic_write(entry / _ENTRY, lambda f: f.write(text))


def load_entry(entry: Path) -> FaceDataset | None:
    """The dataset stored in ``entry``, images memory-mapped read-only; None if absent or incomplete."""
    try:
        manifest = json.loads((entry / _ENTRY).read_text())
        if manifest.get("version") != CACHE_VERSION:
            return None
        arrays: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in manifest["arrays"].items():
            arr = np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            if list(arr.shape) != shape or arr.dtype.str != dtype:
                return None
            # small arrays are read into memory (writable, cheap); images stay memory-mapped
            arrays[name] = arr if name == "images" else np.array(arr)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    meta = dict(manifest["meta"])
    for k in manifest["meta_arrays"]:
        meta[k] = arrays[f"meta.{k}"]
    return FaceDataset(images=arrays["images"], labels=arrays["labels"], classes=tuple(manifest["classes"]),
                       soft_targets=arrays.get("soft_targets"), split=manifest["split"],
                       source=manifest["source"], meta=meta)


def cached(reader: str, sources: Iterable[Any], options: Mapping[str, Any],
           build: Callable[[], FaceDataset], enabled: bool = True) -> FaceDataset:
    """``build()``'s result, decoded once: later calls with the same key load it from the cache.

    ``sources`` are :func:`fingerprint` lists; ``options`` every option that changes the
    decoded arrays. A cache that cannot be written (read-only disk, full disk) only warns.
    """
    if not enabled:
        return build()
    entry = cache_dir() / f"{reader}-{cache_key(reader, sources, options)}"
    hit = load_entry(entry)
    if hit is not None:
        hit.meta["cache"] = str(entry)
        return hit
    data = build()
    try:
        save_entry(entry, data)
    except OSError as exc:
        warnings.warn(f"ferkit: could not write the data cache at {entry}: {exc}", stacklevel=2)
        return data
    # hand back the memory-mapped copy, as a warm call would, so both behave the same
    loaded = load_entry(entry)
    if loaded is None:
        return data
    loaded.meta["cache"] = str(entry)
    return loaded
