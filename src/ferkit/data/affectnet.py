"""AffectNet from its released csv files and ``Manually_Annotated_Images/`` folder.

``training.csv`` / ``validation.csv`` hold ``subDirectory_filePath, face_x, face_y,
face_width, face_height, facial_landmarks, expression, valence, arousal``; images live under
``Manually_Annotated_Images/`` beside the csv (or ``image_dir=``). Codes follow
``ferkit.labels.AFFECTNET``: 0-7 are expressions, 8 none / 9 uncertain / 10 no-face are
dropped before decoding and counted in ``meta["dropped"]``, as is contempt with ``classes=7``.
The face box is cropped (clipped to the image) and resized to ``image_size``; valence and
arousal are kept in ``meta``. The cache fingerprints the csv and the image folder's own mtime
only (walking ~400k files on every load would cost more than it saves).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ferkit.data._common import (
    as_path,
    check_size,
    first_paths,
    pick_split,
    read_csv,
    require_dir,
    require_file,
)
from ferkit.data.cache import cached, fingerprint
from ferkit.data.images import decode_many
from ferkit.data.registry import register_dataset
from ferkit.data.types import FaceDataset
from ferkit.errors import ConfigError, InputError
from ferkit.labels import AFFECTNET, label_set

CSV_FILES = {"train": "training.csv", "validation": "validation.csv"}
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                 "validation": "validation"}
IMAGE_DIR = "Manually_Annotated_Images"
BOX = ("face_x", "face_y", "face_width", "face_height")


def _resolve(p: Path, split: str | None, image_dir: str | os.PathLike[str] | None) -> tuple[Path, Path, str]:
    if p.is_dir():
        if split is None:
            raise ConfigError(f"affectnet: {p} is a folder; give split=train or validation (or the csv path)")
        csv = require_file(p / CSV_FILES[split], "AffectNet csv")
    else:
        csv = require_file(p, "AffectNet csv")
        split = split or ("validation" if "valid" in csv.name.lower() else "train")
    images = Path(image_dir).expanduser() if image_dir else csv.parent / IMAGE_DIR
    return csv, require_dir(images, "AffectNet image folder"), split


def _decode(csv: Path, img_root: Path, split: str, classes: int, image_size: int) -> FaceDataset:
    df = read_csv(csv, ["subDirectory_filePath", *BOX, "expression"], "AffectNet csv",
                  optional=["valence", "arousal"], dtype={"subDirectory_filePath": str})
    try:
        codes = df["expression"].to_numpy(dtype=np.int64)
        boxes = df[list(BOX)].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"AffectNet csv {csv}: expression and face box columns must be numbers") from None
    names = label_set(classes)
    dropped: dict[str, int] = {}
    keep = np.zeros(len(df), bool)
    labels = np.full(len(df), -1, np.int64)
    for code in np.unique(codes):
        name = AFFECTNET.to_name(int(code))  # UnknownLabelError for codes outside 0-10
        rows = codes == code
        if int(code) in AFFECTNET.special or name not in names:
            dropped[name] = int(rows.sum())
        else:
            keep |= rows
            labels[rows] = names.index(name)
    idx = np.flatnonzero(keep)
    paths = [img_root / str(df["subDirectory_filePath"].iat[i]) for i in idx]
    box_list = [tuple(boxes[i]) for i in idx]
    images, ok = decode_many(paths, image_size, gray=False, boxes=box_list)
    bad = [p for p, good in zip(paths, ok) if not good]
    if bad:
        warnings.warn(f"affectnet: {len(bad)} images missing or unreadable, e.g. {bad[0]}", stacklevel=3)
    if len(idx) and not ok.any():
        raise InputError(f"affectnet: none of the {len(idx)} images in {csv} could be read under {img_root}")
    used = idx[ok]
    meta = {"dropped": dropped, "skipped": {"count": len(bad), "paths": first_paths(bad)},
            "files": np.asarray(df["subDirectory_filePath"].to_numpy()[used], dtype=str)}
    for col in ("valence", "arousal"):
        if col in df:
            meta[col] = df[col].to_numpy(dtype=np.float32)[used]
    return FaceDataset(images, labels[used], names, None, split, str(csv), meta)


@register_dataset("affectnet")
def read_affectnet(path: str | os.PathLike[str], split: str | None = None, *, cache: bool = True,
                   classes: int = 8, image_size: int = 112,
                   image_dir: str | os.PathLike[str] | None = None) -> FaceDataset:
    """AffectNet as RGB uint8 (N, S, S, 3) with ``classes`` 7 or 8 canonical classes.

    ``path``: a csv file (its split read from the name unless given), or the folder holding
    ``training.csv`` and ``validation.csv`` with ``split`` train | validation (alias val).
    AffectNet's test set is not public, so there is no test split.
    """
    if classes not in (7, 8):
        raise ConfigError(f"affectnet classes must be 7 or 8, not {classes!r}")
    image_size = check_size(image_size, "affectnet")
    name = pick_split(split, SPLIT_ALIASES, "affectnet")
    csv, img_root, name = _resolve(as_path(path, "affectnet"), name, image_dir)
    sources = [fingerprint(csv), fingerprint(img_root, deep=False)]
    opts = {"split": name, "classes": classes, "image_size": image_size}
    return cached("affectnet", sources, opts, lambda: _decode(csv, img_root, name, classes, image_size),
                  cache)
