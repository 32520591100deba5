"""The distances re-ranking reads: the combined (queries + gallery) square matrix, row-normalised.

Re-ranking needs three things of the matrix D over P = queries + gallery, each row divided by
its maximum: each point's nearest points (one pass over all rows), the distances of a few
dozen chosen pairs per point, and the query x gallery block. ``FeatureDistances`` computes
them from features a block of rows at a time and never holds D; ``MatrixDistances`` reads them
from the three given matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from clusteralign.eval.distance import block_rows, distance_block, prepare_features
from clusteralign.eval.neighbours import stable_top_k

# Pairs whose distances are computed at once from features: bounds the gathered feature rows.
_PAIR_BYTES = 64 * 2**20


def _row_scale(row_max: torch.Tensor) -> torch.Tensor:
    """Row maxima in float64; a row of zeros (all points identical) is left as it is."""
    row_max = row_max.to(torch.float64)
    return torch.where(row_max > 0, row_max, 1.0)


class FeatureDistances:
    """Squared Euclidean distances of L2-normalised features, ``2 (1 - cos)``, in float32.

    The values are those of ``2 * compute_distance_matrix(a, b, metric="cosine")``, the input
    of today's re-ranking. Rows come from one matrix product against all points; as each float32
    row is divided by a positive float64 maximum, which keeps distinct values distinct and in
    order, the nearest points are found on the raw rows, in the same pass as the maxima. A pair's
    distance outside each point's kept nearest is computed alone, so it may differ from what the
    matrix product would give in the last bit.
    """

    def __init__(self, query: Any, gallery: Any, device: torch.device, max_block_bytes: int) -> None:
        q, g, _ = prepare_features(query, gallery, "cosine", True)
        self.points = torch.cat([q, g]).to(device)
        self.num_query = len(q)
        self.num_gallery = len(g)
        self.device = device
        self.max_block_bytes = max_block_bytes
        self.row_max: torch.Tensor | None = None

    def _block(self, rows: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        # Stored as float32 whatever the computing dtype, as compute_distance_matrix stores it.
        return distance_block(rows, others.t(), None, "cosine").to(torch.float32).mul_(2.0)

    def scan(self, k: int, keep: int) -> torch.Tensor:
        """Each point's ``k`` nearest points in stable order; sets ``row_max`` on the way.

        The distances to each point's ``keep`` nearest are kept too: :meth:`pairs` reads most of
        what it is asked for there, the very values the neighbours were chosen by.
        """
        n = len(self.points)
        keep = max(k, min(keep, n))
        nearest = torch.empty((n, k), dtype=torch.int64, device=self.device)
        row_max = torch.empty(n, dtype=torch.float32, device=self.device)
        near_cols = torch.empty((n, keep), dtype=torch.int64, device=self.device)
        near_dist = torch.empty((n, keep), dtype=torch.float32, device=self.device)
        step = block_rows(n, 4, self.max_block_bytes)
        for start in range(0, n, step):
            stop = min(start + step, n)
            blk = self._block(self.points[start:stop], self.points)
            row_max[start:stop] = blk.amax(dim=1)
            top = stable_top_k(blk, keep)
            nearest[start:stop] = top[:, :k]
            cols = torch.sort(top, dim=1).values
            near_cols[start:stop] = cols
            near_dist[start:stop] = blk.gather(1, cols)
            del blk
        self.row_max = _row_scale(row_max)
        # One sorted key per kept (point, neighbour) pair: rows ascend, columns ascend within a row.
        rows = torch.arange(n, device=self.device)[:, None]
        self._near_keys = (rows * n + near_cols).flatten()
        self._near_dist = near_dist.flatten()
        return nearest

    def pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Row-normalised distances d(rows[i], cols[i]) in float64."""
        keys = rows * len(self.points) + cols
        at = torch.searchsorted(self._near_keys, keys).clamp_(max=len(self._near_keys) - 1)
        found = self._near_keys[at] == keys
        d = torch.empty(len(rows), dtype=torch.float32, device=self.device)
        d[found] = self._near_dist[at[found]]
        missing = torch.nonzero(~found).flatten()
        d[missing] = self._pair_distances(rows[missing], cols[missing])
        return d.to(torch.float64) / self.row_max[rows]

    def _pair_distances(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Distances of pairs outside the kept neighbours, computed one dot product each."""
        out = torch.empty(len(rows), dtype=torch.float32, device=self.device)
        x = self.points
        step = max(1, _PAIR_BYTES // (2 * x.shape[1] * x.element_size()))
        for start in range(0, len(rows), step):
            r, c = rows[start : start + step], cols[start : start + step]
            dot = (x[r] * x[c]).sum(dim=1)
            out[start : start + step] = dot.neg_().add_(1.0).clamp_(min=0.0, max=2.0).to(torch.float32).mul_(2.0)
        return out

    def query_block(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop of the query x gallery part, row-normalised, in float64."""
        blk = self._block(self.points[start:stop], self.points[self.num_query :])
        return blk.to(torch.float64).div_(self.row_max[start:stop, None])


class MatrixDistances:
    """The same three things read from given query-gallery, query-query and gallery-gallery matrices.

    Rows are normalised in float64 before the nearest points are chosen, exactly as the matrices
    give them; the matrices stay in NumPy and the results go to ``device``.
    """

    def __init__(self, qg: np.ndarray, qq: np.ndarray, gg: np.ndarray, device: torch.device,
                 max_block_bytes: int) -> None:
        self.qg, self.qq, self.gg = qg, qq, gg
        self.num_query, self.num_gallery = qg.shape
        self.device = device
        self.max_block_bytes = max_block_bytes
        row_max = np.empty(self.num_query + self.num_gallery, dtype=np.float64)
        row_max[: self.num_query] = np.maximum(qq.max(axis=1), qg.max(axis=1))
        row_max[self.num_query :] = np.maximum(qg.max(axis=0), gg.max(axis=1))
        self.row_max = _row_scale(torch.from_numpy(row_max)).to(device)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop of the combined matrix, unnormalised, in float64."""
        n_q = self.num_query
        parts = []
        if start < n_q:
            r1 = min(stop, n_q)
            parts.append(np.concatenate([self.qq[start:r1], self.qg[start:r1]], axis=1))
        if stop > n_q:
            r0 = max(start, n_q) - n_q
            parts.append(np.concatenate([self.qg[:, r0 : stop - n_q].T, self.gg[r0 : stop - n_q]], axis=1))
        return np.concatenate(parts, axis=0).astype(np.float64, copy=False)

    def scan(self, k: int, keep: int) -> torch.Tensor:
        """Each point's ``k`` nearest points in stable order (``keep`` serves no purpose here)."""
        n = self.num_query + self.num_gallery
        nearest = torch.empty((n, k), dtype=torch.int64, device=self.device)
        step = block_rows(n, 8, self.max_block_bytes)
        for start in range(0, n, step):
            stop = min(start + step, n)
            blk = torch.from_numpy(self._rows(start, stop)).to(self.device)
            nearest[start:stop] = stable_top_k(blk / self.row_max[start:stop, None], k)
        return nearest

    def pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        r, c = rows.cpu().numpy(), cols.cpu().numpy()
        n_q = self.num_query
        out = np.empty(len(r), dtype=np.float64)
        for in_q_row, in_q_col, mat, flip in ((True, True, self.qq, False), (True, False, self.qg, False),
                                             (False, True, self.qg, True), (False, False, self.gg, False)):
            sel = ((r < n_q) == in_q_row) & ((c < n_q) == in_q_col)
            i = r[sel] - (0 if in_q_row else n_q)
            j = c[sel] - (0 if in_q_col else n_q)
            out[sel] = mat[j, i] if flip else mat[i, j]
        return torch.from_numpy(out).to(self.device) / self.row_max[rows]

    def query_block(self, start: int, stop: int) -> torch.Tensor:
        blk = torch.from_numpy(self.qg[start:stop].astype(np.float64)).to(self.device)
        return blk / self.row_max[start:stop, None]
