"""Workflow steps after training: anchors of a model, test features, and their evaluation."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import RANKING_EXAMPLES, AnchorConfig, FeatureConfig, FinalEvalConfig, InferenceConfig
from ..data.manifest import train_label_pids
from ..eval.blockwise import evaluate_features
from ..eval.rank import RankResult
from ..eval.rerank import ReRankSettings
from ..io import torch_load_mapping, torch_save, write_json, write_text
from ..models.file import ModelFile
from ..train.anchors import AnchorSet, fresh_anchors
from ..train.data import load_split
from ..train.distributed import resolve_device
from ..train.features import eval_features

log = logging.getLogger(__name__)


def _load_model(model_path: Path, inference: InferenceConfig) -> tuple[ModelFile, torch.nn.Module, torch.device]:
    device = resolve_device(inference.device)
    mf = ModelFile.load(model_path)
    model = mf.build().to(device)
    if inference.channels_last:
        model.to(memory_format=torch.channels_last)
    return mf, model, device


def compute_anchor_file(
    model_path: Path, manifest: pd.DataFrame, inference: InferenceConfig, anchors: AnchorConfig,
    features: FeatureConfig, anchors_out: Path, stats_out: Path,
) -> AnchorSet:
    """Anchors (per-identity mean test features) of a trained model, plus their spread statistics."""
    mf, model, device = _load_model(model_path, inference)
    train = load_split(manifest, "train", inference.cache_size)
    if train_label_pids(manifest) != list(mf.pids):
        raise ValueError(f"{model_path} was trained on other identities than the manifest's training split")
    values, stats = fresh_anchors(model, train.to(device), mf.num_classes, anchors, inference, features, device)
    result = AnchorSet(values.cpu(), list(mf.pids), stats)
    result.save(anchors_out)
    write_json(stats_out, {**stats, "num_identities": mf.num_classes})
    log.info("anchors of %d identities: own %.4f, nearest other %.4f", mf.num_classes,
             stats["anchor_dist_own"], stats["anchor_dist_other"])
    return result


def extract_feature_file(
    model_path: Path, manifest: pd.DataFrame, inference: InferenceConfig, features: FeatureConfig, out: Path
) -> None:
    """Query and gallery test features of a trained model, with their identities and paths."""
    _, model, device = _load_model(model_path, inference)
    payload = {}
    for split in ("query", "gallery"):
        data = load_split(manifest, split, inference.cache_size)
        feats, _ = eval_features(model, data.images, inference, features, device)
        payload[split] = {
            "features": feats.cpu(),
            "pids": data.pids,
            "camids": data.camids,
            "paths": manifest.loc[manifest["split"] == split, "path"].tolist(),
        }
        log.info("%s: %d features of dimension %d", split, feats.shape[0], feats.shape[1])
    torch_save(payload, out)


def _chosen_queries(n_q: int, count: int) -> list[int]:
    """`count` evenly spaced query indices (all of them when there are fewer)."""
    return np.unique(np.linspace(0, n_q - 1, num=min(count, n_q)).round().astype(int)).tolist() if n_q else []


def _examples(rows: dict[int, np.ndarray], q: dict, g: dict, top: int = 10) -> list[dict]:
    """Top-`top` gallery entries (after the protocol's exclusions) of the queries whose distance rows are given."""
    q_pids, q_cams = q["pids"].numpy(), q["camids"].numpy()
    g_pids, g_cams = g["pids"].numpy(), g["camids"].numpy()
    examples = []
    for i in sorted(rows):
        dist = rows[i]
        valid = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i])) & (g_pids != -1)
        idx = np.flatnonzero(valid)
        order = idx[np.argsort(dist[idx], kind="stable")[:top]]
        examples.append({
            "query": {"path": q["paths"][i], "pid": int(q_pids[i]), "camid": int(q_cams[i])},
            "gallery": [
                {"path": g["paths"][j], "pid": int(g_pids[j]), "camid": int(g_cams[j]),
                 "distance": float(dist[j]), "match": bool(g_pids[j] == q_pids[i])}
                for j in order
            ],
        })
    return examples


def per_query_frame(result: RankResult, query: dict) -> pd.DataFrame:
    """One row per query: its file, identity, camera, first true match's rank (-1: skipped), AP and INP."""
    return pd.DataFrame({
        "path": query["paths"],
        "pid": np.asarray(query["pids"]),
        "camid": np.asarray(query["camids"]),
        "first_rank": result.first_rank,
        "ap": result.ap,
        "inp": result.inp,
    })


def evaluate_feature_file(
    features_path: Path, cfg: FinalEvalConfig, metrics_out: Path, ranking_out: Path, per_query_out: Path | None = None,
    num_examples: int = RANKING_EXAMPLES, num_threads: int = 0,
) -> dict:
    """CMC/mAP/mINP of a feature file under the Market protocol, ranked-retrieval examples, per-query results.

    Evaluated a block of queries at a time on `cfg.device` (clusteralign.eval.blockwise), so no
    query x gallery matrix is held, nor, with re-ranking, the (query + gallery)^2 one.
    """
    data = torch_load_mapping(features_path, ("query", "gallery"), "a feature file")
    q, g = data["query"], data["gallery"]
    n_q, n_g = len(q["features"]), len(g["features"])
    # k-reciprocal re-ranking is defined on squared distances of unit vectors, whatever `metric` says
    rerank = ReRankSettings(cfg.k1, cfg.k2, cfg.lambda_value) if cfg.rerank else None
    evaluation = evaluate_features(
        q["features"], g["features"], q["pids"], g["pids"], q["camids"], g["camids"], metric=cfg.metric,
        normalize=cfg.normalize, rerank=rerank, max_rank=cfg.max_rank, device=resolve_device(cfg.device),
        num_threads=num_threads, keep_rows=_chosen_queries(n_q, num_examples),
    )
    metrics = {
        **evaluation.result.to_dict(),
        "rerank": cfg.rerank,
        "metric": "rerank" if cfg.rerank else cfg.metric,
        "num_query": n_q,
        "num_gallery": n_g,
    }
    write_json(metrics_out, metrics)
    write_json(ranking_out, {"examples": _examples(evaluation.rows, q, g)})
    if per_query_out is not None:
        # repr-exact floats, so a reader recomputes the very mAP of metrics.json.
        write_text(per_query_out, per_query_frame(evaluation.result, q).to_csv(index=False, float_format="%.17g"))
    log.info("%s: R1 %.2f%% mAP %.2f%% mINP %.2f%% (%d valid queries, %d skipped)", os.fspath(features_path),
             100 * metrics["R1"], 100 * metrics["mAP"], 100 * metrics["mINP"], metrics["num_valid"],
             metrics["num_skipped"])
    return metrics
