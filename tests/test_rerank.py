"""k-reciprocal re-ranking against a loop-by-loop rendering of the paper's definitions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clusteralign.eval import (
    EvaluationInputError,
    RankingWarning,
    evaluate_rank,
    re_rank,
    re_rank_features,
)


def _slow_re_rank(qg, qq, gg, k1, k2, lam):
    """Zhong et al. 2017, written out definition by definition with plain loops."""
    n_q, n_g = qg.shape
    dist = np.block([[qq, qg], [qg.T, gg]]).astype(np.float64)
    n = n_q + n_g
    d = dist / dist.max(axis=1, keepdims=True)
    order = [list(np.argsort(d[p], kind="stable")) for p in range(n)]

    def neighbours(p, k):  # N(p, k): p's k + 1 nearest, itself included
        return order[p][: k + 1]

    def reciprocal(p, k):  # R(p, k)
        return [g for g in neighbours(p, k) if p in neighbours(g, k)]

    v = np.zeros((n, n))
    for p in range(n):
        r_p = reciprocal(p, k1)
        r_star = set(r_p)
        for c in r_p:
            r_c = reciprocal(c, round(k1 / 2))
            if len(set(r_c) & set(r_p)) > 2 / 3 * len(r_c):
                r_star |= set(r_c)
        for g in r_star:
            v[p, g] = np.exp(-d[p, g])
        v[p] /= v[p].sum()

    if k2 > 1:
        expanded = np.zeros_like(v)
        for p in range(n):
            for g in order[p][:k2]:
                expanded[p] += v[g] / k2
        v = expanded

    out = np.zeros((n_q, n_g))
    for i in range(n_q):
        for j in range(n_g):
            a, b = v[i], v[n_q + j]
            jaccard = 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            out[i, j] = (1 - lam) * jaccard + lam * d[i, n_q + j]
    return out


def _clustered(num_ids, per_id_q, per_id_g, dim, noise, seed):
    """Identity centres plus per-camera shift plus noise; returns features, pids and camids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim))
    cam_shift = rng.normal(scale=0.5, size=(4, dim))

    def draw(per_id, cams):
        pids = np.repeat(np.arange(1, num_ids + 1), per_id)
        camids = rng.choice(cams, size=len(pids))
        feats = (
            centres[pids - 1]
            + cam_shift[camids - 1]
            + rng.normal(scale=noise, size=(len(pids), dim))
        )
        return torch.from_numpy(feats).float(), pids, camids

    qf, q_pids, q_camids = draw(per_id_q, [1])
    gf, g_pids, g_camids = draw(per_id_g, [2, 3, 4])
    return qf, q_pids, q_camids, gf, g_pids, g_camids


def _squared_normalised(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (
        torch.cdist(F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)) ** 2
    ).numpy()


@pytest.mark.parametrize(
    ("k1", "k2", "lam"),
    [(20, 6, 0.3), (6, 3, 0.5), (5, 1, 0.0), (9, 4, 1.0)],
)
def test_matches_the_definitions(k1, k2, lam):
    qf, _, _, gf, _, _ = _clustered(num_ids=6, per_id_q=2, per_id_g=5, dim=8, noise=0.6, seed=k1)
    assert (qf.shape[0], gf.shape[0]) == (12, 30)
    qg, qq, gg = (
        _squared_normalised(qf, gf),
        _squared_normalised(qf, qf),
        _squared_normalised(gf, gf),
    )
    ours = re_rank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    assert ours.shape == (12, 30) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _slow_re_rank(qg, qq, gg, k1, k2, lam), rtol=0, atol=1e-5)


def test_matches_the_definitions_with_tied_distances():
    rng = np.random.default_rng(1)
    pts = rng.integers(0, 3, size=(42, 3)).astype(np.float64)  # many duplicate points, many ties
    full = ((pts[:, None] - pts[None]) ** 2).sum(axis=2)
    qg, qq, gg = full[:12, 12:], full[:12, :12], full[12:, 12:]
    ours = re_rank(qg, qq, gg, k1=7, k2=3)
    np.testing.assert_allclose(ours, _slow_re_rank(qg, qq, gg, 7, 3, 0.3), rtol=0, atol=1e-5)


def test_features_entry_point_uses_squared_distances_of_normalised_features():
    qf, _, _, gf, _, _ = _clustered(num_ids=5, per_id_q=2, per_id_g=4, dim=6, noise=0.5, seed=3)
    qf = qf * 9  # scale must not matter, features are normalised first
    from_features = re_rank_features(qf, gf, k1=6, k2=3, lambda_value=0.3)
    qg, qq, gg = (
        _squared_normalised(qf, gf),
        _squared_normalised(qf, qf),
        _squared_normalised(gf, gf),
    )
    np.testing.assert_allclose(from_features, re_rank(qg, qq, gg, k1=6, k2=3), atol=1e-5)


def test_re_ranking_improves_map_on_clustered_data():
    qf, q_pids, q_camids, gf, g_pids, g_camids = _clustered(
        num_ids=25, per_id_q=2, per_id_g=12, dim=32, noise=1.1, seed=0
    )
    qg, qq, gg = (
        _squared_normalised(qf, gf),
        _squared_normalised(qf, qf),
        _squared_normalised(gf, gf),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankingWarning)
        before = evaluate_rank(qg, q_pids, g_pids, q_camids, g_camids)
        after = evaluate_rank(re_rank(qg, qq, gg), q_pids, g_pids, q_camids, g_camids)
    assert 0.2 < before.mAP < 0.9  # a problem with room to improve
    assert after.mAP > before.mAP + 0.03


def test_shape_mismatch_names_the_matrix():
    qg = np.ones((3, 5))
    with pytest.raises(EvaluationInputError, match=r"q_q_dist has shape \(2, 2\)"):
        re_rank(qg, np.ones((2, 2)), np.ones((5, 5)))
    with pytest.raises(EvaluationInputError, match=r"g_g_dist has shape \(4, 4\)"):
        re_rank(qg, np.ones((3, 3)), np.ones((4, 4)))


def test_bad_values_and_parameters_are_errors():
    qg, qq, gg = np.ones((2, 3)), np.zeros((2, 2)), np.zeros((3, 3))
    with pytest.raises(EvaluationInputError, match="negative"):
        re_rank(-qg, qq, gg)
    bad = qg.copy()
    bad[0, 1] = np.nan
    with pytest.raises(EvaluationInputError, match="q_g_dist holds NaN"):
        re_rank(bad, qq, gg)
    with pytest.raises(EvaluationInputError, match="k1"):
        re_rank(qg, qq, gg, k1=0)
    with pytest.raises(EvaluationInputError, match="lambda_value"):
        re_rank(qg, qq, gg, lambda_value=1.5)
