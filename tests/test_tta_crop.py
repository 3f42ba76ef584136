"""Multi-crop test-time averaging (``tta_crop``): the views, the averaging, the options that set it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferkit.errors import InputError
from ferkit.models.predict import check_tta_crop, crop_views, predict_probs


def test_crop_views_are_the_face_then_its_centre_and_four_corners():
    x = torch.arange(2 * 1 * 10 * 10, dtype=torch.float32).reshape(2, 1, 10, 10)
    assert len(crop_views(x, 0.0)) == 1 and crop_views(x, 0.0)[0] is x
    views = crop_views(x, 0.8)  # side 8 of 10
    assert len(views) == 6 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x)
    for view, (top, left) in zip(views[1:], ((1, 1), (0, 0), (0, 2), (2, 0), (2, 2))):
        expect = F.interpolate(x[..., top:top + 8, left:left + 8], size=(10, 10), mode="bilinear",
                               align_corners=False)
        torch.testing.assert_close(view, expect)
    # the four corner crops differ from each other on a non-constant image
    assert not torch.equal(views[2], views[5])


class _Lin(torch.nn.Module):
    """A network whose logits depend on where the pixels are, so that each view scores differently."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(12 * 12, 3)

    def predict_logits(self, x):
        return self.fc(x.flatten(1))


def test_predict_probs_averages_the_softmax_of_every_view_and_its_mirror():
    net = _Lin().eval()
    images = torch.randint(0, 256, (5, 1, 12, 12), dtype=torch.uint8)

    def view(t):
        return t.float() / 255

    got = predict_probs(net, images, view, torch.device("cpu"), batch_size=2, tta_flip=True, tta_crop=0.75)
    with torch.no_grad():
        views = crop_views(view(images), 0.75)
        expect = torch.stack([0.5 * (net.predict_logits(v).softmax(1) + net.predict_logits(v.flip(3)).softmax(1))
                              for v in views]).mean(0)
    np.testing.assert_allclose(got, expect.numpy(), atol=1e-6)
    plain = predict_probs(net, images, view, torch.device("cpu"), tta_flip=True)
    assert np.abs(got - plain).max() > 1e-3  # the crops change the answer


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_a_crop_outside_the_face_is_refused(bad):
    with pytest.raises(InputError, match="tta_crop"):
        check_tta_crop(bad)


def test_a_model_applies_its_own_tta_crop_unless_told_otherwise():
    from ferkit.engine.model_io import load_model

    faces = np.random.default_rng(1).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    m = load_model("accurate", "cpu")
    off = m.predict_probs(faces, tta_crop=0.0)
    on = m.predict_probs(faces, tta_crop=0.92)
    assert np.abs(on - off).max() > 1e-4
    m.preprocess["tta_crop"] = 0.92
    np.testing.assert_allclose(m.predict_probs(faces), on, atol=1e-6)
    np.testing.assert_allclose(m.predict_probs(faces, tta_crop=0), off, atol=1e-6)


def test_the_classic_model_refuses_crops():
    from ferkit.engine.model_io import load_model

    faces = np.random.default_rng(2).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    with pytest.raises(InputError, match="tta_crop"):
        load_model("classic", "cpu").classify(faces, tta_crop=0.9)


def test_cli_refuses_a_crop_outside_the_face(capsys):
    from ferkit.cli import main

    assert main(["benchmark", "--tta-crop", "1.2"]) == 2
    assert "tta-crop" in capsys.readouterr().err
