"""Tiny generated datasets in each reader's documented on-disk format (used by tests/test_data_*.py)."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ferkit.labels import FERPLUS_COLUMNS

REAL_DATA = Path(__file__).resolve().parents[2] / "shared/data"


@pytest.fixture(autouse=False)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Point FERKIT_CACHE at a fresh folder so tests never touch ~/.cache/ferkit."""
    d = tmp_path_factory.mktemp("ferkit-cache")
    monkeypatch.setenv("FERKIT_CACHE", str(d))
    return d


def fer_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 48), dtype=np.uint8)


def write_fer2013(path: Path, emotions: Sequence[int | str], usages: Sequence[str] | None = None,
                  images: np.ndarray | None = None, pixels: Sequence[str] | None = None,
                  header: str | None = None) -> np.ndarray:
    """Write a FER2013 csv (gzipped if the name ends .gz); returns the images written."""
    n = len(emotions)
    images = fer_images(n) if images is None else images
    pix = list(pixels) if pixels is not None else [" ".join(map(str, im.ravel())) for im in images]
    if header is None:
        header = "emotion,pixels,Usage" if usages is not None else "emotion,pixels"
    lines = [header]
    for i in range(n):
        row = f"{emotions[i]},{pix[i]}"
        lines.append(row + (f",{usages[i]}" if usages is not None else ""))
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", compresslevel=1) as f:
            f.write(text)
    else:
        Path(path).write_text(text)
    return images


def write_votes(path: Path, usages: Sequence[str], names: Sequence[str],
                votes: Sequence[Sequence[int]]) -> None:
    lines = ["Usage,Image name," + ",".join(FERPLUS_COLUMNS)]
    for u, n, v in zip(usages, names, votes):
        lines.append(f"{u},{n}," + ",".join(map(str, v)))
    Path(path).write_text("\n".join(lines) + "\n")


def write_rgb(path: Path, rgb: tuple[int, int, int] | np.ndarray, size: int = 100) -> None:
    """An image file whose pixels are ``rgb`` (a colour or an (H,W,3) RGB array)."""
    arr = np.asarray(rgb, np.uint8)
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (size, size, 3)).copy()
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))


RAF_BASIC = [  # (name, 1-based RAF-DB code)
    ("train_00001.jpg", 1), ("train_00002.jpg", 4), ("train_00003.jpg", 4), ("train_00004.jpg", 7),
    ("train_00005.jpg", 6), ("test_0001.jpg", 5), ("test_0002.jpg", 2), ("test_0003.jpg", 3),
]


def make_rafdb(root: Path, missing: Sequence[str] = (), compound: bool = True) -> Path:
    """RAF-DB tree: basic/ (8 images, red ones for code 4 = happiness) and compound/ (11 classes)."""
    b = root / "basic"
    (b / "EmoLabel").mkdir(parents=True)
    (b / "EmoLabel/list_patition_label.txt").write_text("".join(f"{n} {c}\n" for n, c in RAF_BASIC))
    for n, c in RAF_BASIC:
        if n in missing:
            continue
        colour = (255, 0, 0) if c == 4 else (0, 0, 255)
        write_rgb(b / "Image/aligned" / n.replace(".jpg", "_aligned.jpg"), colour)
    if compound:
        c = root / "compound"
        (c / "EmoLabel").mkdir(parents=True)
        rows = [(f"train_{i:04d}.jpg", i) for i in range(1, 12)] + [("test_0001.jpg", 11)]
        (c / "EmoLabel/list_patition_label.txt").write_text("".join(f"{n} {k}\n" for n, k in rows))
        for n, _ in rows:
            write_rgb(c / "Image/aligned" / n.replace(".jpg", "_aligned.jpg"), (0, 255, 0))
    return root


AFFECT_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                 "expression,valence,arousal")


def make_affectnet(root: Path) -> Path:
    """training.csv with codes 0-10 (one image each) + validation.csv; face box white, the rest black."""
    img_dir = root / "Manually_Annotated_Images"
    rows = []
    for code in range(11):
        rel = f"{code % 3 + 1}/img{code:02d}.jpg"
        arr = np.zeros((120, 160, 3), np.uint8)
        arr[20:80, 40:100] = 255  # the face box: x=40, y=20, w=60, h=60
        write_rgb(img_dir / rel, arr)
        rows.append(f'{rel},40,20,60,60,"1.0;2.0;3.0",{code},0.{code},-0.{code}')
    rows.append("9/missing.jpg,0,0,10,10,,1,0.5,0.5")  # listed, absent: skipped and counted
    (root / "training.csv").write_text(AFFECT_HEADER + "\n" + "\n".join(rows) + "\n")
    write_rgb(img_dir / "7/val0.jpg", np.full((64, 64, 3), 255, np.uint8))
    (root / "validation.csv").write_text(AFFECT_HEADER + "\n7/val0.jpg,0,0,64,64,,3,0.1,0.2\n")
    return root


def make_folder(root: Path) -> Path:
    """root/{train,test}/<synonym class names>/ with one corrupt file and one text file in train."""
    classes = {"happy": 3, "Angry": 2, "sad": 2, "surprised": 1, "neutral": 2}
    for split in ("train", "test"):
        for name, n in classes.items():
            for i in range(n):
                write_rgb(root / split / name / f"{i}.png", (10 * i, 100, 200), size=60)
    (root / "train/happy/broken.jpg").write_bytes(b"not really a jpeg")
    (root / "train/sad/notes.txt").write_text("annotator notes")
    (root / "train/sad/.DS_Store").write_bytes(b"\0\0")
    return root


JAFFE_FILES = ["KA.HA1.29.tiff", "KA.NE1.26.tiff", "KM.SU2.16.tiff", "YM.AN3.61.tiff", "NA.DI1.214.tiff",
               "TM.FE2.191.tiff", "UY.SA1.40.tiff"]


def make_jaffe(root: Path) -> Path:
    """JAFFE-named 256x256 grayscale tiffs (white centre square on black) plus a README to skip."""
    root.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((256, 256), np.uint8)
    arr[64:192, 64:192] = 255
    for name in JAFFE_FILES:
        Image.fromarray(arr).save(root / name)
    (root / "README.txt").write_text("JAFFE")
    return root
