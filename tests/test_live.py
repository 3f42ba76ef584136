"""Tracking in ``analyze`` and the live loop (``run_live``, ``ferkit live``) on a generated video."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import ferkit
from ferkit import examples
from ferkit.cli import main
from ferkit.errors import ConfigError, InputError
from ferkit.inference import live
from ferkit.inference.results import column_groups
from ferkit.inference.sources import load_image
from ferkit.inference.video import open_capture

N_FRAMES, FPS = 16, 10.0


@pytest.fixture(scope="module")
def rec():
    n = torch.get_num_threads()
    r = ferkit.Recognizer("default", device="cpu", threads=1)  # one thread: steadier on a busy machine
    yield r
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """16 frames, 10 fps, 320x240 mp4: the two astronauts of astronaut_pair.jpg drifting left and down."""
    path = tmp_path_factory.mktemp("live") / "pair.mp4"
    small = cv2.resize(load_image(examples.path("astronaut_pair")), (360, 180), interpolation=cv2.INTER_AREA)
    big = cv2.cvtColor(cv2.copyMakeBorder(small, 40, 40, 30, 30, cv2.BORDER_REFLECT), cv2.COLOR_RGB2BGR)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (320, 240))
    for i in range(N_FRAMES):
        x0, y0 = 50 - 3 * i, 4 + i
        vw.write(np.ascontiguousarray(big[y0:y0 + 240, x0:x0 + 320]))
    vw.release()
    return path


def _frame_count(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_fps_meter_is_a_windowed_rate():
    m = live.FpsMeter(window=3)
    m.reset(0.0)
    rates = [m.tick(t) for t in (2.0, 2.1, 2.2, 2.3, 2.4)]  # a slow first frame, then 10 fps
    assert rates[0] == pytest.approx(0.5) and rates[-1] == pytest.approx(10.0)


def test_analyze_tracks_and_smooths(rec, clip, tmp_path):
    df = rec.analyze(clip, out=tmp_path / "v.json", annotate=tmp_path / "ann")
    groups = column_groups(rec.labels)
    assert list(df.columns) == [c for g in groups.values() for c in g]
    assert df["face_found"].all() and df.groupby("frame").size().eq(2).all() and df["frame"].nunique() == N_FRAMES
    # every face keeps its id: the left face is always one track, the right one the other
    assert sorted(df["track_id"].unique()) == [0, 1]
    left = df.loc[df.groupby("frame")["x"].idxmin()]
    assert left["track_id"].nunique() == 1
    for _, g in df.groupby("track_id"):
        assert g["frame"].tolist() == list(range(N_FRAMES)) and g["x"].diff().abs().max() < 12
    smooth = df[[f"smooth_{lab}" for lab in rec.labels]].to_numpy()
    np.testing.assert_allclose(smooth.sum(1), 1.0, atol=1e-9)
    assert (df["label_smooth"] == [rec.labels[i] for i in smooth.argmax(1)]).all()
    np.testing.assert_allclose(df[list(rec.labels)].sum(axis=1), 1.0, atol=1e-9)  # raw probs untouched
    first = df[df["frame"] == 0]
    np.testing.assert_allclose(first[[f"smooth_{lab}" for lab in rec.labels]].to_numpy(),
                               first[list(rec.labels)].to_numpy())  # a track starts at its raw probs
    faces = json.loads((tmp_path / "v.json").read_text())["results"][3]["faces"]
    assert {f["track_id"] for f in faces} == {0, 1} and all(len(f["probs_smooth"]) == 7 for f in faces)
    assert _frame_count(tmp_path / "ann" / "pair_annotated.mp4") == N_FRAMES


def test_analyze_smoothing_is_time_aware_and_options(rec, clip):
    a = 0.5
    df = rec.analyze(clip, frame_step=2, smooth=a)
    probs, smooth = list(rec.labels), [f"smooth_{lab}" for lab in rec.labels]
    for _, g in df.groupby("track_id"):  # with every 2nd frame, the weight of the past is a ** 2
        p, s = g[probs].to_numpy(), g[smooth].to_numpy()
        np.testing.assert_allclose(s[1:], a**2 * s[:-1] + (1 - a**2) * p[1:], atol=1e-9)
    raw = rec.analyze(clip, max_frames=3, smooth=0.0)
    np.testing.assert_allclose(raw[smooth].to_numpy(), raw[probs].to_numpy())
    off = rec.analyze(clip, max_frames=3, track=False)
    assert (off["track_id"] == -1).all() and off[smooth].isna().all().all() and (off["label_smooth"] == "").all()
    photo = rec.analyze(examples.path("astronaut"))
    assert photo["track_id"].tolist() == [-1] and photo[smooth].isna().all().all()
    img = load_image(examples.path("astronaut"))
    seq = rec.analyze([img, np.ascontiguousarray(img[:, 4:]), img], track=True)  # photos as one stream
    assert seq["track_id"].tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="smooth"):
        rec.analyze(clip, smooth=1.0)


def test_run_live_writes_the_annotated_video(rec, clip, tmp_path):
    seen = []
    out = tmp_path / "live.mp4"
    stats = live.run_live(rec, clip, out_video=out, on_frame=lambda f: seen.append(f))
    assert stats["frames_read"] == stats["frames_processed"] == stats["frames_written"] == N_FRAMES
    assert stats["frames_skipped"] == stats["frames_dropped"] == 0 and not stats["interrupted"]
    assert stats["tracks"] == 2 and stats["faces_per_frame"] == 2.0 and stats["fps"] > 0
    assert stats["source_fps"] == pytest.approx(FPS)
    assert _frame_count(out) == N_FRAMES and cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    assert [f.index for f in seen] == list(range(N_FRAMES))
    assert seen[0].image.shape == (240, 320, 3) and not np.array_equal(seen[0].image, seen[0].rgb)  # drawn
    ids = {f.index: sorted((fc["box"][0], fc["track_id"]) for fc in f.faces) for f in seen}
    assert all([i for _, i in v] == [i for _, i in ids[0]] for v in ids.values())  # left stays left
    # frame step and max frames
    stats = live.run_live(rec, clip, frame_step=3, max_frames=4, out_video=tmp_path / "s.mp4")
    assert stats["frames_processed"] == 4 and stats["frames_read"] == 10 and stats["frames_written"] == 4
    assert _frame_count(tmp_path / "s.mp4") == 4
    stop = live.run_live(rec, clip, on_frame=lambda f: f.index < 2)
    assert stop["frames_processed"] == 3


def test_realtime_drops_frames_when_processing_is_slow(rec, clip, tmp_path):
    seen = []

    def slow(f):  # processing takes ~2.5 source frames
        seen.append(f.index)
        time.sleep(0.25)

    stats = live.run_live(rec, clip, realtime=True, on_frame=slow, out_video=tmp_path / "rt.mp4")
    assert stats["frames_processed"] < N_FRAMES - 4 and stats["frames_dropped"] > 0
    assert stats["frames_skipped"] == stats["frames_read"] - stats["frames_processed"]
    assert seen == sorted(set(seen)) and max(np.diff(seen)) >= 2
    # the written video keeps the source's timing: one frame per source frame
    assert stats["frames_written"] == stats["frames_read"] == _frame_count(tmp_path / "rt.mp4")


def test_realtime_webcam_takes_the_newest_frame(rec, clip, monkeypatch):
    """The webcam path (a thread keeping only the newest frame), fed by the file."""

    def as_webcam(source):
        return open_capture(clip), FPS, True, "webcam:0"

    monkeypatch.setattr(live, "_open_source", as_webcam)
    seen = []

    def slow(f):
        seen.append((f.index, f.time_s))
        time.sleep(0.05)

    stats = live.run_live(rec, 0, realtime=True, on_frame=slow)
    idx = [i for i, _ in seen]
    assert idx == sorted(set(idx)) and stats["frames_read"] == N_FRAMES
    assert stats["frames_processed"] == len(seen) < N_FRAMES  # decoding outruns the slowed loop
    assert all(t >= 0 for _, t in seen)


def test_show_without_gui_is_a_one_line_error(rec, clip, monkeypatch, capsys):
    monkeypatch.setattr(live, "gui_available", lambda: False)
    with pytest.raises(ConfigError, match="--out"):
        live.run_live(rec, clip, show=True)
    with pytest.raises(InputError, match=".mp4"):
        live.run_live(rec, clip, out_video="x.csv")
    assert main(["live", str(clip), "--show", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ferkit: error: --show needs a window") and "--out" in err[0]


def test_cli_live_and_predict_options(clip, tmp_path, capsys):
    out = tmp_path / "cli.mp4"
    args = ["live", str(clip), "--out", str(out), "--max-frames", "6", "--frame-step", "2", "--smooth", "0.3",
            "--threads", "1", "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "6 of 11 frames processed" in text and "2 tracks" in text and "written to" in text
    assert _frame_count(out) == 6
    assert main(["live", "--no-progress"]) == 2
    assert main(["live", str(clip), "--webcam", "0", "--no-progress"]) == 2
    assert "one source" in capsys.readouterr().err

    csv = tmp_path / "p.csv"
    assert main(["predict", str(clip), "--no-track", "--max-frames", "2", "--out", str(csv), "--threads", "1",
                 "--no-progress"]) == 0
    assert (pd.read_csv(csv)["track_id"] == -1).all()
    assert main(["predict", str(clip), "--smooth", "0", "--max-frames", "2", "--out", str(csv), "--threads", "1",
                 "--no-progress"]) == 0
    df = pd.read_csv(csv)
    assert sorted(df["track_id"].unique()) == [0, 1]
    np.testing.assert_allclose(df["smooth_happiness"], df["happiness"])
