"""Image-file readers (rafdb, affectnet, folder, jaffe) on generated trees."""

from __future__ import annotations

import numpy as np
import pytest

from ferkit.data import load_dataset
from ferkit.errors import ConfigError, InputError, UnknownLabelError
from ferkit.labels import BASIC7, CANONICAL, RAFDB_BASIC, RAFDB_COMPOUND

from fixtures_data import (  # noqa: F401
    JAFFE_FILES,
    RAF_BASIC,
    isolated_cache,
    make_affectnet,
    make_folder,
    make_jaffe,
    make_rafdb,
)

pytestmark = [pytest.mark.usefixtures("isolated_cache"), pytest.mark.filterwarnings("ignore::UserWarning")]


def test_rafdb_basic(tmp_path):
    root = make_rafdb(tmp_path / "RAF-DB")
    d = load_dataset("rafdb", root, "train")
    assert d.classes == BASIC7 and d.split == "train" and len(d) == 5
    assert d.images.shape == (5, 100, 100, 3) and d.images.dtype == np.uint8
    codes = [c for n, c in RAF_BASIC if n.startswith("train")]
    assert d.labels.tolist() == [BASIC7.index(RAFDB_BASIC.to_name(c)) for c in codes]
    happy = d.labels == BASIC7.index("happiness")  # written red: channels come back in RGB order
    assert (d.images[happy][..., 0] > 240).all() and (d.images[happy][..., 2] < 15).all()
    assert d.meta["names"].tolist()[0] == "train_00001.jpg"
    test = load_dataset("rafdb", root / "basic", "TEST", image_size=64)  # path at basic/
    assert len(test) == 3 and test.images.shape[1:] == (64, 64, 3)
    assert len(load_dataset("rafdb", root)) == 8


def test_rafdb_compound_and_errors(tmp_path):
    root = make_rafdb(tmp_path / "raf", missing=["train_00002.jpg"])
    c = load_dataset("rafdb", root, "train", subset="compound")
    assert c.classes == RAFDB_COMPOUND.names and len(c.classes) == 11
    assert c.labels.tolist() == list(range(11))
    b = load_dataset("rafdb", root, "train")
    assert len(b) == 4 and b.meta["skipped"]["count"] == 1
    assert "train_00002_aligned" in b.meta["skipped"]["paths"][0]
    with pytest.raises(ConfigError, match="no split 'val'.*test, train"):
        load_dataset("rafdb", root, "val")
    with pytest.raises(InputError, match="not found"):
        load_dataset("rafdb", tmp_path / "nowhere")


def test_affectnet(tmp_path):
    root = make_affectnet(tmp_path / "affectnet")
    d = load_dataset("affectnet", root, "train")
    assert d.classes == CANONICAL and len(d) == 8  # codes 0-7; the missing file skipped
    assert d.images.shape == (8, 112, 112, 3)
    assert d.labels.tolist() == [CANONICAL.index(n) for n in
                                 ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger",
                                  "contempt")]
    assert d.meta["dropped"] == {"none": 1, "uncertain": 1, "no_face": 1}
    assert d.meta["skipped"]["count"] == 1
    assert d.images.min() > 200  # only the (white) face box was kept
    assert np.allclose(d.meta["valence"][:2], [0.0, 0.1])
    d7 = load_dataset("affectnet", root / "training.csv", classes=7, image_size=64)
    assert d7.classes == BASIC7 and len(d7) == 7 and d7.meta["dropped"]["contempt"] == 1
    assert d7.split == "train" and d7.images.shape[1:] == (64, 64, 3)
    v = load_dataset("affectnet", root, "val")
    assert v.split == "validation" and v.labels.tolist() == [CANONICAL.index("surprise")]
    with pytest.raises(ConfigError, match="classes must be 7 or 8"):
        load_dataset("affectnet", root, "train", classes=6)
    with pytest.raises(ConfigError, match="give split"):
        load_dataset("affectnet", root)


def test_folder(tmp_path):
    root = make_folder(tmp_path / "faces")
    d = load_dataset("folder", root, "train")
    assert d.classes == BASIC7 and d.images.shape == (10, 112, 112, 3)
    counts = dict(zip(BASIC7, d.class_counts().tolist()))
    assert counts == {"neutral": 2, "happiness": 3, "surprise": 1, "sadness": 2, "anger": 2, "disgust": 0,
                      "fear": 0}
    assert d.meta["skipped"]["count"] == 2  # the corrupt jpg and the txt; .DS_Store is hidden
    assert {p.rsplit("/", 2)[-1] for p in d.meta["skipped"]["paths"]} == {"broken.jpg", "notes.txt"}
    assert d.meta["folders"]["Angry"] == "anger"
    g = load_dataset("folder", root, "test", grayscale=True)
    assert g.images.shape == (10, 48, 48) and g.split == "test"
    with pytest.raises(ConfigError, match="split folders"):
        load_dataset("folder", root)
    with pytest.raises(InputError, match="no split folder 'dev'.*test, train"):
        load_dataset("folder", root, "dev")


def test_folder_unknown_label_and_contempt(tmp_path):
    root = make_folder(tmp_path / "faces")
    (root / "train/bored").mkdir()
    with pytest.raises(UnknownLabelError, match="folder .*bored is not a known expression"):
        load_dataset("folder", root, "train")
    (root / "train/bored").rmdir()
    (root / "train/contemptuous").mkdir()
    (root / "train/contemptuous/0.png").write_bytes((root / "train/happy/0.png").read_bytes())
    d = load_dataset("folder", root, "train")
    assert d.classes == CANONICAL and d.class_counts()[7] == 1
    d7 = load_dataset("folder", root, "train", classes=7)
    assert d7.classes == BASIC7 and d7.meta["dropped"] == {"contempt": 1}


def test_jaffe(tmp_path):
    root = make_jaffe(tmp_path / "jaffe")
    d = load_dataset("jaffe", root)
    assert d.classes == BASIC7 and d.images.shape == (7, 48, 48) and len(d) == len(JAFFE_FILES)
    names = {f.split(".")[1][:2]: l for f, l in zip(sorted(JAFFE_FILES), d.labels.tolist())}
    assert names == {"HA": 1, "NE": 0, "SU": 2, "AN": 4, "DI": 5, "FE": 6, "SA": 3}
    assert d.meta["skipped"]["count"] == 1 and sorted(set(d.meta["subjects"])) == ["KA", "KM", "NA", "TM",
                                                                                     "UY", "YM"]
    assert 60 < d.images[0].mean() < 70  # full frame: the white centre square is a quarter of it
    crop = load_dataset("jaffe", root, center_crop=0.5, image_size=32)
    assert crop.images.shape == (7, 32, 32) and crop.images.min() > 200
    with pytest.raises(ConfigError, match="no splits"):
        load_dataset("jaffe", root, "train")
