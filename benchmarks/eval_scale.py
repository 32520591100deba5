"""Evaluation at MSMT17 scale: time and peak memory, with and without re-ranking, beside torchreid's.

A synthetic clustered problem (``eval_speed.make_problem``: identity centre + camera shift +
noise) of MSMT17's test size by default, 11,659 queries x 82,161 gallery images, 2,048-d, 3,060
identities, 15 cameras. Each variant runs in a process of its own, which reads the features from
a temporary folder; its peak resident memory is the kernel's figure for that process
(``os.wait4``), so it includes the features themselves (printed once). Variants:

(a) ``evaluate_features`` without re-ranking (Euclidean distance of L2-normalised features);
(b) ``evaluate_features`` with k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3);
(c) torchreid's ``re_ranking`` on its three full distance matrices (when torchreid is
    installed), at the largest size whose estimated peak fits ``--peer-memory-gb``, ranked by
    ``evaluate_rank``; and (b) again at that size, for the side-by-side.

    .venv/bin/python benchmarks/eval_scale.py --peer-memory-gb 8     # MSMT17 size; tens of minutes on 2 cores
    .venv/bin/python benchmarks/eval_scale.py --num-query 3368 --num-gallery 15913 --num-ids 750 --num-cams 6
    .venv/bin/python benchmarks/eval_scale.py --device cuda          # on a GPU: distances, re-ranking, ranks there
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from clusteralign.cli import non_negative_int, positive_int

# Bytes per (query + gallery)^2 element that torchreid's re_ranking holds at its peak: the three
# float32 input matrices (about one square matrix), the float32 combined matrix, V and an int64
# argsort being narrowed to int32 (measured: see docs/performance.md), with some margin.
PEER_BYTES_PER_ELEMENT = 26
MSMT17 = {"num_query": 11659, "num_gallery": 82161, "num_ids": 3060, "num_cams": 15}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-query", type=positive_int, default=MSMT17["num_query"])
    p.add_argument("--num-gallery", type=positive_int, default=MSMT17["num_gallery"])
    p.add_argument("--num-distractors", type=non_negative_int, default=0)
    p.add_argument("--num-ids", type=positive_int, default=MSMT17["num_ids"])
    p.add_argument("--num-cams", type=positive_int, default=MSMT17["num_cams"])
    p.add_argument("--dim", type=positive_int, default=2048)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--device", default="cpu", help="where evaluate_features runs: cpu or cuda")
    p.add_argument("--peer-memory-gb", type=float, default=None,
                   help="memory torchreid's full matrices may use (default: half of what is available now)")
    p.add_argument("--no-peer", action="store_true", help="leave out torchreid")
    p.add_argument("--skip-full", action="store_true", help="leave out (a) and (b) at the full size")
    # Internal: run one variant on the saved problem and print its result (a child process).
    p.add_argument("--child", choices=["generate", "plain", "rerank", "torchreid"], help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--limit", type=int, nargs=2, metavar=("QUERIES", "GALLERY"), help=argparse.SUPPRESS)
    return p


def torchreid_re_ranking():
    """torchreid's re_ranking, loaded from its file: importing the package needs OpenCV, this does not."""
    spec = importlib.util.find_spec("torchreid")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for rel in ("reid/utils/rerank.py", "utils/rerank.py"):  # PyPI's 0.2.5 layout, then upstream's
        if (root / rel).is_file():
            module_spec = importlib.util.spec_from_file_location("torchreid_rerank", root / rel)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module.re_ranking
    return None


# --------------------------------------------------------------------------- child side


def _load(data: Path, limit: list[int] | None):
    import torch

    # For a part, mapped rather than read, so the rest never enters memory; np.array copies the part.
    arrays = {name: np.load(data / f"{name}.npy", mmap_mode="r" if limit else None)
              for name in ("qf", "gf", "q_pids", "g_pids", "q_camids", "g_camids")}
    n_q, n_g = limit if limit else (len(arrays["qf"]), len(arrays["gf"]))
    qf = torch.from_numpy(np.array(arrays["qf"][:n_q], copy=bool(limit)))
    gf = torch.from_numpy(np.array(arrays["gf"][:n_g], copy=bool(limit)))
    labels = tuple(np.array(arrays[k][:n]) for k, n in (("q_pids", n_q), ("g_pids", n_g), ("q_camids", n_q),
                                                          ("g_camids", n_g)))
    del arrays
    return qf, gf, labels


