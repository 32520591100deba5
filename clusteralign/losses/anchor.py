"""Stage-2 anchor losses: pull each feature toward its identity's anchor (cluster centre).

The anchors (C x D, one row per training identity, row index = relabelled pid) are
computed outside the loss (mean test feature per identity) and are constants here:
they never receive gradient.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from clusteralign.losses.triplet import DIST_EPS, euclidean_dist

AnchorKind = Literal["mse", "l1", "intra_inter"]


def _check_inputs(features: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor) -> None:
    if features.dim() != 2:
        raise ValueError(f"anchor loss expects features of shape (B, D), got {tuple(features.shape)}.")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"anchor loss expects labels of shape ({features.shape[0]},), got {tuple(labels.shape)}.")
    if anchors.dim() != 2 or anchors.shape[1] != features.shape[1]:
        raise ValueError(
            f"anchor matrix must have shape (num_identities, {features.shape[1]}) to match the features, "
            f"got {tuple(anchors.shape)}."
        )


def anchor_distances(
    features: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance of every feature to its own anchor and to the nearest other anchor.

    ``features`` B x D, ``labels`` B (row indices into ``anchors``), ``anchors`` C x D with
    C >= 2. Returns ``(dist_own, dist_nearest_other)``, each of length B, float32. The
    anchors are treated as constants (detached); gradients flow to ``features`` only.
    """
    _check_inputs(features, labels, anchors)
    if anchors.shape[0] < 2:
        raise ValueError(
            f"the distance to the nearest other anchor needs at least 2 anchors, got an anchor matrix of shape "
            f"{tuple(anchors.shape)}."
        )
    anchors = anchors.detach().to(features.device)
    labels = labels.long()
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = features.float()
        a = anchors.float()
        # The own distance is taken from the difference itself, not from the expansion
        # used for the full matrix: stage 2 drives it toward zero, where the expansion's
        # cancellation error would dominate the value and its gradient.
        dist_own = (f - a[labels]).pow(2).sum(dim=1).clamp_min(DIST_EPS).sqrt()
        dist_all = euclidean_dist(f, a)
        own = F.one_hot(labels, num_classes=a.shape[0]).bool()
        dist_other = dist_all.masked_fill(own, torch.finfo(dist_all.dtype).max).amin(dim=1)
    return dist_own, dist_other


class AnchorLoss(nn.Module):
    """Anchor loss on the post-BNNeck features ``f_i`` toward each identity's anchor.

    Kinds (a_y = anchor row of the sample's label; all means are over the batch):

    - ``"mse"``: ``mean over batch and dims of (f - a_y)^2``, i.e. exactly
      ``F.mse_loss(f, a_y, reduction="mean")`` (the reference's default, weight 1.0);
    - ``"l1"``: ``F.l1_loss(f, a_y, reduction="mean")``, mean absolute difference;
    - ``"intra_inter"``: with Euclidean ``d_own = ||f - a_y||`` and
      ``d_other = min_{c != y} ||f - a_c||``,
      ``mean(d_own) + mean(softplus(d_own - d_other))`` when ``margin`` is None, or
      ``mean(d_own) + mean(relu(d_own - d_other + margin))`` with a margin. The first
      term tightens the cluster, the second ranks the own anchor before every other.

    The anchors are an argument of ``forward``, not state: the trainer keeps (and
    checkpoints) the dictionary, which changes every epoch, and hands it to each step.
    """

    def __init__(self, kind: AnchorKind = "mse", margin: float | None = None) -> None:
        super().__init__()
        if kind not in get_args(AnchorKind):
            raise ValueError(f"AnchorLoss kind must be one of {get_args(AnchorKind)}, got {kind!r}.")
        if margin is not None and kind != "intra_inter":
            raise ValueError(
                f"AnchorLoss margin only applies to kind 'intra_inter', got margin={margin} with {kind!r}."
            )
        if margin is not None and margin < 0:
            raise ValueError(f"AnchorLoss margin must be >= 0 or None (soft ranking term), got {margin}.")
        self.kind: AnchorKind = kind
        self.margin = margin

    def forward(self, features: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Anchor loss of ``features`` (B x D) with labels (B) toward ``anchors`` (C x D, no gradient)."""
        _check_inputs(features, labels, anchors)
        anchors = anchors.detach().to(features.device)
        labels = labels.long()
        if self.kind == "intra_inter":
            dist_own, dist_other = anchor_distances(features, labels, anchors)
            diff = dist_own - dist_other
            rank = F.softplus(diff) if self.margin is None else F.relu(diff + self.margin)
            return dist_own.mean() + rank.mean()
        with torch.autocast(device_type=features.device.type, enabled=False):
            f = features.float()
            target = anchors.float()[labels]
            if self.kind == "mse":
                return F.mse_loss(f, target, reduction="mean")
            return F.l1_loss(f, target, reduction="mean")


    def extra_repr(self) -> str:
        """Constructor settings shown by ``repr``."""
        return f"kind={self.kind!r}, margin={self.margin}"
