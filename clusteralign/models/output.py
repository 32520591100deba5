"""What every model family's forward pass returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ReIDOutput:
    """Outputs of one forward pass; lists have one entry per branch (one for the baseline).

    Attributes:
        features: pooled features before the neck (f_t), used by the triplet loss.
        embeddings: features after the neck (f_i), used by the anchor loss and at test time.
        logits: identity classifier outputs, used by the cross-entropy loss.
        aux_losses: regularisers a family adds to the total loss as they are (already weighted).
    """

    features: list[torch.Tensor]
    embeddings: list[torch.Tensor]
    logits: list[torch.Tensor]
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)

    def embedding(self) -> torch.Tensor:
        """The test feature: branch embeddings concatenated (B x D)."""
        return self.embeddings[0] if len(self.embeddings) == 1 else torch.cat(self.embeddings, dim=1)

    def detach(self) -> "ReIDOutput":
        """The same outputs cut from the autograd graph, which they would otherwise keep alive."""
        return ReIDOutput([f.detach() for f in self.features], [e.detach() for e in self.embeddings],
                          [lg.detach() for lg in self.logits], {k: v.detach() for k, v in self.aux_losses.items()})
