"""Evaluation from features a block of queries at a time: the whole-matrix metrics, in bounded memory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from rank_reference import reference_rank
from rerank_reference import reference_re_rank

from clusteralign.eval import (
    EvaluationInputError,
    RankingWarning,
    RankResult,
    compute_distance_matrix,
    evaluate_rank,
    re_rank_features,
)
from clusteralign.eval import jaccard, kreciprocal, rerank_input
from clusteralign.eval.blockwise import evaluate_features
from clusteralign.eval.distance import block_rows
from clusteralign.eval.rank import rank_stats
from clusteralign.eval.rank_torch import rank_stats_torch
from clusteralign.eval.rerank import ReRankSettings


def _problem(seed: int, n_q: int = 60, n_g: int = 400, dim: int = 24, ids: int = 25, ties: bool = False):
    """Clustered features with junk (-1) and distractors (0) in the gallery, queries without a valid
    match (an identity absent from the gallery, one seen by the query's camera only), and, with
    ``ties``, duplicated gallery images and coarsely quantised features."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids + 3, dim))
    q_pids = rng.integers(1, ids + 1, n_q)
    q_pids[:2] = ids + 1, ids + 2  # identity ids+1: nowhere in the gallery; ids+2: same camera only
    g_pids = rng.integers(-1, ids + 1, n_g)
    q_camids, g_camids = rng.integers(1, 5, n_q), rng.integers(1, 5, n_g)
    g_pids[:3], g_camids[:3] = ids + 2, q_camids[1]
    noise = 1.5 if not ties else 0.6
    qf = centres[q_pids] + rng.normal(size=(n_q, dim)) * noise
    gf = centres[np.maximum(g_pids, 0)] + rng.normal(size=(n_g, dim)) * noise
    if ties:
        qf, gf = np.round(qf), np.round(gf)
        gf[10:20] = gf[20:30]  # exact duplicates at different gallery positions
    return torch.from_numpy(qf).float(), torch.from_numpy(gf).float(), q_pids, g_pids, q_camids, g_camids


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankingWarning)
        return fn(*args, **kwargs)


def _assert_same(ours: RankResult, ref: RankResult) -> None:
    """Bit-identical metrics and per-query results."""
    assert ours.to_dict() == ref.to_dict()
    np.testing.assert_array_equal(ours.first_rank, ref.first_rank)
    np.testing.assert_array_equal(ours.ap, ref.ap)
    np.testing.assert_array_equal(ours.inp, ref.inp)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(("metric", "normalize"), [("euclidean", True), ("euclidean", False), ("cosine", False)])
@pytest.mark.parametrize("block_bytes", [256 * 2**20, 400 * 4 * 7, 1])
def test_blocks_give_exactly_the_whole_matrix_metrics(ties, metric, normalize, block_bytes):
    qf, gf, *labels = _problem(3, ties=ties)
    ours = _quiet(evaluate_features, qf, gf, *labels, metric=metric, normalize=normalize,
                  max_block_bytes=block_bytes)
    dist = compute_distance_matrix(qf, gf, metric=metric, normalize=normalize, max_block_bytes=block_bytes)
    ref = _quiet(evaluate_rank, dist, *labels)
    _assert_same(ours.result, ref)
    assert ours.result.num_skipped == 2 and list(ours.result.first_rank[:2]) == [-1, -1]
    if ties:
        assert len(np.unique(dist[5])) < dist.shape[1]  # the tie-breaking was exercised
    if block_bytes == 256 * 2**20:
        # today's workflow: one call of compute_distance_matrix with its default blocks
        _assert_same(ours.result, _quiet(evaluate_rank, compute_distance_matrix(qf, gf, metric, normalize), *labels))
    else:
        assert block_rows(len(gf), 4, block_bytes) < len(qf)  # several blocks


def test_per_query_results_match_a_plain_loop():
    qf, gf, *labels = _problem(8, ties=True)
    ours = _quiet(evaluate_features, qf, gf, *labels, normalize=True, max_block_bytes=400 * 4 * 5)
    ref = reference_rank(compute_distance_matrix(qf, gf, normalize=True), *labels)
    np.testing.assert_array_equal(ours.result.first_rank, ref.first_rank)
    np.testing.assert_allclose(ours.result.ap, ref.ap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.result.inp, ref.inp, rtol=0, atol=1e-12)


