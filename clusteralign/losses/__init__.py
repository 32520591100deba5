"""Training losses: batch-hard triplet, label-smoothed cross-entropy, centre loss, anchor losses."""

from __future__ import annotations

from clusteralign.losses.anchor import AnchorKind, AnchorLoss, anchor_distances
from clusteralign.losses.center import CenterLoss
from clusteralign.losses.cross_entropy import CrossEntropyLabelSmooth
from clusteralign.losses.triplet import TripletBatchError, TripletLoss, euclidean_dist, hard_example_mining

__all__ = [
    "AnchorKind",
    "AnchorLoss",
    "CenterLoss",
    "CrossEntropyLabelSmooth",
    "TripletBatchError",
    "TripletLoss",
    "anchor_distances",
    "euclidean_dist",
    "hard_example_mining",
]
