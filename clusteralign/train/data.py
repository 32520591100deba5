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


def load_split(
    manifest: pd.DataFrame, splits: str | tuple[str, ...], size: tuple[int, int], num_workers: int | None = None
) -> SplitData:
    """Decode the rows of `splits` (in manifest order) at `size` (H, W); workers as in `load_images`."""
    splits = (splits,) if isinstance(splits, str) else splits
    rows = manifest[manifest["split"].isin(splits)]
    if rows.empty:
        raise ValueError(f"the manifest has no rows in split(s) {', '.join(splits)}")
    images = load_images(rows["path"].tolist(), size, num_workers=num_workers)
    columns = (torch.tensor(rows[col].to_numpy(), dtype=torch.long) for col in ("pid", "camid", "label"))
    return SplitData(images, *columns)
