"""RAF-DB, basic (7 classes) or compound (11 classes), from its released folder layout.

``<root>/basic/EmoLabel/list_patition_label.txt`` (lines ``train_00001.jpg 5``, 1-based codes
of ``ferkit.labels.RAFDB_BASIC``) and ``<root>/basic/Image/aligned/train_00001_aligned.jpg``;
the same under ``compound/`` with ``RAFDB_COMPOUND`` codes. ``path`` may be the RAF-DB root
or the ``basic`` / ``compound`` folder itself (then ``subset`` must agree or be left default).
The split (train / test) is the file-name prefix; RAF-DB has no validation split.
Images listed but missing or undecodable are skipped and counted in ``meta["skipped"]``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ferkit.data._common import as_path, check_size, first_paths, pick_split, require_dir, require_file
from ferkit.data.cache import cached, fingerprint
from ferkit.data.images import decode_many
from ferkit.data.registry import register_dataset
from ferkit.data.types import FaceDataset
from ferkit.errors import ConfigError, InputError
from ferkit.labels import BASIC7, RAFDB_BASIC, RAFDB_COMPOUND

LABEL_FILE = "EmoLabel/list_patition_label.txt"
SUBSETS = ("basic", "compound")
SPLIT_ALIASES = {"train": "train", "training": "train", "test": "test", "testing": "test"}


def _subset_dir(p: Path, subset: str | None) -> tuple[Path, str]:
    if (p / LABEL_FILE).is_file():  # path is basic/ or compound/ itself
        inferred = "compound" if p.name.lower() == "compound" else "basic"
        if subset is not None and subset != inferred and p.name.lower() in SUBSETS:
            raise ConfigError(f"rafdb: path {p} is the {inferred} folder but subset={subset!r}")
        return p, subset or inferred
    subset = subset or "basic"
    d = p / subset
    require_dir(p, "RAF-DB folder")
    require_file(d / LABEL_FILE, f"RAF-DB {subset} label file")
    return d, subset


def read_label_file(path: Path) -> list[tuple[str, int]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise InputError(f"{path}: line {n} is {line.strip()!r}, expected '<image name> <label>'")
        rows.append((parts[0], int(parts[1])))
    if not rows:
        raise InputError(f"{path} lists no images")
    return rows


def image_path(folder: Path, name: str, aligned: bool) -> Path:
    if aligned:
        stem, _ = os.path.splitext(name)
        return folder / "Image" / "aligned" / f"{stem}_aligned.jpg"
    return folder / "Image" / "original" / name


def _decode(folder: Path, subset: str, split: str | None, image_size: int, aligned: bool) -> FaceDataset:
    lmap = RAFDB_COMPOUND if subset == "compound" else RAFDB_BASIC
    classes = lmap.names if subset == "compound" else BASIC7
    rows = read_label_file(folder / LABEL_FILE)
    if split is not None:
        rows = [r for r in rows if r[0].lower().startswith(split + "_")]
    names = [r[0] for r in rows]
    labels = np.array([classes.index(lmap.to_name(code)) for _, code in rows], np.int64)
    paths = [image_path(folder, n, aligned) for n in names]
    images, ok = decode_many(paths, image_size, gray=False)
    bad = [p for p, good in zip(paths, ok) if not good]
    if bad:
        warnings.warn(f"rafdb: {len(bad)} listed images missing or unreadable, e.g. {bad[0]}", stacklevel=3)
    if not ok.any():
        raise InputError(f"rafdb: none of the {len(paths)} images listed in {folder / LABEL_FILE} could be "
                         f"read (first: {paths[0] if paths else '-'})")
    meta = {"subset": subset, "aligned": aligned, "skipped": {"count": len(bad), "paths": first_paths(bad)},
            "names": np.asarray([n for n, good in zip(names, ok) if good], dtype="U64")}
    return FaceDataset(images, labels[ok], tuple(classes), None, split or "", str(folder), meta)


@register_dataset("rafdb")
def read_rafdb(path: str | os.PathLike[str], split: str | None = None, *, cache: bool = True,
               subset: str | None = None, image_size: int = 100, aligned: bool = True) -> FaceDataset:
    """RAF-DB as RGB uint8 (N, S, S, 3); basic: BASIC7 classes, compound: the 11 RAFDB_COMPOUND names.

    ``subset`` basic (default) | compound; ``split`` train | test | None (both);
    ``image_size`` default 100 (the aligned images' own size, so no resampling);
    ``aligned=False`` reads ``Image/original/`` instead (resized without cropping).
    """
    p = as_path(path, "rafdb")
    if subset is not None and subset not in SUBSETS:
        raise ConfigError(f"rafdb subset must be basic or compound, not {subset!r}")
    image_size = check_size(image_size, "rafdb")
    name = pick_split(split, SPLIT_ALIASES, "rafdb")
    folder, subset = _subset_dir(p, subset)
    img_dir = folder / "Image" / ("aligned" if aligned else "original")
    require_dir(img_dir, "RAF-DB image folder")
    sources = [fingerprint(folder / LABEL_FILE), fingerprint(img_dir)]
    opts = {"subset": subset, "split": name, "image_size": image_size, "aligned": aligned}
    return cached("rafdb", sources, opts, lambda: _decode(folder, subset, name, image_size, aligned), cache)