def _child(args: argparse.Namespace) -> None:
    import torch

    from clusteralign.eval import RankingWarning, ReRankSettings, compute_distance_matrix, evaluate_features, evaluate_rank

    qf, gf, labels = _load(args.data, args.limit)
    loaded = _rss_gib()
    device = torch.device(args.device)
    warnings.simplefilter("ignore", RankingWarning)
    t0 = time.perf_counter()
    if args.child == "torchreid":
        squared = [2.0 * compute_distance_matrix(a, b, metric="cosine") for a, b in ((qf, gf), (qf, qf), (gf, gf))]
        # torchreid squares what it is given: hand it plain distances of the normalised features.
        plain = [np.sqrt(m, out=m) for m in squared]
        del squared
        dist = torchreid_re_ranking()(*plain, k1=20, k2=6, lambda_value=0.3)
        del plain
        result = evaluate_rank(dist, *labels)
    else:
        rerank = ReRankSettings() if args.child == "rerank" else None
        result = evaluate_features(qf.to(device), gf.to(device), *labels, normalize=True, rerank=rerank,
                                   device=device).result
    seconds = time.perf_counter() - t0
    gpu = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    print("RESULT " + json.dumps({"seconds": seconds, "R1": result.to_dict()["R1"], "mAP": result.mAP,
                                  "num_query": len(qf), "num_gallery": len(gf), "gpu_gib": gpu,
                                  "loaded_gib": loaded}))


def _rss_gib() -> float | None:
    """This process's resident memory now (VmRSS), in GiB, where /proc says."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 2**20 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None


# --------------------------------------------------------------------------- parent side


def _run_child(args: argparse.Namespace, variant: str, data: Path, limit: tuple[int, int] | None) -> dict:
    """Run one variant in a process of its own: its result and peak RSS (GiB), or its error."""
    cmd = [sys.executable, __file__, "--child", variant, "--data", str(data), "--device", args.device]
    if variant == "generate":
        cmd += ["--num-query", str(args.num_query), "--num-gallery", str(args.num_gallery), "--num-distractors",
                str(args.num_distractors), "--num-ids", str(args.num_ids), "--num-cams", str(args.num_cams),
                "--dim", str(args.dim), "--seed", str(args.seed)]
    if limit:
        cmd += ["--limit", str(limit[0]), str(limit[1])]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        # wait4 reaps this one child and gives its own resource usage: ru_maxrss is its peak (KiB).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines, errors = out.read().splitlines(), err.read().strip().splitlines()
    result = next((json.loads(line[7:]) for line in lines if line.startswith("RESULT ")), None)
    if result is None:
        why = errors[-1] if errors else f"exit status {proc.returncode}"
        return {"error": why, "peak_gib": usage.ru_maxrss / 2**20}
    return {**result, "peak_gib": usage.ru_maxrss / 2**20}


def _generate(args: argparse.Namespace) -> None:
    """Child: draw the problem, save it in --data, and say what it took."""
    import torch
    from eval_speed import make_problem

    t0 = time.perf_counter()
    prob = make_problem(args.num_query, args.num_gallery, args.num_distractors, args.num_ids, args.num_cams,
                        args.dim, args.seed)
    for name, value in (("qf", prob.query.numpy()), ("gf", prob.gallery.numpy()), ("q_pids", prob.q_pids),
                        ("g_pids", prob.g_pids), ("q_camids", prob.q_camids), ("g_camids", prob.g_camids)):
        np.save(args.data / f"{name}.npy", value)
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "torch": torch.__version__,
                                  "threads": torch.get_num_threads(),
                                  "feature_gib": (prob.query.numel() + prob.gallery.numel()) * 4 / 2**30}))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def _available_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return None


def peer_size(n_q: int, n_g: int, budget_gib: float) -> tuple[int, int]:
    """The largest (queries, gallery) with the problem's proportions whose torchreid peak fits the budget."""
    n = min(n_q + n_g, int(math.sqrt(budget_gib * 2**30 / PEER_BYTES_PER_ELEMENT)))
    q = max(1, round(n * n_q / (n_q + n_g)))
    return q, max(1, n - q)


