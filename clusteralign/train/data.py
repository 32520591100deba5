"""A manifest split decoded once into memory, for on-device batching."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..data.images import load_images


@dataclass
class SplitData:
    """Images (uint8, N x 3 x H x W) and their identities of one manifest split."""

    images: torch.Tensor
    pids: torch.Tensor
    camids: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device) -> "SplitData":
        """The same split with every tensor on `device`."""
        return SplitData(*(t.to(device) for t in (self.images, self.pids, self.camids, self.labels)))


def load_split(manifest: pd.DataFrame, split: str, size: tuple[int, int]) -> SplitData:
    """Decode the rows of `split` (in manifest order) at `size` (H, W), a worker process per thread."""
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise ValueError(f"the manifest has no rows in split {split!r}")
    images = load_images(rows["path"].tolist(), size)
    columns = (torch.tensor(rows[col].to_numpy(), dtype=torch.long) for col in ("pid", "camid", "label"))
    return SplitData(images, *columns)
