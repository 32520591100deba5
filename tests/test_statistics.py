"""Confidence intervals of paired differences: Student t over replicates, bootstrap over queries."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from clusteralign.eval import RankingWarning, evaluate_rank
from clusteralign.pipeline.steps import per_query_frame
from clusteralign.report.statistics import (
    StatisticsInputError,
    bootstrap_interval,
    mean_sd,
    per_query_values,
    t_interval,
)

# Student t quantile t(0.975, 2), from tables.
T_975_DF2 = 4.302652729911275


def test_t_interval_of_three_replicates():
    iv = t_interval([0.01, 0.03, 0.02])
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert iv.estimate == pytest.approx(0.02) and iv.method == "t" and iv.n == 3
    assert (iv.low, iv.high) == pytest.approx((0.02 - half, 0.02 + half))
    assert not iv.excludes_zero  # 0.02 +- 0.0248
    assert t_interval([0.021, 0.019, 0.020]).excludes_zero
    assert t_interval([-0.021, -0.019, -0.020]).excludes_zero


def test_t_interval_needs_two_finite_differences():
    with pytest.raises(StatisticsInputError, match="at least 2 paired differences, got 1"):
        t_interval([0.1])
    with pytest.raises(StatisticsInputError, match="finite"):
        t_interval([0.1, float("nan")])


def test_mean_sd_uses_n_minus_one():
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    mean, sd = mean_sd([5.0])
    assert mean == 5.0 and math.isnan(sd)


def _arm(shift: float, seed: int) -> tuple[pd.DataFrame, dict]:
    """Per-query results of a real ranking: query features move towards their identity by `shift`."""
    rng = np.random.default_rng(seed)
    n_ids, dim = 30, 16
    centres = rng.normal(size=(n_ids, dim))
    g_pids = np.repeat(np.arange(1, n_ids + 1), 4)
    g_cams = np.tile([1, 2, 3, 4], n_ids)
    gallery = centres[g_pids - 1] + rng.normal(scale=1.2, size=(len(g_pids), dim))
    q_pids = np.arange(1, n_ids + 1)
    noise = np.random.default_rng(99).normal(scale=1.5, size=(n_ids, dim))
    query = centres[q_pids - 1] + (1 - shift) * noise
    q_pids = np.append(q_pids, 31)  # one query without any gallery match: skipped by both arms
    query = np.vstack([query, rng.normal(size=(1, dim))])
    dist = ((query[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankingWarning)
        result = evaluate_rank(dist, q_pids, g_pids, np.full(len(q_pids), 5), g_cams)
    q = {"paths": [f"q/{i}.jpg" for i in range(len(q_pids))], "pids": q_pids, "camids": np.full(len(q_pids), 5)}
    return per_query_frame(result, q), result.to_dict()


def test_per_query_values_recompute_the_rankers_metrics():
    frame, metrics = _arm(0.0, seed=1)
    assert frame["first_rank"].iloc[-1] == -1 and math.isnan(frame["ap"].iloc[-1])
    assert np.nanmean(per_query_values(frame, "mAP")) == pytest.approx(metrics["mAP"], abs=1e-12)
    assert np.nanmean(per_query_values(frame, "R1")) == pytest.approx(metrics["R1"], abs=1e-12)
    assert np.nanmean(per_query_values(frame, "mINP")) == pytest.approx(metrics["mINP"], abs=1e-12)


def test_bootstrap_estimate_is_the_metric_difference_and_is_seeded():
    a, ma = _arm(0.0, seed=1)
    b, mb = _arm(0.6, seed=1)
    iv = bootstrap_interval(a, b, "mAP")
    assert iv.method == "bootstrap" and iv.n == 30  # the skipped query is left out
    assert iv.estimate == pytest.approx(mb["mAP"] - ma["mAP"], abs=1e-12)
    assert iv.low < iv.estimate < iv.high
    assert bootstrap_interval(a, b, "mAP") == iv
    assert bootstrap_interval(a, b, "mAP", seed=1) != iv
    assert iv.excludes_zero and iv.low > 0  # queries moved towards their identity: a real gain
    same = bootstrap_interval(a, a, "R1")
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero


def test_bootstrap_refuses_arms_of_other_queries():
    a, _ = _arm(0.0, seed=1)
    with pytest.raises(StatisticsInputError, match="different queries"):
        bootstrap_interval(a, a.iloc[:-1], "mAP")
    other = a.assign(path=a["path"].str.replace("q/", "x/"))
    with pytest.raises(StatisticsInputError, match="different queries"):
        bootstrap_interval(a, other, "mAP")
    with pytest.raises(StatisticsInputError, match="no per-query values for metric 'R5'"):
        bootstrap_interval(a, a, "R5")
