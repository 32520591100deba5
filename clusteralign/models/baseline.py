"""The strong BNNeck baseline (Luo et al., "Bag of Tricks and a Strong Baseline", 2019).

ResNet trunk (last stride 1; also ResNet50-IBN-a or SE-ResNeXt50) -> global average pooling
-> f_t -> BatchNorm1d with its bias frozen at zero (BNNeck) -> f_i -> bias-free linear classifier.
The triplet loss sees f_t, the cross-entropy sees the logits, and the test feature is f_i.
Recipe (defaults in clusteralign.config): 256x128 input, Adam 3.5e-4 with warm-up and steps at
epochs 40/70 of 120, triplet (margin 0.3) + label-smoothed CE, P x K = 16 x 4, random erasing.
"""

from __future__ import annotations

import torch
from torch import nn

from .output import ReIDOutput
from .resnet import build_backbone


class StrongBaseline(nn.Module):
    """ResNet + BNNeck + bias-free classifier.

    Args:
        num_classes: number of training identities.
        backbone: trunk name (a torchvision ResNet, "resnet50_ibn_a", or "se_resnext50").
        base_width: channels of the first stage (64 = the standard network).
        last_stride: stride of the last stage.
        neck: "bnneck", or "none" for the plain baseline (f_i = f_t, classifier with bias).
        stem_relu: a ReLU after the stem's batch norm (see resnet.ResNet).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        base_width: int = 64,
        last_stride: int = 1,
        neck: str = "bnneck",
        stem_relu: bool = True,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.base = build_backbone(backbone, base_width=base_width, last_stride=last_stride, stem_relu=stem_relu)
        self.embedding_dim = self.base.out_channels
        self.branch_feature_dim = self.embedding_dim  # width of each `features` entry (triplet / centre losses)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if neck == "bnneck":
            self.bottleneck: nn.Module = nn.BatchNorm1d(self.embedding_dim)
            nn.init.ones_(self.bottleneck.weight)
            nn.init.zeros_(self.bottleneck.bias)
            # A shift would move every feature alike and only hurt the Euclidean geometry.
            self.bottleneck.bias.requires_grad_(False)
            self.classifier = nn.Linear(self.embedding_dim, num_classes, bias=False)
        elif neck == "none":
            self.bottleneck = nn.Identity()
            self.classifier = nn.Linear(self.embedding_dim, num_classes)
            nn.init.zeros_(self.classifier.bias)
        else:
            raise ValueError(f"neck must be 'bnneck' or 'none', got {neck!r}")
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> ReIDOutput:
        f_t = self.pool(self.base(x)).flatten(1)
        f_i = self.bottleneck(f_t)
        return ReIDOutput(features=[f_t], embeddings=[f_i], logits=[self.classifier(f_i)])
