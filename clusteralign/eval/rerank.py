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

The weights V are held as sparse rows (each has only a few dozen non-zeros) and the combined
distance matrix is only ever materialised a block of rows at a time: from features
(:class:`ReRanker` over :class:`~clusteralign.eval.rerank_input.FeatureDistances`) memory is the
features, one such block and O((n_query + n_gallery) * k1^2), and the re-ranked query x gallery
distances come a block of queries at a time too. The same torch code runs on the CPU or a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from clusteralign.eval.distance import block_rows, check_block_bytes
from clusteralign.eval.jaccard import GalleryColumns, expand, overlaps, weights
from clusteralign.eval.kreciprocal import expanded_sets
from clusteralign.eval.rank import EvaluationInputError
from clusteralign.eval.rerank_input import FeatureDistances, MatrixDistances

# Bytes of one block of intermediate rows (distances, overlaps), as compute_distance_matrix's.
DEFAULT_BLOCK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ReRankSettings:
    """The paper's parameters: ``k1`` sizes the k-reciprocal sets, ``k2`` the local query expansion
    (1 turns it off), ``lambda_value`` weighs the original distance against the Jaccard distance."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        for name in ("k1", "k2"):
            k = getattr(self, name)
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise EvaluationInputError(f"{name} must be a positive integer, got {k!r}.")
        if not 0.0 <= float(self.lambda_value) <= 1.0:
            raise EvaluationInputError(f"lambda_value must lie in [0, 1], got {self.lambda_value!r}.")


class Distances(Protocol):
    """What re-ranking reads of the combined distance matrix (see clusteralign.eval.rerank_input)."""

    num_query: int
    num_gallery: int

    def scan(self, k: int, keep: int) -> torch.Tensor: ...

    def pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor: ...

    def query_block(self, start: int, stop: int) -> torch.Tensor: ...


class ReRanker:
    """k-reciprocal re-ranked query x gallery distances, a block of queries at a time.

    Building it runs steps 1-4 (one pass over the combined matrix's rows, then sparse work);
    :meth:`block` runs step 5 for queries ``start..stop``. ``rows`` is the block height that keeps
    a block within the byte budget the distances were given.
    """

    def __init__(self, distances: Distances, settings: ReRankSettings, max_block_bytes: int) -> None:
        n_q, n_g = distances.num_query, distances.num_gallery
        n = n_q + n_g
        k1 = min(settings.k1, n - 1)
        k2 = min(settings.k2, n)
        self.distances = distances
        self.lambda_value = float(settings.lambda_value)
        self.num_gallery = n_g
        self.rows = block_rows(n_g, 8, max_block_bytes)
        # R*(p) is drawn from neighbours of p's neighbours, nearly all among p's 3 (k1 + 1) nearest.
        nearest = distances.scan(max(k1 + 1, k2), keep=3 * (k1 + 1))
        counts, members = expanded_sets(nearest, k1)
        v = weights(counts, members, distances.pairs)
        if k2 > 1:
            v = expand(v, nearest[:, :k2])
        self.v = v
        self.columns = GalleryColumns.of(v, n_q)

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Re-ranked distances of queries start..stop to the whole gallery, float32."""
        out = overlaps(self.v, self.columns, start, stop, self.num_gallery)
        # Rows of V sum to 1 (expansion averages such rows), so sum(max) = 2 - sum(min); the
        # Jaccard distance 1 - min / max, in place (1 + -x is 1 - x exactly).
        out.div_(torch.rsub(out, 2.0)).neg_().add_(1.0)
        original = self.distances.query_block(start, stop)
        lam = self.lambda_value
        # (1 - lam) * jaccard + lam * original, rounded as written (no fused multiply-add)
        out.mul_(1.0 - lam).add_(original.mul_(lam))
        return out.to(torch.float32)

    def matrix(self) -> np.ndarray:
        """All blocks as one (n_query, n_gallery) float32 NumPy array."""
        n_q = self.distances.num_query
        out = np.empty((n_q, self.num_gallery), dtype=np.float32)
        for start in range(0, n_q, self.rows):
            stop = min(start + self.rows, n_q)
            out[start:stop] = self.block(start, stop).cpu().numpy()
        return out


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
    distances = MatrixDistances(qg, qq, gg, torch.device("cpu"), DEFAULT_BLOCK_BYTES)
    return ReRanker(distances, ReRankSettings(k1, k2, lambda_value), DEFAULT_BLOCK_BYTES).matrix()


def re_rank_features(
    qf: torch.Tensor,
    gf: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> np.ndarray:
    """Re-rank from features: squared distances of L2-normalised features, as :func:`re_rank` takes them.

    Computed where the features are, a block at a time (:class:`ReRanker`); only the returned
    (n_query, n_gallery) float32 matrix is held whole. For galleries too large for that, take
    :meth:`ReRanker.block` or :func:`clusteralign.eval.blockwise.evaluate_features`.
    """
    settings = ReRankSettings(k1, k2, lambda_value)
    check_block_bytes(max_block_bytes)
    device = qf.device if isinstance(qf, torch.Tensor) else torch.device("cpu")
    distances = FeatureDistances(qf, gf, device, max_block_bytes)
    if distances.num_query == 0 or distances.num_gallery == 0:
        raise EvaluationInputError(
            f"re-ranking needs at least one query and one gallery image, got {distances.num_query} and "
            f"{distances.num_gallery}."
        )
    return ReRanker(distances, settings, max_block_bytes).matrix()


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
    ReRankSettings(k1, k2, lambda_value)
    return qg, qq, gg
