"""Model families; `build_model` maps a ModelConfig to a network.

Every family's forward returns a `ReIDOutput`; its embeddings, concatenated, are the test
feature and the anchor loss's target. Every family has `feat_dim` (width of that test feature)
and `feature_dim` (width of each `features` entry, which the triplet and centre losses see).
Families: "baseline" (baseline.py), "ft_net" and "pcb" (ft_net.py), "mgn" (mgn.py), "abd" (abd.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from .abd import ABDNet
from .baseline import StrongBaseline
from .ft_net import PCB, FtNet
from .ibn import IBN_A_WEIGHTS
from .mgn import MGN
from .output import ReIDOutput
from .pretrained import PretrainedWeightsError, _read_state_dict, load_backbone_weights
from .resnet import ARCHITECTURES, build_backbone
from .senet import SE_RESNEXT_CLASSIFIER_PREFIX, SE_RESNEXT_WEIGHTS

__all__ = ["ABDNet", "FAMILIES", "FtNet", "MGN", "PCB", "ReIDOutput", "StrongBaseline", "build_model",
           "load_trunk_weights"]

log = logging.getLogger(__name__)

# Public ImageNet checkpoints that torchvision does not ship: backbone -> (url, classifier
# prefix to drop, whether the file name carries a SHA-256 prefix torch.hub can check).
PUBLIC_WEIGHTS: dict[str, tuple[str, str, bool]] = {
    **{name: (url, "fc.", True) for name, url in IBN_A_WEIGHTS.items()},
    **{name: (url, SE_RESNEXT_CLASSIFIER_PREFIX, False) for name, url in SE_RESNEXT_WEIGHTS.items()},
}


def _public_checkpoint(backbone: str, allow_download: bool) -> Path:
    url, _, check_hash = PUBLIC_WEIGHTS[backbone]
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if path.is_file():
        return path
    if not allow_download:
        raise PretrainedWeightsError(
            f"ImageNet weights for {backbone} are not in the local torch cache. Expected {path} "
            f"(download {url} and put it there, or set TORCH_HOME), or give the model a "
            f"file path in `pretrained:`, or set `allow_download: true` to fetch it."
        )
    log.info("downloading %s to %s", url, path)
    torch.hub.load_state_dict_from_url(url, model_dir=str(path.parent), progress=True, check_hash=check_hash)
    return path


def _load_public(trunk: nn.Module, backbone: str, path: Path) -> None:
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights file {path} does not exist (from `pretrained: {path}`)")
    classifier = PUBLIC_WEIGHTS[backbone][1]
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith(classifier)}
    hint = "(is the architecture right, and base_width 64 as in the published network?)"
    try:
        result = trunk.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = str(err).split("\n\t")[1:2]
        detail = first[0] if first else err
        raise PretrainedWeightsError(f"{path} does not fit backbone {backbone}: {detail} {hint}") from None
    if result.missing_keys or result.unexpected_keys:
        raise PretrainedWeightsError(
            f"{path} does not fit backbone {backbone}: missing keys {result.missing_keys[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]} {hint}"
        )
    log.info("loaded backbone weights for %s from %s", backbone, path)


def load_trunk_weights(trunk: nn.Module, backbone: str, spec: str, allow_download: bool = False) -> None:
    """Load `spec` ("none", "imagenet", or a file path) into a trunk built by `build_backbone`, strictly.

    torchvision backbones use its ImageNet weights; IBN-a and SE-ResNeXt their authors' public
    checkpoints (in the same torch hub cache). The ImageNet classifier is dropped.
    """
    if spec == "none":
        return
    if backbone not in PUBLIC_WEIGHTS:
        load_backbone_weights(trunk, backbone, spec, allow_download)
        return
    path = _public_checkpoint(backbone, allow_download) if spec == "imagenet" else Path(spec)
    _load_public(trunk, backbone, path)


def _build_baseline(cfg: ModelConfig, num_classes: int, load_pretrained: bool) -> nn.Module:
    model = StrongBaseline(num_classes, backbone=cfg.backbone, base_width=cfg.base_width,
                           last_stride=cfg.last_stride, neck=cfg.neck)
    if load_pretrained:
        load_trunk_weights(model.base, cfg.backbone, cfg.pretrained, cfg.allow_download)
    return model


def _trunk(cfg: ModelConfig, load_pretrained: bool, last_stride: int) -> nn.Module:
    trunk = build_backbone(cfg.backbone, base_width=cfg.base_width, last_stride=last_stride)
    if load_pretrained:
        load_trunk_weights(trunk, cfg.backbone, cfg.pretrained, cfg.allow_download)
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
