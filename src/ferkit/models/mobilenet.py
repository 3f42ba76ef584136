"""MobileNet v1 (width 1.0), laid out as Keras builds it, for face-pretrained weights.

Why this network: the VGGFace2-pretrained MobileNet of HSE_FaceRec_tf (shipped converted, see
``ferkit.models.pretrained``) is the face-recognition start ferkit can ship offline. The layout
matches the Keras original exactly, so converted weights reproduce it: 3x3/2 stem, then 13
depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, each conv-BN-ReLU6), 1024 channels,
total stride 32, global average pooling.

Padding is TensorFlow's SAME: where a strided conv sees an even input, TF pads one pixel at the
bottom/right only, not one on each side as ``padding=1`` would; :class:`SameConv2d` does that, so
the converted network matches the original to float rounding (tested against an independent
interpreter of the TF.js graph).

``frozen_blocks`` (0-14: the stem is block 0) stops gradients and keeps BatchNorm statistics of
the first blocks, the cheap way to fine-tune on a CPU. Their output can then be computed once per
face and cached (``train.cache_frozen``, :mod:`ferkit.engine.trunk_cache`): :meth:`MobileNetV1.trunk`
computes it, and ``forward_features`` takes either an image batch or such cached trunk output
(told apart by the channel count: images have 1 or 3 channels, the trunk's output 32 or more).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ferkit.errors import ConfigError
from ferkit.models.base import Backbone, init_weights
from ferkit.models.registry import register_model

#: (output channels, stride) of the 13 depthwise-separable blocks
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
#: Keras BatchNormalization's epsilon (kept for fine-tuning in the same regime)
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding: out = ceil(in / stride), any extra pixel after."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        # stride 1 with an odd kernel pads symmetrically: a static padding, no copy
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        s = self.stride[0]
        if s == 1:
            return super().forward(x)
        k = self.kernel_size[0]
        h, w = int(x.shape[-2]), int(x.shape[-1])
        ph = max((-(-h // s) - 1) * s + k - h, 0)
        pw = max((-(-w // s) - 1) * s + k - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)


class ConvBNReLU6(nn.Module):
    """SAME conv (no bias) -> BatchNorm -> ReLU6, Keras MobileNet's unit."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = SameConv2d(cin, cout, kernel, stride, groups)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableBlock(nn.Sequential):
    """3x3 depthwise (stride s) then 1x1 pointwise, each conv-BN-ReLU6."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNReLU6(cin, cin, 3, stride, groups=cin)
        self.pw = ConvBNReLU6(cin, cout, 1)


class MobileNetV1(Backbone):
    """Stem + 13 separable blocks; ``feature_dim`` 1024 at total stride 32."""

    default_dropout = 0.2
    feature_dim = 1024

    def __init__(self, in_channels: int = 3, frozen_blocks: int = 0) -> None:
        super().__init__()
        if not 0 <= int(frozen_blocks) <= len(BLOCKS) + 1:
            raise ConfigError(f"mobilenet_v1: frozen_blocks must be 0-{len(BLOCKS) + 1}, got {frozen_blocks}")
        self.stem = ConvBNReLU6(in_channels, 32, 3, 2)
        blocks, cin = [], 32
        for cout, stride in BLOCKS:
            blocks.append(SeparableBlock(cin, cout, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        init_weights(self)
        self.frozen_blocks = int(frozen_blocks)
        for module in self.frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.stem, *self.blocks][: self.frozen_blocks]

    def train(self, mode: bool = True) -> MobileNetV1:
        super().train(mode)
        for module in self.frozen_modules():  # frozen blocks keep their BatchNorm statistics
            module.eval()
        return self

    @property
    def trunk_channels(self) -> int:
        """Channels of the frozen blocks' output (0 when nothing is frozen)."""
        if self.frozen_blocks == 0:
            return 0
        return 32 if self.frozen_blocks == 1 else BLOCKS[self.frozen_blocks - 2][0]

    def trunk(self, x: Tensor) -> Tensor:
        """The frozen blocks' output for an image batch: what ``train.cache_frozen`` caches."""
        for module in self.frozen_modules():
            x = module(x)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        if self.frozen_blocks and x.shape[1] == self.trunk_channels and x.shape[1] != self.stem.conv.in_channels:
            upper = [self.stem, *self.blocks][self.frozen_blocks:]  # x is cached trunk output
            for module in upper:
                x = module(x)
            return x
        return self.blocks(self.stem(x))


@register_model("mobilenet_v1")
def mobilenet_v1(in_channels: int = 3, image_size: int = 112, frozen_blocks: int = 0) -> Backbone:
    """MobileNet v1 1.0 (3.2 M parameters); pretrained: ``model.pretrained: vggface2_mobilenet_v1``."""
    net = MobileNetV1(in_channels, frozen_blocks)
    net.options = {"frozen_blocks": int(frozen_blocks)}
    return net
