"""ReMixMatch: distribution alignment by hand, its running prior, rotations, the loss from its parts, a run."""

from __future__ import annotations

import pytest
import torch

from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError
from ferkit.methods.remixmatch import align_distribution, rotate

from ssl_helpers import make_method, ssl_run_config, tiny_batch


def test_distribution_alignment_by_hand():
    q = torch.tensor([[0.5, 0.3, 0.2]])
    prior = torch.tensor([0.2, 0.4, 0.4])
    model = torch.tensor([0.5, 0.25, 0.25])  # the model over-predicts class 0
    a = torch.tensor([[0.5 * 0.4, 0.3 * 1.6, 0.2 * 1.6]])
    torch.testing.assert_close(align_distribution(q, prior, model), a / a.sum())
    torch.testing.assert_close(align_distribution(q, prior, prior), q)  # nothing to correct


def test_running_model_prior_is_the_mean_of_the_last_batches():
    m = make_method("remixmatch", num_classes=3, da_batches=2)
    a, b, c = torch.tensor([[1.0, 0, 0]]), torch.tensor([[0, 1.0, 0]]), torch.tensor([[0, 0, 1.0]])
    torch.testing.assert_close(m.model_prior(a), torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(m.model_prior(b), torch.tensor([0.5, 0.5, 0]))
    torch.testing.assert_close(m.model_prior(c), torch.tensor([0, 0.5, 0.5]))  # a has left the window
    assert int(m.da_seen) == 3 and "da_history" in m.state_dict()  # checkpointed with the method


def test_rotate_turns_each_row_by_its_own_quarter():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    out = rotate(x, torch.tensor([0, 1]))
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out[1], torch.rot90(x[1], 1, dims=(1, 2)))


def test_loss_from_its_parts(one_thread):
    m = make_method("remixmatch", k=2, ramp_epochs=4).train()
    m.on_epoch_start(2)
    torch.manual_seed(0)
    loss, logs = m.train_step(tiny_batch())
    assert logs["ramp"] == 0.5
    expected = logs["loss_x"] + 0.5 * (1.5 * logs["loss_u"] + 0.5 * logs["loss_u1"]) + 0.5 * logs["loss_rot"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert m.rotation_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [{"k": 0}, {"da_batches": 0}, {"temperature": 0}])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        make_method("remixmatch", **bad)


def test_remixmatch_trains_end_to_end(tmp_path, fer_csv):
    row = Trainer(ssl_run_config(tmp_path, fer_csv, {"name": "remixmatch", "k": 2, "ramp_epochs": 2})).fit()
    assert row["val_accuracy"] > 0.3  # chance is 1/7; the path is what this checks, not the method
    assert row["train_ramp"] == 1.0 and "pl_above_precision" in row
