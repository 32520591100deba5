"""The anchor dictionary: one mean test feature per training identity (stage 2's targets)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from torch import nn

from ..config import AnchorConfig, FeatureConfig, InferenceConfig
from ..io import UnreadableFileError, torch_load_mapping, torch_save
from ..losses.anchor import anchor_distances
from .data import SplitData
from .features import eval_features


def compute_anchors(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-identity (weighted) mean of `features` (N x D) -> anchors (num_classes x D).

    Every identity must have at least one feature; `weights` (N) gives the
    probability-weighted variant of the reference code.
    """
    labels = labels.to(features.device)
    w = torch.ones(features.shape[0], device=features.device) if weights is None else weights.float()
    sums = torch.zeros(num_classes, features.shape[1], device=features.device, dtype=torch.float32)
    sums.index_add_(0, labels, features.float() * w[:, None])
    totals = torch.zeros(num_classes, device=features.device).index_add_(0, labels, w)
    if bool((totals <= 0).any()):
        missing = torch.nonzero(totals <= 0).flatten()[:10].tolist()
        raise ValueError(f"no training features for identity label(s) {missing}; cannot build their anchors")
    anchors = sums / totals[:, None]
    if not bool(torch.isfinite(anchors).all()):
        raise ValueError("the anchors hold NaN or infinite values: the model's features have diverged")
    return anchors


@torch.no_grad()
def momentum_update(anchors: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, momentum: float) -> None:
    """In place: anchor <- m * anchor + (1 - m) * batch mean of its identity's features."""
    num_classes = anchors.shape[0]
    sums = torch.zeros_like(anchors).index_add_(0, labels, features.float())
    counts = torch.zeros(num_classes, device=anchors.device).index_add_(
        0, labels, torch.ones_like(labels, dtype=torch.float32)
    )
    # Masked with where, not indexed: boolean indexing would wait for the GPU at every step.
    batch_mean = sums / counts.clamp_min(1)[:, None]
    anchors.copy_(torch.where((counts > 0)[:, None], momentum * anchors + (1 - momentum) * batch_mean, anchors))


def diagnostics(features: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor) -> dict[str, float]:
    """Mean Euclidean distance of each feature to its own anchor and to the nearest other one."""
    own, other = anchor_distances(features.float(), labels.to(features.device), anchors.to(features.device))
    return {"anchor_dist_own": float(own.mean()), "anchor_dist_other": float(other.mean())}


def fresh_anchors(model: nn.Module, train: SplitData, num_classes: int, anchors: AnchorConfig,
                  inference: InferenceConfig, features: FeatureConfig,
                  device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """The anchor dictionary of the current model over the training split, and its spread diagnostics."""
    probability = anchors.weighting == "probability"
    feats, probs = eval_features(model, train.images, inference, features, device,
                                 labels=train.labels if probability else None)
    labels = train.labels.to(device)
    result = compute_anchors(feats, labels, num_classes, weights=probs if probability else None)
    return result, diagnostics(feats, labels, result)


@dataclass
class AnchorSet:
    """Anchors with the original identity of each row, as saved between workflow steps."""

    anchors: torch.Tensor
    pids: list[int]
    stats: dict[str, float]

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as a plain tensor/list/float dict (loadable with weights_only)."""
        torch_save({"anchors": self.anchors.cpu(), "pids": list(self.pids), "stats": dict(self.stats)}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AnchorSet":
        """Read an anchor file written by `save`."""
        obj = torch_load_mapping(path, ("anchors", "pids", "stats"), "an anchor file")
        try:
            return cls(anchors=obj["anchors"], pids=list(obj["pids"]), stats=dict(obj["stats"]))
        except (TypeError, ValueError) as err:
            raise UnreadableFileError(f"{path}: not an anchor file ({err})", path) from err
