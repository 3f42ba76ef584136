"""FER+ reader: the four target modes of microsoft/FERPlus, drops and their counts, file resolution."""

from __future__ import annotations

import numpy as np
import pytest

from ferkit.data import load_dataset
from ferkit.data.ferplus import process_votes
from ferkit.errors import ConfigError, InputError
from ferkit.labels import CANONICAL

from fixtures_data import REAL_DATA, isolated_cache, write_fer2013, write_votes  # noqa: F401

pytestmark = pytest.mark.usefixtures("isolated_cache")

N, H, SU, SA, AN, CO = (CANONICAL.index(c) for c in ("neutral", "happiness", "surprise", "sadness", "anger",
                                                     "contempt"))
# votes: neutral happiness surprise sadness anger disgust fear contempt unknown NF
ROWS = [  # (usage, name, votes)
    ("Training", "a.png", [0, 8, 1, 0, 0, 0, 0, 0, 1, 0]),    # 0 clear happiness
    ("Training", "b.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),   # 1 not a face
    ("Training", "c.png", [2, 0, 0, 0, 0, 0, 0, 0, 8, 0]),    # 2 unknown peaks
    ("Training", "d.png", [4, 0, 0, 3, 3, 0, 0, 0, 0, 0]),    # 3 no majority: kept by prob/multi only
    ("Training", "e.png", [5, 1, 1, 1, 1, 1, 0, 0, 0, 0]),    # 4 single votes are outliers -> neutral
    ("Training", "f.png", [6, 0, 3, 0, 0, 0, 0, 0, 0, 0]),    # 5 votes sum to 9
    ("Training", "", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),        # 6 blank name: dropped whatever the votes
    ("Training", "h.png", [6, 0, 0, 0, 0, 0, 0, 0, 2, 2]),    # 7 unknown/NF tie after an emotion: left out
    ("Training", "i.png", [0, 0, 0, 0, 0, 0, 0, 7, 3, 0]),    # 8 contempt
    ("PublicTest", "j.png", [4, 0, 0, 3, 3, 0, 0, 0, 0, 0]),  # 9 no majority in an eval split: dropped
    ("PublicTest", "k.png", [0, 0, 0, 0, 9, 0, 0, 0, 1, 0]),  # 10 anger
    ("PublicTest", "l.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]), # 11 NF
]
FER_CODES = [3, 6, 6, 6, 6, 6, 6, 6, 6, 6, 0, 6]


@pytest.fixture
def files(tmp_path):
    csv = tmp_path / "fer2013.csv"
    images = write_fer2013(csv, FER_CODES, [u for u, _, _ in ROWS])
    write_votes(tmp_path / "fer2013new.csv", *zip(*ROWS))
    return tmp_path, csv, images


def test_majority(files):
    root, csv, images = files
    d = load_dataset("ferplus", root, "Training")
    assert d.classes == CANONICAL and d.meta["target_mode"] == "majority" and d.soft_targets is None
    assert d.meta["row"].tolist() == [0, 4, 5, 7, 8]
    assert d.labels.tolist() == [H, N, N, N, CO]
    assert np.array_equal(d.images, images[[0, 4, 5, 7, 8]])
    assert d.meta["dropped"] == {"blank_name": 1, "not_face": 1, "unknown": 1, "no_consensus": 1}
    assert d.meta["votes_not_10"] == 1 and d.meta["votes_not_10_rows"] == [5]
    assert d.meta["votes"][2].tolist() == ROWS[5][2]


@pytest.mark.parametrize("mode", ["probability", "crossentropy"])
def test_probability_and_crossentropy(files, mode):
    root, csv, _ = files
    d = load_dataset("ferplus", root, "train", mode=mode)
    assert d.meta["target_mode"] == mode
    assert d.meta["row"].tolist() == [0, 3, 4, 5, 7, 8]
    assert d.labels.tolist() == [H, -1, N, N, N, CO]  # row 3 has no strict majority
    soft = d.soft_targets
    assert soft.dtype == np.float32 and soft.shape == (6, 8) and np.allclose(soft.sum(1), 1)
    assert np.allclose(soft[0], np.eye(8)[H])                       # the single surprise vote removed
    assert np.allclose(soft[1][[N, SA, AN]], [0.4, 0.3, 0.3])
    assert np.allclose(soft[3][[N, SU]], [6 / 9, 3 / 9])
    assert np.allclose(soft[4], np.eye(8)[N])                       # unknown/NF tie left out
    assert d.meta["dropped"] == {"blank_name": 1, "not_face": 1, "unknown": 1, "no_consensus": 0}


def test_multi_target(files):
    root, csv, _ = files
    d = load_dataset("ferplus", root, "Training", mode="multi_target")
    assert d.meta["row"].tolist() == [0, 3, 4, 5, 7, 8]
    assert set(np.unique(d.soft_targets)) <= {0.0, 1.0}
    assert np.flatnonzero(d.soft_targets[1]).tolist() == [N, SA, AN]
    assert np.flatnonzero(d.soft_targets[3]).tolist() == [N, SU]
    assert np.flatnonzero(d.soft_targets[4]).tolist() == [N]


@pytest.mark.parametrize("mode", ["majority", "probability", "multi_target"])
def test_eval_split_always_uses_majority_rows(files, mode):
    root, csv, _ = files
    d = load_dataset("ferplus", root, "PublicTest", mode=mode)
    assert d.meta["row"].tolist() == [10] and d.labels.tolist() == [AN]
    assert d.meta["dropped"] == {"blank_name": 0, "not_face": 1, "unknown": 0, "no_consensus": 1}
    if mode != "majority":
        assert np.allclose(d.soft_targets, np.eye(8)[[AN]])


def test_process_votes_matches_the_ferplus_code():
    dist, forced = process_votes([4, 0, 0, 3, 3, 0, 0, 0, 0, 0], "majority")
    assert forced and dist.argmax() == 8
    dist, forced = process_votes([3, 3, 2, 2, 0, 0, 0, 0, 0, 0], "probability")
    assert forced  # four classes needed to pass 75%: more than 3 -> unknown
    dist, forced = process_votes([0, 0, 0, 0, 0, 0, 0, 0, 5, 5], "probability")
    assert forced  # unknown taken alone holds only 50% of the votes: not more than half
    dist, forced = process_votes([0, 0, 0, 0, 0, 0, 0, 0, 6, 4], "probability")
    assert not forced and dist.argmax() == 8  # unknown peaks first: the row is dropped as unknown
    with pytest.raises(ConfigError):
        process_votes([1] * 10, "vote")


def test_file_resolution(files, tmp_path):
    root, csv, _ = files
    by_csv = load_dataset("ferplus", csv, "Training")  # votes beside the csv
    by_opts = load_dataset("ferplus", None, "Training", fer2013_path=csv, votes_path=root / "fer2013new.csv")
    assert by_csv.labels.tolist() == by_opts.labels.tolist()
    # shared-data layout: data/fer2013/<csv> and data/ferplus/fer2013new.csv
    (tmp_path / "data/fer2013").mkdir(parents=True)
    (tmp_path / "data/ferplus").mkdir()
    (tmp_path / "data/fer2013/fer2013_dev.csv").write_bytes(csv.read_bytes())
    (tmp_path / "data/ferplus/fer2013new.csv").write_bytes((root / "fer2013new.csv").read_bytes())
    data = tmp_path / "data"
    for p in (data, data / "fer2013/fer2013_dev.csv", data / "ferplus/fer2013new.csv"):
        assert load_dataset("ferplus", p, "Training").labels.tolist() == by_csv.labels.tolist()
    with pytest.raises(ConfigError, match="mode must be one of majority, probability, crossentropy, multi_"):
        load_dataset("ferplus", root, mode="soft")


def test_bad_inputs(tmp_path):
    write_fer2013(tmp_path / "fer2013.csv", [0, 1, 2], ["Training"] * 3)
    write_votes(tmp_path / "fer2013new.csv", ["Training"] * 2, ["a", "b"], [[10] + [0] * 9] * 2)
    with pytest.raises(InputError, match="row counts differ.*3 rows.*has 2"):
        load_dataset("ferplus", tmp_path)
    write_votes(tmp_path / "fer2013new.csv", ["Training", "PublicTest", "Training"], ["a", "b", "c"],
                [[10] + [0] * 9] * 3)
    with pytest.raises(InputError, match="disagree at row 1"):
        load_dataset("ferplus", tmp_path)
    (tmp_path / "fer2013new.csv").unlink()
    with pytest.raises(InputError, match="fer2013new.csv not found"):
        load_dataset("ferplus", tmp_path / "fer2013.csv")
    (tmp_path / "fer2013new.csv").write_text("Usage,Image name,neutral\nTraining,a,10\n")
    with pytest.raises(InputError, match="no column 'happiness'"):
        load_dataset("ferplus", tmp_path)


@pytest.mark.skipif(not (REAL_DATA / "ferplus/fer2013new.csv").exists(), reason="shared data absent")
def test_real_fer2013_and_ferplus(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    csv = REAL_DATA / "fer2013/fer2013_dev.csv.gz"
    train = load_dataset("fer2013", csv, "Training")
    val = load_dataset("fer2013", csv, "PublicTest")
    assert (len(train), len(val)) == (28709, 3589)
    assert train.images.shape == (28709, 48, 48) and set(np.unique(train.labels)) == set(range(7))
    fp = {s: load_dataset("ferplus", csv, s) for s in ("Training", "PublicTest")}  # votes found in ../ferplus
    dropped = {s: d.meta["dropped"] for s, d in fp.items()}
    assert dropped["Training"]["blank_name"] + dropped["PublicTest"]["blank_name"] == 158
    assert fp["Training"].meta["votes_not_10"] + fp["PublicTest"].meta["votes_not_10"] == 1
    for s, n in (("Training", 28709), ("PublicTest", 3589)):
        d = fp[s]
        assert sum(dropped[s].values()) + len(d) == n
        assert 0.8 * n < len(d) < n and (d.labels >= 0).all()
        assert d.class_counts().argmax() == CANONICAL.index("neutral")
    pld = load_dataset("ferplus", csv, "Training", mode="probability")
    assert len(pld) > len(fp["Training"]) and np.allclose(pld.soft_targets.sum(1), 1)
