"""k-reciprocal neighbour sets from each point's nearest neighbours (steps 1-2 of re-ranking).

Everything here works on ``nearest``, the (n, >= k1 + 1) table of each point's nearest points
(itself included) in stable order, a few dozen indices per point, never on distances. It is
vectorised in torch over blocks of points, so the same code runs on the CPU or a GPU.
"""

from __future__ import annotations

import torch

# Points handled at once; the largest temporary is points x (k1 + 1)^2 x (k1 / 2 + 1) booleans.
_POINT_BLOCK = 2048


def reciprocal_mask(nearest: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k + 1) booleans: whether ``nearest[p, a]`` is in ``R(p, k)``.

    ``R(p, k)`` holds the members g of ``N(p, k)``, p's k + 1 nearest, with p in ``N(g, k)``.
    """
    forward = nearest[:, : k + 1]
    mask = torch.empty(forward.shape, dtype=torch.bool, device=nearest.device)
    for start in range(0, len(nearest), _POINT_BLOCK):
        stop = min(start + _POINT_BLOCK, len(nearest))
        back = forward[forward[start:stop]]  # back[p, a] = N(p's a-th neighbour, k)
        me = torch.arange(start, stop, device=nearest.device)[:, None, None]
        mask[start:stop] = (back == me).any(dim=2)
    return mask


def expanded_sets(nearest: torch.Tensor, k1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``R*(p, k1)`` of every p as (counts, members): members sorted within each point, concatenated.

    ``R*(p, k1)`` is ``R(p, k1)`` joined with every ``R(c, round(k1 / 2))`` (half to even), c in
    ``R(p, k1)``, of which more than two thirds of the members are in ``R(p, k1)``.
    """
    half = round(k1 / 2)
    base_mask = reciprocal_mask(nearest, k1)
    half_mask = reciprocal_mask(nearest, half)
    counts, members = [], []
    for start in range(0, len(nearest), _POINT_BLOCK):
        stop = min(start + _POINT_BLOCK, len(nearest))
        c, m = _expand_block(nearest, base_mask, half_mask, k1, half, start, stop)
        counts.append(c)
        members.append(m)
    return torch.cat(counts), torch.cat(members)


def _expand_block(
    nearest: torch.Tensor,
    base_mask: torch.Tensor,
    half_mask: torch.Tensor,
    k1: int,
    half: int,
    start: int,
    stop: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``R*(p, k1)`` for points start..stop, as in :func:`expanded_sets`."""
    forward = nearest[start:stop, : k1 + 1]
    in_base = base_mask[start:stop]
    base = torch.where(in_base, forward, -1)  # R(p, k1), -1 where not a member
    cand = nearest[forward, : half + 1]  # N(c, half) of each c = forward[p, a]
    cand_in = half_mask[forward]  # ... and which of those are in R(c, half)
    # |R(c, half) & R(p, k1)|; the members of each set are distinct, so this counts the overlap.
    shared = ((cand[..., None] == base[:, None, None, :]).any(dim=3) & cand_in).sum(dim=2)
    size = cand_in.sum(dim=2)
    joined = in_base & (shared.to(torch.float64) > (2.0 / 3.0) * size.to(torch.float64))
    extra = torch.where(joined[..., None] & cand_in, cand, -1).flatten(1)
    every = torch.sort(torch.cat([base, extra], dim=1), dim=1).values
    # A member is kept once: where it differs from its left neighbour; -1 marks no member.
    first = torch.ones_like(every, dtype=torch.bool)
    first[:, 1:] = every[:, 1:] != every[:, :-1]
    keep = first & (every >= 0)
    return keep.sum(dim=1), every[keep]
