"""Evaluation: distance matrices, the compiled Market-protocol ranker, k-reciprocal re-ranking."""

from __future__ import annotations

from clusteralign.eval.distance import compute_distance_matrix
from clusteralign.eval.rank import (
    EvaluationInputError,
    NoValidQueryError,
    RankingWarning,
    RankResult,
    evaluate_rank,
)
from clusteralign.eval.rerank import re_rank, re_rank_features

__all__ = [
    "EvaluationInputError",
    "NoValidQueryError",
    "RankResult",
    "RankingWarning",
    "compute_distance_matrix",
    "evaluate_rank",
    "re_rank",
    "re_rank_features",
]
