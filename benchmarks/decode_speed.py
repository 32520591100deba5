"""How fast a dataset's images are decoded into the in-memory uint8 cache, per number of workers.

Every training, anchor and feature job starts by decoding its splits (clusteralign.data.images
.load_images). The dataset is prepared as the workflow's `prepare_dataset` rule does (a synthetic
one is generated into --work-dir once), then all its images are decoded at the cache size with
each --workers count; every count must give the same tensor. Examples:

    python benchmarks/decode_speed.py                                   # config.yaml's dataset
    python benchmarks/decode_speed.py --config configs/synthetic_market_size.yaml --workers 1 2 4 8 16 \\
        --height 128 --width 64 --prepare-workers 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from clusteralign.data.dataset_config import DatasetConfig
from clusteralign.data.images import load_images
from clusteralign.pipeline.prepare import prepare_dataset

from bench_args import non_negative_int, positive_int, read_workflow_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=Path("config.yaml"))
    p.add_argument("--dataset", help="a dataset of the config (default: its first)")
    p.add_argument("--work-dir", type=Path, default=Path("results/benchmarks/decode_speed"))
    p.add_argument("--height", type=positive_int, default=256)
    p.add_argument("--width", type=positive_int, default=128)
    p.add_argument("--workers", type=non_negative_int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=positive_int, default=2, help="timed decodes per worker count (the best is shown)")
    p.add_argument("--prepare-workers", type=positive_int, default=2, help="processes that render a synthetic set")
    args = p.parse_args()

    datasets = read_workflow_config(p, args.config, "--config").get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        p.error(f"{args.config} has no `datasets:` section")
    name = args.dataset or next(iter(datasets))
    if name not in datasets:
        p.error(f"{args.config} has no dataset {name!r}; it has {', '.join(datasets)}")
    work = args.work_dir / name
    manifest = prepare_dataset(DatasetConfig.from_mapping(name, datasets[name]), work / "dataset",
                               work / "manifest.csv", workers=args.prepare_workers)
    paths = manifest["path"].tolist()
    size = (args.height, args.width)
    load_images(paths, size, num_workers=max(args.workers))  # warm the page cache: time decoding, not the disk

    print(f"dataset     {name}: {len(paths)} images decoded at {args.height}x{args.width} "
          f"({len(paths) * 3 * args.height * args.width / 1e9:.2f} GB of uint8)")
    print(f"{'workers':>7} {'seconds':>8} {'img/s':>8}")
    reference = None
    for workers in args.workers:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            images = load_images(paths, size, num_workers=workers)
            best = min(best, time.perf_counter() - t0)
        if reference is None:
            reference = images
        elif not torch.equal(images, reference):
            raise SystemExit(f"{workers} workers decoded other pixels than {args.workers[0]}")
        print(f"{workers:>7} {best:>8.2f} {len(paths) / best:>8.0f}")


if __name__ == "__main__":
    main()
