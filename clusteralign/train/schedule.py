"""Per-epoch learning-rate schedules and optimizers of the two stages."""

from __future__ import annotations

import torch
from torch import nn

from ..config import OptimizerConfig, ScheduleConfig


def lr_factor(epoch: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base lr during `epoch` (0-based).

    The first epoch trains at `warmup_factor` (0.01) and the drops start with the epochs
    numbered `milestones` from 0 (the 41st and 71st). Luo et al.'s code steps one epoch sooner;
    docs/reference-recipe.md says how the two differ.
    """
    if cfg.kind == "constant":
        return 1.0
    factor = 1.0
    if epoch < cfg.warmup_epochs:
        alpha = epoch / cfg.warmup_epochs
        factor = cfg.warmup_factor * (1 - alpha) + alpha
    return factor * cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """An epoch-stepped LambdaLR following `lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, cfg))


def build_optimizer(params: list[tuple[str, nn.Parameter]], cfg: OptimizerConfig, fused: bool = False,
                    capturable: bool = False) -> torch.optim.Optimizer:
    """Adam or SGD over named parameters; biases get their own lr factor and weight decay.

    `capturable` (Adam on CUDA): safe inside a CUDA graph, with each group's lr a device tensor
    that the scheduler updates in place, so a captured step follows the schedule.
    """
    if capturable and cfg.name != "adam":
        raise ValueError(f"a capturable optimizer is only built for adam, not {cfg.name}")
    weights, biases = [], []
    for name, p in params:
        if p.requires_grad:
            (biases if name.endswith("bias") else weights).append(p)
    groups = [{"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if biases:
        groups.append(
            {"params": biases, "lr": cfg.lr * cfg.bias_lr_factor, "weight_decay": cfg.weight_decay_bias}
        )
    extra = {"fused": True} if fused else {}
    if capturable:
        device = groups[0]["params"][0].device
        for g in groups:
            g["lr"] = torch.tensor(g["lr"], dtype=torch.float32, device=device)
        extra["capturable"] = True
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **extra)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **extra)
