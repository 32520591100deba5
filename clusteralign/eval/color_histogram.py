"""A training-free reference: joint RGB colour histograms as features.

It shows how far plain clothing colour goes on a dataset, so a learned model's gain over
it is visible (on the synthetic set, colour alone is designed to be insufficient).
"""

from __future__ import annotations

import torch


def color_histogram_features(images: torch.Tensor, bins: int = 8) -> torch.Tensor:
    """L1-normalised joint RGB histograms (N x bins^3) of uint8 images (N x 3 x H x W)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images of shape N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")
    q = (images.long() * bins) // 256  # N x 3 x H x W, values in [0, bins)
    codes = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    n = images.shape[0]
    hist = torch.zeros(n, bins**3, dtype=torch.float32)
    hist.scatter_add_(1, codes.reshape(n, -1), torch.ones(n, codes[0].numel()))
    return hist / hist.sum(1, keepdim=True)
