"""What a checkpoint costs the training thread: written in place, or handed to the background writer.

Builds the model with Adam's state (one step taken, so every moment buffer exists), then times
`torch_save` of the trainer's checkpoint contents against `CheckpointWriter.save` (the snapshot
copy the training thread waits for) and the writer's whole write. Example:

    python benchmarks/checkpoint_speed.py --backbone resnet50 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from clusteralign.config import ModelConfig, OptimizerConfig
from clusteralign.io import torch_save
from clusteralign.models import build_model
from clusteralign.train.checkpoint import CheckpointWriter
from clusteralign.train.schedule import build_optimizer
from clusteralign.train.distributed import resolve_device

from bench_args import add_model_arguments, positive_int


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, backbone="resnet50", family=False)
    p.add_argument("--num-classes", type=positive_int, default=751)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = p.parse_args()

    device = resolve_device(args.device)
    model = build_model(ModelConfig(backbone=args.backbone, base_width=args.base_width), args.num_classes,
                        load_pretrained=False).to(device)
    optimizer = build_optimizer(list(model.named_parameters()), OptimizerConfig(), fused=device.type == "cuda")
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1}

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "last.pt"
        torch_save(state, path)  # warm-up: file system, pickler
        size = path.stat().st_size
        in_place, handed, whole = [], [], []
        writer = CheckpointWriter()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            torch_save(state, path)
            in_place.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            writer.save(state, path)
            handed.append(time.perf_counter() - t0)
            writer.wait()
            whole.append(time.perf_counter() - t0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device                 {name}")
    print(f"checkpoint             {args.backbone} width {args.base_width}, {args.num_classes} classes, with Adam: "
          f"{size / 1e6:.0f} MB")
    print(f"written in place       {min(in_place):.3f} s on the training thread (best of {args.repeats})")
    print(f"background writer      {min(handed):.3f} s on the training thread, {min(whole):.3f} s until on disk")


if __name__ == "__main__":
    main()
