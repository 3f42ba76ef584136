"""Recognizer end to end on the shipped example photos, a generated video and the CLI.

The model is a compact CNN trained for one epoch on synthetic faces: its predictions mean
nothing, but its input, labels and file format are those of a real run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import ferkit
from ferkit import examples, zoo
from ferkit.cli import main
from ferkit.errors import InputError
from ferkit.inference.results import column_groups
from ferkit.inference.sources import load_image
from ferkit.inference.video import iter_video, video_info
from ferkit.labels import BASIC7

KEYS = {"box", "face_score", "landmarks", "probs", "label", "uncertainty"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from ferkit.engine.config import load_config
    from ferkit.engine.trainer import Trainer

    from synthetic import write_config, write_fer2013_csv

    tmp = tmp_path_factory.mktemp("model")
    csv = write_fer2013_csv(tmp / "fer.csv", n_train=64, n_test=16)
    cfg = write_config(tmp / "tiny.yaml", csv, tmp / "runs", train={"epochs": 1})
    Trainer(load_config(cfg)).fit()
    return tmp / "runs" / "tiny"


@pytest.fixture(scope="module")
def rec(run_dir):
    return ferkit.Recognizer(run_dir, device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 12-frame 10 fps video of the astronaut's face sliding right by 8 px a frame."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    img = cv2.cvtColor(load_image(examples.path("astronaut")), cv2.COLOR_RGB2BGR)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(12):
        x0 = 150 - 8 * i
        vw.write(np.ascontiguousarray(img[20:260, x0:x0 + 320]))
    vw.release()
    return path


def _check_result(d, labels):
    assert set(d) == KEYS
    assert len(d["box"]) == 4 and all(isinstance(v, float) for v in d["box"])
    assert 0 < d["face_score"] <= 1
    assert list(d["probs"]) == list(labels)
    assert sum(d["probs"].values()) == pytest.approx(1.0, abs=1e-9)
    assert d["label"] == max(d["probs"], key=d["probs"].get)
    assert 0.0 <= d["uncertainty"] <= 1.0


def test_import_ferkit_stays_cheap():
    code = "import sys, ferkit; assert 'torch' not in sys.modules and 'cv2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_predict_photo(rec):
    assert rec.labels == BASIC7
    res = rec.predict(examples.path("astronaut"))
    assert len(res) == 1
    _check_result(res[0], rec.labels)
    assert len(res[0]["landmarks"]) == 5
    # the same photo as an array, a gray array and a PIL image
    rgb = load_image(examples.path("astronaut"))
    assert rec.predict(rgb)[0]["probs"] == pytest.approx(res[0]["probs"])
    assert len(rec.predict(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))) == 1
    assert rec.predict(Image.fromarray(rgb))[0]["probs"] == pytest.approx(res[0]["probs"])
    pair = rec.predict(examples.path("astronaut_pair"))
    assert len(pair) == 2
    for d in pair:
        _check_result(d, rec.labels)


def test_no_face_gives_empty_list(rec):
    assert rec.predict(examples.path("coffee")) == []


def test_bad_inputs_are_input_errors(rec, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(InputError, match="cannot decode image"):
        rec.predict(bad)
    with pytest.raises(InputError, match="file not found"):
        rec.predict(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="unsupported image type"):
        rec.predict({"not": "an image"})
    with pytest.raises(InputError, match="uint8"):
        rec.predict(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(InputError, match="unknown model"):
        ferkit.Recognizer(tmp_path / "nothing_here")


def test_empty_images_are_input_errors(rec):
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 10), np.uint8), Image.new("RGB", (0, 0))):
        with pytest.raises(InputError, match="empty image"):
            rec.predict(empty)
    for crops in ([np.zeros((0, 5), np.uint8)], np.zeros((2, 0, 0), np.uint8)):  # was a cv2.error
        with pytest.raises(InputError, match="face 0: empty image"):
            rec.predict_faces(crops)


def test_sixteen_bit_png_reads_the_same_as_path_and_as_pil(tmp_path):
    # PIL opens a 16-bit gray PNG in mode I;16 (or I), and convert("RGB") clips it to white
    gray = cv2.cvtColor(load_image(examples.path("astronaut")), cv2.COLOR_RGB2GRAY)
    path = tmp_path / "gray16.png"
    assert cv2.imwrite(str(path), gray.astype(np.uint16) * 257)
    from_path = load_image(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
        from_pil = load_image(im)
    assert from_pil.dtype == np.uint8 and from_pil.shape == from_path.shape
    assert np.abs(from_pil.astype(int) - from_path.astype(int)).max() <= 1
    assert np.abs(from_pil[:, :, 0].astype(int) - gray.astype(int)).max() <= 1


def test_predict_faces_any_size_and_batch_independent(rec):
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (48, 48), np.uint8), rng.integers(0, 256, (100, 80, 3), np.uint8),
             rng.integers(0, 256, (31, 31), np.uint8), rec.crops(examples.path("astronaut"))[0]]
    probs = rec.predict_faces(crops)
    assert probs.shape == (4, 7)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    for i, c in enumerate(crops):  # alone, or among others in another order: the same row
        np.testing.assert_allclose(rec.predict_faces([c])[0], probs[i], rtol=0, atol=1e-6)
    np.testing.assert_allclose(rec.predict_faces(crops[::-1])[::-1], probs, rtol=0, atol=1e-6)
    stack = rng.integers(0, 256, (5, 60, 60), np.uint8)
    assert rec.predict_faces(stack).shape == (5, 7)
    assert rec.predict_faces([]).shape == (0, 7)


def test_analyze_photos(rec, tmp_path):
    df = rec.analyze([examples.path("astronaut"), examples.HERE], out=tmp_path / "out.csv")
    groups = column_groups(rec.labels)
    assert list(df.columns) == [c for g in groups.values() for c in g]
    assert df.attrs["column_groups"] == groups
    # astronaut, then the folder: astronaut, astronaut_pair (2 faces), coffee (flagged row)
    assert len(df) == 1 + 1 + 2 + 1
    assert df["face_found"].tolist() == [True, True, True, True, False]
    found = df[df["face_found"]]
    np.testing.assert_allclose(found[list(rec.labels)].sum(axis=1), 1.0, atol=1e-9)
    assert found["right_eye_y"].lt(found["nose_y"]).all()
    assert df["time_s"].isna().all() and (df["frame"] == 0).all()
    back = pd.read_csv(tmp_path / "out.csv")
    assert len(back) == 5 and list(back.columns) == list(df.columns)


def test_video_frames_and_analyze(rec, clip, tmp_path):
    info = video_info(clip)
    assert info["frames"] == 12 and info["fps"] == pytest.approx(10.0) and info["width"] == 320
    frames = list(iter_video(clip, frame_step=3))
    assert [f.index for f in frames] == [0, 3, 6, 9]
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.3, 0.6, 0.9])
    assert frames[0].rgb.shape == (240, 320, 3)
    assert len(list(iter_video(clip, max_frames=2))) == 2
    df = rec.analyze(clip, frame_step=3, out=tmp_path / "v.json", annotate=tmp_path / "ann")
    assert df["frame"].tolist() == [0, 3, 6, 9] and df["face_found"].all()
    assert df["time_s"].tolist() == pytest.approx([0.0, 0.3, 0.6, 0.9])
    assert df["x"].is_monotonic_increasing  # the face moves right
    payload = json.loads((tmp_path / "v.json").read_text())
    assert payload["labels"] == list(rec.labels) and len(payload["results"]) == 4
    assert set(payload["results"][0]["faces"][0]) == KEYS | {"track_id", "probs_smooth", "label_smooth"}  # tracked
    assert (tmp_path / "ann" / "clip_annotated.mp4").stat().st_size > 1000
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="cannot decode video"):
        rec.analyze(bad)


def test_cli_predict(run_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "coffee"):
        (folder / f"{name}.jpg").write_bytes(examples.path(name).read_bytes())
    (folder / "sub").mkdir()
    (folder / "sub" / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not an image, not looked at")
    args = ["predict", str(folder), str(examples.path("astronaut_pair")), "--model", str(run_dir),
            "--device", "cpu", "--no-progress"]

    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "astronaut.jpg: face 0" in out and "coffee.jpg: no face found" in out
    assert "astronaut_pair.jpg: face 1" in out
    assert err.count("broken.png") == 1 and "notes.txt" not in err

    assert main(args + ["--out", str(tmp_path / "r.csv"), "--annotate", str(tmp_path / "ann")]) == 0
    df = pd.read_csv(tmp_path / "r.csv", keep_default_na=False)
    assert len(df) == 1 + 1 + 1 + 2  # astronaut, broken (error row), coffee (no face), pair
    assert (df["error"] != "").sum() == 1
    for name in ("astronaut.jpg", "coffee.jpg", "astronaut_pair.jpg"):
        assert cv2.imread(str(tmp_path / "ann" / name)) is not None

    assert main(args + ["--out", str(tmp_path / "r.json"), "--detector", "haar"]) == 0
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["detector"] == "haar" and len(payload["results"]) == 4

    capsys.readouterr()
    assert main(["predict", str(tmp_path / "missing.jpg"), "--model", str(run_dir)]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["predict", str(folder / "sub" / "broken.png"), "--model", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ferkit: error: cannot decode image: {folder / 'sub' / 'broken.png'}"]
    assert main(["predict", str(folder), "--model", str(run_dir), "--out", str(tmp_path / "x.txt")]) == 2


def test_model_registry(tmp_path, run_dir):
    models = ferkit.list_models()
    assert models and all({"name", "available", "file"} <= set(m) for m in models)
    default = next(m for m in models if "default" in m["aliases"])
    if not default["available"]:
        with pytest.raises(InputError, match="not installed"):
            ferkit.Recognizer("default")
    zoo.register_model("test-model", run_dir / "model.pt", {"description": "test"}, aliases=("test-alias",))
    try:
        r = ferkit.Recognizer("test-alias", device="cpu")
        assert r.labels == BASIC7
        card = next(m for m in ferkit.list_models() if m["name"] == "test-model")
        assert card["available"] and card["description"] == "test"
    finally:
        zoo.MODELS.pop("test-model")
        zoo.ALIASES.pop("test-alias")


def test_missing_webcam_is_one_line_error(rec):
    with pytest.raises(InputError, match="cannot open webcam 99"):
        rec.analyze(None, webcam=99)


def test_class_activation_maps(rec, tmp_path):
    (cam,) = rec.cam(examples.path("astronaut"))
    assert cam.shape == (512, 512) and cam.dtype == np.float32
    assert 0.0 <= cam.min() and cam.max() <= 1.0 + 1e-6 and cam.max() > 0.5
    x, y, w, h = rec.predict(examples.path("astronaut"))[0]["box"]
    assert cam[:, : int(x) - 40].max() == 0 and cam[int(y + h) + 60:].max() == 0  # only on the face
    assert rec.cam(examples.path("coffee")) == []
    rec.analyze(examples.path("astronaut"), annotate=tmp_path / "a", cam=True)
    assert cv2.imread(str(tmp_path / "a" / "astronaut.jpg")).shape == (512, 512, 3)


def test_pixel_limit_applies_to_paths_pil_images_and_the_cli(monkeypatch, run_dir, capsys):
    monkeypatch.setenv("FERKIT_MAX_PIXELS", "10000")
    path = examples.path("astronaut")
    with pytest.raises(InputError, match="over the limit of 0.01"):
        load_image(path)
    with Image.open(path) as im, pytest.raises(InputError, match="megapixels"):
        load_image(im)
    assert main(["predict", str(path), "--model", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FERKIT_MAX_PIXELS" in err[0]
    monkeypatch.setenv("FERKIT_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="FERKIT_MAX_PIXELS must be"):
        load_image(path)
    monkeypatch.delenv("FERKIT_MAX_PIXELS")
    assert load_image(path).shape[:2] == (512, 512)


def test_impossible_outputs_fail_before_the_work_and_leave_nothing(rec, run_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    photo = examples.path("astronaut")
    with pytest.raises(InputError, match="is a file, not a folder"):
        rec.analyze([photo], out=blocker / "x.csv")  # was a FileExistsError after the work
    with pytest.raises(InputError, match="annotation folder"):
        rec.analyze([photo], annotate=blocker / "annotated")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot decode"):
        rec.analyze([broken], annotate=tmp_path / "never_made")
    assert not (tmp_path / "never_made").exists()  # a failed --annotate leaves no empty folder
    cases = [["predict", str(photo), "--model", str(run_dir), "--out", str(blocker / "r.csv")],
             ["export", str(run_dir), "--out", str(blocker / "m.onnx")],
             ["evaluate", "--model", str(run_dir), "--dataset", "fer2013", "--path", str(photo),
              "--out", str(blocker / "m.json")]]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a file, not a folder" in err[0], (argv, err)
    assert list(tmp_path.glob("**/*.onnx")) == []


def test_decoder_chatter_does_not_precede_the_one_line(run_dir, tmp_path):
    ok, buf = cv2.imencode(".png", np.zeros((50, 50, 3), np.uint8))
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(buf.tobytes()[:60])
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"x" * 200)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    for path in (truncated, bad_video):
        res = subprocess.run([sys.executable, "-c", "import sys; from ferkit.cli import main; sys.exit(main())",
                              "predict", str(path), "--model", str(run_dir)], capture_output=True, text=True,
                             env=env, timeout=120)
        assert res.returncode == 2
        kind = "image" if path == truncated else "video"
        assert res.stderr.strip().splitlines() == [f"ferkit: error: cannot decode {kind}: {path}"]


def test_cli_benchmark_reports_both_speeds(run_dir, tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert main(["benchmark", "--model", str(run_dir), "--repeats", "1", "--batch", "64", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "faces/s" in text and "photos/s" in text
    res = json.loads(out.read_text())
    assert res["classifier"]["median"] > 0 and res["end_to_end"]["median"] > 0
    assert res["end_to_end"]["faces"] > 0
    assert set(res["end_to_end"]["ms_per_photo"]) == {"detect", "align", "classify"}
