"""Evaluation: distance matrices, the compiled Market-protocol ranker, k-reciprocal re-ranking,
and all three from features a block of queries at a time (``evaluate_features``)."""

from __future__ import annotations

from clusteralign.eval.blockwise import FeatureEvaluation, evaluate_features
from clusteralign.eval.distance import compute_distance_matrix
from clusteralign.eval.rank import (
    EvaluationInputError,
    NoValidQueryError,
    RankingWarning,
    RankResult,
    evaluate_rank,
)
from clusteralign.eval.rerank import ReRankSettings, re_rank, re_rank_features

__all__ = [
    "EvaluationInputError",
    "FeatureEvaluation",
    "NoValidQueryError",
    "RankResult",
    "RankingWarning",
    "ReRankSettings",
    "compute_distance_matrix",
    "evaluate_features",
    "evaluate_rank",
    "re_rank",
    "re_rank_features",
]
