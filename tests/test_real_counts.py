"""The published sizes of the real benchmarks, checked when a real copy is configured.

Point an environment variable at a dataset root to run a check (each is skipped otherwise):

- ``CLUSTERALIGN_MARKET1501``: the Market-1501-v15.09.15 folder (bounding_box_train/, query/, ...);
- ``CLUSTERALIGN_DUKEMTMC``: the DukeMTMC-reID folder;
- ``CLUSTERALIGN_CUHK03_NP``: the CUHK03-NP folder holding labeled/ and detected/;
- ``CLUSTERALIGN_CUHK03``: the raw release root (cuhk03_release/cuhk-03.mat and the two
  cuhk03_new_protocol_config_*.mat files; ``CLUSTERALIGN_CUHK03_PROTOCOL`` may name another folder
  for the split files). Images are converted into ``CLUSTERALIGN_CUHK03_IMAGES`` if set, else into a
  temporary folder (about a minute);
- ``CLUSTERALIGN_MSMT17``: the MSMT17_V1 folder (train/, test/, list_*.txt).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clusteralign.data.cuhk03 import read_cuhk03_np, read_cuhk03_raw
from clusteralign.data.manifest import summarize
from clusteralign.data.readers import read_dataset

pytestmark = pytest.mark.realdata

# split -> (identities without distractors, images with distractors, junk dropped), plus cameras.
PUBLISHED: dict[str, dict[str, tuple[int, int]]] = {
    "market1501": {"train": (751, 12_936), "query": (750, 3_368), "gallery": (750, 15_913)},
    "dukemtmc": {"train": (702, 16_522), "query": (702, 2_228), "gallery": (1_110, 17_661)},
    "cuhk03_labeled": {"train": (767, 7_368), "query": (700, 1_400), "gallery": (700, 5_328)},
    "cuhk03_detected": {"train": (767, 7_365), "query": (700, 1_400), "gallery": (700, 5_332)},
    "msmt17": {"train": (1_041, 32_621), "query": (3_060, 11_659), "gallery": (3_060, 82_161)},
}
CAMERAS = {"market1501": 6, "dukemtmc": 8, "cuhk03_labeled": 2, "cuhk03_detected": 2, "msmt17": 15}


def configured_root(variable: str) -> Path:
    """The folder an environment variable names, or skip the test saying which variable to set."""
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"no real copy configured: set {variable}=/path/to/the/dataset to check its published counts")
    root = Path(value)
    if not root.is_dir():
        pytest.fail(f"{variable}={value!r} does not name a folder")
    return root


def check_counts(df, dataset: str) -> None:
    table = summarize(df)
    found = {split: (int(table.loc[split, "identities"]), int(table.loc[split, "images"])) for split in PUBLISHED[dataset]}
    assert found == PUBLISHED[dataset]
    assert int(df["camid"].max()) == CAMERAS[dataset] and int(df["camid"].min()) == 1
    train_pids = set(df.loc[df["split"] == "train", "pid"])
    assert not train_pids & set(df.loc[df["split"] == "query", "pid"])


def test_market1501() -> None:
    check_counts(read_dataset("market1501", configured_root("CLUSTERALIGN_MARKET1501")), "market1501")


def test_dukemtmc() -> None:
    check_counts(read_dataset("dukemtmc", configured_root("CLUSTERALIGN_DUKEMTMC")), "dukemtmc")


@pytest.mark.parametrize("variant", ["labeled", "detected"])
def test_cuhk03_np_folder(variant: str) -> None:
    df = read_cuhk03_np(configured_root("CLUSTERALIGN_CUHK03_NP"), variant=variant)
    check_counts(df, f"cuhk03_{variant}")


@pytest.mark.parametrize("variant", ["labeled", "detected"])
def test_cuhk03_raw_release(variant: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = configured_root("CLUSTERALIGN_CUHK03")
    images = os.environ.get("CLUSTERALIGN_CUHK03_IMAGES") or tmp_path_factory.getbasetemp() / "cuhk03_images"
    protocol = os.environ.get("CLUSTERALIGN_CUHK03_PROTOCOL") or None
    df = read_cuhk03_raw(root, variant=variant, images_dir=images, protocol_dir=protocol)
    check_counts(df, f"cuhk03_{variant}")


def test_msmt17() -> None:
    check_counts(read_dataset("msmt17", configured_root("CLUSTERALIGN_MSMT17")), "msmt17")
