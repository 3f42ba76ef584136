"""FixMatch: the unlabelled loss by hand, the threshold mask, no gradient through the weak view, a run."""

from __future__ import annotations

import math

import pytest
import torch

from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError

from ssl_helpers import make_method, ssl_run_config, tiny_batch


def _ce(logits: list[float], y: int) -> float:
    return -logits[y] + math.log(sum(math.exp(v) for v in logits))


def test_unlabelled_loss_by_hand_masks_rows_below_the_threshold(one_thread):
    m = make_method("fixmatch")
    weak = torch.tensor([[10.0, 0.0, 0.0],  # confident: class 0
                         [1.0, 0.5, 0.0],  # 0.51 < 0.95: masked out
                         [0.0, 0.0, 8.0],  # confident: class 2
                         [3.0, 0.0, 0.0]],  # 0.91 < 0.95: masked out
                        requires_grad=True)
    strong = torch.tensor([[0.2, 1.0, -1.0], [2.0, 0.0, 0.0], [0.5, 0.5, 0.1], [0.0, 0.0, 5.0]],
                          requires_grad=True)
    loss, mask, pseudo = m.unlabelled_loss(weak, strong)
    assert mask.tolist() == [True, False, True, False]
    assert pseudo.tolist() == [0, 0, 2, 0]
    by_hand = (_ce([0.2, 1.0, -1.0], 0) + _ce([0.5, 0.5, 0.1], 2)) / 4  # over the whole unlabelled batch
    assert float(loss.detach()) == pytest.approx(by_hand, rel=1e-6)
    loss.backward()
    assert weak.grad is None  # the pseudo label is a target, not a gradient path
    assert strong.grad[1].abs().sum() == 0 and strong.grad[3].abs().sum() == 0
    assert strong.grad[0].abs().sum() > 0


def test_threshold_is_an_option(one_thread):
    weak = torch.tensor([[1.0, 0.5, 0.0]])  # softmax max = e / (e + e^0.5 + 1) = 0.5065
    assert make_method("fixmatch", threshold=0.5).unlabelled_loss(weak, weak.clone())[1].tolist() == [True]
    assert make_method("fixmatch").unlabelled_loss(weak, weak.clone())[1].tolist() == [False]


def test_bad_threshold_is_a_config_error():
    with pytest.raises(ConfigError):
        make_method("fixmatch", threshold=1.5)


def test_step_logs_and_weights(one_thread):
    m = make_method("fixmatch", threshold=0.0, lambda_u=2.0).train()
    torch.manual_seed(0)
    loss, logs = m.train_step(tiny_batch())
    assert logs["mask"] == 1.0  # threshold 0: every row is pseudo-labelled
    assert float(loss.detach()) == pytest.approx(logs["loss_x"] + 2.0 * logs["loss_u"], rel=1e-5)


def test_fixmatch_trains_end_to_end(tmp_path, fer_csv):
    row = Trainer(ssl_run_config(tmp_path, fer_csv, {"name": "fixmatch"})).fit()
    assert row["val_accuracy"] > 0.3  # chance is 1/7; the path is what this checks, not the method
    assert 0.0 <= row["train_mask"] <= 1.0 and "pl_below_precision" in row and "pl_above_recall" in row