def _row(label: str, r: dict) -> str:
    size = f"{r.get('num_query', '?')} x {r.get('num_gallery', '?')}"
    if "error" in r:
        return f"{label:<34} {size:>17}  failed: {r['error']} (peak {r['peak_gib']:.2f} GiB)"
    gpu = f"  GPU {r['gpu_gib']:.2f} GiB" if r.get("gpu_gib") is not None else ""
    loaded = f"{r['loaded_gib']:.2f}" if r.get("loaded_gib") is not None else "?"
    return (f"{label:<34} {size:>17} {r['seconds']:>9.2f} {r['peak_gib']:>9.2f} {loaded:>9}   "
            f"R1 {r['R1']:.4f}  mAP {r['mAP']:.4f}{gpu}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --child, one variant) and print its figures."""
    p = _parser()
    args = p.parse_args(argv)
    if args.child:
        (_generate if args.child == "generate" else _child)(args)
        return 0
    if args.num_distractors >= args.num_gallery:
        p.error(f"--num-distractors ({args.num_distractors}) must be smaller than --num-gallery ({args.num_gallery})")
    if args.peer_memory_gb is not None and args.peer_memory_gb <= 0:
        p.error(f"--peer-memory-gb: must be positive, got {args.peer_memory_gb}")
    # This process imports no torch and never holds the features: a child's peak RSS counts the
    # memory of its parent at the fork, so the parent must stay small.
    print(f"problem: {args.num_query} queries x {args.num_gallery} gallery ({args.num_distractors} distractors), "
          f"{args.num_ids} ids, {args.num_cams} cameras, dim {args.dim}")
    with tempfile.TemporaryDirectory(prefix="eval_scale_") as tmp:
        folder = Path(tmp)
        drawn = _run_child(args, "generate", folder, None)
        if "error" in drawn:
            print(f"drawing the problem failed: {drawn['error']}")
            return 1
        print(f"machine: {_cpu_name()}, {os.cpu_count()} cores, {_available_gib() or float('nan'):.1f} GiB "
              f"available; torch {drawn['torch']} ({drawn['threads']} threads); device {args.device}; "
              f"this process {_rss_gib() or float('nan'):.2f} GiB")
        print(f"features drawn in {drawn['seconds']:.1f} s: {drawn['feature_gib']:.2f} GiB as float32. Peak: the "
              "process's peak resident memory; at start: after importing torch and loading the features")
        print(f"{'variant':<34} {'queries x gallery':>17} {'time (s)':>9} {'peak GiB':>9} {'at start':>9}")
        if not args.skip_full:
            for variant, label in (("plain", "(a) blockwise, no re-ranking"), ("rerank", "(b) blockwise, re-ranking")):
                print(_row(label, _run_child(args, variant, folder, None)), flush=True)
        _compare_with_peer(args, folder)
    return 0


def _compare_with_peer(args: argparse.Namespace, folder: Path) -> None:
    """(c): torchreid at the largest size that fits, and (b) at that size."""
    if args.no_peer:
        return
    if torchreid_re_ranking() is None:
        print("(c) torchreid: not installed (pip install torchreid==0.2.5 gdown), skipped")
        return
    budget = args.peer_memory_gb if args.peer_memory_gb is not None else 0.5 * (_available_gib() or 8.0)
    limit = peer_size(args.num_query, args.num_gallery, budget)
    print(f"torchreid at the largest size whose estimated peak ({PEER_BYTES_PER_ELEMENT} B x (q + g)^2) "
          f"fits {budget:.1f} GiB:")
    print(_row("(c) torchreid re_ranking, full", _run_child(args, "torchreid", folder, limit)), flush=True)
    print(_row("(b) blockwise, re-ranking", _run_child(args, "rerank", folder, limit)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
