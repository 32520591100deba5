"""DukeMTMC-reID: 8 cameras, Market-style folders, no distractors."""

from __future__ import annotations

import os
import re

import pandas as pd

from clusteralign.data.layout import FileNamePattern, read_market_layout

NUM_CAMERAS = 8

# "0005_c2_f0046985.jpg": identity, camera, frame number.
DUKEMTMC_PATTERN = FileNamePattern(
    regex=re.compile(r"(?P<pid>-1|\d+)_c(?P<camid>\d+)_f\d+\.(?:jpe?g|png)", re.IGNORECASE),
    template="PPPP_cC_fFFFFFFF.jpg",
    example="0005_c2_f0046985.jpg",
)


def read_dukemtmc(
    root: str | os.PathLike[str], *, verify_images: bool = False, drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read the DukeMTMC-reID folder (bounding_box_train/, query/, bounding_box_test/) into a manifest."""
    return read_market_layout(
        root,
        name="DukeMTMC-reID",
        pattern=DUKEMTMC_PATTERN,
        num_cameras=NUM_CAMERAS,
        verify_images=verify_images,
        drop_bad=drop_bad,
        num_workers=num_workers,
    )
