"""The training step: one optimisation step on an augmented batch, eager or replayed as a CUDA graph.

At a P x K batch of 64 a ResNet-50 step launches about a thousand kernels, and launching them
from Python takes longer than the GPU needs to run them (measured on an H200: 22.9 ms per step
eagerly against 44 ms for four times the batch). Replaying a captured graph costs one launch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models.output import ReIDOutput
from . import distributed
from .features import autocast
from .objective import Objective

StepResult = tuple[dict[str, torch.Tensor], ReIDOutput]
# One optimisation step on an augmented batch: (x, labels, anchors) -> (loss terms, output).
Step = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], StepResult]


def build_step(
    model: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    *,
    graphed: bool = False,
    amp: str = "none",
    channels_last: bool = False,
    center_opt: torch.optim.Optimizer | None = None,
    center_weight: float = 1.0,
    ctx: distributed.DistContext = distributed.DistContext(),
) -> Step:
    """The step a training loop calls: a `GraphedStep` when `graphed`, else `train_step` with these settings."""
    if graphed:
        if center_opt is not None or ctx.enabled:
            raise ValueError("a graphed step takes no centre-loss optimizer and runs in one process")
        return GraphedStep(model, objective, optimizer, amp=amp, channels_last=channels_last)

    def step(x: torch.Tensor, y: torch.Tensor, anchors: torch.Tensor | None = None) -> StepResult:
        return train_step(model, objective, optimizer, x, y, anchors=anchors, center_opt=center_opt,
                          center_weight=center_weight, amp=amp, channels_last=channels_last, ctx=ctx)

    return step


def train_step(
    model: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    anchors: torch.Tensor | None = None,
    center_opt: torch.optim.Optimizer | None = None,
    center_weight: float = 1.0,
    amp: str = "none",
    channels_last: bool = False,
    ctx: distributed.DistContext = distributed.DistContext(),
    autocast_cache: bool = True,
) -> StepResult:
    """One optimisation step on an augmented batch `x`; returns the detached loss terms and the output.

    Nothing here reads a value back to the host, so on a GPU the step never waits (and it can
    be captured as a CUDA graph: see GraphedStep).
    """
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, amp, cache=autocast_cache):
        out = model(x)
    terms = objective(out, y, anchors)
    optimizer.zero_grad(set_to_none=True)
    if center_opt is not None:
        center_opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    if center_opt is not None:
        # Undo the loss weight on the centres' gradient, as the strong baseline does; the
        # centres are outside DDP, so their gradients are averaged here.
        for p in center_opt.param_groups[0]["params"]:
            distributed.average_(p.grad, ctx).mul_(1.0 / center_weight)
        center_opt.step()
    # Detached: a live autograd graph would outlast the step (and, in a CUDA-graph warm-up, its
    # gradient-accumulation nodes would be created on one stream and reused on another).
    return {k: v.detach() for k, v in terms.items()}, out.detach()


class GraphedStep:
    """Calls like ``train_step``; the first calls run eagerly (warm-up), then one capture is replayed.

    Inputs are copied into static buffers before each replay; the returned loss terms and model
    output are the graph's static tensors, overwritten by the next call (read or copy them
    before it, as the training loop's running sums do). The optimizer must be capturable
    (``build_optimizer(..., capturable=True)``): its learning rates are device tensors, so the
    schedule changes them in place without a new capture; replaced lr tensors are noticed and
    reset the step. Call `reset` when the model's Python-side behaviour changes (e.g.
    ``set_epoch``): the next call runs eagerly, the one after captures again.
    The model may be ``torch.compile``d: compiling happens in the eager warm-up, and the capture
    records the compiled kernels.
    """

    def __init__(self, model: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer, *,
                 amp: str = "none", channels_last: bool = False, warmup: int = 3) -> None:
        if not all(g.get("capturable") for g in optimizer.param_groups):
            raise ValueError("GraphedStep needs an optimizer built with capturable=True")
        self.model, self.objective, self.optimizer = model, objective, optimizer
        self.kw = dict(amp=amp, channels_last=channels_last, autocast_cache=False)
        self.warmup_left = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, torch.Tensor] = {}
        self.result: StepResult | None = None
        self.side = None
        self.lrs: list = []

    def reset(self) -> None:
        """Drop the captured graph; the next call runs eagerly, the one after captures anew."""
        self.graph, self.result, self.static = None, None, {}
        # An eager step first, as before the first capture: whatever the change makes the model
        # do for the first time (a compiled model recompiles) happens outside the capture.
        self.warmup_left = max(self.warmup_left, 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 anchors: torch.Tensor | None = None) -> StepResult:
        if self.graph is not None and any(g["lr"] is not lr for g, lr in zip(self.optimizer.param_groups, self.lrs)):
            # The captured step reads the lr tensors it was captured with; a scheduler or a
            # loaded state that replaced them (instead of filling them in place) needs a new capture.
            self.reset()
        if self.warmup_left > 0:
            # Warm-up on a side stream, as CUDA's capture recipe asks: cuBLAS/cuDNN handles and
            # workspaces and the autograd engine's per-device state get created outside capture.
            self.warmup_left -= 1
            self.side = self.side or torch.cuda.Stream(x.device)
            self.side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(self.side):
                result = train_step(self.model, self.objective, self.optimizer, x, y, anchors=anchors, **self.kw)
            torch.cuda.current_stream(x.device).wait_stream(self.side)
            return result
        if self.graph is None:
            self.lrs = [g["lr"] for g in self.optimizer.param_groups]
            self.static = {"x": x.clone(), "y": y.clone()}
            if anchors is not None:
                self.static["anchors"] = anchors.clone()
            # Gradients allocated inside the capture live in the graph's pool and are
            # overwritten (not accumulated) by each replay.
            self.optimizer.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.result = train_step(self.model, self.objective, self.optimizer, self.static["x"],
                                         self.static["y"], anchors=self.static.get("anchors"), **self.kw)
        else:
            if (anchors is None) != ("anchors" not in self.static):
                raise ValueError(f"GraphedStep was captured {'with' if 'anchors' in self.static else 'without'} "
                                 "anchors; call reset() before changing that")
            self.static["x"].copy_(x)
            self.static["y"].copy_(y)
            if anchors is not None:
                self.static["anchors"].copy_(anchors)
        self.graph.replay()
        assert self.result is not None
        return self.result
