"""Time evaluation on a Market-size synthetic problem: distances, our ranker, a NumPy baseline.

The features are identity centre + camera shift + noise (2,048-d by default), with pid-0
distractors in the gallery, so rankings look like a real model's and mAP is moderate rather than
perfect. Three steps are timed:

(a) ``compute_distance_matrix`` (L2-normalised features, Euclidean);
(b) ``evaluate_rank`` — the compiled ranker plus its input checks, best of 3;
(c) a straightforward NumPy evaluation that argsorts every query's full gallery row, then loops
    over queries (the shape of torchreid's Python path), run once.

Both evaluations must agree on CMC, mAP and mINP to 1e-6 or the script exits non-zero.

    .venv/bin/python benchmarks/eval_speed.py            # Market size, about a minute on 2 cores
    .venv/bin/python benchmarks/eval_speed.py --num-query 500 --num-gallery 3000 --dim 256
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from clusteralign.cli import non_negative_int, positive_int
from clusteralign.eval import RankingWarning, compute_distance_matrix, evaluate_rank


@dataclass(frozen=True)
class Problem:
    """A synthetic query/gallery feature set with its identity and camera labels."""

    query: torch.Tensor
    gallery: torch.Tensor
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray


def make_problem(
    num_query: int,
    num_gallery: int,
    num_distractors: int,
    num_ids: int,
    num_cams: int,
    dim: int,
    seed: int,
) -> Problem:
    """Draw a clustered problem: every query identity also appears in the gallery."""
    if num_distractors >= num_gallery:
        raise ValueError(
            f"--num-distractors ({num_distractors}) must be smaller than --num-gallery ({num_gallery})."
        )
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    # Scales chosen so squared distances to the same identity and to others overlap in their
    # tails: a moderate mAP, with camera bias making same-camera impostors likelier. The spread of
    # a squared distance grows like sqrt(dim) while the identity gap grows like dim, hence the
    # fourth root keeping the difficulty similar across --dim.
    shrink = (2048 / dim) ** 0.25
    centre_scale, cam_scale, noise_scale = 0.35 * shrink, 0.2 * shrink, 1.0
    centres = torch.randn(num_ids + 1, dim, generator=gen) * centre_scale
    centres[0] = 0.0  # pid 0 (distractors) gets a random centre per image below instead
    cam_shift = torch.randn(num_cams, dim, generator=gen) * cam_scale

    q_pids = rng.permutation(np.arange(num_query) % num_ids) + 1
    num_real = num_gallery - num_distractors
    g_real = rng.permutation(np.arange(num_real) % num_ids) + 1
    g_pids = rng.permutation(np.concatenate([g_real, np.zeros(num_distractors, dtype=np.int64)]))
    q_camids = rng.integers(1, num_cams + 1, num_query)
    g_camids = rng.integers(1, num_cams + 1, num_gallery)

    def features(pids: np.ndarray, camids: np.ndarray) -> torch.Tensor:
        base = centres[torch.from_numpy(pids)] + cam_shift[torch.from_numpy(camids - 1)]
        return base + torch.randn(len(pids), dim, generator=gen) * noise_scale

    gallery = features(g_pids, g_camids)
    distractor = torch.from_numpy(g_pids == 0)
    # Each distractor is a stranger with its own centre.
    gallery[distractor] += torch.randn(int(distractor.sum()), dim, generator=gen) * centre_scale
    return Problem(features(q_pids, q_camids), gallery, q_pids, g_pids, q_camids, g_camids)


def numpy_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
) -> tuple[np.ndarray, float, float]:
    """Full argsort of every row, then a per-query loop; returns (cmc, mAP, mINP)."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = g_pids[indices] == q_pids[:, None]
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(distmat.shape[0]):
        order = indices[q]
        keep = ~(
            ((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
            | (g_pids[order] == -1)
        )
        raw = matches[q][keep]
        if not raw.any():
            continue
        hits = raw.cumsum()
        cmc = np.minimum(hits, 1)
        padded = np.ones(max_rank)
        n = min(max_rank, len(cmc))
        padded[:n] = cmc[:n]
        all_cmc.append(padded)
        positions = np.flatnonzero(raw)
        all_ap.append(float((hits[positions] / (positions + 1.0)).mean()))
        all_inp.append(len(positions) / (positions[-1] + 1.0))
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap)), float(np.mean(all_inp))


