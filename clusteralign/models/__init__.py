"""Model families; `build_model` maps a ModelConfig to a network.

Every family's forward returns a `ReIDOutput`; its embeddings, concatenated, are the test
feature and the anchor loss's target. Every family has `embedding_dim` (width of that test feature)
and `branch_feature_dim` (width of each `features` entry, which the triplet and centre losses see).
Families: "baseline" (baseline.py), "ft_net" and "pcb" (ft_net.py), "mgn" (mgn.py), "abd" (abd.py).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import ModelConfig
from .abd import ABDNet
from .baseline import StrongBaseline
from .ft_net import PCB, FtNet
from .mgn import MGN
from .output import ReIDOutput
from .pretrained import load_backbone_weights
from .resnet import ARCHITECTURES, build_backbone

__all__ = ["ABDNet", "FAMILIES", "FtNet", "MGN", "PCB", "ReIDOutput", "StrongBaseline", "build_model",
           "load_backbone_weights"]


def _build_baseline(cfg: ModelConfig, num_classes: int, load_pretrained: bool) -> nn.Module:
    model = StrongBaseline(num_classes, backbone=cfg.backbone, base_width=cfg.base_width,
                           last_stride=cfg.last_stride, neck=cfg.neck, stem_relu=cfg.has_stem_relu())
    if load_pretrained:
        load_backbone_weights(model.base, cfg.backbone, cfg.pretrained, cfg.allow_download)
    return model


def _trunk(cfg: ModelConfig, load_pretrained: bool, last_stride: int) -> nn.Module:
    trunk = build_backbone(cfg.backbone, base_width=cfg.base_width, last_stride=last_stride,
                           stem_relu=cfg.has_stem_relu())
    if load_pretrained:
        load_backbone_weights(trunk, cfg.backbone, cfg.pretrained, cfg.allow_download)
    return trunk


def _resnet_trunk(cfg: ModelConfig, load_pretrained: bool) -> nn.Module:
    # The branches copy ResNet stages and set their own strides.
    if cfg.backbone not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise KeyError(f"family {cfg.family!r} needs a ResNet backbone ({known}), got {cfg.backbone!r}")
    return _trunk(cfg, load_pretrained, last_stride=1)


def _build_ft_net(cfg: ModelConfig, num_classes: int, load_pretrained: bool) -> nn.Module:
    return FtNet(_trunk(cfg, load_pretrained, cfg.last_stride), num_classes,
                 embed_dim=cfg.embed_dim or 512, dropout=cfg.dropout)


def _build_pcb(cfg: ModelConfig, num_classes: int, load_pretrained: bool) -> nn.Module:
    return PCB(_trunk(cfg, load_pretrained, cfg.last_stride), num_classes, num_parts=cfg.num_parts or 6,
               embed_dim=cfg.embed_dim or 256, dropout=cfg.dropout)


def _build_mgn(cfg: ModelConfig, num_classes: int, load_pretrained: bool) -> nn.Module:
    return MGN(_resnet_trunk(cfg, load_pretrained), num_classes, embed_dim=cfg.embed_dim or 256)


def _build_abd(cfg: ModelConfig, num_classes: int, load_pretrained: bool) -> nn.Module:
    return ABDNet(_resnet_trunk(cfg, load_pretrained), num_classes, num_parts=cfg.num_parts or 2,
                  embed_dim=cfg.embed_dim or 1024, dropout=cfg.dropout, of_weight=cfg.of_weight,
                  ow_weight=cfg.ow_weight, of_start_epoch=cfg.of_start_epoch, ow_scope=cfg.ow_scope)


FAMILIES: dict[str, Callable[[ModelConfig, int, bool], nn.Module]] = {
    "baseline": _build_baseline,
    "ft_net": _build_ft_net,
    "pcb": _build_pcb,
    "mgn": _build_mgn,
    "abd": _build_abd,
}


def build_model(cfg: ModelConfig, num_classes: int, load_pretrained: bool = True) -> nn.Module:
    """Build the network `cfg` describes; with `load_pretrained`, load its backbone weights as configured."""
    try:
        builder = FAMILIES[cfg.family]
    except KeyError:
        raise KeyError(f"unknown model family {cfg.family!r}; known: {', '.join(FAMILIES)}") from None
    return builder(cfg, num_classes, load_pretrained)
