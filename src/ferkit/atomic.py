"""Atomic file writes: a temporary file in the target's folder, fsync, then ``os.replace``.

A run killed mid-write leaves the previous file intact, never half a file. Checkpoints, the
decode cache, metrics JSON and plots all write through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary file, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def check_output_path(path: str | Path, kind: str = "file", what: str = "output") -> Path:
    """InputError unless ``path`` can be written as a ``kind`` ("file" or "folder"), checked before
    the work starts, so that a long run is never lost at its last write. Creates nothing."""
    from ferkit.errors import InputError

    path = Path(path)
    if kind == "file" and path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a folder")
    probe = path if kind == "folder" else path.parent
    while not probe.exists():  # the nearest ancestor that exists must be a writable folder
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"cannot write {what} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {path}: no permission to write in {probe}")
    if kind == "file" and path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"cannot write {what} {path}: the file is read-only")
    return path
