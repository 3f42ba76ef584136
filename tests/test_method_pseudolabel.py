"""Pseudo-Label: Lee's ramp, the thresholded loss by hand, the target carries no gradient, a run."""

from __future__ import annotations

import math

import pytest
import torch

from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError

from ssl_helpers import make_method, ssl_run_config, tiny_batch


def test_ramp_follows_lee():
    m = make_method("pseudolabel", weight=3.0, ramp_start=2, ramp_end=6)
    assert [m.ramp(t) for t in range(8)] == [0.0, 0.0, 0.0, 0.75, 1.5, 2.25, 3.0, 3.0]
    step = make_method("pseudolabel", ramp_start=3, ramp_end=3)  # no ramp: a step at T1
    assert [step.ramp(t) for t in (2, 3, 4)] == [0.0, 1.0, 1.0]


def test_unlabelled_loss_by_hand(one_thread):
    m = make_method("pseudolabel", threshold=0.9)
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.3, 0.2, 0.1], [0.0, 0.0, 6.0]], requires_grad=True)
    loss, mask, pseudo = m.unlabelled_loss(logits)
    assert mask.tolist() == [True, False, True] and pseudo.tolist() == [0, 0, 2]

    def ce(row, y):
        return -row[y] + math.log(sum(math.exp(v) for v in row))

    assert float(loss.detach()) == pytest.approx((ce([4.0, 0, 0], 0) + ce([0, 0, 6.0], 2)) / 3, rel=1e-5)
    loss.backward()
    # d/dz CE(z, argmax z) with the target held fixed: softmax(z) - onehot, on the kept rows only
    p = torch.softmax(logits.detach(), 1)
    expected = (p - torch.eye(3)[[0, 0, 2]]) * mask[:, None] / 3
    torch.testing.assert_close(logits.grad, expected)


def test_threshold_zero_is_lees_original(one_thread):
    m = make_method("pseudolabel", threshold=0.0)
    _, mask, _ = m.unlabelled_loss(torch.randn(5, 7))
    assert bool(mask.all())


def test_step_weight_follows_the_ramp(one_thread):
    m = make_method("pseudolabel", threshold=0.0, ramp_start=1, ramp_end=3).train()
    for epoch, alpha in ((0, 0.0), (2, 0.5), (5, 1.0)):
        m.on_epoch_start(epoch)
        torch.manual_seed(0)
        loss, logs = m.train_step(tiny_batch())
        assert logs["alpha"] == alpha
        assert float(loss.detach()) == pytest.approx(logs["loss_x"] + alpha * logs["loss_u"], rel=1e-5)


@pytest.mark.parametrize("bad", [{"threshold": -0.1}, {"u_view": "noisy"}, {"ramp_start": 5, "ramp_end": 2}])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        make_method("pseudolabel", **bad)


def test_pseudolabel_trains_end_to_end(tmp_path, fer_csv):
    row = Trainer(ssl_run_config(tmp_path, fer_csv, {"name": "pseudolabel", "ramp_start": 1, "ramp_end": 3})).fit()
    assert row["val_accuracy"] > 0.3  # chance is 1/7; the path is what this checks, not the method
    assert row["train_alpha"] == 1.0 and "pl_below_recall" in row
