"""SE-ResNeXt50 (32x4d) trunk (Hu et al., "Squeeze-and-Excitation Networks", 2018).

ResNeXt-50 bottlenecks (cardinality 32, 4 channels per group at the first stage's width, the
stride on the grouped 3x3 convolution) with a squeeze-and-excitation gate (reduction 16,
1x1 convolutions with bias) on the residual branch before the addition; 7x7 stem and a
ceil-mode max pool. Module names follow Cadene's ``pretrainedmodels`` (``layer0.conv1``,
``layer1.0.se_module.fc1``, ...), the layout the strong baseline (Luo et al.) uses, so the
public checkpoint ``se_resnext50_32x4d-a260b3a4.pth`` loads with strict key checking once
its ImageNet classifier (``last_linear.*``) is dropped. With that classifier the network
has 27.56 M parameters (timm lists ``seresnext50_32x4d`` at 27.6 M).

Recipe: a drop-in backbone of the strong baseline (256x128, Adam 3.5e-4, 120 epochs,
triplet + label-smoothed CE; see clusteralign.models.baseline).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

SE_RESNEXT_WEIGHTS: dict[str, str] = {
    "se_resnext50": "http://data.lip6.fr/cadene/pretrainedmodels/se_resnext50_32x4d-a260b3a4.pth",
}
SE_RESNEXT_CLASSIFIER_PREFIX = "last_linear."


class SEModule(nn.Module):
    """Channel gate: global average pool -> 1x1 conv (C/r) -> ReLU -> 1x1 conv (C) -> sigmoid."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class SEResNeXtBottleneck(nn.Module):
    """ResNeXt bottleneck (type C, grouped 3x3) with an SE gate on the residual branch."""

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        groups: int,
        reduction: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        width_per_group: int = 4,
    ):
        super().__init__()
        width = (planes * width_per_group // 64) * groups
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = SEModule(planes * self.expansion, reduction)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.se_module(out) + identity)


class SEResNeXt(nn.Module):
    """SE-ResNeXt trunk without pooling or classifier; returns the last feature map.

    Args:
        layers: blocks per stage ((3, 4, 6, 3) for the 50-layer network).
        groups: cardinality of the grouped convolutions.
        width_per_group: channels per group at a 64-channel stage width ("4d").
        reduction: SE reduction ratio.
        base_width: channels of the stem and first stage's `planes` (64 = the standard
            network); narrower widths give CPU-sized test models and must be >= 64 / width_per_group.
        last_stride: stride of the fourth stage (1 for ReID).
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        groups: int = 32,
        width_per_group: int = 4,
        reduction: int = 16,
        base_width: int = 64,
        last_stride: int = 1,
    ):
        super().__init__()
        if base_width * width_per_group < 64:
            raise ValueError(
                f"base_width must be at least {64 // width_per_group} for {groups}x{width_per_group}d "
                f"grouped convolutions, got {base_width}"
            )
        self.groups, self.reduction, self.width_per_group = groups, reduction, width_per_group
        self.in_ch = base_width
        self.layer0 = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)),
            ("bn1", nn.BatchNorm2d(base_width)),
            ("relu1", nn.ReLU(inplace=True)),
            # ceil_mode keeps the map sizes of the Caffe-trained weights.
            ("pool", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
        ]))
        w = base_width
        self.layer1 = self._make_layer(w, layers[0], 1)
        self.layer2 = self._make_layer(2 * w, layers[1], 2)
        self.layer3 = self._make_layer(4 * w, layers[2], 2)
        self.layer4 = self._make_layer(8 * w, layers[3], last_stride)
        self.out_channels = 8 * w * SEResNeXtBottleneck.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_ch = planes * SEResNeXtBottleneck.expansion
        downsample = None
        if stride != 1 or self.in_ch != out_ch:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        kw = dict(groups=self.groups, reduction=self.reduction, width_per_group=self.width_per_group)
        layers = [SEResNeXtBottleneck(self.in_ch, planes, stride=stride, downsample=downsample, **kw)]
        self.in_ch = out_ch
        layers += [SEResNeXtBottleneck(self.in_ch, planes, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer0(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


SE_RESNEXT_ARCHITECTURES: dict[str, tuple[int, int, int, int]] = {"se_resnext50": (3, 4, 6, 3)}


def build_se_resnext(name: str, base_width: int = 64, last_stride: int = 1) -> SEResNeXt:
    """Build an SE-ResNeXt trunk (32x4d, SE reduction 16) by name ("se_resnext50")."""
    try:
        layers = SE_RESNEXT_ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(sorted(SE_RESNEXT_ARCHITECTURES))}") from None
    return SEResNeXt(layers, base_width=base_width, last_stride=last_stride)
