"""Dataset name -> reader: the one place that maps a configured dataset name to its reader."""

from __future__ import annotations

import os
from collections.abc import Callable

import pandas as pd

from clusteralign.data.cuhk03 import read_cuhk03_np, read_cuhk03_raw
from clusteralign.data.dukemtmc import read_dukemtmc
from clusteralign.data.errors import UnknownDatasetError
from clusteralign.data.folder import FolderOptions, read_folder
from clusteralign.data.layout import read_market_layout
from clusteralign.data.market1501 import MARKET1501_PATTERN, read_market1501
from clusteralign.data.msmt17 import read_msmt17


def read_synthetic(
    root: str | os.PathLike[str], *, num_cameras: int, verify_images: bool = False, drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read the embedded synthetic dataset: Market-1501 layout and names with ``num_cameras`` cameras."""
    return read_market_layout(
        root,
        name="synthetic",
        pattern=MARKET1501_PATTERN,
        num_cameras=num_cameras,
        verify_images=verify_images,
        drop_bad=drop_bad,
        num_workers=num_workers,
    )


def read_cuhk03_labeled(
    root: str | os.PathLike[str], *, verify_images: bool = False, drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read the hand-labelled boxes of CUHK03-NP (root holds labeled/ and detected/)."""
    return read_cuhk03_np(root, variant="labeled", verify_images=verify_images, drop_bad=drop_bad,
                          num_workers=num_workers)


def read_cuhk03_detected(
    root: str | os.PathLike[str], *, verify_images: bool = False, drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read the detector boxes of CUHK03-NP (root holds labeled/ and detected/)."""
    return read_cuhk03_np(root, variant="detected", verify_images=verify_images, drop_bad=drop_bad,
                          num_workers=num_workers)


def read_cuhk03_raw_labeled(
    root: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    protocol_dir: str | os.PathLike[str] | None = None,
    verify_images: bool = False,
    drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read the hand-labelled boxes of the raw release (cuhk03_release/cuhk-03.mat + new-protocol split files)."""
    return read_cuhk03_raw(
        root, variant="labeled", images_dir=images_dir, protocol_dir=protocol_dir,
        verify_images=verify_images, drop_bad=drop_bad, num_workers=num_workers,
    )


def read_cuhk03_raw_detected(
    root: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    protocol_dir: str | os.PathLike[str] | None = None,
    verify_images: bool = False,
    drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read the detector boxes of the raw release (cuhk03_release/cuhk-03.mat + new-protocol split files)."""
    return read_cuhk03_raw(
        root, variant="detected", images_dir=images_dir, protocol_dir=protocol_dir,
        verify_images=verify_images, drop_bad=drop_bad, num_workers=num_workers,
    )


# Reader options that name a local file or folder the reader reads (not one it writes, as
# images_dir): the workflow makes them inputs of the dataset's preparation.
INPUT_OPTIONS = frozenset({"protocol_dir"})

READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "market1501": read_market1501,
    "dukemtmc": read_dukemtmc,
    "cuhk03_labeled": read_cuhk03_labeled,
    "cuhk03_detected": read_cuhk03_detected,
    "cuhk03_raw_labeled": read_cuhk03_raw_labeled,
    "cuhk03_raw_detected": read_cuhk03_raw_detected,
    "msmt17": read_msmt17,
    "synthetic": read_synthetic,
    "folder": read_folder,
}

# Readers whose options are typed and bounded by a config dataclass, checked when the workflow
# is planned (the other readers' options are checked by name only).
OPTION_TYPES: dict[str, type] = {"folder": FolderOptions}


def read_dataset(name: str, root: str | os.PathLike[str], **kwargs: object) -> pd.DataFrame:
    """Read dataset ``name`` at ``root`` with its registered reader; keyword arguments go to the reader."""
    try:
        reader = READERS[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset name {name!r}; known datasets are {sorted(READERS)}."
        ) from None
    return reader(root, **kwargs)
