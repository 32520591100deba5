"""Checkpoints written in a background thread while training goes on.

A ResNet-50 checkpoint with Adam's state is about 300 MB; writing it took 0.3 s of an H200
run's 1.9 s epochs, so with the default `checkpoint_every: 1` writing alone would add a sixth to
stage 1. The training thread only copies the state (a device-to-host copy on a GPU, a
memory copy on the CPU); the file is written, atomically, while the next epoch trains.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import torch

from ..io import torch_save


def snapshot(obj: Any) -> Any:
    """A copy of `obj` that later training cannot change: tensors copied to the CPU, containers rebuilt."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.to("cpu") if t.device.type != "cpu" else t.clone()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return obj


class CheckpointWriter:
    """Saves one checkpoint at a time in a background thread; `wait` finishes it and raises its error."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict[str, Any], path: str | os.PathLike) -> None:
        """Snapshot `state` now and write it to `path` in the background (after the previous write)."""
        self.wait()
        copy = snapshot(state)

        def write() -> None:
            try:
                torch_save(copy, path)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread by wait()
                self._error = exc

        self._thread = threading.Thread(target=write, name="checkpoint-writer")
        self._thread.start()

    def wait(self) -> None:
        """Block until the write in progress (if any) is on disk; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error
