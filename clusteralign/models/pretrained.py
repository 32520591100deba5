"""ImageNet weights for the backbones, from the local torch cache or a file; never a silent download."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but are not where they should be."""


def _torchvision_weights(arch: str):
    import torchvision

    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError) as err:
        raise PretrainedWeightsError(f"torchvision has no ImageNet weights for {arch!r}") from err


def imagenet_cache_path(arch: str) -> Path:
    """Where torch.hub keeps torchvision's ImageNet weights for `arch`."""
    url = _torchvision_weights(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise PretrainedWeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    # Checkpoints saved from DataParallel / DDP prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_backbone_weights(trunk: nn.Module, arch: str, spec: str, allow_download: bool = False) -> None:
    """Load `spec` ("none", "imagenet", or a file path) into `trunk`, checking keys strictly.

    The classifier of an ImageNet checkpoint (``fc.*``) is dropped; every other key must match.
    """
    if spec == "none":
        return
    if spec == "imagenet":
        path = imagenet_cache_path(arch)
        if not path.is_file():
            url = _torchvision_weights(arch).url
            if not allow_download:
                raise PretrainedWeightsError(
                    f"ImageNet weights for {arch} are not in the local torch cache. Expected {path} "
                    f"(download {url} and put it there, or set TORCH_HOME), or give the model a "
                    f"file path in `pretrained:`, or set `allow_download: true` to fetch it."
                )
            log.info("downloading %s to %s", url, path)
            torch.hub.load_state_dict_from_url(url, model_dir=str(path.parent), progress=True, check_hash=True)
    else:
        path = Path(spec)
        if not path.is_file():
            raise PretrainedWeightsError(f"pretrained weights file {path} does not exist (from `pretrained: {spec}`)")
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    hint = "(is the architecture right, and base_width 64 as in torchvision?)"
    try:
        result = trunk.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = str(err).split("\n\t")[1:2]
        raise PretrainedWeightsError(f"{path} does not fit backbone {arch}: {first[0] if first else err} {hint}") from None
    if result.missing_keys or result.unexpected_keys:
        raise PretrainedWeightsError(
            f"{path} does not fit backbone {arch}: missing keys {result.missing_keys[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]} {hint}"
        )
    log.info("loaded backbone weights for %s from %s", arch, path)
