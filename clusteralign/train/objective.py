"""The weighted sum of loss terms a stage optimises."""

from __future__ import annotations

import torch
from torch import nn

from ..config import LossConfig
from ..losses.anchor import AnchorLoss
from ..losses.center import CenterLoss
from ..losses.cross_entropy import CrossEntropyLabelSmooth
from ..losses.triplet import TripletLoss
from ..models.output import ReIDOutput
from .distributed import DistContext, all_gather_no_grad, all_gather_with_grad


class Objective(nn.Module):
    """Cross-entropy, triplet, centre and anchor terms, each switched on by a non-zero weight.

    Multi-branch models contribute one term per branch, summed (as MGN's reference does),
    the anchor term too: each branch's embedding against that branch's part of the identity's
    anchor (anchors are means of the concatenated test feature, so a part of one is the mean
    of that branch's embeddings).
    In a torchrun job the triplet loss mines over the batches of all ranks, as one process
    with the whole batch would; the other terms are per-sample means, which DDP's gradient
    averaging already makes global.
    """

    def __init__(self, cfg: LossConfig, num_classes: int, branch_feature_dim: int, ctx: DistContext = DistContext()):
        super().__init__()
        self.cfg = cfg
        self.ctx = ctx
        self.ce = CrossEntropyLabelSmooth(num_classes, epsilon=cfg.label_smoothing) if cfg.ce_weight else None
        # The batch check would read a flag back from the device every step; P x K batches
        # with K >= 2 (enforced by the config) always have positives and negatives.
        self.triplet = TripletLoss(margin=cfg.triplet_margin, check_batch=False) if cfg.triplet_weight else None
        self.center = CenterLoss(num_classes, branch_feature_dim) if cfg.center_weight else None
        self.anchor = AnchorLoss(kind=cfg.anchor_kind, margin=cfg.anchor_margin) if cfg.anchor_weight else None

    @property
    def needs_anchors(self) -> bool:
        return self.anchor is not None

    def forward(
        self, out: ReIDOutput, labels: torch.Tensor, anchors: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Named loss terms (unweighted) plus "total", the weighted sum that is optimised."""
        cfg = self.cfg
        terms: dict[str, torch.Tensor] = {}
        total = out.logits[0].new_zeros((), dtype=torch.float32)
        if self.ce is not None:
            terms["ce"] = sum(self.ce(lg.float(), labels) for lg in out.logits)
            total = total + cfg.ce_weight * terms["ce"]
        if self.triplet is not None:
            all_labels = all_gather_no_grad(labels, self.ctx)
            terms["triplet"] = sum(
                self.triplet(all_gather_with_grad(f.float(), self.ctx), all_labels) for f in out.features
            )
            total = total + cfg.triplet_weight * terms["triplet"]
        if self.center is not None:
            terms["center"] = sum(self.center(f.float(), labels) for f in out.features)
            total = total + cfg.center_weight * terms["center"]
        if self.anchor is not None:
            if anchors is None:
                raise RuntimeError("the anchor loss is on but no anchors were given")
            parts = anchors.split([e.shape[1] for e in out.embeddings], dim=1)
            terms["anchor"] = sum(self.anchor(e.float(), labels, a) for e, a in zip(out.embeddings, parts, strict=True))
            total = total + cfg.anchor_weight * terms["anchor"]
        for name, value in out.aux_losses.items():
            terms[name] = value.float()
            total = total + terms[name]
        terms["total"] = total
        return terms
