"""The workflow's evaluate step: a feature file to metrics.json and ranking.json, through the blockwise path."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from rerank_reference import reference_re_rank

from clusteralign.config import FinalEvalConfig, from_dict
from clusteralign.eval import RankingWarning, compute_distance_matrix, evaluate_rank
from clusteralign.io import torch_save
from clusteralign.pipeline.steps import evaluate_feature_file


@pytest.fixture
def feature_file(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(13, 16))

    def split(n, name, cams):
        pids = rng.integers(1, 13, n)
        feats = centres[pids] + rng.normal(size=(n, 16)) * 1.3
        return {"features": torch.from_numpy(feats).float(), "pids": torch.from_numpy(pids),
                "camids": torch.from_numpy(rng.choice(cams, n)),
                "paths": [f"{name}/{i:03d}.jpg" for i in range(n)]}

    payload = {"query": split(40, "query", [1, 2]), "gallery": split(150, "gallery", [1, 2, 3])}
    payload["gallery"]["pids"][:5] = -1  # junk
    payload["gallery"]["pids"][5:10] = 0  # distractors
    path = tmp_path / "features.pt"
    torch_save(payload, path)
    return path, payload


def _expected_examples(dist, payload, count):
    """The ranked examples as the step wrote them from the whole matrix before it went blockwise."""
    q, g = payload["query"], payload["gallery"]
    n_q = dist.shape[0]
    chosen = np.unique(np.linspace(0, n_q - 1, num=min(count, n_q)).round().astype(int))
    out = []
    for i in chosen:
        keep = ~((g["pids"].numpy() == int(q["pids"][i])) & (g["camids"].numpy() == int(q["camids"][i])))
        keep &= g["pids"].numpy() != -1
        idx = np.flatnonzero(keep)
        order = idx[np.argsort(dist[i, idx], kind="stable")[:10]]
        out.append({"query": {"path": q["paths"][i], "pid": int(q["pids"][i]), "camid": int(q["camids"][i])},
                    "gallery": [{"path": g["paths"][j], "pid": int(g["pids"][j]), "camid": int(g["camids"][j]),
                                 "distance": float(dist[i, j]), "match": bool(g["pids"][j] == q["pids"][i])}
                                for j in order]})
    return out


@pytest.mark.parametrize("settings", [{}, {"metric": "cosine"}, {"rerank": True, "k1": 8, "k2": 3}])
def test_metrics_and_examples_are_those_of_the_whole_matrix(tmp_path, feature_file, settings):
    path, payload = feature_file
    cfg = from_dict(FinalEvalConfig, settings, "eval")
    q, g = payload["query"], payload["gallery"]
    if cfg.rerank:
        sq = [2.0 * compute_distance_matrix(a, b, metric="cosine")
              for a, b in ((q["features"], g["features"]), (q["features"], q["features"]),
                           (g["features"], g["features"]))]
        dist = reference_re_rank(*sq, k1=8, k2=3)
    else:
        dist = compute_distance_matrix(q["features"], g["features"], metric=cfg.metric, normalize=cfg.normalize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankingWarning)
        expected = evaluate_rank(dist, q["pids"], g["pids"], q["camids"], g["camids"], max_rank=cfg.max_rank)
        metrics = evaluate_feature_file(path, cfg, tmp_path / "metrics.json", tmp_path / "ranking.json",
                                        num_examples=7)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == metrics
    assert {k: written[k] for k in ("num_query", "num_gallery", "rerank")} == {
        "num_query": 40, "num_gallery": 150, "rerank": cfg.rerank}
    examples = json.loads((tmp_path / "ranking.json").read_text())["examples"]
    if cfg.rerank:
        # Re-ranked distances agree with the dense implementation to float rounding.
        assert written["mAP"] == pytest.approx(expected.mAP, abs=1e-9)
        assert written["cmc"] == pytest.approx(expected.to_dict()["cmc"], abs=1e-12)
        reference = _expected_examples(dist, payload, 7)
        for ours, ref in zip(examples, reference, strict=True):
            assert [e["path"] for e in ours["gallery"]] == [e["path"] for e in ref["gallery"]]
            assert [e["distance"] for e in ours["gallery"]] == pytest.approx([e["distance"] for e in ref["gallery"]],
                                                                            abs=1e-6)
    else:
        assert {k: v for k, v in written.items() if k not in ("rerank", "metric", "num_query", "num_gallery")} \
            == expected.to_dict()
        assert examples == _expected_examples(dist, payload, 7)


def test_an_unavailable_device_is_named(tmp_path, feature_file, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = from_dict(FinalEvalConfig, {"device": "cuda"}, "eval")
    with pytest.raises(RuntimeError, match="device: cuda was asked for but no CUDA device is visible"):
        evaluate_feature_file(feature_file[0], cfg, tmp_path / "m.json", tmp_path / "r.json")
    assert not (tmp_path / "m.json").exists()
