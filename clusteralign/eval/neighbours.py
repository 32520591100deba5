"""The k nearest columns of each row of a distance block, in the order a stable argsort gives."""

from __future__ import annotations

import torch


def stable_top_k(block: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` smallest entries of each row, ties ordered by column index.

    Equal to ``argsort(block, stable)[:, :k]`` without sorting whole rows: ``topk`` finds each
    row's k-th smallest value, and only the entries up to it are sorted. Rows whose k-th value
    is shared with entries ``topk`` left out (ties across the cut) take a slower path over all
    their entries up to that value. Works on any device; ``block`` must hold no NaN.
    """
    n_rows, n_cols = block.shape
    if k >= n_cols:
        return torch.sort(block, dim=1, stable=True).indices[:, :k]
    values, indices = torch.topk(block, k, dim=1, largest=False, sorted=True)
    kth = values[:, -1:]
    # topk's choice among values equal to the k-th is arbitrary; such rows are redone below.
    crowded = torch.count_nonzero(block <= kth, dim=1) > k
    # Within the chosen set, order by (value, column): sort by column, then stably by value.
    indices, by_column = torch.sort(indices, dim=1)
    values = values.gather(1, by_column)
    out = indices.gather(1, torch.sort(values, dim=1, stable=True).indices)
    rows = torch.nonzero(crowded).flatten()
    if rows.numel():
        out[rows] = _ties_across_the_cut(block[rows], kth[rows], k)
    return out


def _ties_across_the_cut(block: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """The stable top k of rows with more than k entries at or below their k-th value ``kth``."""
    candidate = block <= kth
    width = int(torch.count_nonzero(candidate, dim=1).max())
    # Each row's candidates, in column order, packed to the left of a (rows, width) table;
    # the padding (infinite distance, after every real candidate) sorts last.
    slot = torch.cumsum(candidate, dim=1) - 1
    row_ids, cols = torch.nonzero(candidate, as_tuple=True)
    packed_cols = torch.full((block.shape[0], width), block.shape[1], dtype=torch.int64, device=block.device)
    packed_vals = torch.full((block.shape[0], width), float("inf"), dtype=block.dtype, device=block.device)
    packed_cols[row_ids, slot[row_ids, cols]] = cols
    packed_vals[row_ids, slot[row_ids, cols]] = block[row_ids, cols]
    order = torch.sort(packed_vals, dim=1, stable=True).indices[:, :k]
    return packed_cols.gather(1, order)
