"""CMC, mAP and mINP under the Market protocol, computed by the compiled ranker.

Protocol (Market-1501's, as open-reid and torchreid evaluate it): for every query, gallery
entries with the same pid *and* the same camid are removed, gallery junk (pid ``-1``) is always
removed, distractors (pid ``0``) stay in the ranking but never match (no query may carry pid
``0``), and equal distances keep gallery order, as a stable sort would (torchreid's unstable
argsort may order ties differently). AP is the mean precision at each true match, without
interpolation, as torchreid and fast-reid compute it (Market-1501's MATLAB code interpolates).
Queries left without any true match are skipped and counted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from clusteralign.eval._rank import rank_stats as _rank_stats
except ImportError as exc:  # pragma: no cover - only reached on a broken install
    # No pure-Python fallback on purpose: a silent slow path hides a broken build.
    raise ImportError(
        "The compiled ranker clusteralign.eval._rank could not be imported "
        f"({exc}). It is built from clusteralign/eval/_rank.pyx when the package is installed: "
        "run `make venv` / pip install -e . (with --no-build-isolation) from the repository "
        "root, then try again."
    ) from exc

# The compiled per-query ranker, also for callers that feed it a distance matrix in blocks of rows.
rank_stats = _rank_stats

JUNK_PID = -1
DISTRACTOR_PID = 0
_REPORTED_RANKS = (1, 5, 10)


class EvaluationInputError(ValueError):
    """Distances, identities or cameras handed to the evaluation are malformed."""


class NoValidQueryError(EvaluationInputError):
    """Not a single query has a true match left in the gallery."""


class RankingWarning(UserWarning):
    """The evaluation ran, but on a problem that differs from what was asked."""


@dataclass(frozen=True, eq=False)
class RankResult:
    """Ranking metrics of one query/gallery evaluation; all values are fractions in [0, 1].

    Beside the averages it keeps each query's own figures, in query order: ``first_rank``, the
    0-based rank of its first true match among the gallery entries the protocol keeps (-1 for a
    skipped query), and its ``ap`` and ``inp`` (NaN for a skipped query). ``to_dict`` leaves
    them out.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int
    num_skipped: int
    first_rank: np.ndarray
    ap: np.ndarray
    inp: np.ndarray

    def __post_init__(self) -> None:
        # The dataclass is frozen; make the arrays read-only too so the result cannot drift.
        for name, dtype in (("cmc", np.float64), ("first_rank", np.int64), ("ap", np.float64),
                            ("inp", np.float64)):
            arr = np.array(getattr(self, name), dtype=dtype)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def to_dict(self) -> dict[str, Any]:
        """Return the metrics as JSON-ready Python scalars; R-k only where k <= len(cmc)."""
        out: dict[str, Any] = {}
        for k in _REPORTED_RANKS:
            if k <= len(self.cmc):
                out[f"R{k}"] = float(self.cmc[k - 1])
        out["mAP"] = float(self.mAP)
        out["mINP"] = float(self.mINP)
        out["num_valid"] = int(self.num_valid)
        out["num_skipped"] = int(self.num_skipped)
        out["cmc"] = [float(v) for v in self.cmc]
        return out


def evaluate_rank(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    num_threads: int = 0,
) -> RankResult:
    """Compute CMC (up to ``max_rank``), mAP and mINP of a query x gallery distance matrix.

    ``distmat`` is an (n_query, n_gallery) array (NumPy or a torch tensor) of finite distances,
    smaller meaning more similar. ``num_threads`` is the number of OpenMP threads; 0 uses the
    OpenMP default (``OMP_NUM_THREADS`` or all cores). Queries without a valid match are
    skipped with a :class:`RankingWarning` giving their count; if none is valid,
    :class:`NoValidQueryError` is raised. ``max_rank`` larger than the gallery is capped, with a
    warning. The result also holds each query's first-match rank, AP and INP.
    """
    check_num_threads(num_threads)
    dist = _as_distmat(distmat)
    n_q, n_g = dist.shape
    qp, gp, qc, gc = check_labels(q_pids, g_pids, q_camids, g_camids, n_q, n_g)
    _check_finite(dist)
    max_rank = _check_max_rank(max_rank, n_g)
    first, ap, inp = _rank_stats(dist, qp, gp, qc, gc, int(num_threads))
    return summarise(first, ap, inp, n_g, max_rank, stacklevel=3)


