"""How fast could one training step be? A roofline of the step, operator by operator.

Runs one training step (forward under bf16 autocast, losses, backward, fused Adam) on fake
tensors: shapes and dtypes only, no arithmetic, so ResNet-50 at batch 64 takes seconds on any
CPU. Every aten operator the step dispatches is recorded with its FLOPs (torch.utils.flop_counter's
formulas, as train_throughput.py counts them) and the fewest bytes it has to move: each input read
once, each new output and each input it updates written once. Views move nothing.

From these, two lower bounds on a step's time on a device with a given peak and memory bandwidth:

  separate kernels  every operator is a kernel of its own, as in eager mode or a CUDA graph of it:
                    the sum over operators of max(FLOPs / peak, bytes / bandwidth);
  ideal fusion      every other operator (normalisation, activation, residual add, cast, pooling,
                    the losses) is fused into a neighbouring convolution or matrix product at no
                    cost; only those and the optimizer move data.

Both assume every kernel runs at the device's full rate, so real steps are slower. The second
is a ceiling no implementation of this step can pass on that device: no fusion beats it.
Autocast runs on the CPU here; it puts the same operators in bf16 as CUDA's does (convolutions
and matrix products; batch norm keeps its input's dtype). Examples:

    python benchmarks/step_roofline.py                        # ResNet-50 baseline, 256x128, batch 64
    python benchmarks/step_roofline.py --num-identities 64    # batch 256
    python benchmarks/step_roofline.py --peak-tflops 780 --bandwidth-tbs 3.0   # your own device
"""

from __future__ import annotations

import argparse
import contextlib
import copy
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from clusteralign.config import LossConfig, ModelConfig, OptimizerConfig
from clusteralign.models import build_model
from clusteralign.train.objective import Objective
from clusteralign.train.schedule import build_optimizer

from bench_args import add_model_arguments, positive_int
from gpu_data_sheet import DATA_SHEET

aten = torch.ops.aten
# Allocations: no kernel touches memory.
ALLOCATIONS = {aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided}
# Read only their input's shape and dtype, then write their output.
SHAPE_ONLY = {aten.zeros_like, aten.ones_like, aten.full_like, aten.new_zeros, aten.new_ones, aten.new_full}
# Write their destination without reading it.
OVERWRITE = {aten.copy_, aten.zero_, aten.fill_}


def category(op: str) -> str:
    """The group an aten operator's cost is reported under."""
    if op.startswith("convolution"):
        return "convolution backward" if "backward" in op else "convolution"
    if op in ("mm", "addmm", "bmm", "baddbmm"):
        return "matrix product"
    if "batch_norm" in op:
        return "batch norm"
    if "fused_adam" in op:
        return "optimizer"
    if op in ("_to_copy", "copy_", "clone"):
        return "cast/copy"
    if op in ("relu", "relu_", "threshold_backward", "add", "add_", "mul", "mul_", "div", "sub"):
        return "activation/elementwise"
    if "pool" in op:
        return "pooling"
    return "losses/other"


FUSED_AWAY = {"batch norm", "cast/copy", "activation/elementwise", "pooling", "losses/other"}


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def nbytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements of `t` (an expanded dimension is stored once)."""
    distinct = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            distinct *= size
    return distinct * t.element_size()


@dataclass
class OpCost:
    op: str
    flops: int
    bytes: int


class StepRecorder(TorchDispatchMode):
    """Records each dispatched operator's FLOPs and minimum memory traffic."""

    def __init__(self) -> None:
        super().__init__()
        self.costs: list[OpCost] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        returns = schema.returns
        if func.overloadpacket in ALLOCATIONS or (
                returns and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)):
            return out  # an allocation or a view
        read = written = 0
        bound = schema.arguments
        values = list(args) + [kwargs.get(a.name) for a in bound[len(args):]]
        for arg, value in zip(bound, values):
            size = sum(nbytes(t) for t in _tensors(value))
            writes = arg.alias_info is not None and arg.alias_info.is_write
            if not (func.overloadpacket in SHAPE_ONLY or (writes and func.overloadpacket in OVERWRITE)):
                read += size
            if writes:
                written += size
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for ret, value in zip(returns, outs):
            if ret.alias_info is None:
                written += sum(nbytes(t) for t in _tensors(value))
        if not written:
            return out  # a query of metadata (prim.device, sizes): no kernel
        flops = 0
        if func.overloadpacket in flop_registry:
            flops = int(flop_registry[func.overloadpacket](*args, **kwargs, out_val=out))
        self.costs.append(OpCost(str(func.overloadpacket).removeprefix("aten."), flops, read + written))
        return out


