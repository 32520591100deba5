"""Sparse k-reciprocal weight vectors and their Jaccard overlaps (steps 3-5 of re-ranking).

Each point's weight vector V_p has a few dozen non-zeros, so the n x n matrix V is kept as
compressed rows (``SparseRows``) and the overlaps ``sum_g min(V_p, V_q)`` of a block of queries
with the whole gallery are accumulated from the non-zeros they share, never from dense rows.
Torch throughout, so the same code runs on the CPU or a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Non-zero pairs handled at once while expanding or overlapping: bounds the temporaries to
# a few hundred MB whatever the problem size.
_PAIR_CHUNK = 1 << 22
# Rows of V expanded at once (step 4).
_ROW_BLOCK = 8192


@dataclass(frozen=True)
class SparseRows:
    """Compressed sparse rows: row p holds ``values[indptr[p]:indptr[p + 1]]`` at those ``indices``."""

    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor

    @property
    def counts(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    def row_ids(self) -> torch.Tensor:
        """The row of each stored value."""
        rows = torch.arange(len(self.indptr) - 1, device=self.indptr.device)
        return torch.repeat_interleave(rows, self.counts)


def _indptr(counts: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(len(counts) + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, dim=0, out=out[1:])
    return out


def _segments(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated ranges ``starts[i] .. starts[i] + lengths[i]`` (the flat positions they cover)."""
    total = int(lengths.sum())
    offsets = torch.arange(total, device=starts.device)
    offsets -= torch.repeat_interleave(torch.cumsum(lengths, dim=0) - lengths, lengths, output_size=total)
    return offsets.add_(torch.repeat_interleave(starts, lengths, output_size=total))


def _chunks(lengths: torch.Tensor, limit: int) -> list[tuple[int, int]]:
    """Consecutive index ranges whose ``lengths`` add up to about ``limit`` at most (one item at least)."""
    ends = torch.cumsum(lengths, dim=0)
    bounds, start, done = [], 0, 0
    while start < len(lengths):
        stop = int(torch.searchsorted(ends, done + limit, right=True))
        stop = max(stop, start + 1)
        bounds.append((start, stop))
        done = int(ends[stop - 1])
        start = stop
    return bounds


def weights(
    counts: torch.Tensor, members: torch.Tensor, distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> SparseRows:
    """V_p: ``exp(-d(p, g))`` on the members g of ``R*(p)``, scaled to sum to 1 (step 3).

    ``distance(rows, cols)`` gives the row-normalised distances of those pairs in float64.
    """
    rows = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    values = distance(rows, members).neg_().exp_()
    totals = torch.zeros(len(counts), dtype=torch.float64, device=values.device).index_add_(0, rows, values)
    values /= totals[rows]
    return SparseRows(_indptr(counts), members, values)


def expand(v: SparseRows, nearest: torch.Tensor) -> SparseRows:
    """Local query expansion (step 4): row p becomes the mean of the rows of its k2 nearest, ``nearest[p]``."""
    n, k2 = nearest.shape
    counts, indices, values = [], [], []
    for start in range(0, n, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n)
        c, i, x = _expand_rows(v, nearest[start:stop], n, k2)
        counts.append(c)
        indices.append(i)
        values.append(x)
    return SparseRows(_indptr(torch.cat(counts)), torch.cat(indices), torch.cat(values))


def _expand_rows(v: SparseRows, nearest: torch.Tensor, n: int, k2: int) -> tuple[torch.Tensor, ...]:
    """Expanded rows for one block of points: (counts, column indices sorted per row, values)."""
    b = len(nearest)
    lengths = v.counts[nearest].flatten()
    src = _segments(v.indptr[nearest].flatten(), lengths)
    local = torch.repeat_interleave(torch.arange(b, device=nearest.device).repeat_interleave(k2), lengths)
    # Summing the neighbours' entries column by column: one key per (row, column).
    keys, where = torch.unique(local * n + v.indices[src], sorted=True, return_inverse=True)
    sums = torch.zeros(len(keys), dtype=torch.float64, device=keys.device)
    sums.index_add_(0, where, v.values[src] * (1.0 / k2))
    return torch.bincount(keys // n, minlength=b), keys % n, sums


@dataclass(frozen=True)
class GalleryColumns:
    """V's gallery rows grouped by column: for each column c, the gallery images g with V_g[c] != 0."""

    indptr: torch.Tensor
    gallery: torch.Tensor
    values: torch.Tensor

    @classmethod
    def of(cls, v: SparseRows, num_query: int) -> "GalleryColumns":
        rows = v.row_ids()
        in_gallery = rows >= num_query
        cols = v.indices[in_gallery]
        order = torch.sort(cols, stable=True).indices
        n = len(v.indptr) - 1
        return cls(_indptr(torch.bincount(cols, minlength=n)), rows[in_gallery][order] - num_query,
                   v.values[in_gallery][order])


def overlaps(v: SparseRows, columns: GalleryColumns, start: int, stop: int, num_gallery: int) -> torch.Tensor:
    """(stop - start, num_gallery) float64: ``sum_c min(V_p[c], V_g[c])`` for queries p in start..stop."""
    out = torch.zeros((stop - start) * num_gallery, dtype=torch.float64, device=v.values.device)
    lo, hi = int(v.indptr[start]), int(v.indptr[stop])
    rows = torch.repeat_interleave(torch.arange(stop - start, device=out.device), v.counts[start:stop])
    cols, vals = v.indices[lo:hi], v.values[lo:hi]
    # Each query non-zero (p, c) pairs with every gallery non-zero of column c.
    per_entry = columns.indptr[cols + 1] - columns.indptr[cols]
    for a, b in _chunks(per_entry, _PAIR_CHUNK):
        lengths = per_entry[a:b]
        src = _segments(columns.indptr[cols[a:b]], lengths)
        mins = torch.minimum(torch.repeat_interleave(vals[a:b], lengths), columns.values[src])
        slot = torch.repeat_interleave(rows[a:b], lengths) * num_gallery + columns.gallery[src]
        out.index_add_(0, slot, mins)
    return out.view(stop - start, num_gallery)
