"""Losses against hand-computed values on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clusteralign.losses import (
    AnchorLoss,
    CenterLoss,
    CrossEntropyLabelSmooth,
    TripletBatchError,
    TripletLoss,
    anchor_distances,
    euclidean_dist,
    hard_example_mining,
)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


# 1-D points 0, 1 (label 0) and 3, 7 (label 1): hardest positive / negative per sample
# are (1, 3), (1, 2), (4, 2), (4, 6).
POINTS = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
POINT_LABELS = torch.tensor([0, 0, 1, 1])


def test_euclidean_dist_matches_hand_values() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 0.0], [6.0, 8.0], [3.0, 0.0]])
    expected = torch.tensor([[0.0, 10.0, 3.0], [5.0, 5.0, 4.0]])
    assert torch.allclose(euclidean_dist(x, y), expected, atol=1e-5)


def test_hard_example_mining_hand_values() -> None:
    dist = euclidean_dist(POINTS, POINTS)
    dist_ap, dist_an = hard_example_mining(dist, POINT_LABELS)
    assert torch.allclose(dist_ap, torch.tensor([1.0, 1.0, 4.0, 4.0]), atol=1e-5)
    assert torch.allclose(dist_an, torch.tensor([3.0, 2.0, 2.0, 6.0]), atol=1e-5)


def test_hard_example_mining_unequal_group_sizes_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(9, 5, generator=g)
    labels = torch.tensor([2, 2, 2, 2, 5, 5, 7, 7, 7])
    dist_ap, dist_an = hard_example_mining(euclidean_dist(feats, feats), labels)
    for i in range(9):
        d = [(feats[i] - feats[j]).norm().item() for j in range(9)]
        ap = max(d[j] for j in range(9) if j != i and labels[j] == labels[i])
        an = min(d[j] for j in range(9) if labels[j] != labels[i])
        assert dist_ap[i].item() == pytest.approx(ap, abs=1e-4)
        assert dist_an[i].item() == pytest.approx(an, abs=1e-4)


def test_triplet_hinge_hand_value() -> None:
    loss = TripletLoss(margin=0.3)(POINTS, POINT_LABELS)
    # relu(1-3+.3) + relu(1-2+.3) + relu(4-2+.3) + relu(4-6+.3) = 2.3, over 4 samples.
    assert loss.item() == pytest.approx(2.3 / 4, abs=1e-5)


def test_triplet_soft_margin_hand_value() -> None:
    loss = TripletLoss(margin=None)(POINTS, POINT_LABELS)
    expected = (softplus(-2) + softplus(-1) + softplus(2) + softplus(-2)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_triplet_normalize_feature_is_scale_invariant() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 6, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    crit = TripletLoss(margin=0.3, normalize_feature=True)
    assert crit(feats, labels).item() == pytest.approx(crit(feats * 7.5, labels).item(), abs=1e-5)
    # Without normalisation the scale matters.
    plain = TripletLoss(margin=0.3)
    assert plain(feats, labels).item() != pytest.approx(plain(feats * 7.5, labels).item(), abs=1e-3)


def test_triplet_gradient_finite_for_identical_vectors() -> None:
    feats = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = TripletLoss(margin=0.3)(feats, labels)
    loss.backward()
    assert loss.item() == pytest.approx(0.3, abs=1e-4)
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


def test_triplet_gradient_flows_to_features() -> None:
    feats = POINTS.clone().requires_grad_(True)
    TripletLoss(margin=0.3)(feats, POINT_LABELS).backward()
    # Only sample 2's triplet is active (anchor 3, positive 7, negative 1): d/dx of
    # (|x2 - x3| - |x2 - x1|) / 4 for the anchor, and the pair members get their share.
    expected = torch.tensor([[0.0], [0.25], [-0.25 - 0.25], [0.25]])
    assert torch.allclose(feats.grad, expected, atol=1e-5)


def test_triplet_errors_name_the_sample() -> None:
    with pytest.raises(TripletBatchError, match=r"sample 2 \(label 9\).*no positive"):
        TripletLoss()(torch.randn(3, 4), torch.tensor([1, 1, 9]))
    with pytest.raises(TripletBatchError, match=r"sample 0 \(label 4\).*no negative"):
        TripletLoss()(torch.randn(3, 4), torch.tensor([4, 4, 4]))
    with pytest.raises(ValueError, match="labels of shape"):
        hard_example_mining(torch.zeros(3, 3), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-1.0)


def test_unchecked_mining_marks_bad_samples_with_nan() -> None:
    feats = torch.tensor([[0.0], [1.0], [5.0]])
    dist_ap, dist_an = hard_example_mining(euclidean_dist(feats, feats), torch.tensor([1, 1, 9]), check=False)
    assert torch.allclose(dist_ap[:2], torch.tensor([1.0, 1.0]), atol=1e-5) and torch.isnan(dist_ap[2])
    assert torch.allclose(dist_an, torch.tensor([5.0, 4.0, 4.0]), atol=1e-5)
    loss = TripletLoss(check_batch=False)(feats, torch.tensor([1, 1, 9]))
    assert torch.isnan(loss)
    good_batch = TripletLoss(check_batch=False)(POINTS, POINT_LABELS)
    assert good_batch.item() == pytest.approx(2.3 / 4, abs=1e-5)


def test_label_smooth_equals_cross_entropy_without_smoothing() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(10, 7, generator=g)
    labels = torch.randint(0, 7, (10,), generator=g)
    ours = CrossEntropyLabelSmooth(num_classes=7, epsilon=0.0)(logits, labels)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)


def test_label_smooth_hand_value_and_torch_equivalence() -> None:
    # probabilities (0.25, 0.75); smoothed target for label 1 with eps 0.1, C 2: (0.05, 0.95).
    logits = torch.tensor([[0.0, math.log(3.0)]])
    loss = CrossEntropyLabelSmooth(num_classes=2, epsilon=0.1)(logits, torch.tensor([1]))
    expected = -(0.05 * math.log(0.25) + 0.95 * math.log(0.75))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 5, generator=g)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    ours = CrossEntropyLabelSmooth(num_classes=5, epsilon=0.1)(logits, labels)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(), abs=1e-6)


def test_label_smooth_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        CrossEntropyLabelSmooth(num_classes=5)(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="epsilon"):
        CrossEntropyLabelSmooth(num_classes=5, epsilon=1.5)


def test_center_loss_hand_value_and_center_gradient() -> None:
    crit = CenterLoss(num_classes=3, feat_dim=2)
    with torch.no_grad():
        crit.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    feats = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    labels = torch.tensor([0, 1])
    loss = crit(feats, labels)
    # squared distances 25 and 1, batch mean (reference convention, no 1/2 factor).
    assert loss.item() == pytest.approx(13.0, abs=1e-5)
    loss.backward()
    grad = crit.centers.grad
    assert torch.allclose(grad[0], torch.tensor([-3.0, -4.0]))  # d/dc of ||f-c||^2 / 2 samples
    assert torch.allclose(grad[1], torch.tensor([0.0, -1.0]))
    assert torch.equal(grad[2], torch.zeros(2))


def test_center_loss_init_is_seeded() -> None:
    a, b, c = CenterLoss(4, 3, seed=5), CenterLoss(4, 3, seed=5), CenterLoss(4, 3, seed=6)
    assert torch.equal(a.centers, b.centers)
    assert not torch.equal(a.centers, c.centers)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        a(torch.zeros(2, 5), torch.tensor([0, 1]))


ANCHORS_1D = torch.tensor([[0.0], [10.0], [4.0]])
FEATS_1D = torch.tensor([[1.0], [3.0]])
LABELS_1D = torch.tensor([0, 0])


def test_anchor_mse_and_l1_hand_values() -> None:
    anchors = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    feats = torch.tensor([[1.0, -1.0], [2.0, 5.0]])
    labels = torch.tensor([0, 1])
    mse = AnchorLoss("mse")(feats, labels, anchors)
    assert mse.item() == pytest.approx((1 + 1 + 0 + 9) / 4, abs=1e-6)
    assert mse.item() == pytest.approx(F.mse_loss(feats, anchors[labels]).item(), abs=1e-6)
    l1 = AnchorLoss("l1")(feats, labels, anchors)
    assert l1.item() == pytest.approx((1 + 1 + 0 + 3) / 4, abs=1e-6)


def test_anchor_distances_hand_values() -> None:
    own, other = anchor_distances(FEATS_1D, LABELS_1D, ANCHORS_1D)
    assert torch.allclose(own, torch.tensor([1.0, 3.0]), atol=1e-5)
    assert torch.allclose(other, torch.tensor([3.0, 1.0]), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 anchors"):
        anchor_distances(FEATS_1D, LABELS_1D, ANCHORS_1D[:1])


def test_anchor_intra_inter_hand_values() -> None:
    soft = AnchorLoss("intra_inter")(FEATS_1D, LABELS_1D, ANCHORS_1D)
    # d_own (1, 3), d_other (3, 1): mean d_own 2 plus mean softplus(-2), softplus(2).
    assert soft.item() == pytest.approx(2.0 + (softplus(-2) + softplus(2)) / 2, abs=1e-5)
    hinge = AnchorLoss("intra_inter", margin=0.5)(FEATS_1D, LABELS_1D, ANCHORS_1D)
    assert hinge.item() == pytest.approx(2.0 + (0.0 + 2.5) / 2, abs=1e-5)


def test_anchor_gradient_finite_at_the_anchor() -> None:
    feats = ANCHORS_1D[:2].clone().requires_grad_(True)
    loss = AnchorLoss("intra_inter")(feats, torch.tensor([0, 1]), ANCHORS_1D)
    loss.backward()
    assert torch.isfinite(feats.grad).all()


@pytest.mark.parametrize("kind", ["mse", "l1", "intra_inter"])
def test_anchors_receive_no_gradient(kind: str) -> None:
    anchors = torch.randn(4, 3, requires_grad=True)
    feats = torch.randn(5, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0])
    crit = AnchorLoss(kind)  # type: ignore[arg-type]
    crit(feats, labels, anchors).backward()
    assert anchors.grad is None
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert [name for name, _ in crit.named_parameters()] == [] and crit.state_dict() == {}


def test_anchor_loss_errors() -> None:
    with pytest.raises(ValueError, match="only applies to kind 'intra_inter'"):
        AnchorLoss("mse", margin=0.3)
    with pytest.raises(ValueError, match="kind must be one of"):
        AnchorLoss("cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(num_identities, 3\)"):
        AnchorLoss("mse")(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(4, 5))
