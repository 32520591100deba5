"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017).

For the combined set P = queries + gallery, with each row of the combined distance matrix divided
by its maximum:

1. ``N(p, k)``: the k + 1 nearest members of P to p (p itself included), ties kept in index order;
   ``R(p, k)``: the members g of ``N(p, k)`` with p in ``N(g, k)`` (k-reciprocal neighbours).
2. ``R*(p, k1)``: ``R(p, k1)`` joined with every ``R(c, round(k1 / 2))`` (rounding half to even),
   c in ``R(p, k1)``, that shares more than two thirds of its members with ``R(p, k1)``.
3. ``V_p``: Gaussian-kernel weights ``exp(-d(p, g))`` on ``R*(p, k1)``, zero elsewhere, scaled to
   sum to 1.
4. Local query expansion: ``V_p`` is replaced by the mean of ``V_g`` over the k2 nearest g of p.
5. Jaccard distance ``1 - sum_g min(V_p, V_q) / sum_g max(V_p, V_q)``; the result is
   ``(1 - lambda) * Jaccard + lambda * (row-normalised original distance)``.

The weights V are held as a sparse matrix (each row has only a few dozen non-zeros) and the
combined distance matrix is only ever materialised a block of rows at a time, so memory beyond
the three input matrices is one such block plus O((n_query + n_gallery) * k1^2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from clusteralign.eval.distance import compute_distance_matrix
from clusteralign.eval.rank import EvaluationInputError

# Rows of the combined distance matrix handled at once while finding nearest neighbours.
_ROW_BLOCK = 1024


def re_rank(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Return the (n_query, n_gallery) float32 k-reciprocal re-ranked distance matrix.

    The three matrices are taken as given (the original method feeds squared Euclidean
    distances of L2-normalised features; :func:`re_rank_features` does exactly that) and must
    together form a symmetric (n_query + n_gallery) square matrix with non-negative entries.
    ``k1`` sizes the k-reciprocal sets, ``k2`` the local query expansion (1 turns it off), and
    ``lambda_value`` weighs the original distance against the Jaccard distance.
    """
    qg, qq, gg = _check_inputs(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)
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


def re_rank_features(
    qf: torch.Tensor,
    gf: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Re-rank from features: squared distances of L2-normalised features, then :func:`re_rank`."""
    # For unit vectors |q - g|^2 = 2 (1 - cos), and the cosine path is clipped at 0 already.
    q_g = 2.0 * compute_distance_matrix(qf, gf, metric="cosine")
    q_q = 2.0 * compute_distance_matrix(qf, qf, metric="cosine")
    g_g = 2.0 * compute_distance_matrix(gf, gf, metric="cosine")
    return re_rank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value)


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


def _check_inputs(
    q_g_dist: Any, q_q_dist: Any, g_g_dist: Any, k1: int, k2: int, lambda_value: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate shapes and parameters; return the three matrices as NumPy arrays."""
    mats = []
    for name, m in (("q_g_dist", q_g_dist), ("q_q_dist", q_q_dist), ("g_g_dist", g_g_dist)):
        if isinstance(m, torch.Tensor):
            m = m.detach().cpu().numpy()
        arr = np.asarray(m)
        if arr.ndim != 2 or arr.dtype.kind not in "fiu":
            raise EvaluationInputError(
                f"{name} must be a 2-D array of real numbers, got shape {arr.shape} and dtype "
                f"{arr.dtype}."
            )
        mats.append(arr)
    qg, qq, gg = mats
    n_q, n_g = qg.shape
    if n_q == 0 or n_g == 0:
        raise EvaluationInputError(
            f"q_g_dist has shape {qg.shape}; expected at least one query and one gallery image."
        )
    if qq.shape != (n_q, n_q):
        raise EvaluationInputError(
            f"q_q_dist has shape {qq.shape} but q_g_dist has {n_q} query rows; expected ({n_q}, {n_q})."
        )
    if gg.shape != (n_g, n_g):
        raise EvaluationInputError(
            f"g_g_dist has shape {gg.shape} but q_g_dist has {n_g} gallery columns; expected "
            f"({n_g}, {n_g})."
        )
    for name, arr in (("q_g_dist", qg), ("q_q_dist", qq), ("g_g_dist", gg)):
        if not np.isfinite(arr.min()) or not np.isfinite(arr.max()):
            raise EvaluationInputError(
                f"{name} holds NaN or infinite values; distances must be finite."
            )
        if arr.min() < 0:
            raise EvaluationInputError(
                f"{name} holds negative values (minimum {arr.min()}); distances must be non-negative."
            )
    for name, k in (("k1", k1), ("k2", k2)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise EvaluationInputError(f"{name} must be a positive integer, got {k!r}.")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise EvaluationInputError(f"lambda_value must lie in [0, 1], got {lambda_value!r}.")
    return qg, qq, gg
