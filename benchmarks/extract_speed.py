"""Feature extraction throughput: images/s of test features (eval mode, flip in the same batch).

The images are uint8 tensors already in memory, as the workflow holds them, so this measures
the transform + network path that query/gallery extraction and the anchor computation use.

    python benchmarks/extract_speed.py                               # CPU-sized default
    python benchmarks/extract_speed.py --backbone resnet50 --height 256 --width 128 \\
        --cache-height 128 --cache-width 64 --amp bf16 --channels-last --device cuda
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from clusteralign.config import ModelConfig
from clusteralign.models import build_model
from clusteralign.train.augment import AugmentSpec
from clusteralign.train.features import extract_features
from clusteralign.train.distributed import resolve_device

from bench_args import add_model_arguments, positive_int


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, backbone="resnet18")
    p.add_argument("--height", type=positive_int, default=128)
    p.add_argument("--width", type=positive_int, default=64)
    p.add_argument("--cache-height", type=positive_int, default=None)
    p.add_argument("--cache-width", type=positive_int, default=None)
    p.add_argument("--num-images", type=positive_int, default=1024)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--repeats", type=positive_int, default=3)
    args = p.parse_args()

    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    model = build_model(ModelConfig(family=args.family, backbone=args.backbone, base_width=args.base_width), 751,
                        load_pretrained=False).to(device).eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    hw = (args.cache_height or args.height, args.cache_width or args.width)
    images = torch.randint(0, 256, (args.num_images, 3, *hw), dtype=torch.uint8, device=device)
    spec = AugmentSpec(height=args.height, width=args.width)
    kw = dict(device=device, batch_size=args.batch_size, flip=not args.no_flip, amp=args.amp,
              channels_last=args.channels_last)
    extract_features(model, images[: args.batch_size], spec, **kw)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        feats, _ = extract_features(model, images, spec, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    print(f"device      {name}")
    print(f"model       {args.family}/{args.backbone} width {args.base_width}, input {args.height}x{args.width}, "
          f"cache {hw[0]}x{hw[1]}, batch {args.batch_size}, flip {not args.no_flip}, amp {args.amp}, "
          f"channels_last {args.channels_last}")
    print(f"features    {tuple(feats.shape)}")
    print(f"extraction  {args.num_images / best:10.1f} img/s  (best of {args.repeats}: {best:.3f} s "
          f"for {args.num_images} images)")


if __name__ == "__main__":
    main()
