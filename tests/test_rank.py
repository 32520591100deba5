"""The compiled Market-protocol ranker against a plain NumPy reference and hand-computed cases."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from rank_reference import reference_rank

from clusteralign.eval import (
    EvaluationInputError,
    NoValidQueryError,
    RankingWarning,
    RankResult,
    evaluate_rank,
)


def _quiet_evaluate(*args, **kwargs) -> RankResult:
    """evaluate_rank with the skipped-query / capped-rank warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankingWarning)
        return evaluate_rank(*args, **kwargs)


def _assert_matches_reference(
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50
) -> RankResult:
    ours = _quiet_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    ref = reference_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    assert ours.num_valid == ref.num_valid
    assert ours.num_skipped == ref.num_skipped
    assert ours.cmc.shape == ref.cmc.shape
    np.testing.assert_allclose(ours.cmc, ref.cmc, rtol=0, atol=1e-6)
    assert ours.mAP == pytest.approx(ref.mAP, abs=1e-6)
    assert ours.mINP == pytest.approx(ref.mINP, abs=1e-6)
    np.testing.assert_array_equal(ours.first_rank, ref.first_rank)
    np.testing.assert_allclose(ours.ap, ref.ap, rtol=0, atol=1e-9)  # NaN where skipped, on both sides
    np.testing.assert_allclose(ours.inp, ref.inp, rtol=0, atol=1e-9)
    return ours


def _random_case(seed: int, dtype: np.dtype, tie_levels: int | None):
    """A random problem with junk, distractors, varied cameras and optionally heavy ties."""
    rng = np.random.default_rng(seed)
    n_q = int(rng.integers(1, 40))
    n_g = int(rng.integers(1, 250))
    num_ids = int(rng.integers(2, 15))
    num_cams = int(rng.integers(1, 7))
    q_pids = rng.integers(1, num_ids + 1, n_q)
    # Gallery pids: real identities plus distractors (0) and junk (-1).
    g_pids = rng.integers(-1, num_ids + 1, n_g)
    q_camids = rng.integers(1, num_cams + 1, n_q)
    g_camids = rng.integers(1, num_cams + 1, n_g)
    dist = rng.random((n_q, n_g))
    if tie_levels is not None:
        dist = np.round(dist * tie_levels) / tie_levels
    return dist.astype(dtype), q_pids, g_pids, q_camids, g_camids


def _has_valid_query(q_pids, g_pids, q_camids, g_camids) -> bool:
    return any(((g_pids == p) & (g_camids != c)).any() for p, c in zip(q_pids, q_camids))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tie_levels", [None, 3, 10])
def test_random_cases_match_reference(dtype, tie_levels):
    checked = 0
    for seed in range(60):
        case = _random_case(seed, dtype, tie_levels)
        dist, q_pids, g_pids, q_camids, g_camids = case
        if not _has_valid_query(q_pids, g_pids, q_camids, g_camids):
            with pytest.raises(NoValidQueryError):
                _quiet_evaluate(*case)
            continue
        max_rank = int(np.random.default_rng(seed).integers(1, 60))
        _assert_matches_reference(*case, max_rank=max_rank)
        checked += 1
    assert checked > 40


def test_larger_problem_matches_reference_float32_with_ties():
    rng = np.random.default_rng(123)
    n_q, n_g = 200, 1500
    q_pids = rng.integers(1, 60, n_q)
    g_pids = np.concatenate([rng.integers(1, 60, n_g - 200), np.zeros(150, int), np.full(50, -1)])
    rng.shuffle(g_pids)
    q_camids = rng.integers(1, 7, n_q)
    g_camids = rng.integers(1, 7, n_g)
    dist = (np.round(rng.random((n_q, n_g)) * 200) / 200).astype(np.float32)
    ours = _assert_matches_reference(dist, q_pids, g_pids, q_camids, g_camids)
    assert len(ours.cmc) == 50


@pytest.mark.parametrize("levels", [1, 2, 4, 1000])
def test_many_matches_with_heavy_ties_match_reference(levels):
    # Dozens of matches per query sharing a handful of distance values: large tied groups.
    rng = np.random.default_rng(levels)
    n_q, n_g = 12, 600
    q_pids = rng.integers(1, 4, n_q)
    g_pids = rng.integers(0, 4, n_g)
    q_camids, g_camids = rng.integers(1, 3, n_q), rng.integers(1, 4, n_g)
    dist = rng.integers(0, levels, (n_q, n_g)).astype(np.float32)
    _assert_matches_reference(dist, q_pids, g_pids, q_camids, g_camids, max_rank=100)


