"""layumi's ft_net baseline and PCB (facts from layumi/Person_reID_baseline_pytorch).

**ft_net**: ResNet-50 trunk -> global average pooling (2048-d) -> ClassBlock:
Linear(2048 -> 512) -> BatchNorm1d -> [LeakyReLU(0.1), off by default] -> Dropout(0.5) ->
Linear(512 -> classes). The test feature is the 512-d block output (layumi's test script
removes the last Linear; dropout is inert in eval mode), so the embedding here is the
BatchNorm output and the dropout only feeds the classifier. layumi's default last stride
is 2 (``--stride``); ReID practice and this project's default is 1 (``last_stride``).

**PCB** (Sun et al., "Beyond Part Models", ECCV 2018): ResNet-50 with last stride 1, the
final map average-pooled into 6 horizontal stripes (2048-d each, "g"), dropout 0.5 on them,
and one ClassBlock per stripe (Linear 2048 -> 256, BN, dropout 0.5, Linear -> classes)
trained with one cross-entropy per part (summed). The test feature is the concatenation
of the 6 part embeddings (256-d "h" after BN, 1536-d), which is also what the anchor loss
pulls: one anchor per identity over all parts. (layumi's test script concatenates the
2048-d stripes "g" instead; the paper reports both.)

Recipes (the defaults these models were published with; put them in the experiment):
- ft_net: 256x128, batch 32, SGD lr 0.05 (backbone 0.005), momentum 0.9, Nesterov,
  weight decay 5e-4, 60 epochs, x0.1 at epoch 40, plain cross-entropy, no triplet.
- PCB: 384x128 (layumi: 384x192), batch 64, SGD lr 0.1 (backbone 0.01), momentum 0.9,
  weight decay 5e-4, 60 epochs, x0.1 at epoch 40, cross-entropy summed over the 6 parts.
Our optimiser has no separate backbone lr; the trainer samples P x K batches rather than
layumi's random batches.
"""

from __future__ import annotations

import torch
from torch import nn

from .output import ReIDOutput


def _init_block(block: nn.Sequential) -> None:
    # layumi's weights_init_kaiming: Linear kaiming (fan_out), BatchNorm1d weight ~ N(1, 0.02).
    for m in block.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class ClassBlock(nn.Module):
    """Linear -> BatchNorm1d -> [LeakyReLU 0.1] (the embedding) -> Dropout -> Linear (the logits).

    Parameter names match layumi's ClassBlock (``add_block.0``, ``add_block.1``, ``classifier.0``).
    """

    def __init__(self, in_dim: int, num_classes: int, embed_dim: int = 512, dropout: float = 0.5,
                 leaky_relu: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, embed_dim), nn.BatchNorm1d(embed_dim)]
        if leaky_relu:
            layers.append(nn.LeakyReLU(0.1))
        self.add_block = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Sequential(nn.Linear(embed_dim, num_classes))
        _init_block(self.add_block)
        nn.init.normal_(self.classifier[0].weight, std=0.001)
        nn.init.zeros_(self.classifier[0].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, logits) of pooled features `x` (B x in_dim)."""
        emb = self.add_block(x)
        return emb, self.classifier(self.dropout(emb))


class FtNet(nn.Module):
    """Trunk -> global average pooling -> ClassBlock.

    Args:
        trunk: a backbone with `out_channels` (see resnet.build_backbone), weights already loaded.
        num_classes: number of training identities.
        embed_dim: ClassBlock bottleneck width (layumi: 512).
        dropout: ClassBlock dropout (layumi: 0.5).
    """

    def __init__(self, trunk: nn.Module, num_classes: int, embed_dim: int = 512, dropout: float = 0.5):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.base = trunk
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = ClassBlock(trunk.out_channels, num_classes, embed_dim, dropout)
        self.embedding_dim = embed_dim
        self.branch_feature_dim = trunk.out_channels

    def forward(self, x: torch.Tensor) -> ReIDOutput:
        f = self.pool(self.base(x)).flatten(1)
        emb, logits = self.classifier(f)
        return ReIDOutput(features=[f], embeddings=[emb], logits=[logits])


class PCB(nn.Module):
    """Part-based Convolutional Baseline: stripes of the last map, one ClassBlock each.

    Args:
        trunk: a backbone with `out_channels`, built with last stride 1 as PCB prescribes.
        num_classes: number of training identities.
        num_parts: horizontal stripes (PCB: 6).
        embed_dim: per-part ClassBlock width (PCB: 256).
        dropout: dropout on the pooled stripes and inside each ClassBlock (layumi: 0.5).
    """

    def __init__(self, trunk: nn.Module, num_classes: int, num_parts: int = 6, embed_dim: int = 256,
                 dropout: float = 0.5):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if num_parts < 1:
            raise ValueError(f"num_parts must be at least 1, got {num_parts}")
        self.base = trunk
        self.num_parts = num_parts
        self.pool = nn.AdaptiveAvgPool2d((num_parts, 1))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifiers = nn.ModuleList(
            ClassBlock(trunk.out_channels, num_classes, embed_dim, dropout) for _ in range(num_parts)
        )
        self.embedding_dim = num_parts * embed_dim
        self.branch_feature_dim = trunk.out_channels

    def forward(self, x: torch.Tensor) -> ReIDOutput:
        stripes = self.pool(self.base(x)).flatten(2)  # B x C x parts
        parts = [stripes[:, :, i] for i in range(self.num_parts)]
        embeddings, logits = [], []
        for part, block in zip(parts, self.classifiers):
            emb, lg = block(self.dropout(part))
            embeddings.append(emb)
            logits.append(lg)
        return ReIDOutput(features=parts, embeddings=embeddings, logits=logits)
