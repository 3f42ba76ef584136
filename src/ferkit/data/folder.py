"""Any dataset stored as one sub-folder per class: ``root[/split]/<class>/<images>``.

Folder names are matched through ``ferkit.labels.canonical`` (happy, Angry, sad, surprised,
...); a name it does not know is an UnknownLabelError naming the folder. Images may sit in
nested folders below a class folder. Files that are not decodable images are skipped and
counted in ``meta["skipped"]`` ({"count", "paths": first few}), never fatal. Hidden files
and folders (leading ".") are ignored. Images are resized to a square without cropping.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ferkit.data._common import as_path, check_size, first_paths, require_dir
from ferkit.data.cache import cached, fingerprint
from ferkit.data.images import decode_many
from ferkit.data.registry import register_dataset
from ferkit.data.types import FaceDataset
from ferkit.errors import ConfigError, InputError, UnknownLabelError
from ferkit.labels import CANONICAL, canonical, label_set

#: Folder names that mean "a split", not a class: a root made of these needs ``split=``.
SPLIT_WORDS = frozenset({"train", "training", "val", "valid", "validation", "test", "testing", "dev"})


def _visible_dirs(d: Path) -> list[Path]:
    return sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))


def _files(d: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(d):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
    return out


def _class_dirs(root: Path, graph: str | None = None) -> list[tuple[Path, str]]:
    subdirs = _visible_dirs(root)
    if not subdirs:
        raise InputError(f"folder dataset {root} has no class sub-folders")
    out = []
    for d in subdirs:
        try:
            out.append((d, _graph_label(d.name, graph) if graph else canonical(d.name)))
        except UnknownLabelError:
            if d.name.lower() in SPLIT_WORDS:
                splits = ", ".join(x.name for x in subdirs if x.name.lower() in SPLIT_WORDS)
                raise ConfigError(f"folder dataset {root} holds split folders ({splits}); "
                                  f"give split= one of them") from None
            if graph:
                from ferkit.label_graphs import get_label_graph

                raise UnknownLabelError(f"folder {d} is not a fine label of label graph {graph!r} (known: "
                                        f"{', '.join(get_label_graph(graph).fine)})") from None
            raise UnknownLabelError(f"folder {d} is not a known expression name (known: "
                                    f"{', '.join(CANONICAL)}, or a synonym such as happy, angry, sad, "
                                    "surprised)") from None
    return out


def _graph_label(folder: str, graph: str) -> str:
    """The fine label of ``graph`` a folder names (case, spaces and hyphens forgiven)."""
    from ferkit.label_graphs import get_label_graph

    return get_label_graph(graph).for_classes([folder]).fine[0]


def _decode(root: Path, split: str | None, grayscale: bool, image_size: int,
            classes: int | None, graph: str | None = None) -> FaceDataset:
    found = _class_dirs(root, graph)
    present = {name for _, name in found}
    if graph:  # the graph's fine labels that have a folder, in the graph's order
        from ferkit.label_graphs import get_label_graph

        names = tuple(f for f in get_label_graph(graph).fine if f in present)
    else:
        names = label_set(classes or (8 if "contempt" in present else 7))
    paths: list[Path] = []
    labels: list[int] = []
    dropped: dict[str, int] = {}
    for d, name in found:
        files = _files(d)
        if name not in names:
            dropped[name] = dropped.get(name, 0) + len(files)
            continue
        paths += files
        labels += [names.index(name)] * len(files)
    images, ok = decode_many(paths, image_size, gray=grayscale)
    bad = [p for p, good in zip(paths, ok) if not good]
    if bad:
        warnings.warn(f"folder: skipped {len(bad)} files that are not readable images, e.g. {bad[0]}",
                      stacklevel=3)
    if not ok.any():
        raise InputError(f"folder dataset {root} has no readable images")
    meta = {"skipped": {"count": len(bad), "paths": first_paths(bad)}, "dropped": dropped,
            "folders": {d.name: name for d, name in found},
            "files": np.asarray([str(p.relative_to(root)) for p, good in zip(paths, ok) if good], dtype=str)}
    return FaceDataset(images, np.asarray(labels, np.int64)[ok], names, None, split or "", str(root), meta)


@register_dataset("folder")
def read_folder(path: str | os.PathLike[str], split: str | None = None, *, cache: bool = True,
                grayscale: bool = False, image_size: int | None = None,
                classes: int | None = None, label_graph: str | None = None) -> FaceDataset:
    """Images under ``path[/split]/<class>/``; uint8 (N,S,S) if ``grayscale`` else RGB (N,S,S,3).

    ``image_size`` defaults to 48 for grayscale, 112 for RGB. ``classes`` 7 or 8 (default:
    8 when a contempt folder exists, else 7); with 7, contempt images are dropped and counted.
    ``label_graph`` (a name in :mod:`ferkit.label_graphs`, e.g. ``fg-emotions``): folders are that
    graph's fine labels instead of expression names (anxiety, worry, ...), and the classes are the
    fine labels that have a folder, in the graph's order.
    """
    root = require_dir(as_path(path, "folder"), "folder dataset")
    if split:
        sub = root / split
        if not sub.is_dir():
            have = ", ".join(d.name for d in _visible_dirs(root)) or "none"
            raise InputError(f"folder dataset {root} has no split folder {split!r} (sub-folders: {have})")
        root = sub
    if classes not in (None, 7, 8):
        raise ConfigError(f"folder classes must be 7 or 8, not {classes!r}")
    size = check_size(image_size if image_size is not None else (48 if grayscale else 112), "folder")
    _class_dirs(root, label_graph)  # fail fast on an unknown folder name, even when the cache would hit
    opts = {"grayscale": bool(grayscale), "image_size": size, "classes": classes, "split": split}
    if label_graph:
        opts["label_graph"] = str(label_graph)
    return cached("folder", [fingerprint(root)], opts,
                  lambda: _decode(root, split, bool(grayscale), size, classes, label_graph), cache)