@pytest.mark.parametrize(
    "scale",
    [1e-300, 1e-30, 1.0, 1e30, 1e300],
)
def test_negative_and_extreme_distance_ranges_match_reference(scale):
    # Scores of any sign and magnitude are allowed; ranking must not depend on the value range.
    rng = np.random.default_rng(11)
    n_q, n_g = 20, 300
    q_pids, g_pids = rng.integers(1, 6, n_q), rng.integers(-1, 6, n_g)
    q_camids, g_camids = rng.integers(1, 4, n_q), rng.integers(1, 4, n_g)
    dist = rng.normal(size=(n_q, n_g)) * scale
    dist[:, ::7] = 0.0  # and some exact ties at zero
    _assert_matches_reference(dist, q_pids, g_pids, q_camids, g_camids)
    if 1e-30 <= scale <= 1e30:
        _assert_matches_reference(dist.astype(np.float32), q_pids, g_pids, q_camids, g_camids)


def test_subnormal_spread_of_match_distances():
    # Match distances differ only by subnormal amounts, so the bucket width would overflow.
    tiny = np.nextafter(0.0, 1.0)
    dist = np.array([[0.0, tiny, 2 * tiny, tiny, 0.0, 3 * tiny]])
    g_pids = np.array([1, 2, 1, 1, 3, 1])
    _assert_matches_reference(dist, np.array([1]), g_pids, np.array([1]), np.full(6, 2), max_rank=6)


def test_hand_computed_example():
    # Query 0 (pid 1, cam 1). Sorted gallery after removing index 0 (same pid and camera) and
    # index 3 (junk): 1 (pid 2), 2 (match), 4 (distractor), 5 (match), 6 (pid 3).
    # Matches at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5, INP = 2/4 = 0.5, first hit at rank 2.
    # Query 1 (pid 2, cam 1): its only match (index 1) is nearest: AP = INP = 1, hit at rank 1.
    g_pids = np.array([1, 2, 1, -1, 0, 1, 3])
    g_camids = np.array([1, 2, 2, 2, 3, 3, 2])
    dist = np.array(
        [
            [0.1, 0.2, 0.3, 0.05, 0.4, 0.5, 0.6],
            [0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.4],
        ]
    )
    res = evaluate_rank(dist, np.array([1, 2]), g_pids, np.array([1, 1]), g_camids, max_rank=5)
    np.testing.assert_allclose(res.cmc, [0.5, 1.0, 1.0, 1.0, 1.0])
    assert res.mAP == pytest.approx(0.75)
    assert res.mINP == pytest.approx(0.75)
    assert (res.num_valid, res.num_skipped) == (2, 0)
    np.testing.assert_array_equal(res.first_rank, [1, 0])
    np.testing.assert_allclose(res.ap, [0.5, 1.0])
    np.testing.assert_allclose(res.inp, [0.5, 1.0])
    d = res.to_dict()
    assert d["R1"] == pytest.approx(0.5) and d["R5"] == pytest.approx(1.0) and "R10" not in d


def test_all_equal_distances_follow_gallery_order():
    # Every distance ties, so the ranking is the gallery order: non-match, match, match, non-match.
    g_pids = np.array([2, 1, 1, 3])
    g_camids = np.array([1, 1, 1, 1])
    dist = np.ones((1, 4), dtype=np.float32)
    res = evaluate_rank(dist, np.array([1]), g_pids, np.array([0]), g_camids, max_rank=4)
    np.testing.assert_allclose(res.cmc, [0.0, 1.0, 1.0, 1.0])
    assert res.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert res.mINP == pytest.approx(2 / 3)
    _assert_matches_reference(dist, np.array([1]), g_pids, np.array([0]), g_camids, max_rank=4)


@pytest.mark.parametrize(
    ("g_pids", "expected_ap"),
    [
        (np.array([1, 2]), 1.0),  # the match comes first in gallery order, so it wins the tie
        (np.array([2, 1]), 0.5),  # the non-match comes first, so the match is second
    ],
)
def test_tie_between_match_and_non_match(g_pids, expected_ap):
    dist = np.array([[0.5, 0.5]], dtype=np.float32)
    res = evaluate_rank(dist, np.array([1]), g_pids, np.array([1]), np.array([2, 2]), max_rank=2)
    assert res.mAP == pytest.approx(expected_ap)
    assert res.cmc[0] == (1.0 if expected_ap == 1.0 else 0.0)


def test_tie_between_matches_and_non_matches_in_the_middle_of_the_ranking():
    # Values 0.1 / 0.3 / 0.3 / 0.3 / 0.5: the three-way tie at 0.3 must keep gallery order.
    dist = np.array([[0.3, 0.1, 0.3, 0.5, 0.3]])
    g_pids = np.array([5, 9, 1, 1, 1])
    res = evaluate_rank(dist, np.array([1]), g_pids, np.array([1]), np.full(5, 2), max_rank=5)
    # Sorted: 9 (n), 5 (n), 1 (m, idx 2), 1 (m, idx 4), 1 (m, idx 3): matches at ranks 3, 4, 5.
    assert res.mAP == pytest.approx((1 / 3 + 2 / 4 + 3 / 5) / 3)
    assert res.mINP == pytest.approx(3 / 5)


