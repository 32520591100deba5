"""ImageNet weights for the backbones, from the local torch cache or a file; never a silent download.

torchvision's backbones use its own ImageNet files: `imagenet` its current default weights,
`imagenet_v1` the original files it shipped until 2022 (ResNet-50: ``resnet50-19c8e357.pth``,
76.1% top-1), which the paper's reference code loads. ResNet-50-IBN-a and SE-ResNeXt-50 use their
authors' public checkpoints. All are looked up in the same torch hub cache
(``$TORCH_HOME/hub/checkpoints``), loaded with ``weights_only=True`` and checked key by key.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..io import UnreadableFileError, torch_load
from .ibn import IBN_A_WEIGHTS
from .senet import SE_RESNEXT_CLASSIFIER_PREFIX, SE_RESNEXT_WEIGHTS

log = logging.getLogger(__name__)


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but are not where they should be, or do not fit."""


@dataclass(frozen=True)
class WeightSource:
    """Where a backbone's ImageNet checkpoint comes from and what to drop from it."""

    url: str
    classifier_prefix: str
    # torchvision-style file names carry a SHA-256 prefix that torch.hub can check.
    check_hash: bool


# Public checkpoints that torchvision does not ship.
PUBLIC_WEIGHTS: dict[str, WeightSource] = {
    **{name: WeightSource(url, "fc.", True) for name, url in IBN_A_WEIGHTS.items()},
    **{name: WeightSource(url, SE_RESNEXT_CLASSIFIER_PREFIX, False) for name, url in SE_RESNEXT_WEIGHTS.items()},
}


# torchvision's original ResNet files (its `model_urls` before the multi-weight API); the names'
# hex part is a SHA-256 prefix, as for its current files.
ORIGINAL_TORCHVISION_WEIGHTS: dict[str, str] = {
    "resnet18": "https://download.pytorch.org/models/resnet18-5c106cde.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-333f7ec4.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-19c8e357.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth",
}


def weight_source(arch: str, spec: str = "imagenet") -> WeightSource:
    """The ImageNet checkpoint of backbone `arch` that `spec` ("imagenet" or "imagenet_v1") names."""
    if spec == "imagenet_v1":
        if arch not in ORIGINAL_TORCHVISION_WEIGHTS:
            raise PretrainedWeightsError(f"imagenet_v1 names torchvision's original ResNet files; backbone {arch!r} "
                                         "has none: use `imagenet`")
        return WeightSource(ORIGINAL_TORCHVISION_WEIGHTS[arch], "fc.", True)
    if arch in PUBLIC_WEIGHTS:
        return PUBLIC_WEIGHTS[arch]
    import torchvision

    try:
        url = torchvision.models.get_model_weights(arch).DEFAULT.url
    except (ValueError, KeyError) as err:
        raise PretrainedWeightsError(f"no ImageNet weights are known for backbone {arch!r}") from err
    return WeightSource(url, "fc.", True)


def imagenet_cache_path(arch: str, spec: str = "imagenet") -> Path:
    """Where torch.hub keeps the ImageNet weights of `arch` that `spec` names."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weight_source(arch, spec).url)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch_load(path)
    except UnreadableFileError as err:
        raise PretrainedWeightsError(f"pretrained weights {err}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise PretrainedWeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    # Checkpoints saved from DataParallel / DDP prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _cached_imagenet_file(arch: str, spec: str, allow_download: bool) -> Path:
    source, path = weight_source(arch, spec), imagenet_cache_path(arch, spec)
    if path.is_file():
        return path
    if not allow_download:
        raise PretrainedWeightsError(
            f"ImageNet weights for {arch} are not in the local torch cache. Expected {path} "
            f"(download {source.url} and put it there, or set TORCH_HOME), or give the model a "
            f"file path in `pretrained:`, or set `allow_download: true` to fetch it."
        )
    log.info("downloading %s to %s", source.url, path)
    match = torch.hub.HASH_REGEX.search(path.name) if source.check_hash else None
    path.parent.mkdir(parents=True, exist_ok=True)
    # Download only (into a temporary file, then renamed): load_state_dict_from_url would also
    # unpickle it without weights_only. It is read below like any cached file.
    torch.hub.download_url_to_file(source.url, str(path), hash_prefix=match.group(1) if match else None,
                                   progress=True)
    return path


def load_backbone_weights(trunk: nn.Module, arch: str, spec: str, allow_download: bool = False) -> None:
    """Load `spec` ("none", "imagenet", "imagenet_v1", or a file path) into `trunk`, checking keys strictly.

    The checkpoint's ImageNet classifier is dropped; every other key must match.
    """
    if spec == "none":
        return
    if spec in ("imagenet", "imagenet_v1"):
        path = _cached_imagenet_file(arch, spec, allow_download)
    else:
        path = Path(spec)
        if not path.is_file():
            raise PretrainedWeightsError(f"pretrained weights file {path} does not exist (from `pretrained: {spec}`)")
    prefix = PUBLIC_WEIGHTS[arch].classifier_prefix if arch in PUBLIC_WEIGHTS else "fc."
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith(prefix)}
    hint = "(is the architecture right, and base_width 64 as in the published network?)"
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
