"""The annotation panel stays whole inside the picture, wherever the face is."""

from __future__ import annotations

import numpy as np
import pytest

from ferkit.inference.draw import _BAR, annotate


def _face(box):
    probs = {"happiness": 0.6, "neutral": 0.3, "surprise": 0.1}
    return {"box": box, "probs": probs, "label": "happiness", "uncertainty": 0.4, "landmarks": []}


def _bar_rows(img: np.ndarray) -> int:
    """How many separate horizontal bands hold bar-coloured pixels."""
    rows = np.where((img == np.array(_BAR, np.uint8)).all(axis=2).any(axis=1))[0]
    return 0 if len(rows) == 0 else 1 + int((np.diff(rows) > 1).sum())


@pytest.mark.parametrize("box", [(20.0, 20.0, 60.0, 60.0),     # room under the face
                                 (240.0, 230.0, 55.0, 65.0),  # bottom-right corner
                                 (250.0, 10.0, 48.0, 285.0)])  # tall face at the right edge, no room below
def test_panel_bars_all_drawn_inside_the_image(box):
    img = annotate(np.zeros((300, 300, 3), np.uint8), [_face(box)])
    assert _bar_rows(img) == 3  # three bars, none off the edge and none drawn over another
    cols = np.where((img == np.array(_BAR, np.uint8)).all(axis=2).any(axis=0))[0]
    assert cols.max() < 299
