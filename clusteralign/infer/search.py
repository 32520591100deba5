"""Top-K gallery matches of each query image, by the distance the workflow ranks with."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

import numpy as np

from ..eval.distance import compute_distance_matrix
from ..io import write_text

# Queries whose distances are held at once: bounds memory on large galleries.
QUERY_BLOCK = 1024


@dataclass
class Matches:
    """For each query, its `top` nearest gallery images (indices into the gallery) and their distances."""

    order: np.ndarray  # Q x K gallery indices, nearest first
    distance: np.ndarray  # Q x K

    @property
    def top(self) -> int:
        return self.order.shape[1]


def rank_gallery(query: np.ndarray, gallery: np.ndarray, top: int, metric: str = "euclidean",
                 normalize: bool = True, same_file: np.ndarray | None = None) -> Matches:
    """The `top` nearest gallery features of each query (ties: the earlier gallery image first).

    Distances as the workflow's evaluation measures them by default: Euclidean between
    L2-normalised features. `same_file` (Q x G bool) marks pairs that are one image in both
    sets (a folder searched against itself); they are never listed as matches.
    """
    import torch

    top = min(top, gallery.shape[0])
    orders, dists = [], []
    for start in range(0, query.shape[0], QUERY_BLOCK):
        block = compute_distance_matrix(torch.from_numpy(query[start:start + QUERY_BLOCK]),
                                        torch.from_numpy(gallery), metric=metric, normalize=normalize)
        if same_file is not None:
            block[same_file[start:start + QUERY_BLOCK]] = np.inf
        order = np.argsort(block, axis=1, kind="stable")[:, :top]
        orders.append(order)
        dists.append(np.take_along_axis(block, order, axis=1))
    matches = Matches(np.concatenate(orders) if orders else np.empty((0, top), dtype=np.int64),
                      np.concatenate(dists) if dists else np.empty((0, top), dtype=np.float32))
    if same_file is not None:
        # A query that is also the whole gallery has fewer real matches than `top`.
        keep = np.isfinite(matches.distance).all(axis=0)
        matches = Matches(matches.order[:, keep], matches.distance[:, keep])
    return matches


def same_files(query: list[str], gallery: list[str]) -> np.ndarray | None:
    """Q x G: which query and gallery paths are one file; None when no file is in both."""
    q_real = [os.path.realpath(p) for p in query]
    g_index: dict[str, list[int]] = {}
    for j, p in enumerate(gallery):
        g_index.setdefault(os.path.realpath(p), []).append(j)
    pairs = [(i, j) for i, p in enumerate(q_real) for j in g_index.get(p, [])]
    if not pairs:
        return None
    mask = np.zeros((len(query), len(gallery)), dtype=bool)
    rows, cols = zip(*pairs)
    mask[list(rows), list(cols)] = True
    return mask


def write_matches_csv(path: str | os.PathLike[str], matches: Matches, query_files: list[str],
                      gallery_files: list[str]) -> None:
    """One row per (query, rank): ``query, rank, gallery, distance`` (rank from 1)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["query", "rank", "gallery", "distance"])
    for i, q in enumerate(query_files):
        for k in range(matches.top):
            writer.writerow([q, k + 1, gallery_files[matches.order[i, k]], f"{matches.distance[i, k]:.6f}"])
    write_text(path, buffer.getvalue())
