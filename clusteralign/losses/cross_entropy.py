"""Cross-entropy with label smoothing (Szegedy et al. 2016), the strong baseline's ID loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against smoothed targets ``(1 - epsilon) * onehot(y) + epsilon / num_classes``.

    The loss is the batch mean of ``-sum_c q_c log softmax(logits)_c``. This equals
    ``F.cross_entropy(logits, labels, label_smoothing=epsilon)``; with ``epsilon=0`` it
    is plain cross-entropy. Computed in float32 even under autocast.
    """

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"CrossEntropyLabelSmooth num_classes must be >= 1, got {num_classes}.")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"CrossEntropyLabelSmooth epsilon must lie in [0, 1], got {epsilon}.")
        self.num_classes = num_classes
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Label-smoothed cross-entropy of ``logits`` (B x num_classes) for integer ``labels`` (B)."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"CrossEntropyLabelSmooth expects logits of shape (B, {self.num_classes}), got {tuple(logits.shape)}."
            )
        if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"CrossEntropyLabelSmooth expects labels of shape ({logits.shape[0]},), got {tuple(labels.shape)}."
            )
        with torch.autocast(device_type=logits.device.type, enabled=False):
            log_probs = F.log_softmax(logits.float(), dim=1)
            # Split the target into its one-hot and its uniform part instead of building
            # the dense smoothed target matrix.
            nll = -log_probs.gather(1, labels.long().unsqueeze(1)).squeeze(1)
            uniform = -log_probs.mean(dim=1)
            return ((1.0 - self.epsilon) * nll + self.epsilon * uniform).mean()

    def extra_repr(self) -> str:
        """Constructor settings shown by ``repr``."""
        return f"num_classes={self.num_classes}, epsilon={self.epsilon}"
