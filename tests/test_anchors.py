"""The anchor dictionary: per-identity means, their momentum update, their diagnostics, their loss terms."""

from __future__ import annotations

import pytest
import torch

from clusteralign.config import ConfigError, LossConfig, from_dict
from clusteralign.models.output import ReIDOutput
from clusteralign.train.anchors import compute_anchors, diagnostics, momentum_update
from clusteralign.train.objective import Objective

FEATS = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [10.0, 10.0]])
LABELS = torch.tensor([0, 0, 1, 2])


def test_anchors_are_per_identity_means_or_weighted_means():
    assert torch.equal(compute_anchors(FEATS, LABELS, 3), torch.tensor([[2.0, 1.0], [0.0, 4.0], [10.0, 10.0]]))
    weighted = compute_anchors(FEATS, LABELS, 3, weights=torch.tensor([3.0, 1.0, 0.5, 2.0]))
    assert torch.allclose(weighted[0], torch.tensor([1.5, 0.5])) and torch.equal(weighted[1:], FEATS[2:])


def test_an_identity_without_features_or_diverged_features_are_errors():
    with pytest.raises(ValueError, match=r"no training features for identity label\(s\) \[3\]"):
        compute_anchors(FEATS, LABELS, 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        compute_anchors(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), 1)


def test_momentum_moves_only_the_identities_in_the_batch():
    anchors = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    momentum_update(anchors, FEATS[:3], LABELS[:3], momentum=0.75)
    # identity 0: 0.75 * 0 + 0.25 * mean([1, 0], [3, 2]); identity 1: 0.75 * 1 + 0.25 * [0, 4]; 2 unseen
    assert torch.allclose(anchors, torch.tensor([[0.5, 0.25], [0.75, 1.75], [5.0, 5.0]]))


def test_diagnostics_are_the_mean_distances_to_own_and_nearest_other_anchor():
    anchors = torch.tensor([[0.0, 0.0], [0.0, 4.0]])
    d = diagnostics(torch.tensor([[0.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 1]), anchors)
    assert d == pytest.approx({"anchor_dist_own": 1.0, "anchor_dist_other": 3.0})


def test_a_margin_needs_the_ranking_anchor_loss():
    with pytest.raises(ConfigError, match="loss.anchor_margin: applies to anchor_kind intra_inter only, not 'mse'"):
        from_dict(LossConfig, {"anchor_margin": 0.5}, "loss")
    assert from_dict(LossConfig, {"anchor_margin": 0.5, "anchor_kind": "intra_inter"}).anchor_margin == 0.5


def test_a_multi_branch_model_has_one_anchor_term_per_branch():
    # One anchor term per branch feature, summed like the branches' cross-entropy terms
    # (docs/reference-recipe.md). Branch 1 is 2-d, branch 2 1-d; the anchors are concatenated means.
    objective = Objective(LossConfig(ce_weight=0, triplet_weight=0, anchor_weight=1.0), num_classes=2, branch_feature_dim=3)
    out = ReIDOutput(features=[], embeddings=[torch.tensor([[1.0, 0.0], [2.0, 2.0]]), torch.tensor([[3.0], [4.0]])],
                     logits=[torch.zeros(2, 2)])
    anchors = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 4.0]])
    terms = objective(out, torch.tensor([0, 1]), anchors)
    # Branch 1: mean of (1, 0, 0, 0) squared = 0.25; branch 2: mean of (3, 0) squared = 4.5.
    # The concatenated feature's MSE would be 10 / 6.
    assert terms["anchor"].item() == pytest.approx(0.25 + 4.5)
    assert terms["total"].item() == pytest.approx(4.75)
    # A single-branch model keeps the plain form.
    single = ReIDOutput(features=[], embeddings=[torch.tensor([[1.0, 0.0, 3.0]])], logits=[torch.zeros(1, 2)])
    assert objective(single, torch.tensor([0]), anchors)["anchor"].item() == pytest.approx(10 / 3)
