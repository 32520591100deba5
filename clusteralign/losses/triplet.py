"""Batch-hard triplet loss (Hermans et al. 2017) as used by the strong ReID baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Squared distances below this are treated as zero before the square root, so the
# gradient of sqrt stays finite (and is exactly zero) for identical vectors.
DIST_EPS = 1e-12


class TripletBatchError(ValueError):
    """A batch cannot be mined: some sample lacks a positive or a negative."""


def euclidean_dist(x: torch.Tensor, y: torch.Tensor, eps: float = DIST_EPS) -> torch.Tensor:
    """Pairwise Euclidean distances (M x N, float32) between the rows of x (M x D) and y (N x D).

    Uses ||x||^2 + ||y||^2 - 2 x.y (one matrix product); the squared distance is
    clamped to ``eps`` before the square root so rounding can never yield NaN and
    identical vectors get a finite (zero) gradient.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"euclidean_dist expects two 2-D tensors with the same number of columns, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}."
        )
    # The expansion cancels large terms; under mixed precision it must not run in half
    # precision, so autocast is switched off and the inputs promoted to float32.
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        y = y.float()
        xx = x.pow(2).sum(dim=1, keepdim=True)
        yy = y.pow(2).sum(dim=1, keepdim=True).t()
        d2 = torch.addmm(xx + yy, x, y.t(), beta=1.0, alpha=-2.0)
        return d2.clamp_min(eps).sqrt()


def hard_example_mining(
    dist: torch.Tensor, labels: torch.Tensor, check: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hardest positive and hardest negative distance for every anchor row of ``dist``.

    ``dist`` is a B x B distance matrix over one batch, ``labels`` the B identity labels.
    Returns ``(dist_ap, dist_an)``, each of length B: the largest distance to another
    sample with the same label, and the smallest distance to a sample with a different
    label. Any number of samples per label is allowed (no equal-K assumption).
    With ``check=True`` raises :class:`TripletBatchError` naming the first sample that has
    no other sample of its label, or no sample of another label, in the batch; that
    check reads one boolean back from the device (a synchronisation on CUDA). With
    ``check=False`` nothing is read back and such samples get NaN distances instead, so
    a bad batch still shows up, as a NaN loss.
    """
    if dist.dim() != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"hard_example_mining expects a square B x B distance matrix, got shape {tuple(dist.shape)}.")
    if labels.dim() != 1 or labels.shape[0] != dist.shape[0]:
        raise ValueError(
            f"hard_example_mining expects labels of shape ({dist.shape[0]},) to match the distance matrix, "
            f"got {tuple(labels.shape)}."
        )
    n = dist.shape[0]
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(n, dtype=torch.bool, device=dist.device)
    is_pos = same & ~eye
    is_neg = ~same
    has_pos = is_pos.any(dim=1)
    has_neg = is_neg.any(dim=1)
    bad = ~(has_pos & has_neg)
    if check and bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        what = (
            "no other sample with the same label (no positive)"
            if not bool(has_pos[i])
            else ("no sample with a different label (no negative)")
        )
        raise TripletBatchError(
            f"Batch-hard triplet mining failed: sample {i} (label {int(labels[i])}) has {what} in this batch of "
            f"{n} samples. Every identity needs at least 2 images and the batch at least 2 identities; "
            f"use the P x K identity sampler with num_instances >= 2 and num_identities >= 2."
        )
    # Masked max/min instead of the reference's reshape trick, which assumed exactly K
    # samples per label in the batch.
    neg_inf = torch.finfo(dist.dtype).min
    pos_inf = torch.finfo(dist.dtype).max
    dist_ap = dist.masked_fill(~is_pos, neg_inf).amax(dim=1)
    dist_an = dist.masked_fill(~is_neg, pos_inf).amin(dim=1)
    if not check:
        nan = torch.full((), float("nan"), dtype=dist.dtype, device=dist.device)
        dist_ap = torch.where(has_pos, dist_ap, nan)
        dist_an = torch.where(has_neg, dist_an, nan)
    return dist_ap, dist_an


class TripletLoss(nn.Module):
    """Batch-hard triplet loss on Euclidean distances.

    ``margin`` > 0: mean over the batch of ``relu(d_ap - d_an + margin)`` (hinge, the
    strong baseline uses 0.3). ``margin=None``: soft margin, mean of
    ``softplus(d_ap - d_an)``. ``normalize_feature=True`` L2-normalises the features
    first. ``forward(features, labels)`` returns the scalar loss. ``check_batch`` is passed
    to :func:`hard_example_mining` as ``check``: turn it off in a CUDA loop whose sampler
    guarantees P >= 2 and K >= 2, to save one device synchronisation per step (a bad batch
    then gives a NaN loss instead of an error).
    """

    def __init__(self, margin: float | None = 0.3, normalize_feature: bool = False, check_batch: bool = True) -> None:
        super().__init__()
        if margin is not None and margin < 0:
            raise ValueError(f"TripletLoss margin must be >= 0 or None (soft margin), got {margin}.")
        self.margin = margin
        self.normalize_feature = normalize_feature
        self.check_batch = check_batch

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Batch-hard triplet loss of ``features`` (B x D) with identity ``labels`` (B)."""
        if features.dim() != 2:
            raise ValueError(f"TripletLoss expects features of shape (B, D), got {tuple(features.shape)}.")
        if self.normalize_feature:
            features = F.normalize(features, p=2, dim=1)
        dist = euclidean_dist(features, features)
        dist_ap, dist_an = hard_example_mining(dist, labels, check=self.check_batch)
        diff = dist_ap - dist_an
        if self.margin is None:
            return F.softplus(diff).mean()
        return F.relu(diff + self.margin).mean()

    def extra_repr(self) -> str:
        """Constructor settings shown by ``repr``."""
        return f"margin={self.margin}, normalize_feature={self.normalize_feature}, check_batch={self.check_batch}"
