"""Data-parallel training with PyTorch's own engine: one process per GPU, started by torchrun.

A single process is the special case world_size = 1, where every helper here is a no-op, so
the trainer has one code path. Under torchrun each rank trains on its own identities of the
same global P x K batch (see PKSampler); DDP averages gradients; the triplet loss mines over
the gathered global batch, and batch-norm statistics can be synchronised, so N processes
follow the trajectory of one process with the N-times larger batch.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when visible, else CPU; "cuda" without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but no CUDA device is visible")
    return torch.device(name)


def setup(device_pref: str) -> tuple[DistContext, torch.device]:
    """Join the torchrun job described by the environment (if any) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_pref)
    use_cuda = device.type == "cuda"
    if world_size == 1:
        return DistContext(), device
    ctx = DistContext(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if use_cuda:
        torch.cuda.set_device(ctx.local_rank)
        device = torch.device("cuda", ctx.local_rank)
    if not dist.is_initialized():
        # Rank 0 validates while the others wait at the next collective: allow for long validations.
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return ctx, device


def teardown(ctx: DistContext) -> None:
    """Leave the process group (when there is one)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of each rank's input is the sum of all ranks' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class _AllGather(torch.autograd.Function):
    """Concatenation over ranks; each rank's slice receives the sum of all ranks' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def all_gather_with_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate `x` (same shape on every rank) in rank order; gradients flow back to each source."""
    return _AllGather.apply(x) if ctx.enabled else x


def all_gather_no_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate `x` (same shape on every rank) from every rank in rank order."""
    if not ctx.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def average_(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """In place: the mean of `t` over ranks."""
    if ctx.enabled:
        dist.all_reduce(t)
        t /= ctx.world_size
    return t


def broadcast_(t: torch.Tensor, ctx: DistContext, src: int = 0) -> torch.Tensor:
    """In place: rank `src`'s `t` on every rank."""
    if ctx.enabled:
        dist.broadcast(t, src)
    return t


def gather_objects(obj: object, ctx: DistContext) -> list[object]:
    """Every rank's `obj`, in rank order (on every rank)."""
    if not ctx.enabled:
        return [obj]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


class CrossRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover the batches of all ranks.

    torch's SyncBatchNorm runs only on accelerators; this is the same computation with
    differentiable all-reduces, used on CPU (gloo) so that multi-process CPU training and
    its tests behave as one process with the whole batch.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = x.shape[1]
        n = stats[2 * c]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of `model` by a cross-rank one (torch's on CUDA, ours on CPU)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, CrossRankBatchNorm):
            new = CrossRankBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            new.load_state_dict(child.state_dict())
            if child.affine:
                new.weight.requires_grad_(child.weight.requires_grad)
                new.bias.requires_grad_(child.bias.requires_grad)
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model
