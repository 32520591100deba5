"""Evaluation straight from features, a block of queries at a time, in bounded memory.

Each block of query rows gets its distances to the whole gallery (plain, or k-reciprocal
re-ranked), is ranked at once, and only its per-query results are kept: neither the query x
gallery matrix nor, when re-ranking, the (query + gallery)^2 one is ever held. The ranker's
statistics are independent per query, so the blocks add up to exactly what one call on the
whole matrix gives. Plain distances are cut into the same blocks as
:func:`~clusteralign.eval.distance.compute_distance_matrix` with the same ``max_block_bytes``,
so they are the same numbers bit for bit, and so are the metrics.

On the CPU the compiled ranker ranks each block; on another device (a GPU) the vectorised
torch ranker does, so distances, re-ranking and ranking all stay on the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from clusteralign.eval.distance import (
    Metric,
    block_rows,
    check_block_bytes,
    distance_block,
    prepare_features,
)
from clusteralign.eval.rank import (
    EvaluationInputError,
    RankResult,
    check_labels,
    check_max_rank,
    check_num_threads,
    rank_stats,
    summarise,
)
from clusteralign.eval.rank_torch import rank_stats_torch
from clusteralign.eval.rerank import DEFAULT_BLOCK_BYTES, ReRanker, ReRankSettings
from clusteralign.eval.rerank_input import FeatureDistances

Ranker = Literal["compiled", "torch"]


@dataclass(frozen=True, eq=False)
class FeatureEvaluation:
    """The metrics, and the distance rows of the queries asked to be kept (query index -> float32 row)."""

    result: RankResult
    rows: dict[int, np.ndarray] = field(default_factory=dict)


class _PlainDistances:
    """Query x gallery distances, block by block, cut as compute_distance_matrix cuts them."""

    def __init__(self, query: Any, gallery: Any, metric: Metric, normalize: bool, device: torch.device,
                 max_block_bytes: int) -> None:
        q, g, g_sq = prepare_features(query, gallery, metric, normalize)
        self.q, self.g_t = q.to(device), g.to(device).t()
        self.g_sq = None if g_sq is None else g_sq.to(device)
        self.metric = metric
        self.rows = block_rows(len(g), q.dtype.itemsize, max_block_bytes)

    def block(self, start: int, stop: int) -> torch.Tensor:
        return distance_block(self.q[start:stop], self.g_t, self.g_sq, self.metric).to(torch.float32)


def evaluate_features(
    query: Any,
    gallery: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    metric: Metric = "euclidean",
    normalize: bool = False,
    rerank: ReRankSettings | None = None,
    max_rank: int = 50,
    device: torch.device | str | None = None,
    num_threads: int = 0,
    keep_rows: Iterable[int] = (),
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
    ranker: Ranker | None = None,
) -> FeatureEvaluation:
    """CMC, mAP and mINP of query against gallery features, as ``evaluate_rank`` gives them.

    The same as ``evaluate_rank(compute_distance_matrix(query, gallery, metric, normalize), ...)``
    or, with ``rerank``, as ranking ``re_rank_features``' output, computed a block of queries at
    a time: memory is the features plus blocks of about ``max_block_bytes``. ``device`` (default:
    the query features') is where distances, re-ranking and, off the CPU, ranking run.
    ``ranker`` picks the compiled ranker (CPU only; the default there) or the torch one (the
    default elsewhere). ``keep_rows`` names queries whose distance rows come back in ``rows``.
    """
    check_num_threads(num_threads)
    check_block_bytes(max_block_bytes)
    device = torch.device(device) if device is not None else _device_of(query)
    ranker = ranker or ("compiled" if device.type == "cpu" else "torch")
    if ranker not in ("compiled", "torch"):
        raise EvaluationInputError(f"ranker must be 'compiled' or 'torch', got {ranker!r}.")
    if ranker == "compiled" and device.type != "cpu":
        raise EvaluationInputError(f"the compiled ranker runs on the CPU only, not on {device}; use ranker='torch'.")
    if rerank is not None:
        source = FeatureDistances(query, gallery, device, max_block_bytes)
        n_q, n_g = source.num_query, source.num_gallery
    else:
        source = _PlainDistances(query, gallery, metric, normalize, device, max_block_bytes)
        n_q, n_g = source.q.shape[0], source.g_t.shape[1]
    if n_q == 0 or n_g == 0:
        raise EvaluationInputError(
            f"got {n_q} query and {n_g} gallery features: the query and the gallery must each hold at least "
            "one image."
        )
    labels = check_labels(q_pids, g_pids, q_camids, g_camids, n_q, n_g, features=True)
    _check_finite_features(query, "query")
    _check_finite_features(gallery, "gallery")
    max_rank = check_max_rank(max_rank, n_g)
    keep = sorted({_query_index(i, n_q) for i in keep_rows})
    blocks = ReRanker(source, rerank, max_block_bytes) if rerank is not None else source
    first, ap, inp, rows = _rank_blocks(blocks, n_q, labels, ranker, device, num_threads, keep)
    return FeatureEvaluation(summarise(first, ap, inp, n_g, max_rank, stacklevel=3), rows)


def _rank_blocks(
    blocks: Any, n_q: int, labels: tuple[np.ndarray, ...], ranker: Ranker, device: torch.device, num_threads: int,
    keep: list[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Rank every block of queries; return the per-query outputs and the kept rows."""
    qp, gp, qc, gc = labels
    if ranker == "torch":
        on_device = [torch.from_numpy(a).to(device) for a in labels]
    first = np.empty(n_q, dtype=np.int64)
    ap = np.empty(n_q, dtype=np.float64)
    inp = np.empty(n_q, dtype=np.float64)
    kept: dict[int, np.ndarray] = {}
    for start in range(0, n_q, blocks.rows):
        stop = min(start + blocks.rows, n_q)
        dist = blocks.block(start, stop)
        _check_finite_block(dist, start)
        if ranker == "compiled":
            stats = rank_stats(dist.cpu().numpy(), qp[start:stop], gp, qc[start:stop], gc, num_threads)
        else:
            q_p, g_p, q_c, g_c = on_device
            stats = [t.cpu().numpy() for t in rank_stats_torch(dist, q_p[start:stop], g_p, q_c[start:stop], g_c)]
        first[start:stop], ap[start:stop], inp[start:stop] = stats
        for i in keep:
            if start <= i < stop:
                kept[i] = dist[i - start].cpu().numpy().copy()
        del dist
    return first, ap, inp, kept


def _device_of(features: Any) -> torch.device:
    return features.device if isinstance(features, torch.Tensor) else torch.device("cpu")


def _query_index(i: Any, n_q: int) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n_q:
        raise EvaluationInputError(f"keep_rows holds {i!r}; expected query indices in [0, {n_q}).")
    return int(i)


def _check_finite_features(features: Any, name: str) -> None:
    """Raise, naming the first bad row, if ``features`` hold NaN or infinity."""
    x = torch.as_tensor(features)
    if not x.is_floating_point():
        return
    bad = ~torch.isfinite(x).all(dim=1)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        raise EvaluationInputError(
            f"{name} features hold NaN or infinite values in {int(bad.sum())} row(s), the first at row {row}; "
            "features must be finite. Features with NaN usually come from a diverged model."
        )


def _check_finite_block(dist: torch.Tensor, start: int) -> None:
    """Raise if a block of distances overflowed (finite features can still give an infinite distance)."""
    if bool(torch.isfinite(dist).all()):
        return
    i, j = (int(v) for v in torch.nonzero(~torch.isfinite(dist))[0])
    raise EvaluationInputError(
        f"the distance of query {start + i} to gallery image {j} is {float(dist[i, j])}; distances must be "
        "finite. Features this large overflow float32: scale them down or set normalize."
    )
