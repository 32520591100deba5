"""Training speed side by side: torchreid, fast-reid and this project's stage 1, same machine, same images.

One run generates (or reuses) the synthetic Market-layout folder of JPEGs with the project's
generator, reads it once into a manifest, and then measures, each toolkit in a fresh process
of its own, one after the other, the images per second of its full training step, data loading
included, as that toolkit loads data:

  torchreid   0.2.5: ImageTripletEngine (ResNet-50, softmax + triplet), its ImageDataManager with
              its RandomIdentitySampler, fp32 (it has no mixed precision)       benchmarks/peer_torchreid.py
  fastreid    1.4.0: Base-bagtricks ResNet-50 with AMP as it ships, its DataLoaderX and
              NaiveIdentitySampler, its AMPTrainer's step                      benchmarks/peer_fastreid.py
  clusteralign      stage 1 of the Market-size preset through the trainer: on a GPU bf16,
              channels_last, one CUDA graph of torch.compile's kernels          benchmarks/peer_project.py

All three train the same batch (P x K identities x images, 16 x 4 by default) at the same input
size (256x128) from the same files and identities (a dataset class registered with each peer
reads the manifest's lists). The peers' loaders get --workers processes each. Warm-up steps are
left out of the timing (the project's warm-up is its first epoch, which also compiles); the set-up
column holds everything else before the timed steps. The peers are the optional `[peers]`
install (`make peers`; docs/performance.md says why fast-reid needs `--no-deps` and two
compatibility names). Examples:

    python benchmarks/peer_speed.py --device cuda                                  # Market-size, H200: see docs
    python benchmarks/peer_speed.py --device cpu --height 128 --width 64 --train-ids 48 --test-ids 4 \\
        --steps 8 --warmup 2 --workers 2                                           # what fits two CPU cores
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import torch
import yaml

from clusteralign.data.dataset_config import DatasetConfig
from clusteralign.pipeline.prepare import prepare_dataset

from bench_args import non_negative_int, positive_int
from peer_common import PRESET, TOOLKITS, Result, Settings

# The package each toolkit's process imports (`make peers` installs the peers').
PACKAGES = {"torchreid": "torchreid", "fastreid": "fastreid", "clusteralign": "clusteralign"}
LABELS = {"torchreid": "torchreid", "fastreid": "fast-reid", "clusteralign": "this project"}


@dataclass
class Outcome:
    """A toolkit's result, or why there is none."""

    toolkit: str
    result: Result | None = None
    error: str = ""


def dataset_config(args: argparse.Namespace) -> DatasetConfig:
    """The Market-size preset's synthetic set, resized by the size options."""
    (name, raw), = yaml.safe_load(PRESET.read_text())["datasets"].items()
    spec = dict(raw["generate"])
    if args.train_ids is not None:
        # Any other size draws its image count (about 17 per identity, as Market's 12,936 / 751).
        spec.update(num_train_ids=args.train_ids, num_train_images=None)
    if args.test_ids is not None:
        scale = args.test_ids / spec["num_test_ids"]
        spec.update(num_test_ids=args.test_ids, num_distractors=round(spec["num_distractors"] * scale),
                    num_junk=round(spec["num_junk"] * scale))
    spec.update(height=args.image_height, width=args.image_width)
    return DatasetConfig.from_mapping(name, {**raw, "generate": spec})


