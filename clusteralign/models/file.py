"""The trained-model artifact: weights plus what is needed to rebuild the network."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig, from_dict, to_dict
from ..io import UnreadableFileError, torch_load_mapping, torch_save


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
        try:
            return cls(
                model_cfg=from_dict(ModelConfig, obj["model"], f"{path}:model"),
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