@pytest.mark.parametrize("levels", [None, 3, 50])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_ranker_matches_the_compiled_one_on_the_cpu(levels, dtype):
    rng = np.random.default_rng(0 if levels is None else levels)
    for _ in range(20):
        n_q, n_g = int(rng.integers(1, 30)), int(rng.integers(1, 300))
        q_pids, g_pids = rng.integers(1, 8, n_q), rng.integers(-1, 8, n_g)
        q_camids, g_camids = rng.integers(1, 4, n_q), rng.integers(1, 4, n_g)
        dist = rng.random((n_q, n_g))
        if levels is not None:
            dist = np.round(dist * levels) / levels  # ties between matches and non-matches
        dist = torch.from_numpy(dist).to(dtype)
        compiled = rank_stats(dist.numpy(), q_pids, g_pids, q_camids, g_camids, 0)
        ids = [torch.from_numpy(a) for a in (q_pids, g_pids, q_camids, g_camids)]
        first, ap, inp = (t.numpy() for t in rank_stats_torch(dist, *ids))
        np.testing.assert_array_equal(first, compiled[0])
        np.testing.assert_allclose(ap, compiled[1], rtol=1e-12, atol=0)
        np.testing.assert_allclose(inp, compiled[2], rtol=1e-12, atol=0)


@pytest.mark.parametrize("rerank", [None, ReRankSettings(k1=9, k2=4)])
def test_the_torch_ranker_path_gives_the_compiled_metrics(rerank):
    qf, gf, *labels = _problem(4, ties=True)
    kw = dict(normalize=True, rerank=rerank, max_block_bytes=400 * 8 * 9)
    compiled = _quiet(evaluate_features, qf, gf, *labels, **kw).result
    torch_path = _quiet(evaluate_features, qf, gf, *labels, ranker="torch", **kw).result
    np.testing.assert_array_equal(torch_path.first_rank, compiled.first_rank)
    np.testing.assert_allclose(torch_path.cmc, compiled.cmc, rtol=0, atol=0)
    assert torch_path.mAP == pytest.approx(compiled.mAP, abs=1e-14)
    assert torch_path.mINP == pytest.approx(compiled.mINP, abs=1e-14)


@pytest.fixture
def small_internal_blocks(monkeypatch):
    """Every internal chunk a handful of items, so each loop over blocks runs many times."""
    monkeypatch.setattr(kreciprocal, "_POINT_BLOCK", 7)
    monkeypatch.setattr(jaccard, "_ROW_BLOCK", 11)
    monkeypatch.setattr(jaccard, "_PAIR_CHUNK", 50)
    monkeypatch.setattr(rerank_input, "_PAIR_BYTES", 24 * 4 * 13)


def _squared(a, b):
    return 2.0 * compute_distance_matrix(a, b, metric="cosine")


@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (7, 1, 0.5), (4, 3, 0.0)])
def test_blockwise_re_ranking_equals_the_dense_implementation(small_internal_blocks, k1, k2, lam):
    qf, gf, *labels = _problem(5, n_q=50, n_g=300)
    qg, qq, gg = _squared(qf, gf), _squared(qf, qf), _squared(gf, gf)
    dense = reference_re_rank(qg, qq, gg, k1, k2, lam)
    for block_bytes in (256 * 2**20, 300 * 8 * 6):
        blockwise = re_rank_features(qf, gf, k1, k2, lam, max_block_bytes=block_bytes)
        np.testing.assert_allclose(blockwise, dense, rtol=0, atol=2e-6)
    ours = _quiet(evaluate_features, qf, gf, *labels, rerank=ReRankSettings(k1, k2, lam), max_block_bytes=300 * 8 * 6)
    ref = _quiet(evaluate_rank, dense, *labels)
    np.testing.assert_array_equal(ours.result.first_rank, ref.first_rank)
    assert ours.result.mAP == pytest.approx(ref.mAP, abs=1e-12)