def run_one(toolkit: str, settings: Settings) -> Result:
    """Measure `toolkit` in this process (the child's side)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if toolkit == "torchreid":
        import peer_torchreid as module
    elif toolkit == "fastreid":
        import peer_fastreid as module
    else:
        import peer_project as module
    return module.measure(settings)


def spawn(toolkit: str, settings: Settings, work: Path, timeout: float | None = None) -> Outcome:
    """Measure `toolkit` in a fresh Python process; its output goes to work/<toolkit>.log."""
    if find_spec(PACKAGES[toolkit]) is None:
        return Outcome(toolkit, error=f"{PACKAGES[toolkit]} is not installed (make peers)")
    result_path, log_path = work / f"{toolkit}.json", work / f"{toolkit}.log"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-one", toolkit, "--settings", settings.to_json(),
           "--result", str(result_path)]
    print(f"measuring {LABELS[toolkit]} ... (log: {log_path})", flush=True)
    try:
        with open(log_path, "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path.cwd(), timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome(toolkit, error=f"no result within --timeout {timeout:g} s")
    if proc.returncode != 0 or not result_path.is_file():
        lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        return Outcome(toolkit, error=f"failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
    return Outcome(toolkit, Result.from_json(result_path.read_text()))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def describe_machine(device: str) -> str:
    gpu = f"{torch.cuda.get_device_name()}, " if device == "cuda" else ""
    return (f"{gpu}{cpu_name()} ({os.cpu_count()} cores); Python {platform.python_version()}, torch {torch.__version__}"
            + (f", CUDA {torch.version.cuda}" if device == "cuda" else ""))


def print_table(outcomes: list[Outcome]) -> None:
    """One row per toolkit, then this project's speed-up over each peer and over the faster one."""
    print()
    print(f"{'toolkit':<13} {'version':<8} {'images/ids':>12} {'steps':>6} {'img/s':>9} {'data wait':>9} "
          f"{'set-up s':>9}  warm-up left out")
    for o in outcomes:
        r = o.result
        if r is None:
            print(f"{LABELS[o.toolkit]:<13} {'':<8} {'-':>12} {'-':>6} {'-':>9} {'-':>9} {'-':>9}  {o.error}")
            continue
        wait = "-" if r.data_wait is None else f"{100 * r.data_wait:.0f}%"
        train = f"{r.train_images}/{r.train_ids}"
        print(f"{LABELS[o.toolkit]:<13} {r.version:<8} {train:>12} {r.steps:>6} {r.images_per_second:>9.1f} {wait:>9} "
              f"{r.setup_seconds:>9.1f}  {r.warmup}")
    print()
    for o in outcomes:
        if o.result is not None:
            print(f"{LABELS[o.toolkit]:<13} {o.result.recipe}")
    done = {o.toolkit: o.result for o in outcomes if o.result is not None}
    ours = done.get("clusteralign")
    peers = {k: v for k, v in done.items() if k != "clusteralign"}
    if ours is None or not peers:
        return
    print()
    for toolkit, r in peers.items():
        print(f"this project / {LABELS[toolkit]:<10} {ours.images_per_second / r.images_per_second:6.2f}x")
    fastest = max(peers, key=lambda k: peers[k].images_per_second)
    print(f"this project / the faster peer ({LABELS[fastest]}): "
          f"{ours.images_per_second / peers[fastest].images_per_second:.2f}x")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--toolkits", default=",".join(TOOLKITS),
                   help=f"comma-separated, measured in this order (default: {','.join(TOOLKITS)})")
    p.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet18"])
    p.add_argument("--height", type=positive_int, default=256, help="network input height")
    p.add_argument("--width", type=positive_int, default=128, help="network input width")
    p.add_argument("--num-identities", type=positive_int, default=16, help="P")
    p.add_argument("--num-instances", type=positive_int, default=4, help="K")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="data-loader processes of each peer (default: one per CPU core)")
    p.add_argument("--warmup", type=non_negative_int, default=20, help="untimed steps first")
    p.add_argument("--steps", type=positive_int, default=200, help="timed steps")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, help="torch threads of each toolkit's process (default: torch's)")
    p.add_argument("--train-ids", type=positive_int, help="training identities (default: the preset's 751)")
    p.add_argument("--test-ids", type=positive_int, help="test identities (default: the preset's 750)")
    p.add_argument("--image-height", type=positive_int, default=128, help="height of the generated JPEGs")
    p.add_argument("--image-width", type=positive_int, default=64, help="width of the generated JPEGs")
    p.add_argument("--prepare-workers", type=positive_int, default=os.cpu_count() or 1,
                   help="processes that render the synthetic set")
    p.add_argument("--work-dir", type=Path, default=Path("results/benchmarks/peer_speed"))
    p.add_argument("--timeout", type=positive_int, default=1200, help="seconds each toolkit's process may take")
    p.add_argument("--run-one", choices=TOOLKITS, help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.toolkits = [t.strip() for t in args.toolkits.split(",") if t.strip()]
    unknown = [t for t in args.toolkits if t not in TOOLKITS]
    if unknown or not args.toolkits:
        p.error(f"--toolkits: unknown {', '.join(unknown) or '(none given)'}; expected some of {', '.join(TOOLKITS)}")
    if args.num_instances < 2:
        p.error(f"--num-instances: the triplet loss needs at least 2 images per identity, got {args.num_instances}")
    if args.train_ids is not None and args.train_ids < args.num_identities:
        p.error(f"--train-ids: a batch draws {args.num_identities} identities (--num-identities), got {args.train_ids}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.run_one:
        result = run_one(args.run_one, Settings.from_json(args.settings))
        args.result.write_text(result.to_json())
        sys.stdout.flush()
        sys.stderr.flush()
        # The result is out: leave without tearing down what the toolkit left running (fast-reid's
        # prefetch thread still feeding its queue, loader workers), which can block an exit.
        os._exit(0)
    work = args.work_dir.resolve()
    dataset = dataset_config(args)
    manifest = prepare_dataset(dataset, work / "dataset", work / "manifest.csv", workers=args.prepare_workers)
    train = manifest[manifest["split"] == "train"]
    settings = Settings(manifest=str(work / "manifest.csv"), work_dir=str(work), device=args.device,
                        height=args.height, width=args.width, num_identities=args.num_identities,
                        num_instances=args.num_instances, backbone=args.backbone, workers=args.workers,
                        warmup=args.warmup, steps=args.steps, seed=args.seed, threads=args.threads)
    outcomes = [spawn(toolkit, settings, work, args.timeout) for toolkit in args.toolkits]
    print()
    print(f"machine       {describe_machine(args.device)}")
    print(f"data          {work / 'dataset' / 'images'}: {len(train)} training images of {train['pid'].nunique()} "
          f"identities, {args.image_height}x{args.image_width} JPEG")
    print(f"step          {args.backbone}, input {args.height}x{args.width}, batch {settings.batch} "
          f"({args.num_identities}x{args.num_instances}), {args.steps} timed steps after the warm-up, on {args.device}")
    print_table(outcomes)
    failed = [o.toolkit for o in outcomes if o.result is None]
    if failed:
        raise SystemExit(f"no result for {', '.join(failed)} (see above and the logs in {work})")


if __name__ == "__main__":
    main()
