"""The trained-model artifact: weights plus what is needed to rebuild the network."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import ModelConfig, from_dict, to_dict
from ..io import UnreadableFileError, torch_load_mapping, torch_save


@dataclass(frozen=True)
class InputSettings:
    """How a model's test images are prepared, recorded in the model file's meta under "input".

    As the workflow's feature extraction does it: decoded by PIL, bicubic-resized to the cache
    size (unless already that size), resized to the input size on the tensor as in training,
    normalised with `mean` and `std`; with `flip`, the embeddings of the image and its mirror
    are averaged.
    """

    height: int
    width: int
    cache_height: int
    cache_width: int
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str

    def to_meta(self) -> dict[str, object]:
        """Plain values for the model file (lists, not tuples: what torch's safe loader reads)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_meta(cls, meta: dict[str, object]) -> "InputSettings | None":
        """The settings a model file records, or None for a file written before they were recorded."""
        raw = meta.get("input")
        if not isinstance(raw, dict):
            return None
        try:
            return cls(**{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])})
        except (TypeError, KeyError) as err:
            raise UnreadableFileError(f"the model file's input settings are malformed ({err}): {raw!r}") from None


@dataclass
class ModelFile:
    """What a training stage leaves behind for the next steps."""

    model_cfg: ModelConfig
    num_classes: int
    pids: list[int]
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, object]

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically; readable with weights_only=True."""
        torch_save(
            {
                "model": to_dict(self.model_cfg),
                "num_classes": self.num_classes,
                "pids": list(self.pids),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
                "meta": dict(self.meta),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelFile":
        """Read a model file written by `save`, with a clear error for anything else."""
        obj = torch_load_mapping(path, ("model", "num_classes", "pids", "state_dict"), "a clusteralign model file")
        model = obj["model"]
        if isinstance(model, dict) and "stem_relu" not in model:
            # Written before `stem_relu` existed, when every network's stem ended in a ReLU.
            model = {**model, "stem_relu": True}
        try:
            return cls(
                model_cfg=from_dict(ModelConfig, model, f"{path}:model"),
                num_classes=int(obj["num_classes"]),
                pids=list(obj["pids"]),
                state_dict=obj["state_dict"],
                meta=dict(obj.get("meta", {})),
            )
        except (TypeError, ValueError) as err:
            raise UnreadableFileError(f"{path}: not a clusteralign model file ({err})", path) from err

    def build(self) -> nn.Module:
        """The network with these weights loaded strictly (no pretrained weights needed)."""
        from . import build_model

        model = build_model(self.model_cfg, self.num_classes, load_pretrained=False)
        model.load_state_dict(self.state_dict, strict=True)
        return model
