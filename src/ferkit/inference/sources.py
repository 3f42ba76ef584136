"""What a user can hand to predict/analyze, turned into RGB frames with a name and a time.

An input is a path (image, video, or a folder searched recursively for both, by extension),
a numpy array (H, W) or (H, W, 3) RGB uint8, a PIL image, or an int (a webcam index). Missing
paths and unsupported types are an :class:`~ferkit.errors.InputError` at once; a file that
exists but cannot be decoded is raised or reported, as the caller chooses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import InputError

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm",
                        ".pbm", ".jp2"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})


def load_image(image: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a path, a numpy array (H, W) / (H, W, 3) / (H, W, 4) or a PIL image."""
    if isinstance(image, (str, os.PathLike)):
        from ferkit.data.images import read_image

        path = Path(image)
        if not path.exists():
            raise InputError(f"file not found: {path}")
        if path.is_dir():
            raise InputError(f"{path} is a folder, not an image (analyze() and the CLI take folders)")
        img = read_image(path, gray=False)
        if img is None or img.size == 0:
            raise InputError(f"cannot decode image: {path}")
        return img
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        from ferkit.data.images import check_pixels, pil_to_rgb

        if image.width == 0 or image.height == 0:
            raise InputError(f"empty image ({image.width}x{image.height} pixels)")
        check_pixels(image.width, image.height, "PIL image")  # Pillow decodes lazily: still in time
        return pil_to_rgb(image)
    raise InputError(f"unsupported image type {type(image).__name__} (give a path, a numpy array or a PIL image)")


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim in (2, 3) and (a.shape[0] == 0 or a.shape[1] == 0):
        raise InputError(f"empty image (array of shape {a.shape})")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.integer) and a.size and a.min() >= 0 and a.max() <= 255:
            a = a.astype(np.uint8)
        else:
            raise InputError(f"image arrays must be uint8 0-255 (got {a.dtype})")
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        return np.ascontiguousarray(np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[:, :, :3])
    raise InputError(f"image arrays must be (H, W) or (H, W, 3) (got shape {a.shape})")


@dataclass
class Source:
    """One input: ``kind`` is image, video, webcam or array; ``name`` is what output rows show."""

    kind: str
    obj: Any
    name: str
    rel: str = ""  # path below the folder it was found in (for --annotate), else the file name


@dataclass
class Frame:
    """One RGB frame of a source, or ``error`` (a one-line reason) when it could not be read."""

    source: Source
    index: int
    time_s: float
    rgb: np.ndarray | None = None
    error: str = ""


def kind_of(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    return "image"


def expand_inputs(inputs: Any) -> list[Source]:
    """The sources in ``inputs`` (one input or a list), folders expanded recursively and sorted."""
    if isinstance(inputs, (str, os.PathLike, np.ndarray, int)) or not isinstance(inputs, Iterable):
        inputs = [inputs]
    out: list[Source] = []
    for k, item in enumerate(inputs):
        if isinstance(item, bool):
            raise InputError(f"unsupported input {item!r}")
        if isinstance(item, int):
            out.append(Source("webcam", item, f"webcam:{item}", f"webcam{item}"))
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir():
                exts = IMAGE_EXTS | VIDEO_EXTS
                files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in exts)
                out.extend(Source(kind_of(p), p, str(p), str(p.relative_to(path))) for p in files)
            elif path.is_file():
                out.append(Source(kind_of(path), path, str(path), path.name))
            else:
                raise InputError(f"file not found: {path}")
        elif isinstance(item, np.ndarray) or type(item).__module__.startswith("PIL"):
            out.append(Source("array", item, f"<array {k}>", f"array_{k}.png"))
        else:
            raise InputError(f"unsupported input type {type(item).__name__} "
                             "(give paths, folders, numpy arrays, PIL images or a webcam index)")
    return out


def iter_frames(sources: list[Source], frame_step: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
    """Every frame of every source (images are one frame, time NaN); unreadable ones carry ``error``."""
    from ferkit.inference.video import iter_video

    for src in sources:
        if src.kind in ("image", "array"):
            try:
                yield Frame(src, 0, float("nan"), load_image(src.obj))
            except InputError as exc:
                yield Frame(src, 0, float("nan"), None, str(exc))
            continue
        if src.kind == "webcam":  # a camera that cannot be opened is always an error
            for f in iter_video(src.obj, frame_step=frame_step, max_frames=max_frames):
                yield Frame(src, f.index, f.time_s, f.rgb)
            continue
        try:
            for f in iter_video(src.obj, frame_step=frame_step, max_frames=max_frames):
                yield Frame(src, f.index, f.time_s, f.rgb)
        except InputError as exc:
            yield Frame(src, 0, float("nan"), None, str(exc))