def check_num_threads(num_threads: Any) -> int:
    """The ranker's OpenMP thread count, else an error naming it."""
    if (
        isinstance(num_threads, bool)
        or not isinstance(num_threads, (int, np.integer))
        or num_threads < 0
    ):
        raise EvaluationInputError(
            f"num_threads must be a non-negative integer (0 = OpenMP default), got {num_threads!r}."
        )
    return int(num_threads)


def check_labels(
    q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, n_q: int, n_g: int, features: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Identity and camera vectors as int64, checked against ``n_q`` queries and ``n_g`` gallery images.

    Messages speak of distmat's rows and columns, or with ``features`` of the feature sets' rows.
    """
    q_of, g_of = (("query features", "rows"), ("gallery features", "rows")) if features else (
        ("distmat", "rows"), ("distmat", "columns"))
    qp = _as_ids(q_pids, "q_pids", n_q, q_of[1], q_of[0])
    qc = _as_ids(q_camids, "q_camids", n_q, q_of[1], q_of[0])
    gp = _as_ids(g_pids, "g_pids", n_g, g_of[1], g_of[0])
    gc = _as_ids(g_camids, "g_camids", n_g, g_of[1], g_of[0])
    _check_pids(qp, gp)
    return qp, gp, qc, gc


def check_max_rank(max_rank: Any, num_gallery: int) -> int:
    """``max_rank`` checked and capped at the gallery size, with a warning when capped."""
    return _check_max_rank(max_rank, num_gallery, stacklevel=4)


def summarise(
    first: np.ndarray, ap: np.ndarray, inp: np.ndarray, num_gallery: int, max_rank: int, stacklevel: int = 2
) -> RankResult:
    """The :class:`RankResult` of the ranker's per-query outputs (``first`` -1 where skipped).

    Warns (at ``stacklevel``) when queries were skipped and raises :class:`NoValidQueryError` when
    all were.
    """
    n_q = len(first)
    valid = first >= 0
    num_valid = int(valid.sum())
    num_skipped = n_q - num_valid
    if num_valid == 0:
        raise NoValidQueryError(
            f"None of the {n_q} queries has a true match in the gallery of {num_gallery} images once "
            "same-identity same-camera entries and junk (pid -1) are removed, so CMC and mAP are "
            "undefined. Check that query and gallery identities overlap and that camera ids are "
            "set (a true match must come from a different camera)."
        )
    if num_skipped:
        warnings.warn(
            f"{num_skipped} of {n_q} queries have no true match in the gallery from another "
            "camera and were skipped; metrics are averaged over the remaining "
            f"{num_valid} queries.",
            RankingWarning,
            stacklevel=stacklevel,
        )
    # first rank >= max_rank only matters as "not within max_rank", so fold it into one bin.
    hits = np.bincount(np.minimum(first[valid], max_rank), minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hits, dtype=np.float64) / num_valid
    return RankResult(
        cmc=cmc,
        mAP=float(ap[valid].mean()),
        mINP=float(inp[valid].mean()),
        num_valid=num_valid,
        num_skipped=num_skipped,
        first_rank=np.where(valid, first, -1),
        ap=np.where(valid, ap, np.nan),
        inp=np.where(valid, inp, np.nan),
    )


def _to_numpy(x: Any) -> np.ndarray:
    """Turn a NumPy array, torch tensor or sequence into an ndarray without copying needlessly."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor; avoids importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_distmat(distmat: Any) -> np.ndarray:
    """Validate the distance matrix and return it C-contiguous as float32 or float64."""
    dist = _to_numpy(distmat)
    if dist.ndim != 2:
        raise EvaluationInputError(
            f"distmat must be a 2-D (num_query, num_gallery) array, got {dist.ndim} dimension(s) "
            f"with shape {dist.shape}."
        )
    n_q, n_g = dist.shape
    if n_q == 0 or n_g == 0:
        raise EvaluationInputError(
            f"distmat has shape {dist.shape}: the query and the gallery must each hold at least "
            "one image."
        )
    kind = dist.dtype.kind
    if kind == "f":
        # float16 widens exactly to float32; anything wider than float32 is kept as float64.
        target = np.float32 if dist.dtype.itemsize <= 4 else np.float64
    elif kind in "iu":
        target = np.float64
    else:
        raise EvaluationInputError(
            f"distmat must hold real numbers (float or integer), got dtype {dist.dtype}."
        )
    return np.ascontiguousarray(dist, dtype=target)


def _as_ids(values: Any, name: str, expected: int, axis: str, against: str = "distmat") -> np.ndarray:
    """Check a pid/camid vector against the distmat axis it labels; return it as int64."""
    arr = _to_numpy(values)
    if arr.ndim != 1:
        raise EvaluationInputError(
            f"{name} must be a 1-D array, got {arr.ndim} dimension(s) with shape {arr.shape}."
        )
    if len(arr) != expected:
        raise EvaluationInputError(
            f"{name} has length {len(arr)} but {against} {'has' if against == 'distmat' else 'have'} "
            f"{expected} {axis}; each {axis[:-1]} of {against} needs exactly one entry in {name}."
        )
    if arr.dtype.kind not in "iu":
        raise EvaluationInputError(f"{name} must hold integers, got dtype {arr.dtype}.")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise EvaluationInputError(f"{name} holds values too large for int64.")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_pids(q_pids: np.ndarray, g_pids: np.ndarray) -> None:
    """Reject junk or distractor queries and gallery pids below the junk marker."""
    bad_q = np.flatnonzero((q_pids == JUNK_PID) | (q_pids == DISTRACTOR_PID) | (q_pids < JUNK_PID))
    if bad_q.size:
        i = int(bad_q[0])
        raise EvaluationInputError(
            f"q_pids[{i}] is {int(q_pids[i])} ({bad_q.size} such queries): query identities must be "
            f"positive, since pid {JUNK_PID} marks junk and pid {DISTRACTOR_PID} marks gallery "
            "distractors, neither of which can be a query under the Market protocol."
        )
    bad_g = np.flatnonzero(g_pids < JUNK_PID)
    if bad_g.size:
        j = int(bad_g[0])
        raise EvaluationInputError(
            f"g_pids[{j}] is {int(g_pids[j])} ({bad_g.size} such entries): gallery identities must "
            f"be non-negative, or {JUNK_PID} for junk."
        )


def _check_finite(dist: np.ndarray) -> None:
    """Raise if any distance is NaN or infinite, naming the first offending cell."""
    # min/max propagate NaN and reveal +-inf without allocating a mask as large as distmat.
    if np.isfinite(dist.min()) and np.isfinite(dist.max()):
        return
    bad = ~np.isfinite(dist)
    i, j = (int(v) for v in np.argwhere(bad)[0])
    raise EvaluationInputError(
        f"distmat holds {int(bad.sum())} non-finite value(s) (NaN or infinity), the first at row "
        f"{i}, column {j} ({dist[i, j]}); distances must be finite. Features with NaN usually "
        "come from a diverged model or an empty normalisation."
    )


def _check_max_rank(max_rank: Any, num_gallery: int, stacklevel: int = 3) -> int:
    """Validate ``max_rank`` and cap it at the gallery size, warning when capped."""
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise EvaluationInputError(f"max_rank must be a positive integer, got {max_rank!r}.")
    if max_rank > num_gallery:
        warnings.warn(
            f"max_rank={max_rank} exceeds the gallery size {num_gallery}; the CMC curve is "
            f"capped at rank {num_gallery}.",
            RankingWarning,
            stacklevel=stacklevel,
        )
        return num_gallery
    return int(max_rank)
