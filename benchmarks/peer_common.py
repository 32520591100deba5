"""What the three training-speed measurements of peer_speed.py share: settings, result, timing.

Each toolkit is measured by its own module (peer_torchreid, peer_fastreid, peer_project) in a
process of its own, given the same `Settings` and the same manifest: the project's reading of
the synthetic Market-layout folder, so every toolkit trains on the same images and identities.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

TOOLKITS = ("torchreid", "fastreid", "clusteralign")
# The Market-size preset: its synthetic set is the benchmark's, its stage 1 the project's recipe.
PRESET = Path(__file__).resolve().parents[1] / "configs" / "synthetic_market_size.yaml"


@dataclass(frozen=True)
class Settings:
    """The recipe every toolkit is asked to train: the same batch, input size, backbone and device."""

    manifest: str
    work_dir: str
    device: str  # "cpu" or "cuda"
    height: int
    width: int
    num_identities: int  # P
    num_instances: int  # K
    backbone: str  # "resnet50" or "resnet18"
    workers: int  # the peers' data-loader processes
    warmup: int  # untimed steps (the project: untimed epochs, see peer_project)
    steps: int  # timed steps (at least)
    seed: int = 0
    threads: int | None = None  # torch's intra-op threads in each toolkit's process (None: torch's default)

    @property
    def batch(self) -> int:
        return self.num_identities * self.num_instances

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


@dataclass
class Result:
    """One toolkit's measured training steps."""

    toolkit: str
    version: str
    recipe: str  # what ran: precision, layout, loader, ...
    warmup: str  # what was left out of the timing, in words
    steps: int
    images: int
    seconds: float
    setup_seconds: float  # before the timed steps: reading, building, warming up (outside them for the project)
    train_images: int  # the training set as the toolkit holds it: images ...
    train_ids: int  # ... and identities
    data_wait: float | None = None  # fraction of the timed seconds spent waiting for a batch

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Split:
    """One split of the manifest as (path, pid, camid, label) rows; camid counted from 0."""

    rows: list[tuple[str, int, int, int]]

    @property
    def num_ids(self) -> int:
        return len({pid for _, pid, _, _ in self.rows})


def read_splits(manifest: str | Path) -> dict[str, Split]:
    """The manifest's train, query and gallery rows (junk images are not in it)."""
    df = pd.read_csv(manifest)
    splits = {}
    for name in ("train", "query", "gallery"):
        rows = df[df["split"] == name]
        if rows.empty:
            raise ValueError(f"{manifest}: no {name} rows; expected a manifest written by prepare_dataset")
        splits[name] = Split([(str(p), int(pid), int(cam) - 1, int(label)) for p, pid, cam, label in
                              zip(rows["path"], rows["pid"], rows["camid"], rows["label"])])
    return splits


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed_steps(step: Callable[[], float], settings: Settings) -> tuple[float, float, float]:
    """When timing began, and the seconds of `settings.steps` calls of `step` after `settings.warmup` untimed ones.

    `step` runs one training step and returns the seconds it waited for its batch; the third
    value returned is their sum over the timed steps. The device is synchronised at both ends
    of the timed span, so queued work counts where it runs.
    """
    for _ in range(settings.warmup):
        step()
    sync(settings.device)
    waited = 0.0
    t0 = time.perf_counter()
    for _ in range(settings.steps):
        waited += step()
    sync(settings.device)
    return t0, time.perf_counter() - t0, waited


def next_batch(batches) -> tuple[object, float]:
    """The iterator's next batch and the seconds spent waiting for it."""
    t0 = time.perf_counter()
    batch = next(batches)
    return batch, time.perf_counter() - t0
