"""MGN, the Multiple Granularity Network (Wang et al., ACM MM 2018).

A ResNet-50 is shared up to the first block of stage 3 (res_conv4_1); the rest of stage 3
and stage 4 are copied into three branches:
- global: stage 4 with stride 2 -> global max pooling -> z_g (2048-d);
- part-2: stage 4 with stride 1 -> global max pooling (z_g) and 2 horizontal stripes;
- part-3: stage 4 with stride 1 -> global max pooling (z_g) and 3 horizontal stripes.
Each of the 8 pooled vectors goes through its own 1x1 conv (2048 -> 256, no bias) + BN + ReLU,
and each 256-d result has its own identity classifier (8 classifiers, no bias as in the
paper's softmax). The triplet loss sees the three 2048-d global vectors z_g; the test feature
(and the anchor loss's target) is the concatenation of the eight 256-d features (2048-d).
Parameters, 751 classes: 70.35 M (68.81 M without the classifiers), as seathiefwang/MGN-pytorch.

Recipe (the paper): input 384x128, random flip only, P x K = 16 x 4, SGD lr 0.01, momentum 0.9,
weight decay 5e-4, 80 epochs, x0.1 at epochs 40 and 60; batch-hard triplet margin 1.2 plus
cross-entropy, each averaged over its terms. Our Objective sums one term per output, so the
averages are ce_weight 1/8 and triplet_weight 1/3. `last_stride` does not apply: the branches
fix their own strides.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .output import ReIDOutput
from .resnet import ResNet, set_stage_stride

PART_COUNTS = (2, 3)


def _reduction(in_ch: int, out_ch: int) -> nn.Sequential:
    block = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))
    nn.init.kaiming_normal_(block[0].weight, mode="fan_in")
    nn.init.normal_(block[1].weight, mean=1.0, std=0.02)
    nn.init.zeros_(block[1].bias)
    return block


def _branch(trunk: ResNet, stride: int) -> nn.Sequential:
    stage4 = copy.deepcopy(trunk.layer4)
    set_stage_stride(stage4, stride)
    return nn.Sequential(copy.deepcopy(trunk.layer3[1:]), stage4)


class MGN(nn.Module):
    """Global + part-2 + part-3 branches over a shared ResNet stem.

    Args:
        trunk: a ResNet (weights already loaded); its stages are copied, its own last stride ignored.
        num_classes: number of training identities.
        embed_dim: width of each reduced feature (MGN: 256).
    """

    def __init__(self, trunk: ResNet, num_classes: int, embed_dim: int = 256):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if len(trunk.layer3) < 2:
            raise ValueError("MGN splits stage 3 after its first block; this trunk's stage 3 has one block")
        self.backbone = nn.Sequential(
            trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1, trunk.layer2, trunk.layer3[0]
        )
        self.p1 = _branch(trunk, stride=2)
        self.p2 = _branch(trunk, stride=1)
        self.p3 = _branch(trunk, stride=1)
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.part_pools = nn.ModuleList(nn.AdaptiveMaxPool2d((n, 1)) for n in PART_COUNTS)
        channels = trunk.out_channels
        num_features = 3 + sum(PART_COUNTS)
        self.reductions = nn.ModuleList(_reduction(channels, embed_dim) for _ in range(num_features))
        self.classifiers = nn.ModuleList(nn.Linear(embed_dim, num_classes, bias=False) for _ in range(num_features))
        for fc in self.classifiers:
            nn.init.kaiming_normal_(fc.weight, mode="fan_out")
        self.embedding_dim = num_features * embed_dim
        self.branch_feature_dim = channels

    def forward(self, x: torch.Tensor) -> ReIDOutput:
        x = self.backbone(x)
        maps = [self.p1(x), self.p2(x), self.p3(x)]
        global_z = [self.global_pool(m) for m in maps]  # B x C x 1 x 1 each
        stripes = []
        for pool, m in zip(self.part_pools, maps[1:]):
            z = pool(m)
            stripes += [z[:, :, i : i + 1] for i in range(z.shape[2])]
        pooled = global_z + stripes
        embeddings = [red(z).flatten(1) for red, z in zip(self.reductions, pooled)]
        logits = [fc(f) for fc, f in zip(self.classifiers, embeddings)]
        return ReIDOutput(features=[z.flatten(1) for z in global_z], embeddings=embeddings, logits=logits)
