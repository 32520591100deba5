"""The compiled ranker's per-query statistics, vectorised in torch for any device.

The Cython ranker (``_rank.pyx``) runs on the CPU only. This computes the same three figures
for a block of queries wherever the distances are, a GPU included: each row is sorted stably
(ties keep gallery order, as the Cython ranker breaks them), the protocol's exclusions are
dropped by counting only the kept entries before each position, and AP, INP and the first
match's rank follow from running counts. A full sort costs O(G log G) per query where the
Cython ranker needs O(G); on a GPU that is still a small part of an evaluation.
"""

from __future__ import annotations

import torch

from clusteralign.eval.rank import JUNK_PID


def rank_stats_torch(
    dist: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (first_rank, ap, inp) per query row of ``dist``, as the compiled ``rank_stats`` does.

    All tensors on one device; ids as int64. ``first_rank`` is -1, and AP and INP are 0, for a
    query with no valid match (the compiled ranker's convention).
    """
    with torch.no_grad():
        order = torch.sort(dist, dim=1, stable=True).indices
        pids = g_pids[order]
        same = pids == q_pids[:, None]
        kept = ~((same & (g_camids[order] == q_camids[:, None])) | (pids == JUNK_PID))
        del pids, order
        match = same & kept
        del same
        # Position of each entry among the kept ones: its rank once the exclusions are removed.
        rank = torch.cumsum(kept, dim=1)
        rank.sub_(1)
        del kept
        hits = torch.cumsum(match, dim=1)
        num = hits[:, -1]
        found = num > 0
        beyond = dist.shape[1]
        first = torch.where(match, rank, beyond).amin(dim=1)
        last = torch.where(match, rank, -1).amax(dim=1)
        precision = hits.to(torch.float64).div_(rank.to(torch.float64).add_(1.0))
        ap = torch.where(match, precision, 0.0).sum(dim=1) / num.clamp(min=1)
        inp = num.to(torch.float64) / (last + 1).clamp(min=1)
        first = torch.where(found, first, -1)
        ap = torch.where(found, ap, 0.0)
        inp = torch.where(found, inp, 0.0)
    return first, ap, inp
