"""ResNet-18/34/50 with torchvision's module names, so torchvision-format weights load directly.

Names match torchvision (``conv1, bn1, layer1.0.conv1, ..., layer4.1.bn2, layerN.0.downsample.0/1``);
inside a :class:`~ferkit.models.base.FERModel` they sit under ``backbone.`` and the classifier
is ``fc`` as in torchvision. Two stems:

- ``imagenet``: 7x7/2 conv + 3x3/2 max pool (total stride 32), for ~224 px faces;
- ``small``: 3x3/1 conv, no pool (total stride 8), for 48-112 px faces: 48 px still leaves a
  6x6 map at ``layer4``, which CAM-based methods need.

``stem="auto"`` picks ``small`` below 128 px. ``width`` scales every stage's channels
(pretrained weights only fit ``width=1``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ferkit.errors import ConfigError
from ferkit.models.base import Backbone, init_weights
from ferkit.models.registry import register_model


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        in_channels: int = 1,
        stem: str = "small",
        width: float = 1.0,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if stem not in ("small", "imagenet"):
            raise ConfigError(f"unknown ResNet stem {stem!r}; expected 'auto', 'small' or 'imagenet'")
        if width <= 0:
            raise ConfigError(f"ResNet width must be > 0, got {width}")
        widths = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.inplanes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2)
        self.feature_dim = widths[3] * block.expansion
        init_weights(self)
        if zero_init_residual:  # each block starts as identity: steadier training from scratch
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def resolve_stem(stem: str, image_size: int) -> str:
    """``auto`` -> ``small`` below 128 px (keeps a >= 6x6 layer4 map at 48 px), else ``imagenet``."""
    if stem == "auto":
        return "small" if image_size < 128 else "imagenet"
    return stem


def _build(block: Any, layers: tuple[int, int, int, int], in_channels: int, image_size: int, stem: str,
           width: float, zero_init_residual: bool) -> ResNet:
    stem = resolve_stem(stem, image_size)
    net = ResNet(block, layers, in_channels, stem, width, zero_init_residual)
    net.options = {"stem": stem, "width": float(width), "zero_init_residual": bool(zero_init_residual)}
    return net


@register_model("resnet18")
def resnet18(in_channels: int = 1, image_size: int = 48, stem: str = "auto", width: float = 1.0,
             zero_init_residual: bool = True) -> ResNet:
    """ResNet-18 (11.2 M params at width 1); the usual FER backbone (SCN, EAC, RUL start from it)."""
    return _build(BasicBlock, (2, 2, 2, 2), in_channels, image_size, stem, width, zero_init_residual)


@register_model("resnet34")
def resnet34(in_channels: int = 1, image_size: int = 48, stem: str = "auto", width: float = 1.0,
             zero_init_residual: bool = True) -> ResNet:
    """ResNet-34 (21.3 M params)."""
    return _build(BasicBlock, (3, 4, 6, 3), in_channels, image_size, stem, width, zero_init_residual)


@register_model("resnet50")
def resnet50(in_channels: int = 1, image_size: int = 48, stem: str = "auto", width: float = 1.0,
             zero_init_residual: bool = True) -> ResNet:
    """ResNet-50 (23.5 M params without fc), bottleneck blocks, feature_dim 2048."""
    return _build(Bottleneck, (3, 4, 6, 3), in_channels, image_size, stem, width, zero_init_residual)
