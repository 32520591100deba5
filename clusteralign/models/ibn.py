"""IBN-a: instance + batch normalisation in the early ResNet stages (Pan et al., ECCV 2018).

In ResNet50-IBN-a the first normalisation of every residual block in stages 1-3 normalises
half of its channels with an affine InstanceNorm (appearance invariance: colour, lighting)
and the other half with BatchNorm (content discrimination); stage 4 and the stem keep plain
BatchNorm. The network has exactly ResNet-50's parameters, so its size is unchanged
(25,557,032 with the 1000-way classifier).

The module names follow XingangPan/IBN-Net (``layer1.0.bn1.IN.weight``,
``layer1.0.bn1.BN.running_mean``, ...), so the public ImageNet checkpoint
``resnet50_ibn_a-d9d0bb7b.pth`` loads with strict key checking into
``clusteralign.models.resnet.build_resnet("resnet50_ibn_a")``. The trunk itself lives in
resnet.py (same blocks, an ``ibn`` flag per stage); this module holds the IBN layer and the
facts about the public weights.

Recipe: IBN-a is a drop-in backbone of the strong baseline (Luo et al. report it with the
same 256x128 / Adam 3.5e-4 / 120-epoch recipe); the ClusterAlign paper reports Market-1501
mAP 87.2 -> 88.9 after stage 2 with it.
"""

from __future__ import annotations

import torch
from torch import nn

# Stages 1-3 use IBN, stage 4 plain BN (IBN-Net's ``ibn_cfg=('a', 'a', 'a', None)``).
IBN_A_STAGES: tuple[bool, bool, bool, bool] = (True, True, True, False)

# XingangPan/IBN-Net v1.0 release; the file name carries the first 8 hex digits of its SHA-256,
# as torch.hub expects.
IBN_A_WEIGHTS: dict[str, str] = {
    "resnet50_ibn_a": "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth",
    "resnet101_ibn_a": "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet101_ibn_a-59ea0ac6.pth",
}


class IBN(nn.Module):
    """Normalise the first `ratio` of the channels per instance (affine), the rest per batch.

    Args:
        planes: number of input channels.
        ratio: share of channels that go through InstanceNorm (IBN-Net uses one half).
    """

    def __init__(self, planes: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(planes * ratio)
        if not 0 < self.half < planes:
            raise ValueError(f"IBN needs channels on both sides of the split, got planes={planes}, ratio={ratio}")
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.IN(x[:, : self.half].contiguous()), self.BN(x[:, self.half :].contiguous())], dim=1)
