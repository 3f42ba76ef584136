"""The EMA of the weights, by hand: decay, warm-up, integer buffers, state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ferkit.engine.ema import EMA


def _net(value: float) -> nn.Module:
    net = nn.BatchNorm1d(1)
    with torch.no_grad():
        net.weight.fill_(value)
    return net


def test_update_is_decay_times_shadow_plus_the_rest_times_model():
    ema = EMA(_net(0.0), decay=0.9, warmup=False)
    model = _net(1.0)
    model.num_batches_tracked.fill_(7)
    ema.update(model)
    assert float(ema.shadow.weight) == pytest.approx(0.1)  # 0.9 * 0 + 0.1 * 1 (inverted decay gives 0.9)
    ema.update(model)
    assert float(ema.shadow.weight) == pytest.approx(0.19)  # 0.9 * 0.1 + 0.1 * 1
    assert int(ema.shadow.num_batches_tracked) == 7  # integer buffers are copied, not averaged
    assert not ema.shadow.weight.requires_grad and not ema.shadow.training


def test_warmup_uses_the_smaller_of_decay_and_1_plus_n_over_10_plus_n():
    ema = EMA(_net(0.0), decay=0.999, warmup=True)
    ema.update(_net(1.0))  # n = 1: d = 2 / 11
    assert float(ema.shadow.weight) == pytest.approx(1 - 2 / 11)
    late = EMA(_net(0.0), decay=0.5, warmup=True)
    late.updates = 1000  # (1 + n) / (10 + n) ~ 1 > decay: the decay rules
    late.update(_net(1.0))
    assert float(late.shadow.weight) == pytest.approx(0.5)


def test_state_round_trip_continues_identically():
    a = EMA(_net(0.0), decay=0.9)
    for v in (1.0, 2.0, 3.0):
        a.update(_net(v))
    b = EMA(_net(5.0), decay=0.9)
    b.load_state_dict(a.state_dict())
    a.update(_net(4.0))
    b.update(_net(4.0))
    assert torch.equal(a.shadow.weight, b.shadow.weight) and a.updates == b.updates == 4


def test_frozen_weights_and_their_batchnorm_statistics_are_copied_not_averaged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    for p in [*model[0].parameters(), *model[1].parameters()]:
        p.requires_grad_(False)
    ema = EMA(model, decay=0.9, warmup=False)
    with torch.no_grad():
        for m in model:
            for t in [*m.parameters(), *m.buffers()]:
                if t.dtype.is_floating_point:
                    t.add_(1.0 / 3.0)  # a change the average would round
    ema.update(model)
    frozen, trained = ema.shadow[0:2].state_dict(), ema.shadow[2:4].state_dict()
    assert all(torch.equal(v, model[0:2].state_dict()[k]) for k, v in frozen.items())  # bit-identical
    assert not torch.equal(trained["2.weight"], model[2].weight)  # the trained block is averaged
    assert not torch.equal(trained["3.running_mean"], model[3].running_mean)
    assert ema.copied == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                          "1.num_batches_tracked"}
