"""The dense-input k-reciprocal re-ranking the project used before the blockwise one, as ground truth.

It reads the three full distance matrices, finds neighbours with NumPy and builds the weights as
a SciPy sparse matrix, an implementation independent of clusteralign.eval's torch code (only
the definitions are shared), fast enough to compare with on a few thousand points.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

_ROW_BLOCK = 1024


def reference_re_rank(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """The (n_query, n_gallery) float32 re-ranked distances of three valid distance matrices."""
    qg, qq, gg = (np.asarray(m) for m in (q_g_dist, q_q_dist, g_g_dist))
    n_q, n_g = qg.shape
    n = n_q + n_g
    k1 = min(k1, n - 1)
    k2 = min(k2, n)

    row_max = np.empty(n, dtype=np.float64)
    row_max[:n_q] = np.maximum(qq.max(axis=1), qg.max(axis=1))
    row_max[n_q:] = np.maximum(qg.max(axis=0), gg.max(axis=1))
    # A row of zeros (all points identical) has nothing to normalise; leave it as zeros.
    row_max[row_max <= 0] = 1.0

    def rows(start: int, stop: int) -> np.ndarray:
        """Rows start..stop of the row-normalised combined matrix, in float64."""
        parts = []
        for r0, r1, top in ((start, min(stop, n_q), True), (max(start, n_q), stop, False)):
            if r0 >= r1:
                continue
            if top:
                blk = np.concatenate([qq[r0:r1], qg[r0:r1]], axis=1)
            else:
                blk = np.concatenate(
                    [qg[:, r0 - n_q : r1 - n_q].T, gg[r0 - n_q : r1 - n_q]], axis=1
                )
            parts.append(blk.astype(np.float64))
        out = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        out /= row_max[start:stop, None]
        return out

    num_neighbours = max(k1 + 1, k2)
    nearest = np.empty((n, num_neighbours), dtype=np.int64)
    for start in range(0, n, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n)
        nearest[start:stop] = _stable_top_k(rows(start, stop), num_neighbours)

    members = _expanded_sets(nearest, k1)
    # Members from a neighbour's set need not be among p's own nearest, so their distances to p
    # come from a second pass over the rows.
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(m) for m in members])
    indices = np.concatenate(members)
    data = np.empty(len(indices), dtype=np.float64)
    for start in range(0, n, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n)
        blk = rows(start, stop)
        for p in range(start, stop):
            w = np.exp(-blk[p - start, members[p]])
            data[indptr[p] : indptr[p + 1]] = w / w.sum()
    weights = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    if k2 > 1:
        # Mean of the weight vectors of each point's k2 nearest neighbours, as a sparse product.
        expand = sp.csr_matrix(
            (
                np.full(n * k2, 1.0 / k2),
                nearest[:, :k2].ravel(),
                np.arange(0, n * k2 + 1, k2),
            ),
            shape=(n, n),
        )
        weights = (expand @ weights).tocsr()
    weights.sort_indices()
    by_column = weights.tocsc()
    by_column.sort_indices()

    result = np.empty((n_q, n_g), dtype=np.float32)
    for i in range(n_q):
        lo, hi = weights.indptr[i], weights.indptr[i + 1]
        cols = weights.indices[lo:hi]
        vals = weights.data[lo:hi]
        sub = by_column[:, cols]
        # Each stored entry of `sub` is V[j, cols[c]]; pair it with V[i, cols[c]].
        col_of_entry = np.repeat(np.arange(len(cols)), np.diff(sub.indptr))
        mins = np.minimum(sub.data, vals[col_of_entry])
        overlap = np.bincount(sub.indices, weights=mins, minlength=n)[n_q:]
        # Rows of V sum to 1 (expansion averages such rows), so sum(max) = 2 - sum(min).
        jaccard = 1.0 - overlap / (2.0 - overlap)
        original = qg[i].astype(np.float64) / row_max[i]
        result[i] = (1.0 - lambda_value) * jaccard + lambda_value * original
    return result


def _stable_top_k(block: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest entries of each row, ordered as a stable argsort would."""
    if k >= block.shape[1]:
        return np.argsort(block, axis=1, kind="stable")[:, :k]
    part = np.partition(block, k - 1, axis=1)
    kth = part[:, k - 1]
    out = np.empty((block.shape[0], k), dtype=np.int64)
    for r in range(block.shape[0]):
        # Everything up to the k-th value, in index order, so a stable sort breaks ties by index.
        cand = np.flatnonzero(block[r] <= kth[r])
        out[r] = cand[np.argsort(block[r, cand], kind="stable")[:k]]
    return out


def _reciprocal_sets(nearest: np.ndarray, k: int) -> list[np.ndarray]:
    """``R(p, k)`` for every p: members of p's k + 1 nearest whose own k + 1 nearest contain p."""
    forward = nearest[:, : k + 1]
    back = forward[forward]  # back[p, a] = the k + 1 nearest of p's a-th neighbour
    reciprocal = (back == np.arange(len(nearest))[:, None, None]).any(axis=2)
    return [forward[p][reciprocal[p]] for p in range(len(nearest))]


def _expanded_sets(nearest: np.ndarray, k1: int) -> list[np.ndarray]:
    """``R*(p, k1)`` for every p, as sorted index arrays (step 2)."""
    n = nearest.shape[0]
    recip = _reciprocal_sets(nearest, k1)
    recip_half = _reciprocal_sets(nearest, int(np.around(k1 / 2.0)))
    in_base = np.zeros(n, dtype=bool)  # membership marks for R(p, k1), reset after each p
    out = []
    for p in range(n):
        base = recip[p]
        in_base[base] = True
        parts = [base]
        for c in base:
            cand = recip_half[c]
            if np.count_nonzero(in_base[cand]) > 2.0 / 3.0 * len(cand):
                parts.append(cand)
        in_base[base] = False
        out.append(np.unique(np.concatenate(parts)) if len(parts) > 1 else np.sort(base))
    return out
