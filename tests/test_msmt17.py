"""MSMT17 from its list files (V1 and V2 layouts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clusteralign.data.errors import (
    CameraRangeError,
    CorruptImageError,
    DatasetRootMissingError,
    LayoutError,
    ListFileError,
)
from clusteralign.data.manifest import summarize
from clusteralign.data.msmt17 import read_msmt17
from clusteralign.data.readers import read_dataset
from fixtures import FakeMsmt17, make_msmt17, write_garbage


@pytest.fixture()
def msmt(tmp_path: Path) -> FakeMsmt17:
    return make_msmt17(tmp_path / "MSMT17_V1")


def expected_rows(fake: FakeMsmt17, keys: tuple[str, ...], folder: str) -> list[tuple[str, int, int]]:
    return [
        (os.path.join(str(fake.root), folder, *path.split("/")), label + 1, int(path.split("/")[1].split("_")[2]))
        for key in keys
        for path, label in fake.lists[key]
    ]


def rows(df, split: str) -> list[tuple[str, int, int]]:
    part = df[df["split"] == split]
    return list(zip(part["path"], part["pid"].tolist(), part["camid"].tolist()))


def test_train_and_val_combined_pid_is_label_plus_one(msmt: FakeMsmt17) -> None:
    df = read_dataset("msmt17", msmt.root)
    assert rows(df, "train") == expected_rows(msmt, ("train", "val"), "train")
    assert rows(df, "query") == expected_rows(msmt, ("query",), "test")
    assert rows(df, "gallery") == expected_rows(msmt, ("gallery",), "test")
    table = summarize(df)
    assert table.loc["train", "identities"] == 4 and table.loc["train", "images"] == 12
    assert table.loc["query", "images"] == 3 and table.loc["gallery", "images"] == 6
    # Label 0 of the lists is pid 1: pid 0 would mean a distractor in the manifest.
    assert (df["pid"] >= 1).all() and (df.loc[df["split"] == "gallery", "pid"] != 0).all()
    train = df[df["split"] == "train"]
    assert dict(zip(train["pid"], train["label"])) == {1: 0, 2: 1, 3: 2, 4: 3}
    assert df["camid"].max() == 15 and df["camid"].min() >= 1
    assert all(os.path.isfile(p) for p in df["path"])


def test_without_val(msmt: FakeMsmt17) -> None:
    (msmt.list_path("val")).unlink()  # not needed when val is left out
    df = read_msmt17(msmt.root, combine_val=False)
    assert rows(df, "train") == expected_rows(msmt, ("train",), "train")
    assert sorted(set(df.loc[df["split"] == "train", "pid"])) == [1, 2, 3]


def test_v2_layout(tmp_path: Path) -> None:
    fake = make_msmt17(tmp_path / "MSMT17_V2", version="V2")
    df = read_msmt17(fake.root)
    assert rows(df, "query") == expected_rows(fake, ("query",), "mask_test_v2")
    assert df.loc[df["split"] == "train", "path"].str.contains(os.sep + "mask_train_v2" + os.sep).all()


def test_layout_errors(msmt: FakeMsmt17, tmp_path: Path) -> None:
    with pytest.raises(DatasetRootMissingError, match=r"absent' does not exist.*train/ and test/"):
        read_msmt17(tmp_path / "absent")
    with pytest.raises(LayoutError, match=r"lacks the image folders.*\['MSMT17_V1/'\].*use that folder"):
        read_msmt17(tmp_path)
    msmt.list_path("gallery").unlink()
    with pytest.raises(LayoutError, match=r"lacks the list file\(s\) \['list_gallery.txt'\]"):
        read_msmt17(msmt.root)


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ("0000/0000_000_01_0303morning_0015_0.jpg", ListFileError, r"line 2 of .*list_query\.txt.*<image path> <label>"),
        ("0000/0000_000_01_0303morning_0015_0.jpg x", ListFileError, "line 2 .*<image path> <label>"),
        ("0000/picture.jpg 0", ListFileError, r"line 2 .*names '0000/picture\.jpg'.*camera in the third field"),
        ("../0000/0000_000_01_0303morning_0015_0.jpg 0", ListFileError, "line 2 .*relative path"),
        ("0000/0000_000_16_0303morning_0015_0.jpg 0", CameraRangeError, r"line 2 .*camera 16; .*cameras 1\.\.15"),
        ("0000/0000_000_00_0303morning_0015_0.jpg 0", CameraRangeError, "camera 0"),
    ],
)
def test_malformed_list_lines_are_named(msmt: FakeMsmt17, line: str, error: type, message: str) -> None:
    first = f"{msmt.lists['query'][0][0]} {msmt.lists['query'][0][1]}\n"
    msmt.list_path("query").write_text(first + line + "\n")
    with pytest.raises(error, match=message):
        read_msmt17(msmt.root)


def test_missing_and_corrupt_images(msmt: FakeMsmt17) -> None:
    gone = msmt.root / "test" / msmt.lists["gallery"][1][0]
    gone.unlink()
    with pytest.raises(DatasetRootMissingError, match=rf"1 image\(s\) named in the list files .*{gone.name}"):
        read_msmt17(msmt.root)
    write_garbage(gone)
    assert len(read_msmt17(msmt.root)) == 21  # listing alone does not decode
    with pytest.raises(CorruptImageError, match=gone.name):
        read_msmt17(msmt.root, verify_images=True)
    df = read_msmt17(msmt.root, verify_images=True, drop_bad=True)
    assert len(df) == 20 and str(gone) not in set(df["path"])
