"""Market-1501: 6 cameras, junk (pid -1) and distractors (pid 0) in bounding_box_test."""

from __future__ import annotations

import os
import re

import pandas as pd

from clusteralign.data.layout import FileNamePattern, read_market_layout

NUM_CAMERAS = 6

# "0002_c1s1_000451_03.jpg": identity, camera + sequence, frame, box index within the frame.
MARKET1501_PATTERN = FileNamePattern(
    regex=re.compile(r"(?P<pid>-1|\d+)_c(?P<camid>\d+)s\d+_\d+_\d+\.(?:jpe?g|png)", re.IGNORECASE),
    template="PPPP_cCsS_FFFFFF_BB.jpg",
    example="0002_c1s1_000451_03.jpg",
)


def read_market1501(
    root: str | os.PathLike[str], *, verify_images: bool = False, drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read the Market-1501 folder (bounding_box_train/, query/, bounding_box_test/) into a manifest."""
    return read_market_layout(
        root,
        name="Market-1501",
        pattern=MARKET1501_PATTERN,
        num_cameras=NUM_CAMERAS,
        verify_images=verify_images,
        drop_bad=drop_bad,
        num_workers=num_workers,
    )
