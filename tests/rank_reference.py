"""A slow, plain NumPy Market-protocol evaluation, used only as ground truth in tests.

It sorts every query's full distance row (stably, so ties keep gallery order), removes the
same-identity same-camera entries and junk, and then accumulates CMC, AP and INP exactly as
the classic per-query loop does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ReferenceResult:
    """Metrics from the reference loop."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int
    num_skipped: int
    # Per query: 0-based rank of the first true match (-1 skipped), AP and INP (NaN skipped).
    first_rank: np.ndarray
    ap: np.ndarray
    inp: np.ndarray


def reference_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> ReferenceResult:
    """Evaluate by a full stable argsort of each row; ``max_rank`` is capped at the gallery size."""
    n_q, n_g = distmat.shape
    max_rank = min(max_rank, n_g)
    all_cmc = []
    all_ap = []
    all_inp = []
    first_rank = np.full(n_q, -1, dtype=np.int64)
    per_ap = np.full(n_q, np.nan)
    per_inp = np.full(n_q, np.nan)
    for q in range(n_q):
        order = np.argsort(distmat[q], kind="stable")
        pids = g_pids[order]
        cams = g_camids[order]
        removed = ((pids == q_pids[q]) & (cams == q_camids[q])) | (pids == -1)
        matches = (pids[~removed] == q_pids[q]).astype(np.int64)
        if not matches.any():
            continue
        cmc = matches.cumsum()
        cmc[cmc > 1] = 1
        # A query whose filtered ranking is shorter than max_rank has found its match by then.
        padded = np.ones(max_rank, dtype=np.float64)
        n = min(max_rank, len(cmc))
        padded[:n] = cmc[:n]
        all_cmc.append(padded)

        num_rel = matches.sum()
        hits = matches.cumsum()
        precision = hits / (np.arange(len(hits)) + 1.0)
        all_ap.append((precision * matches).sum() / num_rel)
        hardest = np.flatnonzero(matches)[-1]
        all_inp.append(hits[hardest] / (hardest + 1.0))
        first_rank[q] = np.flatnonzero(matches)[0]
        per_ap[q], per_inp[q] = all_ap[-1], all_inp[-1]
    num_valid = len(all_cmc)
    if num_valid == 0:
        raise ValueError("reference_rank: no query has a valid match")
    return ReferenceResult(
        cmc=np.mean(all_cmc, axis=0),
        mAP=float(np.mean(all_ap)),
        mINP=float(np.mean(all_inp)),
        num_valid=num_valid,
        num_skipped=n_q - num_valid,
        first_rank=first_rank,
        ap=per_ap,
        inp=per_inp,
    )
