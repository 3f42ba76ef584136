"""The bad-input catalogue (issue 17): every bad input the issue lists, through the real CLI and
the Python API, in one table.

Each CLI case must exit with status 2 and print exactly one line on stderr, ``ferkit: error: ...``,
naming the problem (no traceback, no decoder or onnxruntime chatter); each API case must raise a
FerkitError with a one-line message. No case may leave anything behind: the case's folder (inputs,
output targets, the run folder and the working directory) is the same, file for file, afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from ferkit import examples
from ferkit.cli import main
from ferkit.errors import FerkitError

PHOTO = str(Path(examples.__file__).parent / "astronaut_pair.jpg")
CHATTER = ("Traceback", "libpng", "[ WARN", "[ERROR", "onnxruntime", "ffmpeg", "moov atom", "Usage:")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels (its data is a few bytes, never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


class Pickled:
    """A class whose instances a model.pt must not be allowed to hold (unpickling runs code)."""


class World:
    """The shared inputs: a tiny FER2013 csv, its config, a trained one-epoch run, broken files."""

    def __init__(self, root: Path) -> None:
        import torch

        from synthetic import write_config, write_fer2013_csv

        self.root = root
        self.runs = root / "runs"
        self.csv = write_fer2013_csv(root / "fer.csv", n_train=64, n_test=16)
        self.config = write_config(root / "tiny.yaml", self.csv, self.runs, train={
            "epochs": 1, "device": "cpu", "progress": False, "threads": 1, "log_every": 1})
        self.resumable = write_config(root / "resumable.yaml", self.csv, self.runs, train={
            "epochs": 1, "device": "cpu", "progress": False, "threads": 1, "log_every": 1})
        self.blocker = root / "a_file"
        self.blocker.write_text("I am a file, not a folder\n")
        self.corrupt_jpg = root / "corrupt.jpg"
        self.corrupt_jpg.write_bytes(Path(PHOTO).read_bytes()[:400])
        self.text_jpg = root / "notes.jpg"
        self.text_jpg.write_text("this is text, not a JPEG\n")
        self.huge_png = root / "huge.png"
        self.huge_png.write_bytes(_png_header(17000, 17000))
        self.empty_dir = root / "empty"
        self.empty_dir.mkdir()
        self.binary_config = root / "binary.yaml"
        self.binary_config.write_bytes(bytes(range(256)) * 8)
        self.broken_yaml = root / "broken.yaml"
        self.broken_yaml.write_text("train: {epochs: 3\n  lr: [\n")
        self.pickled = root / "pickled" / "model.pt"
        self.pickled.parent.mkdir()
        torch.save({"model": Pickled()}, self.pickled)  # a torch file holding a class instance, not tensors
        self.plain_pickle = root / "plain" / "model.pt"
        self.plain_pickle.parent.mkdir()
        with self.plain_pickle.open("wb") as fh:
            pickle.dump({"model": Pickled()}, fh, protocol=4)  # torch.load warns on these, then fails
        self.good_pt = root / "good.pt"
        torch.save({"weights": torch.zeros(2000)}, self.good_pt)
        self.truncated = root / "cut" / "model.pt"
        self.truncated.parent.mkdir()
        self.truncated.write_bytes(self.good_pt.read_bytes()[:-300])
        self.good_pt.unlink()
        assert main(["train", str(self.resumable)]) == 0  # the run that the model-change case resumes
        self.run_dir = self.runs / "resumable"
        assert (self.run_dir / "checkpoint.pt").is_file() or any(self.run_dir.glob("*.pt"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    old_cwd = os.getcwd()
    root = tmp_path_factory.mktemp("catalogue")
    os.chdir(root)  # default outputs (export's <name>.onnx, evaluate's eval/) would land here
    try:
        yield World(root)
    finally:
        os.chdir(old_cwd)
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def fast(world):
    from ferkit.inference.recognizer import Recognizer

    return Recognizer("fast", detector="none", threads=1)


@contextlib.contextmanager
def user_warnings():
    """Records the warnings a user of the console script would see (Python's default filters): each
    would be one more line on stderr (pytest's own warning capture would hide them from capsys)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        yield caught


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``root``: path -> (size, mtime) (folders: (-1, 0))."""
    out = {}
    for p in root.rglob("*"):
        st = p.stat()
        out[str(p.relative_to(root))] = (-1, 0) if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return out


def assert_nothing_left_behind(before: dict, after: dict) -> None:
    """No file or folder added, removed or rewritten; no temporary file in the decode cache either."""
    assert not list(Path(os.environ["FERKIT_CACHE"]).rglob("*.tmp"))
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"left behind: added {added}, removed {removed}, changed {changed}"


# ---- the CLI ---------------------------------------------------------------------------------------
# (id, argv from the World, a substring the one line must hold)
def _train(*overrides: str):
    return lambda w: ["train", str(w.config), *[a.format(w=w) for a in overrides]]


def _predict(*args: str):
    return lambda w: ["predict", *[a.format(w=w) for a in args], "--no-progress"]


CLI_CASES = [
    # 1. config values of the wrong type or range, an unknown key, unreadable configs
    ("epochs-abc", _train("train.epochs=abc"), "train.epochs"),
    ("epochs-negative", _train("train.epochs=-1"), "train.epochs"),
    ("epochs-zero", _train("train.epochs=0"), "train.epochs"),
    ("select-metric-misspelt", _train("train.select_metric=val_acuracy"), "val_acuracy"),
    ("lr-negative", _train("optim.lr=-1"), "optim.lr"),
    ("lr-abc", _train("optim.lr=abc"), "optim.lr"),
    ("batch-size-zero", _train("optim.batch_size=0"), "optim.batch_size"),
    ("batch-size-negative", _train("optim.batch_size=-5"), "optim.batch_size"),
    ("image-size-abc", _train("data.image_size=abc"), "data.image_size"),
    ("limit-train-abc", _train("data.limit_train=abc"), "data.limit_train"),
    ("checkpoint-every-abc", _train("train.checkpoint_every_steps=abc"), "train.checkpoint_every_steps"),
    ("channels-2", _train("data.channels=2"), "data.channels"),
    ("unknown-key", _train("train.epoch=3"), "train.epoch"),
    ("override-without-equals", _train("train.epochs"), "train.epochs"),
    ("binary-config", lambda w: ["train", str(w.binary_config)], "binary.yaml"),
    ("broken-yaml-config", lambda w: ["train", str(w.broken_yaml)], "not valid YAML"),
    ("missing-config", lambda w: ["train", str(w.root / "nowhere.yaml")], "nowhere.yaml"),
    ("bad-device", _train("--device", "banana"), "banana"),
    ("unknown-backbone", _train("model.name=resnet999"), "resnet999"),
    ("unknown-method", _train("method.name=nope"), "nope"),
    ("missing-data-file", _train("data.path={w.root}/nope.csv"), "nope.csv"),
    ("config-is-a-folder", lambda w: ["train", str(w.empty_dir)], "is a directory"),
    ("config-is-not-a-mapping", lambda w: ["train", str(w.text_jpg)], "mapping"),
    # 2. unwritable or impossible output paths
    ("predict-out-under-a-file", _predict(PHOTO, "--model", "fast", "--out", "{w.blocker}/x.csv"),
     "is a file, not a folder"),
    ("predict-out-bad-suffix", _predict(PHOTO, "--model", "fast", "--out", "{w.root}/x.txt"), ".csv or .json"),
    ("predict-annotate-under-a-file", _predict(PHOTO, "--model", "fast", "--annotate", "{w.blocker}/ann"),
     "is a file, not a folder"),
    ("evaluate-out-under-a-file", lambda w: ["evaluate", "--model", "fast", "--dataset", "fer2013", "--path",
                                             str(w.csv), "--out", str(w.blocker / "m.json")],
     "is a file, not a folder"),
    ("export-out-under-a-file", lambda w: ["export", "accurate", "--out", str(w.blocker / "x.onnx")],
     "is a file, not a folder"),
    ("export-default-out-is-a-folder", lambda w: ["export", "accurate", "--out", str(w.empty_dir)], "is a directory"),
    ("export-an-onnx-model", lambda w: ["export", "fast", "--out", str(w.root / "x.onnx")], "already an ONNX file"),
    ("export-quantize-fp4", lambda w: ["export", "accurate", "--out", str(w.root / "x.onnx"), "--quantize", "fp4"],
     "fp4"),
    ("train-run-dir-under-a-file", _train("--run-dir", "{w.blocker}/x"), "is a file, not a folder"),
    # 3. resuming a run under a changed model
    ("resume-changed-model", lambda w: ["train", str(w.resumable), "model.name=compact_wide"],
     "model.name"),
    # 5. bad images
    ("corrupt-jpeg", _predict("{w.corrupt_jpg}", "--model", "fast"), "cannot decode image"),
    ("text-named-jpg", _predict("{w.text_jpg}", "--model", "fast"), "cannot decode image"),
    ("17000x17000-png", _predict("{w.huge_png}", "--model", "fast"), "17000x17000 = 289.0 megapixels"),
    ("missing-image", _predict("{w.root}/missing.jpg", "--model", "fast"), "missing.jpg"),
    ("empty-folder", _predict("{w.empty_dir}", "--model", "fast"), "no images or videos"),
    ("no-inputs", _predict("--model", "fast"), "nothing to analyse"),
    # 6. models and engines
    ("unknown-model", _predict(PHOTO, "--model", "no-such-model"), "unknown model 'no-such-model'"),
    ("pickled-object-model", _predict(PHOTO, "--model", "{w.pickled}"), "Python objects"),
    ("plain-pickle-model", _predict(PHOTO, "--model", "{w.plain_pickle}"), "not a torch file"),
    ("truncated-checkpoint", _predict(PHOTO, "--model", "{w.truncated}"), "truncated"),
    ("onnx-file-with-torch-engine", _predict(PHOTO, "--model", "fast", "--engine", "torch"), "ONNX file"),
    ("engine-tensorrt", _predict(PHOTO, "--model", "fast", "--engine", "tensorrt"), "tensorrt"),
    ("onnx-on-cuda", _predict(PHOTO, "--model", "fast", "--device", "cuda"), "CPU"),
    ("threads-zero", _predict(PHOTO, "--model", "fast", "--threads", "0"), "--threads"),
    ("unknown-detector", _predict(PHOTO, "--model", "fast", "--detector", "yolo"), "yolo"),
    ("frame-step-zero", _predict(PHOTO, "--model", "fast", "--frame-step", "0"), "--frame-step"),
    ("unknown-option", _predict(PHOTO, "--modle", "fast"), "--modle"),
    ("unknown-command", lambda w: ["predcit", PHOTO], "predcit"),
    ("evaluate-unknown-dataset", lambda w: ["evaluate", "--model", "fast", "--dataset", "fer2014", "--path",
                                            str(w.csv), "--out", str(w.root / "m.json")], "fer2014"),
    ("live-no-source", lambda w: ["live", "--model", "fast"], "give one source"),
    ("live-text-file-as-video", lambda w: ["live", str(w.text_jpg), "--model", "fast", "--detector", "none",
                                           "--out", str(w.root / "o.mp4")], "cannot decode video"),
    ("predict-cam-on-onnx", _predict(PHOTO, "--model", "fast", "--cam", "--annotate", "{w.root}/ann"),
     "engine='torch'"),
    ("predict-smooth-1.5", _predict(PHOTO, "--model", "fast", "--smooth", "1.5"), "--smooth"),
    ("evaluate-batch-size-zero", lambda w: ["evaluate", "--model", "fast", "--dataset", "fer2013", "--path",
                                            str(w.csv), "--out", str(w.root / "m.json"), "--batch-size", "0"],
     "--batch-size"),
    ("evaluate-unknown-split", lambda w: ["evaluate", "--model", "fast", "--dataset", "fer2013", "--path",
                                          str(w.csv), "--out", str(w.root / "m.json"), "--split", "Nope"], "Nope"),
    ("evaluate-text-as-csv", lambda w: ["evaluate", "--model", "fast", "--dataset", "fer2013", "--path",
                                        str(w.text_jpg), "--out", str(w.root / "m.json")], "'pixels'"),
    ("benchmark-threads-zero", lambda w: ["benchmark", "--model", "fast", "--threads", "0"], "--threads"),
    ("benchmark-batch-zero", lambda w: ["benchmark", "--model", "fast", "--batch", "0"], "--batch"),
    ("benchmark-repeats-zero", lambda w: ["benchmark", "--model", "fast", "--repeats", "0"], "--repeats"),
    ("report-not-a-run", lambda w: ["report", str(w.empty_dir)], "log.jsonl"),
    ("train-classic-out-not-npz", lambda w: ["train-classic", "--dataset", "fer2013", "--path", str(w.csv),
                                             "--out", str(w.root / "x.txt")], ".npz"),
    # 7. experiments
    ("experiment-missing-config", lambda w: ["experiment", str(w.root / "nowhere.yaml")], "nowhere.yaml"),
    ("experiment-binary-config", lambda w: ["experiment", str(w.binary_config)], "is not text"),
    ("experiment-broken-yaml", lambda w: ["experiment", str(w.broken_yaml)], "not valid YAML"),
    ("experiment-config-not-a-mapping", lambda w: ["experiment", str(w.text_jpg)], "mapping"),
    ("experiment-bad-only", lambda w: ["experiment", str(Path(__file__).resolve().parents[1] / "configs" /
                                                         "experiments" / "apsm_ablation_cpu.yaml"),
                                       "--dry-run", "--only", "backbone=resnet999"], "resnet999"),
    ("experiment-only-without-equals", lambda w: ["experiment", str(Path(__file__).resolve().parents[1] /
                                                                    "configs" / "experiments" /
                                                                    "apsm_ablation_cpu.yaml"),
                                                  "--dry-run", "--only", "backbone"], "--only"),
]


@pytest.mark.parametrize("argv_of, needle", [pytest.param(f, s, id=i) for i, f, s in CLI_CASES])
def test_cli_bad_input_is_one_line_and_exit_2(world, argv_of, needle, capsys):
    argv = argv_of(world)
    capsys.readouterr()
    before = snapshot(world.root)
    with user_warnings() as caught:
        code = main(argv)
    out, err = capsys.readouterr()
    lines = [f"ferkit: warning: {w.message}" for w in caught] + err.splitlines()
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and lines[0].strip(), (argv, err)
    assert lines[0].startswith("ferkit: error: "), (argv, err)
    assert not any(c in err for c in CHATTER), (argv, err)
    assert needle in lines[0], (argv, err)
    assert "weights_only" not in err
    assert_nothing_left_behind(before, snapshot(world.root))
    assert not (world.runs / "tiny").exists()  # no case trained (or started a run folder)


# ---- the Python API --------------------------------------------------------------------------------
def _recognizer(*args, **kwargs):
    def make(w, fast):
        from ferkit.inference.recognizer import Recognizer

        return Recognizer(*args, **kwargs)
    return make


API_CASES = [
    ("predict-empty-image", lambda w, r: r.predict(np.zeros((0, 0, 3), np.uint8)), "empty image"),
    ("predict-faces-zero-size-crop", lambda w, r: r.predict_faces([np.zeros((0, 5, 3), np.uint8)]), "empty image"),
    ("predict-faces-zero-size-stack", lambda w, r: r.predict_faces(np.zeros((2, 0, 0, 3), np.uint8)),
     "empty image"),
    ("predict-faces-bad-dtype", lambda w, r: r.predict_faces([np.full((8, 8), 1.5, np.float32)]), "uint8"),
    ("analyze-out-under-a-file", lambda w, r: r.analyze([PHOTO], out=w.blocker / "x.csv"),
     "is a file, not a folder"),
    ("analyze-annotate-under-a-file", lambda w, r: r.analyze([PHOTO], annotate=w.blocker / "ann"),
     "is a file, not a folder"),
    ("analyze-corrupt-with-annotate", lambda w, r: r.analyze([w.corrupt_jpg], annotate=w.root / "ann_api"),
     "cannot decode"),
    ("analyze-empty-folder", lambda w, r: r.analyze([w.empty_dir]), "no images or videos"),
    ("analyze-frame-step-zero", lambda w, r: r.analyze([PHOTO], frame_step=0), "frame step"),
    ("predict-text-named-jpg", lambda w, r: r.predict(w.text_jpg), "cannot decode image"),
    ("predict-17000x17000-png", lambda w, r: r.predict(w.huge_png), "17000x17000 = 289.0 megapixels"),
    ("predict-missing-file", lambda w, r: r.predict(w.root / "missing.jpg"), "file not found"),
    ("predict-folder", lambda w, r: r.predict(w.empty_dir), "is a folder"),
    ("unknown-model", _recognizer("no-such-model"), "unknown model"),
    ("onnx-file-with-torch-engine", _recognizer("fast", engine="torch"), "engine='onnx'"),
    ("engine-tensorrt", _recognizer("fast", engine="tensorrt"), "unknown engine"),
    ("onnx-on-cuda", _recognizer("fast", device="cuda"), "CPU"),
    ("pickled-object-model", lambda w, r: _recognizer(w.pickled)(w, r), "Python objects"),
    ("plain-pickle-model", lambda w, r: _recognizer(w.plain_pickle)(w, r), "not a torch file"),
    ("truncated-checkpoint", lambda w, r: _recognizer(w.truncated)(w, r), "truncated"),
    ("unknown-detector", _recognizer("fast", detector="yolo"), "yolo"),
    ("load-config-bad-value", lambda w, r: _load_config(w.config, ["optim.lr=abc"]), "optim.lr"),
    ("load-config-binary", lambda w, r: _load_config(w.binary_config, []), "binary.yaml"),
]


def _load_config(path, overrides):
    from ferkit.engine.config import load_config

    return load_config(path, overrides)


@pytest.mark.parametrize("call, needle", [pytest.param(f, s, id=i) for i, f, s in API_CASES])
def test_api_bad_input_is_a_one_line_ferkit_error(world, fast, call, needle):
    before = snapshot(world.root)
    with user_warnings() as caught, pytest.raises(Exception) as info:  # noqa: PT011 - checked below
        call(world, fast)
    msg = str(info.value)
    assert not caught, [str(w.message) for w in caught]
    assert isinstance(info.value, FerkitError), f"{type(info.value).__name__}: {msg}"
    assert msg.strip() and "\n" not in msg.strip(), msg
    assert needle in msg, msg
    assert "weights_only" not in msg
    assert_nothing_left_behind(before, snapshot(world.root))


def test_bundled_onnx_names_load_where_a_model_is_taken():
    """The other side of one fix: load_model('fast') (evaluate --model fast) read the .onnx file as a
    torch checkpoint and failed with 'not a torch file'."""
    from ferkit.engine.model_io import load_model
    from ferkit.engine.onnx_runtime import OnnxModel

    assert isinstance(load_model("fast", "cpu"), OnnxModel)
