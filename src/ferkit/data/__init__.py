"""Dataset readers, label noise, labelled/unlabelled splits and the decode-once cache.

``load_dataset(name, path, split, **options)`` is the entry point; readers register
themselves with ``@register_dataset(name)`` when their module is imported below.
"""

from __future__ import annotations

from ferkit.data import affectnet, fer2013, ferplus, folder, jaffe, rafdb  # noqa: F401  (register readers)
from ferkit.data.noise import inject_noise
from ferkit.data.registry import DATASETS, load_dataset, reader_options, register_dataset
from ferkit.data.splits import split_labelled, subsample
from ferkit.data.types import FaceDataset

__all__ = [
    "DATASETS",
    "FaceDataset",
    "inject_noise",
    "load_dataset",
    "reader_options",
    "register_dataset",
    "split_labelled",
    "subsample",
]