def record_step(args: argparse.Namespace) -> list[OpCost]:
    """The operators of one training step of the configured model, on fake tensors."""
    torch.manual_seed(0)
    # Built for real (under a second), then copied into fake tensors: MGN deep-copies its
    # branches while it is built, which fake tensors do not support.
    model = build_model(ModelConfig(family=args.family, backbone=args.backbone, base_width=args.base_width),
                        args.num_classes, load_pretrained=False)
    objective = Objective(LossConfig(), args.num_classes, model.branch_feature_dim)
    fake = FakeTensorMode()
    with FakeCopyMode(fake):
        model, objective = copy.deepcopy((model, objective))
    with fake:
        # Fused, as the trainer builds it on a GPU.
        optimizer = build_optimizer(list(model.named_parameters()), OptimizerConfig(), fused=True)
        batch = args.num_identities * args.num_instances
        x = torch.randn(batch, 3, args.height, args.width)
        y = torch.arange(batch) // args.num_instances % args.num_classes
        model.train()
        recorder = StepRecorder()
        # The second step is recorded: the first also creates Adam's state.
        for recorded in (False, True):
            # train_step's sequence (clusteralign.train.step), with the CPU's autocast.
            with recorder if recorded else contextlib.nullcontext():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp == "bf16"):
                    out = model(x)
                terms = objective(out, y, None)
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
    return recorder.costs



def bound_seconds(costs: list[OpCost], peak_flops: float, bandwidth: float) -> float:
    return sum(max(c.flops / peak_flops, c.bytes / bandwidth) for c in costs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, backbone="resnet50")
    p.add_argument("--height", type=positive_int, default=256)
    p.add_argument("--width", type=positive_int, default=128)
    p.add_argument("--num-identities", type=positive_int, default=16, help="P")
    p.add_argument("--num-instances", type=positive_int, default=4, help="K")
    p.add_argument("--num-classes", type=positive_int, default=751)
    p.add_argument("--amp", default="bf16", choices=["none", "bf16"])
    p.add_argument("--peak-tflops", type=float, default=None, help="add a device with this dense peak ...")
    p.add_argument("--bandwidth-tbs", type=float, default=None, help="... and this memory bandwidth")
    args = p.parse_args()
    if (args.peak_tflops is None) != (args.bandwidth_tbs is None):
        p.error("--peak-tflops and --bandwidth-tbs go together")
    for name in ("peak_tflops", "bandwidth_tbs"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    devices = dict(DATA_SHEET)
    if args.peak_tflops is not None:
        devices["given"] = (args.peak_tflops, args.bandwidth_tbs)

    costs = record_step(args)
    batch = args.num_identities * args.num_instances
    total_flops = sum(c.flops for c in costs)
    fused = [c for c in costs if category(c.op) not in FUSED_AWAY]
    print(f"model             {args.family}/{args.backbone} width {args.base_width}, input {args.height}x{args.width}, "
          f"batch {batch} ({args.num_identities}x{args.num_instances}), {args.num_classes} classes, amp {args.amp}")
    print(f"work per step     {total_flops / 1e9:.1f} GFLOP ({total_flops / batch / 1e9:.2f} per image), "
          f"{len(costs)} operators")
    print(f"traffic per step  {sum(c.bytes for c in costs) / 1e6:,.1f} MB as separate kernels, "
          f"{sum(c.bytes for c in fused) / 1e6:,.1f} MB with ideal fusion")

    # The goal is set on an H100 (SXM).
    first = "H100"
    peak, bw = devices[first]
    groups: dict[str, list[OpCost]] = defaultdict(list)
    for c in costs:
        groups[category(c.op)].append(c)
    print()
    print(f"{'operators':<24} {'count':>6} {'GFLOP':>9} {'MB':>9} {'ms on ' + first:>10}  (separate kernels)")
    for name, group in sorted(groups.items(), key=lambda kv: -bound_seconds(kv[1], peak * 1e12, bw * 1e12)):
        print(f"{name:<24} {len(group):>6} {sum(c.flops for c in group) / 1e9:>9.1f} "
              f"{sum(c.bytes for c in group) / 1e6:>9,.1f} {1e3 * bound_seconds(group, peak * 1e12, bw * 1e12):>10.2f}")

    print()
    print(f"{'device':<10} {'TFLOP/s':>8} {'TB/s':>6} {'bound':>17} {'ms/step':>8} {'img/s':>8} {'TFLOP/s':>8} {'% peak':>7}")
    for name, (peak, bw) in devices.items():
        for label, subset in (("separate kernels", costs), ("ideal fusion", fused)):
            seconds = bound_seconds(subset, peak * 1e12, bw * 1e12)
            rate = total_flops / seconds / 1e12
            print(f"{name:<10} {peak:>8.0f} {bw:>6.2f} {label:>17} {1e3 * seconds:>8.3g} {batch / seconds:>8.0f} "
                  f"{rate:>8.3g} {100 * rate / peak:>7.3g}")


if __name__ == "__main__":
    main()
