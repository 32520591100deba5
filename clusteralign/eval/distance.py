"""Query x gallery distance matrices, computed in blocks of query rows to bound memory."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from clusteralign.eval.rank import EvaluationInputError

Metric = Literal["euclidean", "cosine"]
METRICS: tuple[str, ...] = ("euclidean", "cosine")


def compute_distance_matrix(
    query: torch.Tensor,
    gallery: torch.Tensor,
    metric: Metric = "euclidean",
    normalize: bool = False,
    max_block_bytes: int = 256 * 2**20,
) -> np.ndarray:
    """Return the (n_query, n_gallery) float32 distance matrix between two feature sets.

    ``metric="euclidean"`` gives the plain (not squared) Euclidean distance, computed as
    ``sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0))``; ``metric="cosine"`` gives ``1 - cos(q, g)``
    clipped to [0, 2]. ``normalize=True`` L2-normalises both sets first (cosine always does).
    Work is split into blocks of query rows so that no intermediate exceeds about
    ``max_block_bytes`` (at least one row at a time), whatever the problem size. Inputs may live on
    the CPU or a CUDA device (both on the same one); the result is always a CPU NumPy array.
    Distances are computed in float64 and stored as float32 (see `prepare_features`).
    """
    check_block_bytes(max_block_bytes)
    q, g, g_sq = prepare_features(query, gallery, metric, normalize)
    n_q, n_g = q.shape[0], g.shape[0]
    out = np.empty((n_q, n_g), dtype=np.float32)
    if n_q == 0 or n_g == 0:
        return out
    out_t = torch.from_numpy(out)
    rows = block_rows(n_g, q.dtype.itemsize, max_block_bytes)
    g_t = g.t()
    for start in range(0, n_q, rows):
        blk = distance_block(q[start : start + rows], g_t, g_sq, metric)
        out_t[start : start + rows].copy_(blk)
        del blk
    return out


def check_block_bytes(max_block_bytes: Any) -> int:
    """``max_block_bytes`` as a positive int, else an error naming it."""
    if (
        isinstance(max_block_bytes, bool)
        or not isinstance(max_block_bytes, int)
        or max_block_bytes <= 0
    ):
        raise EvaluationInputError(
            f"max_block_bytes must be a positive integer, got {max_block_bytes!r}."
        )
    return max_block_bytes


def block_rows(num_columns: int, itemsize: int, max_block_bytes: int) -> int:
    """Rows of a block of ``num_columns`` values of ``itemsize`` bytes within the budget (at least 1)."""
    return max(1, max_block_bytes // max(1, num_columns * itemsize))


def prepare_features(
    query: Any, gallery: Any, metric: Metric, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Checked query and gallery features ready for :func:`distance_block`, and the gallery's squared norms.

    Both come back in float64, the computing dtype, L2-normalised when ``normalize`` is set or the
    metric is cosine; the norms are None for the cosine metric. A matrix product of MKL on the CPU
    may differ in its last bits from one process to the next (its kernels follow memory alignment
    and the split between threads): in float32, gallery entries that close swapped places, and the
    same features gave another mAP in its fifth digit in 2 of 32 processes (measured on the default
    experiment's features). In float64, rounded to float32 for storage, no ranking changed in 32.
    """
    if metric not in METRICS:
        raise ValueError(
            f"Unknown distance metric {metric!r}; expected one of {', '.join(map(repr, METRICS))}."
        )
    q = _as_features(query, "query")
    g = _as_features(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise EvaluationInputError(
            f"query features have dimension {q.shape[1]} but gallery features have dimension "
            f"{g.shape[1]}; both must come from the same model output."
        )
    if q.device != g.device:
        raise EvaluationInputError(
            f"query features are on {q.device} but gallery features are on {g.device}; move both "
            "to the same device first."
        )
    q = q.to(torch.float64)
    g = g.to(torch.float64)
    with torch.no_grad():
        if normalize or metric == "cosine":
            q = F.normalize(q, dim=1)
            g = F.normalize(g, dim=1)
        # Norms via vector_norm avoid a gallery-sized temporary that (g * g) would allocate.
        g_sq = (
            torch.linalg.vector_norm(g, dim=1).square_().unsqueeze(0)
            if metric == "euclidean"
            else None
        )
    return q, g, g_sq


def distance_block(
    q_blk: torch.Tensor,
    g_t: torch.Tensor,
    g_sq: torch.Tensor | None,
    metric: Metric,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distances of prepared query rows to the transposed prepared gallery ``g_t``, into ``out`` if given.

    The same operations in the same order whoever calls it, so a block equals the same rows of
    :func:`compute_distance_matrix` bit for bit when the blocks are cut alike.
    """
    if out is None:
        out = torch.empty((q_blk.shape[0], g_t.shape[1]), dtype=q_blk.dtype, device=q_blk.device)
    with torch.no_grad():
        if metric == "euclidean":
            torch.addmm(g_sq, q_blk, g_t, beta=1.0, alpha=-2.0, out=out)
            out.add_(torch.linalg.vector_norm(q_blk, dim=1, keepdim=True).square_())
            out.clamp_(min=0.0).sqrt_()
        else:
            torch.mm(q_blk, g_t, out=out)
            out.neg_().add_(1.0).clamp_(min=0.0, max=2.0)
    return out


def _as_features(x: Any, name: str) -> torch.Tensor:
    """Validate one feature set and return it as a detached 2-D floating tensor."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise EvaluationInputError(
            f"{name} features must be a torch.Tensor or NumPy array, got {type(x).__name__}."
        )
    if x.dim() != 2:
        raise EvaluationInputError(
            f"{name} features must be a 2-D (num_images, dim) tensor, got shape {tuple(x.shape)}."
        )
    if x.shape[1] == 0:
        raise EvaluationInputError(f"{name} features have dimension 0; expected at least one.")
    if x.is_complex() or x.dtype == torch.bool:
        raise EvaluationInputError(f"{name} features must be real numbers, got dtype {x.dtype}.")
    x = x.detach()
    if not x.is_floating_point():
        x = x.to(torch.float32)
    return x
