"""Compact CNNs for training and inference on a CPU at 48-64 px grayscale.

Why this shape: on a 2-core CPU the cost is FLOPs at high resolution plus the memory traffic
of BN/ReLU on large maps, not the parameter count. So the stem halves the resolution at once
(48 -> 24, one conv on a single input channel is cheap), every stage starts with a strided
3x3 conv, and the capacity (channels, hence parameters) sits at 12x12 / 6x6 / 3x3 where convs
are cheap and run near the CPU's matmul speed. Depthwise-separable blocks were measured and
rejected: per FLOP they run 5-10x slower than dense 3x3 convs in PyTorch on a CPU.
Blocks are single 3x3 conv-BN with an identity shortcut (``relu(x + bn(conv(x)))``), which
trains like a ResNet at half the conv count of a basic block. Channel counts are multiples of
16/32 because oneDNN picks very slow kernels for some others (24 -> 48 ran 25x slower).

Total stride 16: a 48 px input ends on a 3x3 map, 64 px on 4x4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ferkit.errors import ConfigError
from ferkit.models.base import Backbone, init_weights
from ferkit.models.registry import register_model


def _cbr(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResUnit(nn.Module):
    """``relu(x + bn(conv3x3(x)))``: one conv per unit, identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.bn(self.conv(x)))


class CompactNet(Backbone):
    """stem (3x3/2) -> stages [3x3/2 conv + ``n`` ResUnits] -> optional 1x1 head conv.

    ``stages`` is a sequence of (channels, units); ``head_dim`` > 0 adds a 1x1 conv-BN-ReLU
    widening the final map before pooling (cheap at 3x3, gives a wider embedding).
    """

    default_dropout = 0.2

    def __init__(self, in_channels: int, stem: int, stages: Sequence[tuple[int, int]], head_dim: int = 0) -> None:
        super().__init__()
        if not stages:
            raise ConfigError("compact net needs at least one stage")
        self.stem = _cbr(in_channels, stem, 2)
        layers: list[nn.Module] = []
        prev = stem
        for ch, units in stages:
            layers.append(nn.Sequential(_cbr(prev, ch, 2), *[ResUnit(ch) for _ in range(units)]))
            prev = ch
        self.stages = nn.Sequential(*layers)
        self.head = _cbr(prev, head_dim, 1, kernel=1) if head_dim else nn.Identity()
        self.feature_dim = head_dim or prev
        init_weights(self)
        for m in self.modules():  # units start as identity (like zero-init residual in ResNets)
            if isinstance(m, ResUnit):
                nn.init.zeros_(m.bn.weight)
        # NHWC runs oneDNN's fastest CPU kernels (and suits GPU tensor cores); the input is
        # converted in forward_features, so callers need not care about memory formats
        self.to(memory_format=torch.channels_last)

    def forward_features(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.stages(self.stem(x)))

    def feature_map(self, feats: Tensor) -> Tensor:
        return feats.contiguous()  # plain NCHW for callers that .view() it


def _compact(in_channels: int, stem: int, stages: Sequence[Sequence[int]], head_dim: int) -> CompactNet:
    st = [(int(c), int(n)) for c, n in stages]
    net = CompactNet(in_channels, int(stem), st, int(head_dim))
    net.options = {"stem": int(stem), "stages": [list(s) for s in st], "head_dim": int(head_dim)}
    return net


@register_model("compact")
def compact(in_channels: int = 1, image_size: int = 48, stem: int = 16,
            stages: Sequence[Sequence[int]] = ((32, 1), (64, 1), (128, 2)), head_dim: int = 256) -> CompactNet:
    """Fast CPU model (0.47 M params, 7.7 M MACs at 48 px): ~1500 train img/s on 2 CPU cores."""
    return _compact(in_channels, stem, stages, head_dim)


@register_model("compact_wide")
def compact_wide(in_channels: int = 1, image_size: int = 48, stem: int = 32,
                 stages: Sequence[Sequence[int]] = ((64, 1), (128, 1), (256, 1)), head_dim: int = 0,
                 ) -> CompactNet:
    """Wider sibling of ``compact`` (1.17 M params, 24 M MACs at 48 px): ~2.5x slower, more accurate.

    The architecture of the bundled ``fer2013_compact_48g_7`` model (63.0 % PublicTest with flip TTA).
    """
    return _compact(in_channels, stem, stages, head_dim)
