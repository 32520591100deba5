"""Blocked distance matrices against torch.cdist and direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clusteralign.eval import EvaluationInputError, compute_distance_matrix


def _features(n: int, dim: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=dtype)


def test_euclidean_matches_cdist():
    q, g = _features(37, 64, 0), _features(91, 64, 1)
    out = compute_distance_matrix(q, g)
    assert out.dtype == np.float32 and out.shape == (37, 91)
    expected = torch.cdist(q.double(), g.double()).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_euclidean_is_plain_not_squared():
    q = torch.tensor([[0.0, 0.0]])
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(compute_distance_matrix(q, g), [[5.0, 0.0, 1.0]], atol=1e-6)


def test_identical_rows_give_zero_not_nan():
    # Rounding in |q|^2 + |g|^2 - 2 q.g can go slightly negative; the clamp keeps sqrt finite.
    x = _features(20, 128, 2) * 100
    out = compute_distance_matrix(x, x)
    assert np.isfinite(out).all() and (out >= 0).all()
    # The expansion loses precision near zero; the self-distance stays tiny next to real distances.
    off_diagonal = out[~np.eye(20, dtype=bool)]
    assert np.diag(out).max() < 1e-3 * np.median(off_diagonal)


def test_cosine_is_one_minus_cosine_similarity():
    q, g = _features(15, 32, 3), _features(40, 32, 4)
    out = compute_distance_matrix(q, g, metric="cosine")
    expected = 1.0 - F.cosine_similarity(q.double()[:, None], g.double()[None], dim=2).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 2.0


def test_normalize_makes_euclidean_a_function_of_cosine():
    q, g = _features(12, 16, 5) * 7, _features(30, 16, 6) * 0.1
    euc = compute_distance_matrix(q, g, normalize=True)
    expected = torch.cdist(F.normalize(q.double(), dim=1), F.normalize(g.double(), dim=1)).numpy()
    np.testing.assert_allclose(euc, expected, atol=1e-5)
    cos = compute_distance_matrix(q, g, metric="cosine")
    np.testing.assert_allclose(euc**2, 2.0 * cos, atol=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_blocking_does_not_change_the_result(metric):
    q, g = _features(53, 24, 7), _features(77, 24, 8)
    whole = compute_distance_matrix(q, g, metric=metric)
    # One row per block, and a block size that leaves a ragged last block.
    one_row = compute_distance_matrix(q, g, metric=metric, max_block_bytes=1)
    ragged = compute_distance_matrix(q, g, metric=metric, max_block_bytes=77 * 4 * 10)
    np.testing.assert_allclose(one_row, whole, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ragged, whole, rtol=1e-6, atol=1e-6)


def test_float64_input_is_computed_in_float64():
    q, g = _features(10, 8, 9, torch.float64), _features(12, 8, 10, torch.float64)
    out = compute_distance_matrix(q, g)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, torch.cdist(q, g).numpy(), rtol=1e-6)


def test_half_and_integer_and_numpy_inputs():
    q, g = _features(6, 8, 11), _features(9, 8, 12)
    ref = compute_distance_matrix(q, g)
    np.testing.assert_allclose(compute_distance_matrix(q.numpy(), g.numpy()), ref)
    half = compute_distance_matrix(q.half(), g.half())
    np.testing.assert_allclose(half, ref, atol=2e-2)
    ints = compute_distance_matrix(torch.tensor([[0, 0]]), torch.tensor([[3, 4]]))
    np.testing.assert_allclose(ints, [[5.0]])


def test_requires_grad_inputs_are_fine():
    q = _features(4, 8, 13).requires_grad_()
    out = compute_distance_matrix(q, _features(5, 8, 14))
    assert out.shape == (4, 5)


def test_empty_query_gives_empty_matrix():
    out = compute_distance_matrix(torch.zeros(0, 8), _features(5, 8, 15))
    assert out.shape == (0, 5) and out.dtype == np.float32


def test_unknown_metric_names_allowed_values():
    with pytest.raises(ValueError, match="'euclidean', 'cosine'"):
        compute_distance_matrix(_features(2, 4, 0), _features(3, 4, 1), metric="manhattan")  # type: ignore[arg-type]


def test_dimension_mismatch_is_an_error():
    with pytest.raises(
        EvaluationInputError, match="dimension 4 but gallery features have dimension 5"
    ):
        compute_distance_matrix(_features(2, 4, 0), _features(3, 5, 1))


def test_non_2d_features_are_an_error():
    with pytest.raises(EvaluationInputError, match="query features must be a 2-D"):
        compute_distance_matrix(torch.zeros(3), _features(3, 5, 1))


def test_bad_block_size_is_an_error():
    with pytest.raises(EvaluationInputError, match="max_block_bytes"):
        compute_distance_matrix(_features(2, 4, 0), _features(3, 4, 1), max_block_bytes=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_cuda_matches_cpu(metric):
    q, g = _features(64, 256, 16), _features(300, 256, 17)
    cpu = compute_distance_matrix(q, g, metric=metric)
    gpu = compute_distance_matrix(q.cuda(), g.cuda(), metric=metric, max_block_bytes=300 * 4 * 7)
    assert isinstance(gpu, np.ndarray) and gpu.dtype == np.float32
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_no_block_exceeds_the_byte_budget(monkeypatch, metric):
    sizes: list[int] = []
    for name in ("addmm", "mm"):
        original = getattr(torch, name)

        def recording(*args, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            sizes.append(out.numel() * out.element_size())
            return out

        monkeypatch.setattr(torch, name, recording)
    budget = 100 * 4 * 8  # eight rows of 100 float32 distances, four of the float64 ones computed
    out = compute_distance_matrix(
        _features(50, 16, 0), _features(100, 16, 1), metric=metric, max_block_bytes=budget
    )
    assert out.shape == (50, 100)
    assert len(sizes) == 13 and max(sizes) <= budget
