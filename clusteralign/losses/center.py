"""Centre loss (Wen et al. 2016) in the convention of the strong ReID baseline."""

from __future__ import annotations

import torch
from torch import nn


class CenterLoss(nn.Module):
    """Pulls each feature toward a learned centre of its class.

    Convention (that of Luo et al.'s reference code, to which the 5e-4 weight belongs):
    ``loss = mean_i ||f_i - c_{y_i}||^2`` -- the batch mean of the *squared* Euclidean
    distance, without the 1/2 factor of Wen et al.'s paper (the paper's form is half
    this value). Centres are an ``nn.Parameter`` (num_classes x feat_dim) initialised
    from a standard normal drawn with ``seed``.

    Training (what the trainer does, as in the reference): the centres get their own
    SGD optimizer (lr 0.5); the total loss adds ``weight * center_loss`` and, before
    that optimizer steps, the centres' gradient is divided by ``weight`` so the centre
    update does not depend on the loss weight.
    """

    def __init__(self, num_classes: int, feat_dim: int, seed: int = 0) -> None:
        super().__init__()
        if num_classes < 1 or feat_dim < 1:
            raise ValueError(
                f"CenterLoss needs num_classes >= 1 and feat_dim >= 1, got num_classes={num_classes}, "
                f"feat_dim={feat_dim}."
            )
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        generator = torch.Generator().manual_seed(seed)
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim, generator=generator))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Batch mean of the squared distance between ``features`` (B x D) and their class centres."""
        if features.dim() != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(f"CenterLoss expects features of shape (B, {self.feat_dim}), got {tuple(features.shape)}.")
        if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(f"CenterLoss expects labels of shape ({features.shape[0]},), got {tuple(labels.shape)}.")
        with torch.autocast(device_type=features.device.type, enabled=False):
            # Direct difference to the own centre only: exact, and the same gradient as the
            # reference's masked full distance matrix without its B x C cost.
            diff = features.float() - self.centers[labels.long()].float()
            return diff.pow(2).sum(dim=1).mean()

    def extra_repr(self) -> str:
        """Constructor settings shown by ``repr``."""
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}"
