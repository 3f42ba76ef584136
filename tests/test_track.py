"""IoU tracker and probability smoother (pure numpy, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from ferkit.errors import ConfigError
from ferkit.inference.track import IoUTracker, ProbSmoother, StreamTracker, iou_matrix


def test_iou_matrix():
    a = [[0, 0, 10, 10], [100, 100, 10, 10]]
    b = [[0, 0, 10, 10], [5, 0, 10, 10], [50, 50, 5, 5]]
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m[0], [1.0, 50 / 150, 0.0])
    assert (m[1] == 0).all()
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)
    assert iou_matrix([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 0.0  # empty boxes: no NaN


def test_two_moving_boxes_keep_their_ids():
    tr = IoUTracker()
    first = None
    for k in range(20):
        left, right = [10 + 3 * k, 50, 40, 40], [200 - 3 * k, 60, 40, 40]
        boxes = [left, right] if k % 3 else [right, left]  # the detector's order changes
        ids = tr.update(boxes)
        by_box = dict(zip(map(tuple, boxes), ids))
        pair = (by_box[tuple(left)], by_box[tuple(right)])
        first = first or pair
        assert pair == first
    assert sorted(first) == [0, 1] and tr.next_id == 2


def test_missed_frames_within_max_age_keep_the_id_and_ids_are_never_reused():
    tr = IoUTracker(max_age=3)
    a, b = [0, 0, 50, 50], [300, 0, 50, 50]
    assert tr.update([a, b]) == [0, 1]
    for _ in range(3):  # b missed 3 times: still within max_age
        assert tr.update([a]) == [0]
    assert tr.update([a, b]) == [0, 1]
    for _ in range(4):  # b missed 4 times: dropped
        assert tr.update([a]) == [0]
    assert 1 not in tr.active
    assert tr.update([a, b]) == [0, 2]  # a new id, 1 is not given out again
    assert tr.update([]) == []
    assert tr.update([[600, 0, 50, 50]]) == [3]


def test_threshold_and_one_box_per_track():
    tr = IoUTracker(iou_threshold=0.5)
    assert tr.update([[0, 0, 10, 10]]) == [0]
    assert tr.update([[6, 0, 10, 10]]) == [1]  # IoU 4/16 = 0.25 < 0.5: a new face
    # two boxes over one track: the better one continues it, the other starts a track
    assert tr.update([[7, 0, 10, 10], [6, 0, 10, 10]]) == [2, 1]
    tr.reset()
    assert tr.update([[0, 0, 10, 10]]) == [0]
    with pytest.raises(ConfigError):
        IoUTracker(iou_threshold=1.5)


def test_smoother_constant_input_stays_constant():
    sm = ProbSmoother(0.8, frame_dt=0.1)
    p = np.array([[0.7, 0.2, 0.1]])
    for k in range(10):
        np.testing.assert_allclose(sm.update([5], p, t=0.1 * k), p, atol=1e-12)


def test_smoother_step_response_follows_the_ema():
    a = 0.6
    sm = ProbSmoother(a, frame_dt=0.04)
    e0, e1 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    sm.update([0], e0, t=0.0)
    for n in range(1, 8):
        out = sm.update([0], e1, t=0.04 * n)
        np.testing.assert_allclose(out, [[a**n, 1 - a**n]], atol=1e-12)


def test_smoother_is_time_aware():
    """Processing every 3rd frame gives the same curve at the same times as every frame."""
    e0, e1 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    every, third = ProbSmoother(0.6, frame_dt=0.1), ProbSmoother(0.6, frame_dt=0.1)
    every.update([0], e0, 0.0)
    third.update([0], e0, 0.0)
    for k in range(1, 10):
        out = every.update([0], e1, 0.1 * k)
        if k % 3 == 0:
            np.testing.assert_allclose(third.update([0], e1, 0.1 * k), out, atol=1e-12)
    # without times each update is one frame interval
    plain = ProbSmoother(0.6)
    plain.update([0], e0, 0.0)
    np.testing.assert_allclose(plain.update([0], e1, 5.0), [[0.6, 0.4]])
    nan_t = ProbSmoother(0.6, frame_dt=0.1)
    nan_t.update([0], e0, float("nan"))
    np.testing.assert_allclose(nan_t.update([0], e1, float("nan")), [[0.6, 0.4]])


def test_smooth_zero_returns_raw_and_tracks_are_separate():
    rng = np.random.default_rng(0)
    sm = ProbSmoother(0.0)
    for _ in range(3):
        p = rng.dirichlet(np.ones(7), size=2)
        np.testing.assert_array_equal(sm.update([0, 1], p, 0.0), p)
    sm = ProbSmoother(0.5)
    sm.update([0, 1], [[1.0, 0.0], [0.0, 1.0]])
    out = sm.update([1, 0, -1], [[1.0, 0.0], [1.0, 0.0], [0.3, 0.7]])
    np.testing.assert_allclose(out, [[0.5, 0.5], [1.0, 0.0], [0.3, 0.7]])  # id -1: untouched
    sm.retain([0])
    assert list(sm.state) == [0]
    with pytest.raises(ConfigError):
        ProbSmoother(1.0)


def test_stream_tracker_adds_keys():
    labels = ("neutral", "happiness")
    st = StreamTracker(labels, smooth=0.5, frame_dt=1.0)
    faces = [{"box": [0, 0, 10, 10], "probs": {"neutral": 1.0, "happiness": 0.0}}]
    st.update(faces, 0.0)
    faces = [{"box": [1, 0, 10, 10], "probs": {"neutral": 0.0, "happiness": 1.0}}]
    (f,) = st.update(faces, 1.0)
    assert f["track_id"] == 0 and f["probs_smooth"] == pytest.approx({"neutral": 0.5, "happiness": 0.5})
    assert f["label_smooth"] in labels and st.n_tracks == 1
    assert st.update([], 2.0) == []
    st.reset(frame_dt=0.5)
    assert st.update([{"box": [1, 0, 10, 10], "probs": {"neutral": 0.0, "happiness": 1.0}}])[0]["track_id"] == 0