def test_same_camera_only_matches_skip_the_query():
    # Query 0's only identity-mates share its camera, so it has no valid match.
    g_pids = np.array([1, 1, 2, 2])
    g_camids = np.array([1, 1, 1, 2])
    dist = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    with pytest.warns(RankingWarning, match="1 of 2 queries"):
        res = evaluate_rank(dist, np.array([1, 2]), g_pids, np.array([1, 1]), g_camids, max_rank=4)
    assert (res.num_valid, res.num_skipped) == (1, 1)
    assert res.mAP == pytest.approx(
        1.0
    )  # query 1: its match at index 3 is nearest; index 2 is removed
    assert res.to_dict()["num_skipped"] == 1
    # Per query: the skipped one has no rank and no AP or INP.
    np.testing.assert_array_equal(res.first_rank, [-1, 0])
    np.testing.assert_array_equal(res.ap, [np.nan, 1.0])
    np.testing.assert_array_equal(res.inp, [np.nan, 1.0])


def test_query_whose_identity_is_absent_is_skipped():
    dist = np.array([[0.1, 0.2], [0.1, 0.2]])
    with pytest.warns(RankingWarning, match="skipped"):
        res = evaluate_rank(
            dist, np.array([7, 3]), np.array([3, 4]), np.array([1, 1]), np.array([2, 2]), max_rank=2
        )
    assert (res.num_valid, res.num_skipped) == (1, 1)
    assert res.mAP == pytest.approx(1.0)


def test_no_valid_query_is_an_error():
    dist = np.array([[0.1, 0.2]])
    with pytest.raises(NoValidQueryError, match="None of the 1 queries"):
        evaluate_rank(
            dist, np.array([1]), np.array([1, 2]), np.array([1]), np.array([1, 2]), max_rank=2
        )


def test_junk_is_removed_and_distractors_stay():
    # Junk (-1) nearer than the match is dropped; a distractor (0) nearer than the match counts.
    dist = np.array([[0.1, 0.2, 0.3]])
    cams = np.array([2, 2, 2])
    junk = evaluate_rank(dist, np.array([1]), np.array([-1, 1, 5]), np.array([1]), cams, max_rank=2)
    assert junk.mAP == pytest.approx(1.0)
    np.testing.assert_allclose(junk.cmc, [1.0, 1.0])
    distractor = evaluate_rank(
        dist, np.array([1]), np.array([0, 1, 5]), np.array([1]), cams, max_rank=3
    )
    assert distractor.mAP == pytest.approx(0.5)
    np.testing.assert_allclose(distractor.cmc, [0.0, 1.0, 1.0])


@pytest.mark.parametrize("bad_pid", [0, -1])
def test_junk_or_distractor_query_is_rejected(bad_pid):
    with pytest.raises(EvaluationInputError, match=rf"q_pids\[1\] is {bad_pid}"):
        evaluate_rank(
            np.ones((2, 2)),
            np.array([1, bad_pid]),
            np.array([1, 2]),
            np.array([1, 1]),
            np.array([2, 2]),
        )


def test_max_rank_larger_than_gallery_is_capped_with_warning():
    dist = np.array([[0.3, 0.1, 0.2]])
    with pytest.warns(RankingWarning, match="max_rank=50 exceeds the gallery size 3"):
        res = evaluate_rank(
            dist, np.array([1]), np.array([2, 3, 1]), np.array([1]), np.array([2, 2, 2])
        )
    assert len(res.cmc) == 3
    np.testing.assert_allclose(res.cmc, [0.0, 1.0, 1.0])
    d = res.to_dict()
    assert "R1" in d and "R5" not in d and "R10" not in d


def test_cmc_lengths_when_filtered_ranking_is_shorter_than_max_rank():
    # After removing two same-camera entries only 2 gallery images remain, but max_rank is 4.
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    args = (dist, np.array([1]), np.array([1, 1, 2, 1]), np.array([1]), np.array([1, 1, 2, 2]))
    res = _assert_matches_reference(*args, max_rank=4)
    np.testing.assert_allclose(res.cmc, [0.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("q_n", "g_n"),
    [(0, 5), (3, 0)],
)
def test_empty_query_or_gallery_is_an_error(q_n, g_n):
    with pytest.raises(EvaluationInputError, match="at least"):
        evaluate_rank(
            np.zeros((q_n, g_n)),
            np.ones(q_n, int),
            np.ones(g_n, int),
            np.ones(q_n, int),
            np.ones(g_n, int),
        )


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("q_pids", r"q_pids has length 2 but distmat has 3 rows"),
        ("q_camids", r"q_camids has length 2 but distmat has 3 rows"),
        ("g_pids", r"g_pids has length 2 but distmat has 4 columns"),
        ("g_camids", r"g_camids has length 2 but distmat has 4 columns"),
    ],
)
def test_mismatched_lengths_name_the_array(which, message):
    arrays = {
        "q_pids": np.ones(3, int),
        "g_pids": np.ones(4, int),
        "q_camids": np.ones(3, int),
        "g_camids": np.full(4, 2),
    }
    arrays[which] = np.ones(2, int)
    with pytest.raises(EvaluationInputError, match=message):
        evaluate_rank(
            np.ones((3, 4)),
            arrays["q_pids"],
            arrays["g_pids"],
            arrays["q_camids"],
            arrays["g_camids"],
        )