def test_re_ranking_given_matrices_with_ties_equals_the_dense_implementation(small_internal_blocks):
    # Integer points: many exactly equal distances, so every tie rule shows.
    rng = np.random.default_rng(2)
    pts = rng.integers(0, 4, size=(260, 3)).astype(np.float64)
    full = ((pts[:, None] - pts[None]) ** 2).sum(axis=2)
    qg, qq, gg = full[:40, 40:], full[:40, :40], full[40:, 40:]
    from clusteralign.eval import re_rank

    np.testing.assert_allclose(re_rank(qg, qq, gg, k1=12, k2=4), reference_re_rank(qg, qq, gg, 12, 4),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("rerank", [None, ReRankSettings()])
def test_no_block_exceeds_the_byte_budget(monkeypatch, rerank):
    shapes: list[tuple[int, ...]] = []
    for name in ("mm", "addmm"):
        original = getattr(torch, name)

        def recording(*args, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            shapes.append(tuple(out.shape))
            return out

        monkeypatch.setattr(torch, name, recording)
    qf, gf, *labels = _problem(6, n_q=60, n_g=400)
    budget = 460 * 4 * 8  # eight rows of the combined (query + gallery) matrix
    _quiet(evaluate_features, qf, gf, *labels, normalize=True, rerank=rerank, max_block_bytes=budget)
    assert shapes and max(rows * cols * 4 for rows, cols in shapes) <= budget
    assert max(rows for rows, _ in shapes) < 60  # neither the query x gallery nor the square matrix whole


def test_kept_rows_are_the_distance_rows():
    qf, gf, *labels = _problem(7)
    keep = [0, 31, 59]
    plain = _quiet(evaluate_features, qf, gf, *labels, normalize=True, keep_rows=keep, max_block_bytes=400 * 4 * 9)
    dist = compute_distance_matrix(qf, gf, normalize=True, max_block_bytes=400 * 4 * 9)
    assert sorted(plain.rows) == keep
    for i in keep:
        np.testing.assert_array_equal(plain.rows[i], dist[i])
    reranked = _quiet(evaluate_features, qf, gf, *labels, rerank=ReRankSettings(), keep_rows=keep)
    full = re_rank_features(qf, gf)
    for i in keep:
        np.testing.assert_array_equal(reranked.rows[i], full[i])


def test_bad_inputs_are_named():
    qf, gf, q_pids, g_pids, q_camids, g_camids = _problem(1)
    labels = (q_pids, g_pids, q_camids, g_camids)
    with pytest.raises(EvaluationInputError, match="g_pids has length 3 but gallery features have 400 rows"):
        evaluate_features(qf, gf, q_pids, g_pids[:3], q_camids, g_camids)
    bad = gf.clone()
    bad[17, 2] = float("nan")
    with pytest.raises(EvaluationInputError, match="gallery features hold NaN or infinite values in 1 row.*row 17"):
        evaluate_features(qf, bad, *labels)
    with pytest.raises(EvaluationInputError, match="at least one image"):
        evaluate_features(qf[:0], gf, q_pids[:0], g_pids, q_camids[:0], g_camids)
    with pytest.raises(EvaluationInputError, match=r"keep_rows holds 60; expected query indices in \[0, 60\)"):
        evaluate_features(qf, gf, *labels, keep_rows=[60])
    with pytest.raises(EvaluationInputError, match="ranker must be 'compiled' or 'torch'"):
        evaluate_features(qf, gf, *labels, ranker="numpy")
    with pytest.raises(EvaluationInputError, match="k2 must be a positive integer"):
        evaluate_features(qf, gf, *labels, rerank=ReRankSettings(k2=0))
    # Finite features whose distances overflow the float32 they are stored in give infinite distances.
    with pytest.raises(EvaluationInputError, match="the distance of query 0 to gallery image 0 is"):
        evaluate_features(qf.double() * 1e200, gf.double() * 1e200, *labels)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("rerank", [None, ReRankSettings()])
def test_cuda_gives_the_cpu_metrics(rerank):
    # The same code on the GPU: its float32 products round differently, so near-ties may swap.
    qf, gf, *labels = _problem(9, n_q=80, n_g=600)
    cpu = _quiet(evaluate_features, qf, gf, *labels, normalize=True, rerank=rerank, keep_rows=[3])
    gpu = _quiet(evaluate_features, qf.cuda(), gf.cuda(), *labels, normalize=True, rerank=rerank, keep_rows=[3],
                 max_block_bytes=600 * 8 * 9)
    assert gpu.result.num_valid == cpu.result.num_valid
    assert np.mean(gpu.result.first_rank == cpu.result.first_rank) > 0.95
    assert gpu.result.mAP == pytest.approx(cpu.result.mAP, abs=2e-3)
    np.testing.assert_allclose(gpu.rows[3], cpu.rows[3], rtol=0, atol=1e-4)
