"""ResNet backbones whose parameter names match torchvision's, with a width knob.

We build the network ourselves (rather than calling torchvision.models.resnet50) for two
reasons: torchvision hard-codes 64 channels in the first stage, while our CPU tests and the
synthetic default need narrow networks; and ReID wants the last stage's stride set to 1.
Because the module names are torchvision's, ImageNet weights load with strict key checking.
IBN-a variants (clusteralign.models.ibn) swap the first normalisation of the blocks in the
first three stages for half InstanceNorm / half BatchNorm; everything else is unchanged.
"""

from __future__ import annotations

from typing import Type, Union

import torch
from torch import nn

from .ibn import IBN_A_STAGES, IBN
from .senet import SE_RESNEXT_ARCHITECTURES, build_se_resnext


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def _first_norm(planes: int, ibn: bool) -> nn.Module:
    return IBN(planes) if ibn else nn.BatchNorm2d(planes)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, ibn: bool = False
    ):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = _first_norm(planes, ibn)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    # Stride on the 3x3 convolution (torchvision's "ResNet v1.5").
    expansion = 4

    def __init__(
        self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, ibn: bool = False
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = _first_norm(planes, ibn)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = Union[Type[BasicBlock], Type[Bottleneck]]

Stages = tuple[int, int, int, int]
IbnStages = tuple[bool, bool, bool, bool]
NO_IBN: IbnStages = (False, False, False, False)

# name -> (block, blocks per stage, which stages use IBN in their blocks' first normalisation)
ARCHITECTURES: dict[str, tuple[Block, Stages, IbnStages]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), NO_IBN),
    "resnet34": (BasicBlock, (3, 4, 6, 3), NO_IBN),
    "resnet50": (Bottleneck, (3, 4, 6, 3), NO_IBN),
    "resnet101": (Bottleneck, (3, 4, 23, 3), NO_IBN),
    "resnet50_ibn_a": (Bottleneck, (3, 4, 6, 3), IBN_A_STAGES),
    "resnet101_ibn_a": (Bottleneck, (3, 4, 23, 3), IBN_A_STAGES),
}


class ResNet(nn.Module):
    """ResNet trunk without pooling or classifier; returns the last feature map.

    Args:
        block: residual block class.
        layers: number of blocks in each of the four stages.
        base_width: channels of the stem and the first stage (torchvision: 64).
        last_stride: stride of the fourth stage; 1 doubles the final map's resolution (ReID).
        ibn: per stage, whether its blocks start with an IBN layer (IBN-a) instead of BatchNorm.
        stem_relu: whether the stem's batch norm is followed by a ReLU (torchvision: yes; the
            paper's reference code left it out of the strong baseline's ResNets).
    """

    def __init__(
        self,
        block: Block,
        layers: Stages,
        base_width: int = 64,
        last_stride: int = 1,
        ibn: IbnStages = NO_IBN,
        stem_relu: bool = True,
    ):
        super().__init__()
        if base_width < 1:
            raise ValueError(f"base_width must be positive, got {base_width}")
        self.in_ch = base_width
        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        # A module either way, without parameters: the weights are the same, and the multi-branch
        # families that reuse the stem's modules (MGN, ABD-Net) follow the choice.
        self.relu: nn.Module = nn.ReLU(inplace=True) if stem_relu else nn.Identity()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        w = base_width
        self.layer1 = self._make_layer(block, w, layers[0], 1, ibn[0])
        self.layer2 = self._make_layer(block, 2 * w, layers[1], 2, ibn[1])
        self.layer3 = self._make_layer(block, 4 * w, layers[2], 2, ibn[2])
        self.layer4 = self._make_layer(block, 8 * w, layers[3], last_stride, ibn[3])
        self.out_channels = 8 * w * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int, ibn: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_ch != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_ch, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.in_ch, planes, stride, downsample, ibn=ibn)]
        self.in_ch = planes * block.expansion
        layers += [block(self.in_ch, planes, ibn=ibn) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # relu: nn.Identity without `stem_relu`
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def build_resnet(name: str, base_width: int = 64, last_stride: int = 1, stem_relu: bool = True) -> ResNet:
    """Build a ResNet trunk by name: torchvision's ("resnet18" ... "resnet101") or an IBN-a one ("resnet50_ibn_a")."""
    try:
        block, layers, ibn = ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    return ResNet(block, layers, base_width=base_width, last_stride=last_stride, ibn=ibn, stem_relu=stem_relu)


def set_stage_stride(stage: nn.Sequential, stride: int) -> None:
    """Set the spatial stride of a stage (its first block's strided conv and shortcut), in place.

    Multi-branch heads (MGN, ABD-Net) copy the last stage and need copies with stride 1
    next to the original; the weights are the same whatever the stride.
    """
    first = stage[0]
    strided = first.conv2 if isinstance(first, Bottleneck) else first.conv1
    strided.stride = (stride, stride)
    if first.downsample is not None:
        first.downsample[0].stride = (stride, stride)


BACKBONES: tuple[str, ...] = tuple(sorted([*ARCHITECTURES, *SE_RESNEXT_ARCHITECTURES]))


def build_backbone(name: str, base_width: int = 64, last_stride: int = 1, stem_relu: bool = True) -> nn.Module:
    """Any trunk by name: the ResNets above (incl. IBN-a) or SE-ResNeXt; each has `out_channels`.

    `stem_relu` applies to the ResNets; SE-ResNeXt's stem always ends in a ReLU.
    """
    if name in SE_RESNEXT_ARCHITECTURES:
        if not stem_relu:
            raise ValueError(f"backbone {name!r}: its stem always ends in a ReLU (stem_relu must be true)")
        return build_se_resnext(name, base_width=base_width, last_stride=last_stride)
    if name in ARCHITECTURES:
        return build_resnet(name, base_width=base_width, last_stride=last_stride, stem_relu=stem_relu)
    raise KeyError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
