"""Batched test-feature extraction: eval mode, the flipped copy in the same batch."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..config import FeatureConfig, InferenceConfig
from .augment import AugmentSpec, test_transform
from .inputs import test_augment


def autocast(device: torch.device, amp: str, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked for; a no-op otherwise.

    `cache=False` for CUDA-graph capture: autocast's cache of cast weights is freed on exit,
    and a graph must not keep pointing at it.
    """
    if amp == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: torch.Tensor,
    spec: AugmentSpec,
    *,
    device: torch.device,
    batch_size: int = 256,
    flip: bool = True,
    amp: str = "none",
    channels_last: bool = False,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Test features of uint8 `images` (N x 3 x H x W), float32 on `device`.

    With `flip`, each image and its mirror go through the network in one batch and their
    embeddings are averaged. With `labels`, also returns each image's softmax probability
    of its own class (flip-averaged), which the probability-weighted anchors need.
    """
    was_training = model.training
    model.eval()
    feats, probs = [], []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = test_transform(images[start : start + batch_size].to(device, non_blocking=True), spec)
            n = x.shape[0]
            if flip:
                x = torch.cat([x, x.flip(3)])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                out = model(x)
            emb = out.embedding().float()
            if flip:
                # Averaged before the distance's L2 normalisation, as layumi's and fast-reid's
                # evaluations do (each view normalised first would weigh them equally instead).
                emb = (emb[:n] + emb[n:]) / 2
            feats.append(emb)
            if labels is not None:
                y = labels[start : start + n].to(device)
                p = torch.stack([lg.float().softmax(1) for lg in out.logits]).mean(0)
                p = p.gather(1, (y.repeat(2) if flip else y)[:, None]).squeeze(1)
                probs.append((p[:n] + p[n:]) / 2 if flip else p)
    finally:
        model.train(was_training)
    dim = getattr(model, "embedding_dim", 0)
    features = torch.cat(feats) if feats else torch.empty(0, dim, device=device)
    return features, (torch.cat(probs) if labels is not None and probs else None)


def eval_features(model: nn.Module, images: torch.Tensor, inference: InferenceConfig, features: FeatureConfig,
                  device: torch.device, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`extract_features` of uint8 `images` with a stage's inference and feature settings."""
    return extract_features(model, images, test_augment(inference), device=device, batch_size=features.batch_size,
                            flip=features.flip, amp=inference.amp, channels_last=inference.channels_last, labels=labels)