def _rss_mib(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM) in MiB, if readable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux only) so the next peak belongs to the next step."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; returns the process exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-query", type=positive_int, default=3368)
    parser.add_argument("--num-gallery", type=positive_int, default=15913)
    parser.add_argument("--num-distractors", type=non_negative_int, default=2793)
    parser.add_argument("--num-ids", type=positive_int, default=750)
    parser.add_argument("--num-cams", type=positive_int, default=6)
    parser.add_argument("--dim", type=positive_int, default=2048)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--threads", type=non_negative_int, default=0, help="OpenMP threads for the ranker (0 = all)"
    )
    parser.add_argument("--max-rank", type=positive_int, default=50)
    args = parser.parse_args(argv)

    print(
        f"cpu_count={os.cpu_count()}  torch threads={torch.get_num_threads()}  ranker threads={args.threads or 'all'}"
    )
    print(
        f"problem: {args.num_query} queries x {args.num_gallery} gallery "
        f"({args.num_distractors} distractors), {args.num_ids} ids, {args.num_cams} cameras, dim {args.dim}"
    )
    t0 = time.perf_counter()
    prob = make_problem(
        args.num_query,
        args.num_gallery,
        args.num_distractors,
        args.num_ids,
        args.num_cams,
        args.dim,
        args.seed,
    )
    print(f"features generated in {time.perf_counter() - t0:.2f} s")

    rss_before = _rss_mib("VmRSS")
    can_peak = _reset_peak_rss()
    t0 = time.perf_counter()
    distmat = compute_distance_matrix(prob.query, prob.gallery, metric="euclidean", normalize=True)
    t_dist = time.perf_counter() - t0
    peak = _rss_mib("VmHWM")
    memory = ""
    if can_peak and rss_before is not None and peak is not None:
        out_mib = distmat.nbytes / 2**20
        memory = (
            f"; peak memory {peak - rss_before:.0f} MiB above the inputs, of which the float32 "
            f"output is {out_mib:.0f} MiB"
        )
    print(f"(a) distance matrix {distmat.shape[0]} x {distmat.shape[1]}: {t_dist:.3f} s{memory}")

    args_rank = (distmat, prob.q_pids, prob.g_pids, prob.q_camids, prob.g_camids)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankingWarning)
        for _ in range(3):
            t0 = time.perf_counter()
            ours = evaluate_rank(*args_rank, max_rank=args.max_rank, num_threads=args.threads)
            times.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        single = evaluate_rank(*args_rank, max_rank=args.max_rank, num_threads=1)
        # CPU time of the one-thread run is the figure least disturbed by other load on the host.
        t_single, c_single = time.perf_counter() - t0, time.process_time() - c0
    t_ours = min(times)
    print(
        f"(b) evaluate_rank (Cython): best of 3 {t_ours:.3f} s "
        f"(runs: {', '.join(f'{t:.3f}' for t in times)}); one thread: {t_single:.3f} s ({c_single:.3f} s CPU)"
    )
    print(
        f"    R1 {ours.cmc[0]:.4f}  mAP {ours.mAP:.4f}  mINP {ours.mINP:.4f}  "
        f"valid {ours.num_valid}  skipped {ours.num_skipped}"
    )

    t0 = time.perf_counter()
    cmc_np, map_np, minp_np = numpy_rank(*args_rank, max_rank=len(ours.cmc))
    t_np = time.perf_counter() - t0
    print(f"(c) NumPy full argsort + per-query loop: {t_np:.3f} s")
    print(f"speed-up (c)/(b): {t_np / t_ours:.1f}x")

    diffs = {
        "cmc": float(np.abs(cmc_np - ours.cmc).max()),
        "mAP": abs(map_np - ours.mAP),
        "mINP": abs(minp_np - ours.mINP),
        "one thread vs all (mAP)": abs(single.mAP - ours.mAP),
    }
    agree = all(d <= 1e-6 for d in diffs.values())
    print(
        "agreement: "
        + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
        + ("  OK" if agree else "  MISMATCH")
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
