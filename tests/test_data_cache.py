"""Decode-once cache: a second load never parses, entries are keyed by content, half-writes are ignored."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ferkit.data.fer2013 as fer_mod
import ferkit.data.images as images_mod
from ferkit.data import load_dataset
from ferkit.data.cache import cache_dir, load_entry

from fixtures_data import isolated_cache, make_folder, write_fer2013  # noqa: F401

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _forbid(*_a, **_k):
    raise AssertionError("decoded again although the cache should have answered")


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "fer2013.csv.gz"
    write_fer2013(path, [0, 3, 6, 2] * 50, ["Training"] * 150 + ["PublicTest"] * 50)
    return path


def test_second_load_does_not_parse(csv, monkeypatch, isolated_cache):  # noqa: F811
    first = load_dataset("fer2013", csv, "Training")
    assert cache_dir() == isolated_cache and any(isolated_cache.iterdir())
    monkeypatch.setattr(fer_mod, "parse_pixels", _forbid)
    second = load_dataset("fer2013", csv, "Training")  # parse_pixels would raise: served from the cache
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    assert np.array_equal(first.images, second.images) and np.array_equal(first.labels, second.labels)
    # another split of the same file comes from the same entry
    assert len(load_dataset("fer2013", csv, "PublicTest")) == 50
    # and FER+ would reuse it too; cache=False really parses
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("fer2013", csv, "Training", cache=False)


def test_changed_file_or_decoding_option_misses(csv, monkeypatch):
    load_dataset("fer2013", csv)
    calls = []
    real = fer_mod.parse_pixels
    monkeypatch.setattr(fer_mod, "parse_pixels", lambda *a, **k: calls.append(1) or real(*a, **k))
    load_dataset("fer2013", csv, image_size=32)  # decoding option: new entry
    assert len(calls) == 1
    st = os.stat(csv)
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # file touched: new entry
    load_dataset("fer2013", csv)
    assert len(calls) == 2
    load_dataset("fer2013", csv)
    assert len(calls) == 2


def test_half_written_entry_is_never_read(csv, monkeypatch, isolated_cache):  # noqa: F811
    d = load_dataset("fer2013", csv)
    entry = next(p for p in isolated_cache.iterdir() if p.is_dir())
    assert load_entry(entry) is not None
    assert not [p for p in entry.iterdir() if p.name.endswith(".tmp")]  # no temp files left
    # a crash before entry.json (the commit mark) is written
    (entry / "entry.json").unlink()
    assert load_entry(entry) is None
    again = load_dataset("fer2013", csv)
    assert np.array_equal(again.images, d.images) and (entry / "entry.json").exists()
    # an array file cut short (a torn write) fails the manifest's shape check and is rebuilt
    raw = (entry / "images.npy").read_bytes()
    (entry / "images.npy").write_bytes(raw[: len(raw) // 2])
    assert load_entry(entry) is None
    assert np.array_equal(load_dataset("fer2013", csv).images, d.images)


@pytest.mark.filterwarnings("ignore:folder. skipped")
def test_image_reader_decodes_once(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "faces")
    a = load_dataset("folder", root, "train")
    monkeypatch.setattr(images_mod, "read_image", _forbid)
    b = load_dataset("folder", root, "train")
    assert np.array_equal(a.images, b.images) and b.meta["skipped"] == a.meta["skipped"]
    assert b.meta["files"].tolist() == a.meta["files"].tolist()
    (root / "train/happy/new.png").write_bytes((root / "train/happy/0.png").read_bytes())
    with pytest.raises(AssertionError, match="decoded again"):  # a new file misses the cache
        load_dataset("folder", root, "train")
