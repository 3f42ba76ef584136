"""FER2013 from its original csv (``emotion,pixels,Usage``; plain or gzipped).

The csv is parsed once per file (vectorised: one ``np.fromstring`` over all rows, with a
per-row count check) and the whole file is cached; a split is then a slice of the cached,
memory-mapped arrays, so asking for Training and then PublicTest parses nothing twice.
Labels are re-indexed from FER2013's codes (0 angry ... 6 neutral) to ``BASIC7`` order.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ferkit.data._common import as_path, check_size, pick_split, read_csv, require_file
from ferkit.data.cache import cached, fingerprint
from ferkit.data.images import fit
from ferkit.data.registry import register_dataset
from ferkit.data.types import FaceDataset
from ferkit.errors import InputError
from ferkit.labels import BASIC7, FER2013

SIDE = 48
PIXELS = SIDE * SIDE
USAGES = ("Training", "PublicTest", "PrivateTest")
SPLIT_ALIASES = {
    **{u.lower(): u for u in USAGES},
    "train": "Training", "val": "PublicTest", "valid": "PublicTest", "validation": "PublicTest",
    "test": "PrivateTest",
}


def _where(row: int) -> str:
    return f"row {row} (line {row + 2})"


def parse_pixels(pixels: list[str], path: Path | str = "csv") -> np.ndarray:
    """uint8 (N, 48, 48) from FER2013 pixel strings; InputError naming the first malformed row.

    Fast path: every row must hold exactly 2303 single spaces and the whole text exactly N*2304
    numbers (one row cannot be short while another is long, since numbers <= separators + 1).
    Anything else (odd whitespace, bad rows) goes the slow per-row way, which names the row.
    """
    seps = np.fromiter((p.count(" ") for p in pixels), np.int64, len(pixels))
    values = None
    if (seps == PIXELS - 1).all():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # garbage in the text must not pass silently
            try:
                values = np.fromstring(" ".join(pixels), dtype=np.int16, sep=" ")
            except (ValueError, DeprecationWarning):
                values = None
    if values is None or values.size != len(pixels) * PIXELS:
        values = _parse_rows(pixels, path)
    if values.size and (values.min() < 0 or values.max() > 255):
        bad = int(np.flatnonzero((values < 0) | (values > 255))[0] // PIXELS)
        raise InputError(f"{path}: {_where(bad)} has a pixel value outside 0-255")
    return values.astype(np.uint8).reshape(len(pixels), SIDE, SIDE)


def _parse_rows(pixels: list[str], path: Path | str) -> np.ndarray:
    """Row by row (slow): InputError for the first row that is not 2304 integers."""
    out = np.empty((len(pixels), PIXELS), np.int16)
    for i, p in enumerate(pixels):
        parts = p.split()
        if len(parts) != PIXELS:
            raise InputError(f"{path}: {_where(i)} has {len(parts)} pixel values, expected {PIXELS} (48x48)")
        if not all(s.isdigit() for s in parts):
            bad = next(s for s in parts if not s.isdigit())
            raise InputError(f"{path}: {_where(i)} has a non-integer pixel value {bad[:20]!r}")
        out[i] = np.asarray(parts, np.int64).clip(-1, 256)
    return out.ravel()


def parse_labels(codes: list[str], path: Path | str) -> np.ndarray:
    """FER2013 emotion codes -> indices into BASIC7 (UnknownLabelError for a code it lacks)."""
    raw = np.asarray(codes, dtype=object)
    try:
        ints = np.array([int(c) for c in raw], np.int64)
    except (TypeError, ValueError):
        bad = next(i for i, c in enumerate(raw) if not str(c).strip().lstrip("-").isdigit())
        raise InputError(f"{path}: {_where(bad)} has emotion {raw[bad]!r}, expected an integer 0-6") from None
    lut = {c: BASIC7.index(FER2013.to_name(int(c))) for c in np.unique(ints)}  # raises for unknown codes
    out = np.empty_like(ints)
    for c, idx in lut.items():
        out[ints == c] = idx
    return out


def decode_csv(path: Path, image_size: int = SIDE) -> FaceDataset:
    """Every row of a FER2013 csv, uncached; ``meta["usage"]`` holds each row's Usage."""
    df = read_csv(path, ["emotion", "pixels"], "FER2013 csv", optional=["Usage"],
                  dtype={"emotion": str, "pixels": str, "Usage": str})
    if not len(df):
        raise InputError(f"FER2013 csv {path} has no rows")
    pixels = df["pixels"].fillna("").tolist()
    images = parse_pixels(pixels, path)
    labels = parse_labels(df["emotion"].fillna("").tolist(), path)
    del pixels
    if image_size != SIDE:
        images = np.stack([fit(im, image_size) for im in images]) if len(images) else \
            np.zeros((0, image_size, image_size), np.uint8)
    usage = df["Usage"].fillna("").astype(str).str.strip().to_numpy() if "Usage" in df else \
        np.full(len(df), "", dtype=object)
    usage = np.asarray(usage, dtype="U16")
    flat = images.reshape(len(images), -1)
    all_zero = flat.max(axis=1) == 0 if len(flat) else np.zeros(0, bool)
    meta = {"usage": usage, "all_zero": all_zero, "rows_in_file": len(df)}
    return FaceDataset(images, labels, BASIC7, None, "", str(path), meta)


def load_csv(path: Path, image_size: int, cache: bool) -> FaceDataset:
    """The whole csv through the decode-once cache (shared by the fer2013 and ferplus readers)."""
    require_file(path, "FER2013 csv")
    return cached("fer2013", [fingerprint(path)], {"image_size": image_size},
                  lambda: decode_csv(path, image_size), enabled=cache)


def select_rows(data: FaceDataset, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of the images, as a slice of the memmap when contiguous (no copy)."""
    if len(index) and index[-1] - index[0] + 1 == len(index):
        return data.images[int(index[0]):int(index[-1]) + 1]
    return np.asarray(data.images[index])


@register_dataset("fer2013")
def read_fer2013(path: str | os.PathLike[str], split: str | None = None, *, cache: bool = True,
                 image_size: int = SIDE) -> FaceDataset:
    """FER2013: 7 classes in BASIC7 order, grayscale uint8 (N, 48, 48).

    ``split``: Training / PublicTest / PrivateTest, case-insensitive, or train / val / test;
    None = all rows. ``image_size`` other than 48 resizes (bilinear) at decode time.
    """
    p = as_path(path, "fer2013")
    image_size = check_size(image_size, "fer2013")
    usage_name = pick_split(split, SPLIT_ALIASES, "fer2013")
    full = load_csv(p, image_size, cache)
    usage = full.meta["usage"]
    counts = {u: int(c) for u, c in zip(*np.unique(usage, return_counts=True))}
    if usage_name is None:
        index = np.arange(len(full))
    else:
        if not any(usage):
            raise InputError(f"FER2013 csv {p} has no Usage column, so it has no split {usage_name!r}; "
                             "use split=None")
        index = np.flatnonzero(usage == usage_name)
        if not len(index):
            found = ", ".join(f"{u} {n}" for u, n in counts.items()) or "none"
            raise InputError(f"FER2013 csv {p} has no {usage_name} rows (rows by Usage: {found})")
    meta = {k: v for k, v in full.meta.items() if k not in ("usage", "all_zero")}
    meta.update(rows_by_usage=counts, usage=usage[index],
                all_zero_images=int(full.meta["all_zero"][index].sum()))
    return FaceDataset(select_rows(full, index), full.labels[index].copy(), BASIC7, None,
                       usage_name or "", str(p), meta)
