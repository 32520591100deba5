"""Is the training step compute-bound? Model-only vs full-step throughput, and FLOP/s.

Two measurements on the same batch shape, same model, objective and optimizer:

  model-only: forward + loss + backward + optimizer step on an already augmented float batch
              that sits on the device (the best the data path could ever allow);
  full step:  the trainer's real path — index a P x K batch out of the uint8 image cache held on
              the device, augment it there (resize, flip, pad+crop, normalise, random erasing;
              `--augment-chunk` batches per call, by default as the trainer does), then the same
              step (clusteralign.train.step.train_step).

Their ratio is the data path's efficiency (1.0 = free). FLOPs per image come from
torch.utils.flop_counter; on a GPU the achieved rate is compared with the device's dense bf16
peak when known. Examples:

    python benchmarks/train_throughput.py                                   # CPU-sized default
    python benchmarks/train_throughput.py --backbone resnet50 --height 256 --width 128 \\
        --cache-height 128 --cache-width 64 --amp bf16 --channels-last --device cuda
    python benchmarks/train_throughput.py ... --device cuda --amp bf16 --channels-last --cuda-graph
    python benchmarks/train_throughput.py --family mgn --height 384 --width 128 --device cuda --amp bf16
    python benchmarks/train_throughput.py --family all --base-width 16     # every family, one table
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from clusteralign.config import AugmentConfig, LossConfig, ModelConfig, OptimizerConfig, StageConfig
from clusteralign.models import FAMILIES, build_model
from clusteralign.train.augment import train_transform
from clusteralign.train.batches import augmented_batches, default_chunk
from clusteralign.train.distributed import resolve_device
from clusteralign.train.objective import Objective
from clusteralign.train.sampler import PKSampler
from clusteralign.train.schedule import build_optimizer
from clusteralign.train.step import build_step, train_step
from clusteralign.train.inputs import train_augment

from bench_args import add_model_arguments, positive_int
from gpu_data_sheet import data_sheet


def peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, if its data sheet is in gpu_data_sheet.py."""
    if device.type != "cuda":
        return None
    rates = data_sheet(torch.cuda.get_device_name(device))
    return rates[0] if rates else None


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """Measured bf16 rate of one large random matrix product: the ceiling this device really reaches."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def measure(family: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Time one family's model-only step, full step and augmentation; FLOPs per image."""
    torch.manual_seed(0)
    augment = AugmentConfig(height=args.height, width=args.width, cache_height=args.cache_height,
                            cache_width=args.cache_width)
    stage = StageConfig(num_identities=args.num_identities, num_instances=args.num_instances, augment=augment,
                        amp=args.amp, channels_last=args.channels_last)
    model = build_model(ModelConfig(family=family, backbone=args.backbone, base_width=args.base_width),
                        args.num_classes, load_pretrained=False).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    objective = Objective(LossConfig(), args.num_classes, model.branch_feature_dim).to(device)
    graphed = args.cuda_graph and device.type == "cuda"
    optimizer = build_optimizer(list(model.named_parameters()), OptimizerConfig(), fused=device.type == "cuda",
                                capturable=graphed)
    step_model = torch.compile(model, mode=args.compile_mode) if args.compile else model
    model.train()

    cache_hw = (args.cache_height or args.height, args.cache_width or args.width)
    images = torch.randint(0, 256, (args.num_images, 3, *cache_hw), dtype=torch.uint8, device=device)
    labels = torch.arange(args.num_images, device=device) % args.num_classes
    sampler = PKSampler(labels.tolist(), args.num_identities, args.num_instances, seed=0)
    batches = torch.tensor(list(sampler), dtype=torch.long, device=device)
    spec = train_augment(stage.augment)
    gen = torch.Generator(device=device).manual_seed(1)
    batch = batches.shape[1]

    # In the layout of the trainer's batches (channels_last when asked), as the full step gets them.
    x_fixed = train_transform(images[batches[0]], spec, gen, channels_last=stage.channels_last)
    y_fixed = labels[batches[0]]
    kw = dict(amp=stage.amp, channels_last=stage.channels_last)
    step = build_step(step_model, objective, optimizer, graphed=graphed, **kw)

    def model_only() -> None:
        step(x_fixed, y_fixed, None)

    chunk = args.augment_chunk or default_chunk(device)

    def epochs() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The trainer's batch stream (P x K batches, augmented `chunk` per call), epoch after epoch."""
        while True:
            yield from augmented_batches(images, labels, batches, spec, gen, chunk=chunk,
                                         channels_last=stage.channels_last)

    train_stream, augment_stream = epochs(), epochs()

    def full_step() -> None:
        x, y = next(train_stream)
        step(x, y, None)

    def augment_only() -> None:
        next(augment_stream)

    # FLOPs of one forward and one full step (forward + backward) on this batch shape.
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            model(x_fixed)
    fwd_flops = fc.get_total_flops() / batch
    with FlopCounterMode(display=False) as fc:
        train_step(model, objective, optimizer, x_fixed, y_fixed, **kw)
    step_flops = fc.get_total_flops() / batch

    t_model = timed(model_only, args.steps, args.warmup, device)
    t_full = timed(full_step, args.steps, args.warmup, device)
    t_aug = timed(augment_only, args.steps, args.warmup, device)
    return {"batch": batch, "fwd_gflop": fwd_flops / 1e9, "step_gflop": step_flops / 1e9,
            "model_ips": batch / t_model, "full_ips": batch / t_full, "aug_ms": 1e3 * t_aug,
            "model_ms": 1e3 * t_model, "full_ms": 1e3 * t_full, "ratio": t_model / t_full, "chunk": chunk,
            "tflops": step_flops * batch / t_full / 1e12}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="baseline",
                   help=f"a model family, several separated by commas, or 'all' ({', '.join(FAMILIES)})")
    add_model_arguments(p, backbone="resnet18", family=False)
    p.add_argument("--height", type=positive_int, default=128)
    p.add_argument("--width", type=positive_int, default=64)
    p.add_argument("--cache-height", type=positive_int, default=None, help="decoded-image cache size (default: input)")
    p.add_argument("--cache-width", type=positive_int, default=None)
    p.add_argument("--num-identities", type=positive_int, default=16, help="P")
    p.add_argument("--num-instances", type=positive_int, default=4, help="K")
    p.add_argument("--num-images", type=positive_int, default=2000, help="images in the in-memory cache")
    p.add_argument("--num-classes", type=positive_int, default=500)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    # The training config's `compile` uses the default mode; the others are here to be measured.
    # (reduce-overhead brings inductor's own CUDA graphs: not with --cuda-graph.)
    p.add_argument("--compile-mode", default="default",
                   choices=["default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead"])
    p.add_argument("--cuda-graph", action="store_true", help="replay the step as one CUDA graph (CUDA only)")
    p.add_argument("--augment-chunk", type=int, default=0,
                   help="batches augmented per call, as the config's augment_chunk (0: the trainer's default)")
    p.add_argument("--steps", type=positive_int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=positive_int, default=None)
    args = p.parse_args()
    families = list(FAMILIES) if args.family == "all" else [f.strip() for f in args.family.split(",")]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown --family {', '.join(unknown)}; expected one of {', '.join(FAMILIES)} or 'all'")

    if args.compile and args.cuda_graph and args.compile_mode in ("max-autotune", "reduce-overhead"):
        p.error(f"--compile-mode {args.compile_mode} captures CUDA graphs itself: leave out --cuda-graph")
    if args.augment_chunk < 0:
        p.error(f"--augment-chunk must be 0 (the trainer's default) or a number of batches, got {args.augment_chunk}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    peak = peak_tflops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, " \
        f"{torch.get_num_threads()} threads)"
    cache_hw = (args.cache_height or args.height, args.cache_width or args.width)
    print(f"device            {name}")
    measured = matmul_tflops(device) if device.type == "cuda" else None
    if measured:
        print(f"bf16 matmul       {measured:10.1f} TFLOP/s measured (8192^3, random data); "
              f"data-sheet peak {peak or float('nan'):.0f}")
    rows = []
    for family in families:
        r = measure(family, args, device)
        rows.append((family, r))
        print(f"model             {family}/{args.backbone} width {args.base_width}, input {args.height}x{args.width}, "
              f"cache {cache_hw[0]}x{cache_hw[1]}, batch {r['batch']} ({args.num_identities}x{args.num_instances}), "
              f"amp {args.amp}, channels_last {args.channels_last}, compile {args.compile_mode if args.compile else False}, "
              f"cuda_graph {args.cuda_graph and device.type == 'cuda'}, augment_chunk {r['chunk']}")
        print(f"FLOPs per image   forward {r['fwd_gflop']:.2f} GFLOP, step {r['step_gflop']:.2f} GFLOP")
        print(f"model-only        {r['model_ips']:10.1f} img/s  ({r['model_ms']:.1f} ms/step)")
        print(f"full step         {r['full_ips']:10.1f} img/s  ({r['full_ms']:.1f} ms/step)")
        print(f"augmentation only {r['batch'] / r['aug_ms'] * 1e3:10.1f} img/s  ({r['aug_ms']:.1f} ms/batch)")
        print(f"data-path ratio   {r['ratio']:10.3f}  (full / model-only throughput)")
        line = f"achieved          {r['tflops']:10.2f} TFLOP/s"
        if peak:
            line += f"  = {100 * r['tflops'] / peak:.1f}% of {peak:.0f} TFLOP/s bf16 peak"
        if measured:
            line += f", {100 * r['tflops'] / measured:.1f}% of the measured matmul rate"
        print(line)
    if len(rows) > 1:
        print()
        print(f"{'family':<10} {'GFLOP/img':>10} {'model img/s':>12} {'full img/s':>11} {'ratio':>6} {'TFLOP/s':>8}"
              + ("  % peak" if peak else ""))
        for family, r in rows:
            print(f"{family:<10} {r['step_gflop']:>10.2f} {r['model_ips']:>12.1f} {r['full_ips']:>11.1f} "
                  f"{r['ratio']:>6.3f} {r['tflops']:>8.3f}" + (f"  {100 * r['tflops'] / peak:6.1f}" if peak else ""))


if __name__ == "__main__":
    main()
