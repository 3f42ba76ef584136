"""FER2013 reader, registry and bad-input errors, on generated csv files."""

from __future__ import annotations

import numpy as np
import pytest

from ferkit.data import DATASETS, FaceDataset, load_dataset, register_dataset
from ferkit.errors import ConfigError, InputError, UnknownLabelError
from ferkit.labels import BASIC7, FER2013

from fixtures_data import isolated_cache, write_fer2013  # noqa: F401

pytestmark = pytest.mark.usefixtures("isolated_cache")

EMOTIONS = [0, 1, 2, 3, 4, 5, 6, 3, 0, 6]
USAGES = ["Training"] * 6 + ["PublicTest"] * 2 + ["PrivateTest"] * 2


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "fer2013.csv"
    images = write_fer2013(path, EMOTIONS, USAGES)
    return path, images


def test_reads_all_rows_in_canonical_order(csv):
    path, images = csv
    d = load_dataset("fer2013", path)
    assert isinstance(d, FaceDataset) and len(d) == 10
    assert d.classes == BASIC7 and d.images.dtype == np.uint8 and d.images.shape == (10, 48, 48)
    assert np.array_equal(d.images, images)
    expected = [BASIC7.index(FER2013.to_name(c)) for c in EMOTIONS]
    assert d.labels.tolist() == expected
    assert d.labels[0] == BASIC7.index("anger") and d.labels[6] == BASIC7.index("neutral")
    assert d.labels.dtype == np.int64 and d.soft_targets is None


@pytest.mark.parametrize("split,usage,n", [("Training", "Training", 6), ("training", "Training", 6),
                                           ("train", "Training", 6), ("PUBLICTEST", "PublicTest", 2),
                                           ("val", "PublicTest", 2), ("test", "PrivateTest", 2)])
def test_splits_and_aliases(csv, split, usage, n):
    path, images = csv
    d = load_dataset("fer2013", path, split)
    assert len(d) == n and d.split == usage
    rows = [i for i, u in enumerate(USAGES) if u == usage]
    assert np.array_equal(d.images, images[rows])
    assert d.meta["rows_by_usage"] == {"PrivateTest": 2, "PublicTest": 2, "Training": 6}


def test_gzip_and_resize(tmp_path):
    path = tmp_path / "f.csv.gz"
    write_fer2013(path, [3, 4], ["Training", "Training"])
    d = load_dataset("fer2013", path, "Training", image_size=64)
    assert d.images.shape == (2, 64, 64)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_dataset("fer2013", tmp_path / "nope.csv")


def test_csv_without_pixels_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("emotion,image,Usage\n0,1 2 3,Training\n")
    with pytest.raises(InputError) as err:
        load_dataset("fer2013", path)
    msg = str(err.value)
    assert "'pixels'" in msg and "columns found: emotion, image, Usage" in msg


def test_csv_without_emotion_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("label,pixels\n0,1 2 3\n")
    with pytest.raises(InputError, match="'emotion'.*columns found: label, pixels"):
        load_dataset("fer2013", path)


def test_wrong_pixel_count_names_the_row(tmp_path):
    imgs = write_fer2013(tmp_path / "ok.csv", [0, 1, 2])
    pix = [" ".join(map(str, im.ravel())) for im in imgs]
    pix[1] = pix[1].rsplit(" ", 1)[0]  # row 1 has 2303 values
    write_fer2013(tmp_path / "bad.csv", [0, 1, 2], pixels=pix)
    with pytest.raises(InputError, match=r"row 1 \(line 3\) has 2303 pixel values, expected 2304"):
        load_dataset("fer2013", tmp_path / "bad.csv")


def test_short_and_long_rows_do_not_cancel(tmp_path):
    imgs = write_fer2013(tmp_path / "ok.csv", [0, 1])
    pix = [" ".join(map(str, im.ravel())) for im in imgs]
    pix[0], pix[1] = pix[0] + " 7", pix[1].rsplit(" ", 1)[0]
    write_fer2013(tmp_path / "bad.csv", [0, 1], pixels=pix)
    with pytest.raises(InputError, match="row 0 .* 2305 pixel values"):
        load_dataset("fer2013", tmp_path / "bad.csv")


def test_non_numeric_and_out_of_range_pixels(tmp_path):
    imgs = write_fer2013(tmp_path / "ok.csv", [0, 1])
    pix = [" ".join(map(str, im.ravel())) for im in imgs]
    write_fer2013(tmp_path / "a.csv", [0, 1], pixels=[pix[0], "1x " + pix[1].split(" ", 1)[1]])
    with pytest.raises(InputError, match="row 1 .*non-integer pixel value '1x'"):
        load_dataset("fer2013", tmp_path / "a.csv")
    write_fer2013(tmp_path / "b.csv", [0, 1], pixels=[pix[0], "300 " + pix[1].split(" ", 1)[1]])
    with pytest.raises(InputError, match="row 1 .*outside 0-255"):
        load_dataset("fer2013", tmp_path / "b.csv")


def test_unknown_emotion_code(tmp_path):
    write_fer2013(tmp_path / "f.csv", [0, 9])
    with pytest.raises(UnknownLabelError, match="9"):
        load_dataset("fer2013", tmp_path / "f.csv")


def test_split_errors(csv, tmp_path):
    path, _ = csv
    with pytest.raises(ConfigError, match="no split 'holdout'.*PrivateTest"):
        load_dataset("fer2013", path, "holdout")
    dev = tmp_path / "dev.csv"
    write_fer2013(dev, [0, 1], ["Training", "PublicTest"])
    with pytest.raises(InputError, match="no PrivateTest rows"):
        load_dataset("fer2013", dev, "PrivateTest")


def test_unknown_dataset_and_option(csv):
    path, _ = csv
    with pytest.raises(ConfigError, match="unknown dataset 'fer2014'.*known:.*fer2013.*ferplus.*rafdb"):
        load_dataset("fer2014", path)
    with pytest.raises(ConfigError, match="no option 'imagesize'"):
        load_dataset("fer2013", path, imagesize=48)


def test_register_dataset_is_one_function(tmp_path):
    @register_dataset("toy_for_test")
    def read_toy(path, split=None, *, cache=True, n=3):
        return FaceDataset(np.zeros((n, 8, 8), np.uint8), np.zeros(n, np.int64), BASIC7, split=split or "")

    try:
        assert "toy_for_test" in DATASETS
        d = load_dataset("TOY_FOR_TEST", tmp_path, "train", n=5)
        assert len(d) == 5 and d.split == "train"
    finally:
        DATASETS.pop("toy_for_test")


def test_irregular_whitespace_still_parses_and_empty_csv_fails(tmp_path):
    imgs = write_fer2013(tmp_path / "ok.csv", [0, 1])
    pix = [" ".join(map(str, im.ravel())) for im in imgs]
    write_fer2013(tmp_path / "ws.csv", [0, 1], pixels=[" " + pix[0].replace(" ", "  ", 5), pix[1]])
    assert np.array_equal(load_dataset("fer2013", tmp_path / "ws.csv").images, imgs)
    (tmp_path / "empty.csv").write_text("emotion,pixels,Usage\n")
    with pytest.raises(InputError, match="no rows"):
        load_dataset("fer2013", tmp_path / "empty.csv")
