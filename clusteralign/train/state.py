"""Everything a stage's training changes, as one object: what a checkpoint holds and a resume restores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .history import History
from .objective import Objective


@dataclass
class TrainingState:
    """The model, its optimisers and schedule, the anchors, the random streams and the history.

    `state_dict` and `load_state_dict` own every key of the checkpoint, so writing and reading it
    cannot drift apart. `fingerprint` identifies what the stage trains on (`fingerprint.py`): a
    checkpoint of other settings, data, starting weights or package code is never resumed.
    """

    fingerprint: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    objective: Objective
    # The centre loss's own SGD (None without a centre loss).
    center_optimizer: torch.optim.Optimizer | None
    # This rank's augmentation stream.
    generator: torch.Generator
    history: History
    anchors: torch.Tensor | None = None
    # Epochs finished: the next one to train is `epoch` (0-based).
    epoch: int = 0

    def rng_state(self) -> dict[str, torch.Tensor]:
        """This process's random streams: torch's global one (and CUDA's), and the augmentation's."""
        state = {"torch": torch.get_rng_state(), "augment": self.generator.get_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def state_dict(self, rng_states: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """The checkpoint: every rank's random streams (`rng_states`, in rank order) and the rest."""
        return {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "objective": self.objective.state_dict(),
            "center_optimizer": self.center_optimizer.state_dict() if self.center_optimizer is not None else None,
            "anchors": self.anchors,
            "rng": rng_states,
            "history": self.history.rows,
        }

    def resumable(self, checkpoint: Any, world_size: int) -> bool:
        """Whether `checkpoint` was written by this stage, for as many processes as now run it."""
        return (isinstance(checkpoint, dict) and checkpoint.get("fingerprint") == self.fingerprint
                and len(checkpoint.get("rng", ())) == world_size)

    def load_state_dict(self, checkpoint: dict[str, Any], rank: int) -> None:
        """Continue from `checkpoint` (see `resumable`), with rank `rank`'s random streams."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.objective.load_state_dict(checkpoint["objective"])
        if self.center_optimizer is not None:
            self.center_optimizer.load_state_dict(checkpoint["center_optimizer"])
        self.anchors = checkpoint["anchors"]
        rng = checkpoint["rng"][rank]
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["augment"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        self.history.restore(checkpoint["history"])
        self.epoch = int(checkpoint["epoch"])