def test_non_2d_distmat_is_an_error():
    with pytest.raises(EvaluationInputError, match="2-D"):
        evaluate_rank(
            np.ones(4), np.ones(1, int), np.ones(4, int), np.ones(1, int), np.ones(4, int)
        )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_distances_are_an_error(bad, dtype):
    dist = np.ones((2, 3), dtype=dtype)
    dist[1, 2] = bad
    with pytest.raises(EvaluationInputError, match="row 1, column 2"):
        evaluate_rank(
            dist, np.array([1, 2]), np.array([1, 2, 3]), np.array([1, 1]), np.array([2, 2, 2])
        )


def test_non_integer_ids_are_an_error():
    with pytest.raises(EvaluationInputError, match="g_camids must hold integers"):
        evaluate_rank(
            np.ones((1, 2)), np.array([1]), np.array([1, 2]), np.array([1]), np.array([2.0, 2.0])
        )


def test_bad_max_rank_is_an_error():
    with pytest.raises(EvaluationInputError, match="max_rank"):
        evaluate_rank(
            np.ones((1, 2)),
            np.array([1]),
            np.array([1, 2]),
            np.array([1]),
            np.array([2, 2]),
            max_rank=0,
        )


def test_num_threads_do_not_change_results():
    rng = np.random.default_rng(5)
    dist = (np.round(rng.random((500, 800)) * 50) / 50).astype(np.float32)
    q_pids, q_camids = rng.integers(1, 30, 500), rng.integers(1, 7, 500)
    g_pids, g_camids = rng.integers(-1, 30, 800), rng.integers(1, 7, 800)
    default = _quiet_evaluate(dist, q_pids, g_pids, q_camids, g_camids)
    for threads in (1, 2, 3):
        other = _quiet_evaluate(dist, q_pids, g_pids, q_camids, g_camids, num_threads=threads)
        assert other.to_dict() == default.to_dict()


def test_negative_num_threads_is_an_error():
    with pytest.raises(EvaluationInputError, match="num_threads"):
        evaluate_rank(
            np.ones((1, 2)),
            np.array([1]),
            np.array([1, 2]),
            np.array([1]),
            np.array([2, 2]),
            num_threads=-1,
        )


def test_accepts_torch_tensors_lists_and_non_contiguous_arrays():
    rng = np.random.default_rng(3)
    base = rng.random((20, 12))
    dist = base[::2, ::2]  # a non-contiguous view
    q_pids = rng.integers(1, 4, 10)
    g_pids = np.tile(np.arange(1, 4), 2)
    q_camids = np.ones(10, dtype=np.int32)
    g_camids = np.full(6, 2, dtype=np.int32)
    expected = evaluate_rank(
        np.ascontiguousarray(dist), q_pids, g_pids, q_camids, g_camids, max_rank=6
    )
    from_torch = evaluate_rank(
        torch.from_numpy(dist.copy()).float(),
        torch.from_numpy(q_pids),
        list(g_pids),
        q_camids,
        g_camids,
        max_rank=6,
    )
    from_view = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank=6)
    assert from_view.to_dict() == expected.to_dict()
    # float32 from the tensor may reorder near-ties, so compare loosely but per metric.
    np.testing.assert_allclose(from_torch.cmc, expected.cmc)
    assert from_torch.mAP == pytest.approx(expected.mAP)


def test_result_is_frozen_and_json_ready():
    res = evaluate_rank(
        np.array([[0.2, 0.1]]),
        np.array([1]),
        np.array([1, 2]),
        np.array([1]),
        np.array([2, 2]),
        max_rank=2,
    )
    with pytest.raises(AttributeError):
        res.mAP = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.cmc[0] = 1.0
    for per_query in (res.first_rank, res.ap, res.inp):
        with pytest.raises(ValueError):
            per_query[0] = 0
    d = json.loads(json.dumps(res.to_dict()))
    assert set(d) == {"R1", "mAP", "mINP", "num_valid", "num_skipped", "cmc"}
    assert d["cmc"] == [0.0, 1.0] and d["mAP"] == 0.5 and d["mINP"] == 0.5
