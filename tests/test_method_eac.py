"""EAC: class activation maps, the flip consistency loss, the erasing, and the end-to-end path."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferkit.engine.config import load_config
from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError
from ferkit.methods import get_method
from ferkit.methods.eac import random_erase
from ferkit.models import build_model

from synthetic import write_config


def _eac(**cfg):
    torch.manual_seed(0)
    model = build_model("compact", num_classes=7, in_channels=1, image_size=48)
    return get_method("eac")(model, {"name": "eac", **cfg}, 7, {})


def test_cam_is_fc_weights_times_feature_map(one_thread):
    m = _eac()
    fmap = torch.randn(2, m.model.feature_dim, 3, 3)
    cams = m.cams(fmap)
    assert cams.shape == (2, 7, 3, 3)
    w = m.model.fc.weight.detach()
    ref = torch.zeros(2, 7, 3, 3)
    for b in range(2):
        for k in range(7):
            for i in range(3):
                for j in range(3):
                    ref[b, k, i, j] = (w[k] * fmap[b, :, i, j]).sum()
    torch.testing.assert_close(cams, ref, rtol=1e-5, atol=1e-5)


def test_detach_fc_keeps_the_consistency_off_the_classifier(one_thread):
    fmap = torch.randn(2, 256, 3, 3)
    for detach, expect_grad in ((True, False), (False, True)):
        m = _eac(detach_fc=detach)
        lc = m.consistency(m.cams(fmap), m.cams(torch.randn(2, 256, 3, 3)))
        m.zero_grad()
        if expect_grad:
            lc.backward()
            assert m.model.fc.weight.grad is not None and m.model.fc.weight.grad.abs().sum() > 0
        else:
            assert not lc.requires_grad  # nothing in it reaches W


def test_consistency_is_zero_for_flip_symmetric_maps_and_the_mse_otherwise(one_thread):
    m = _eac()
    # maps of the flipped view that are the mirror image of the first view's: no loss
    a = torch.randn(2, 7, 3, 4)
    assert float(m.consistency(a, a.flip(-1))) == 0.0
    # features of a mirrored image mirrored: their CAMs are consistent too
    f = torch.randn(2, 256, 3, 3)
    assert float(m.consistency(m.cams(f), m.cams(f.flip(-1)))) == pytest.approx(0.0, abs=1e-10)
    # otherwise: 1/(N K H W) sum (M - flip(M'))^2, by hand on a tiny pair
    me = torch.tensor([[[[1.0, 2.0, 3.0]]]])  # N=1, K=1, H=1, W=3
    mf = torch.tensor([[[[0.0, 5.0, 1.0]]]])  # flipped back: [1, 5, 0]
    expected = ((1 - 1) ** 2 + (2 - 5) ** 2 + (3 - 0) ** 2) / 3
    assert float(m.consistency(me, mf)) == pytest.approx(expected)


def test_random_erase_boxes_and_probabilities(one_thread):
    x = torch.ones(64, 1, 48, 48)
    g = torch.Generator().manual_seed(0)
    y = random_erase(x, 1.0, (0.02, 0.25), (0.3, 3.3), value=-7.0, generator=g)
    erased = (y == -7.0).float().sum(dim=(1, 2, 3))
    assert (erased > 0).all()  # p = 1: every sample has a box
    assert float(erased.max()) <= 0.25 * 48 * 48 * 1.15  # rounding of the sides
    assert float(erased.min()) >= 0.02 * 48 * 48 * 0.5
    untouched = random_erase(x, 0.0, generator=g)
    torch.testing.assert_close(untouched, x)
    half = random_erase(x, 0.5, generator=torch.Generator().manual_seed(1), value=-7.0)
    n = int(((half == -7.0).flatten(1).any(1)).sum())
    assert 16 < n < 48  # about half of 64
    # one box per sample: the erased pixels form a rectangle
    mask = y[0, 0] == -7.0
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    assert int(mask.sum()) == len(rows) * len(cols)


def test_views_mirrored_and_independent(one_thread):
    x = torch.randn(8, 1, 48, 48)
    m = _eac(flip_erasing="mirrored", erase_p=1.0)
    x_e, x_f = m.two_views(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x_f, x_e.flip(-1))
    assert (x_e == 0).any()  # erased with the normalisation mean
    mi = _eac(flip_erasing="independent", erase_p=1.0)
    x_e, x_f = mi.two_views(x, torch.Generator().manual_seed(0))
    back = x_f.flip(-1)
    assert not torch.equal(back, x_e)  # another box
    # each view is the same image with its own box
    for v in (x_e, back):
        same = v == x
        assert same.float().mean() > 0.7 and not same.all()


def test_train_step_is_ce_on_erased_view_plus_lam_consistency(one_thread):
    m = _eac(lam=5.0, erase_p=1.0).eval()  # eval: no dropout, BatchNorm running stats
    m.views = {"train": lambda imgs: imgs.float() / 127.5 - 1}
    images = torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8)
    labels = torch.tensor([0, 3, -1, 6])
    torch.manual_seed(5)
    loss, logs = m.train_step({"images": images, "labels": labels, "index": torch.arange(4)})
    torch.manual_seed(5)
    x_e, x_f = m.two_views(images.float() / 127.5 - 1)
    with torch.no_grad():
        fe, ff = m.model.feature_map(x_e), m.model.feature_map(x_f)
        ce = F.cross_entropy(m.model(x_e)[[0, 1, 3]], labels[[0, 1, 3]])  # the unlabelled row drops out
        w = m.model.fc.weight
        lc = ((torch.einsum("kc,bchw->bkhw", w, fe) - torch.einsum("kc,bchw->bkhw", w, ff).flip(-1)) ** 2).mean()
    assert logs["ce"] == pytest.approx(float(ce), rel=1e-4)
    assert logs["consistency"] == pytest.approx(float(lc), rel=1e-4)
    assert float(loss.detach()) == pytest.approx(float(ce + 5.0 * lc), rel=1e-4)
    assert lc > 0  # an erased box breaks the symmetry


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        _eac(flip_erasing="both")
    with pytest.raises(ConfigError):
        _eac(erase_p=1.5)
    with pytest.raises(ConfigError):
        _eac(erase_scale=[0.3, 0.1])
    with pytest.raises(ConfigError):
        _eac(lam=-1)


def test_trains_predicts_and_draws_cams(tmp_path, fer_csv):
    import ferkit
    from ferkit.cli import main

    cfg_path = write_config(tmp_path / "eac.yaml", fer_csv, tmp_path / "runs", train={"epochs": 5},
                            method={"name": "eac", "flip_erasing": "independent"},
                            augment={"options": {"train": {"erase_p": 0.0}}})
    row = Trainer(load_config(cfg_path)).fit()
    assert row["val_accuracy"] > 0.5  # chance is 1/7
    log = (tmp_path / "runs" / "eac" / "log.jsonl").read_text()
    assert '"consistency"' in log
    run = tmp_path / "runs" / "eac"
    rec = ferkit.Recognizer(run, detector="none")
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    (res,) = rec.predict(face)
    assert sum(res["probs"].values()) == pytest.approx(1.0) and 0 <= res["uncertainty"] <= 1
    (cam,) = rec.cam(face)
    assert cam.shape == (48, 48) and 0 <= cam.min() and cam.max() == pytest.approx(1.0, abs=1e-5)
    from PIL import Image

    Image.fromarray(face).save(tmp_path / "face.png")
    assert main(["predict", str(tmp_path / "face.png"), "--model", str(run), "--detector", "none",
                 "--annotate", str(tmp_path / "ann"), "--cam", "--device", "cpu"]) == 0
    assert any((tmp_path / "ann").iterdir())
