"""JAFFE: 213 grayscale 256x256 images, the label coded in the file name (``KA.HA1.29.tiff``).

Name = ``<subject>.<expression code><repeat>.<id>.tiff``; codes via ``ferkit.labels.JAFFE``
(NE HA SU SA AN DI FE). Files anywhere below ``path``; files whose name does not follow the
pattern or that cannot be decoded are skipped and counted in ``meta["skipped"]``.

Geometry: JAFFE frames the whole head with background, looser than FER2013's crops. By
default the full frame is resized to ``image_size`` = 48 (FER2013's size, for cross-dataset
evaluation); ``center_crop`` < 1 keeps that centred fraction of the side first (about 0.6
gives a face crop similar to FER2013's). Subjects are in ``meta["subjects"]`` for
subject-independent cross-validation; JAFFE has no official split.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from ferkit.data._common import as_path, check_size, first_paths, require_dir
from ferkit.data.cache import cached, fingerprint
from ferkit.data.images import decode_many
from ferkit.data.registry import register_dataset
from ferkit.data.types import FaceDataset
from ferkit.errors import ConfigError, InputError
from ferkit.labels import BASIC7, JAFFE

NAME = re.compile(r"^([A-Za-z]{2})\.([A-Za-z]{2})(\d*)\.(\d+)\.(tiff?|png|jpe?g|bmp)$", re.IGNORECASE)


def _decode(root: Path, image_size: int, center_crop: float) -> FaceDataset:
    paths: list[Path] = []
    labels: list[int] = []
    subjects: list[str] = []
    skipped: list[Path] = []
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        m = NAME.match(f.name)
        if not m or m.group(2).upper() not in JAFFE.codes:
            skipped.append(f)
            continue
        paths.append(f)
        labels.append(BASIC7.index(JAFFE.to_name(m.group(2).upper())))
        subjects.append(m.group(1).upper())
    images, ok = decode_many(paths, image_size, gray=True, center_crop=center_crop)
    skipped += [p for p, good in zip(paths, ok) if not good]
    if skipped:
        warnings.warn(f"jaffe: skipped {len(skipped)} files (name not subject.CODEn.id.tiff, or unreadable), "
                      f"e.g. {skipped[0]}", stacklevel=3)
    if not ok.any():
        raise InputError(f"jaffe: no readable images named like KA.HA1.29.tiff under {root}")
    meta = {"skipped": {"count": len(skipped), "paths": first_paths(skipped)}, "center_crop": center_crop,
            "subjects": np.asarray(subjects, dtype="U8")[ok]}
    return FaceDataset(images, np.asarray(labels, np.int64)[ok], BASIC7, None, "", str(root), meta)


@register_dataset("jaffe")
def read_jaffe(path: str | os.PathLike[str], split: str | None = None, *, cache: bool = True,
               image_size: int = 48, center_crop: float = 1.0) -> FaceDataset:
    """JAFFE as grayscale uint8 (N, S, S), BASIC7 classes; ``split`` must be None (or "all")."""
    if split not in (None, "", "all"):
        raise ConfigError(f"jaffe has no splits (got {split!r}); use split=None and meta['subjects'] "
                          "for subject folds")
    if not 0.0 < float(center_crop) <= 1.0:
        raise ConfigError(f"jaffe center_crop must be in (0, 1], not {center_crop!r}")
    root = require_dir(as_path(path, "jaffe"), "JAFFE folder")
    size = check_size(image_size, "jaffe")
    opts = {"image_size": size, "center_crop": float(center_crop)}
    return cached("jaffe", [fingerprint(root)], opts, lambda: _decode(root, size, float(center_crop)), cache)
