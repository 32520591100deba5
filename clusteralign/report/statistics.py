"""Is a difference between two arms real? Confidence intervals of paired differences.

Two arms of one experiment (stage 2 and its control, say) are compared pairwise:

- over replicates (each replicate trains both arms from the same seed), with Student's t
  interval of the mean paired difference, n - 1 degrees of freedom;
- within a single run, with a paired bootstrap over queries: queries are drawn with
  replacement, the same draw for both arms, and the metric's difference recomputed on each
  draw (percentile interval). It measures how much the result depends on which queries the
  test split happens to hold, not how much training varies from seed to seed: replicates do.

Metrics are fractions here (as in metrics.json); per-query values come from per_query.csv
(`first_rank` 0-based, -1 for a query without a true match; `ap` and `inp`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# The metrics a bootstrap can recompute from per-query values.
PER_QUERY_METRICS: tuple[str, ...] = ("R1", "mAP", "mINP")
BOOTSTRAP_DRAWS = 1000
BOOTSTRAP_SEED = 0
LEVEL = 0.95


class StatisticsInputError(ValueError):
    """The values handed to a comparison do not pair up."""


@dataclass(frozen=True)
class Interval:
    """A difference (arm b − arm a) with its confidence interval, all fractions."""

    estimate: float
    low: float
    high: float
    # "t" (Student t over replicates) or "bootstrap" (paired bootstrap over queries).
    method: str
    # Replicates (t) or queries (bootstrap) the interval rests on.
    n: int
    level: float = LEVEL

    @property
    def excludes_zero(self) -> bool:
        """Whether the difference is distinguishable from zero at this level."""
        return self.low > 0 or self.high < 0


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1); the deviation is NaN for a single value."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise StatisticsInputError("mean_sd needs at least one value")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def t_interval(differences: Sequence[float], level: float = LEVEL) -> Interval:
    """Student t interval of the mean of paired differences (one per replicate, at least two)."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        raise StatisticsInputError(f"a t interval needs at least 2 paired differences, got {d.size}")
    if not np.isfinite(d).all():
        raise StatisticsInputError(f"paired differences must be finite, got {d.tolist()}")
    mean, sd = mean_sd(d)
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * sd / math.sqrt(d.size)
    return Interval(mean, mean - half, mean + half, "t", int(d.size), level)


def per_query_values(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """Each query's contribution to `metric` (R1: a hit at rank 1; mAP: AP; mINP: INP); NaN when skipped."""
    valid = frame["first_rank"].to_numpy() >= 0
    if metric == "R1":
        values = (frame["first_rank"].to_numpy() == 0).astype(np.float64)
    elif metric in ("mAP", "mINP"):
        values = frame["ap" if metric == "mAP" else "inp"].to_numpy(dtype=np.float64)
    else:
        raise StatisticsInputError(f"no per-query values for metric {metric!r}; known: {', '.join(PER_QUERY_METRICS)}")
    return np.where(valid, values, np.nan)


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """The queries both arms scored; they must be the same queries in the same order."""
    if len(a) != len(b) or not (a["path"].to_numpy() == b["path"].to_numpy()).all():
        raise StatisticsInputError(
            f"the two arms were evaluated on different queries ({len(a)} and {len(b)} rows, or other files); "
            "a paired comparison needs the same query set"
        )
    valid_a, valid_b = a["first_rank"].to_numpy() >= 0, b["first_rank"].to_numpy() >= 0
    if not (valid_a == valid_b).all():
        raise StatisticsInputError("the two arms skipped different queries; both must be ranked against the same gallery")
    return valid_a


def bootstrap_interval(a: pd.DataFrame, b: pd.DataFrame, metric: str, draws: int = BOOTSTRAP_DRAWS,
                       seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> Interval:
    """Paired bootstrap over queries of `metric`(b) − `metric`(a), from two arms' per-query tables."""
    if draws < 1:
        raise StatisticsInputError(f"draws must be at least 1, got {draws}")
    valid = _paired(a, b)
    diff = (per_query_values(b, metric) - per_query_values(a, metric))[valid]
    if diff.size == 0:
        raise StatisticsInputError("no query has a true match in both arms; nothing to compare")
    rng = np.random.default_rng(seed)
    # One (draws x queries) index table: the same resampled queries for both arms of each draw.
    means = diff[rng.integers(0, diff.size, size=(draws, diff.size))].mean(axis=1)
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(diff.mean()), float(low), float(high), "bootstrap", int(diff.size), level)
