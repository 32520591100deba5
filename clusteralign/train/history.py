"""The per-epoch history of a stage: a CSV table and the same scalars for TensorBoard."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from ..io import atomic_path

# Validation metrics are fractions internally; the log line shows percentages.
_PERCENT = ("R1", "R5", "R10", "mAP", "mINP")


class History:
    """Rows of per-epoch scalars, mirrored to TensorBoard under ``<stage>/<column>``."""

    def __init__(self, stage: str):
        self.stage = stage
        self.rows: list[dict[str, float]] = []
        self._writer = None

    def open_tensorboard(self, log_dir: str | os.PathLike) -> None:
        """Start writing events to `log_dir`, first replaying the rows already held."""
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(log_dir))
        for row in self.rows:
            self._emit(row)

    def restore(self, rows: list[dict[str, float]]) -> None:
        """Take the rows of a resumed run."""
        self.rows = [dict(r) for r in rows]

    def append(self, epoch: int, values: dict[str, float]) -> None:
        """Add the row of `epoch` (1-based) and send it to TensorBoard."""
        row = {"epoch": float(epoch), **{k: float(v) for k, v in values.items()}}
        self.rows.append(row)
        self._emit(row)

    def _emit(self, row: dict[str, float]) -> None:
        if self._writer is None:
            return
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and not math.isnan(value):
                self._writer.add_scalar(f"{self.stage}/{key}", value, step)
        self._writer.flush()

    def frame(self) -> pd.DataFrame:
        """The history as a table, one row per epoch."""
        df = pd.DataFrame(self.rows)
        if not df.empty:
            df["epoch"] = df["epoch"].astype(int)
            df.insert(0, "stage", self.stage)
        return df

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write the table atomically."""
        with atomic_path(Path(path)) as tmp:
            self.frame().to_csv(tmp, index=False)

    def describe_last(self, total_epochs: int) -> str:
        """One log line for the newest row."""
        row = self.rows[-1]
        parts = [f"{self.stage} epoch {int(row['epoch'])}/{total_epochs}"]
        losses = [f"{k[5:]} {row[k]:.4f}" for k in row if k.startswith("loss_") and k != "loss_total"]
        if "loss_total" in row:
            parts.append(f"loss {row['loss_total']:.4f} ({', '.join(losses)})")
        parts.append(f"lr {row.get('lr', math.nan):.2e}")
        parts += [f"{k} {100 * row[k]:.1f}" for k in _PERCENT if k in row]
        if "anchor_dist_own" in row:
            parts.append(f"anchor own/other {row['anchor_dist_own']:.3f}/{row['anchor_dist_other']:.3f}")
        if "images_per_second" in row:
            parts.append(f"{row['images_per_second']:.0f} img/s")
        return " | ".join(parts)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
