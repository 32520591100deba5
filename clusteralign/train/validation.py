"""Validation during training: the current model's R1/R5/R10/mAP/mINP on query against gallery."""

from __future__ import annotations

import torch
from torch import nn

from ..config import EvalConfig, FeatureConfig, InferenceConfig
from ..eval.distance import compute_distance_matrix
from ..eval.rank import evaluate_rank
from .data import SplitData
from .features import eval_features


def validate(model: nn.Module, query: SplitData, gallery: SplitData, inference: InferenceConfig,
             features: FeatureConfig, eval_cfg: EvalConfig, device: torch.device) -> dict[str, float]:
    """R1/R5/R10/mAP/mINP of `model` on `query` vs `gallery` (re-ranking is never applied here)."""
    qf, _ = eval_features(model, query.images, inference, features, device)
    gf, _ = eval_features(model, gallery.images, inference, features, device)
    dist = compute_distance_matrix(qf, gf, metric=eval_cfg.metric, normalize=eval_cfg.normalize)
    # Small validation galleries are normal here; cap quietly instead of warning every epoch.
    result = evaluate_rank(dist, query.pids.numpy(), gallery.pids.numpy(), query.camids.numpy(),
                           gallery.camids.numpy(), max_rank=min(eval_cfg.max_rank, len(gallery.pids)))
    metrics = result.to_dict()
    return {k: metrics[k] for k in ("R1", "R5", "R10", "mAP", "mINP") if k in metrics}
