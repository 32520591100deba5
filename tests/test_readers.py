"""Dataset readers on tiny fake datasets written in the exact real layouts."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from clusteralign.data.cuhk03 import read_cuhk03_np
from clusteralign.data.dukemtmc import read_dukemtmc
from clusteralign.data.errors import (
    CameraRangeError,
    CorruptImageError,
    DatasetError,
    DatasetRootMissingError,
    EmptySplitError,
    FileNameError,
    LayoutError,
    NotAFileError,
    UnknownDatasetError,
)
from clusteralign.data.layout import FileNamePattern, read_market_layout
from clusteralign.data.manifest import COLUMNS, read_manifest, summarize, write_manifest
from clusteralign.data.market1501 import MARKET1501_PATTERN, read_market1501
from clusteralign.data.readers import READERS, read_dataset, read_synthetic
from fixtures import (
    FakeDataset,
    make_cuhk03_np,
    make_dukemtmc,
    make_market1501,
    market_name,
    write_garbage,
    write_image,
    write_truncated_jpeg,
)


def assert_matches(df: pd.DataFrame, fake: FakeDataset) -> None:
    """The manifest has the fake dataset's counts, labels and only files that exist."""
    assert list(df.columns) == list(COLUMNS)
    table = summarize(df)
    for split, (identities, images) in fake.counts.items():
        assert (table.loc[split, "identities"], table.loc[split, "images"]) == (identities, images), split
    train = df[df["split"] == "train"]
    assert sorted(set(train["pid"])) == fake.train_pids
    assert dict(zip(train["pid"], train["label"])) == {pid: i for i, pid in enumerate(fake.train_pids)}
    assert (df.loc[df["split"] != "train", "label"] == -1).all()
    assert sorted(set(df.loc[df["split"] == "query", "pid"])) == fake.test_pids
    assert all(os.path.isfile(p) for p in df["path"])
    assert (df["pid"] != -1).all()


def test_market1501_counts_junk_and_distractors(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "Market-1501-v15.09.15")
    df = read_market1501(fake.root)
    assert_matches(df, fake)
    gallery = df[df["split"] == "gallery"]
    assert (gallery["pid"] == 0).sum() == 2
    assert sorted(gallery.loc[gallery["pid"] == 0, "path"]) == sorted(str(p) for p in fake.distractor_files)
    assert not set(df["path"]) & {str(p) for p in fake.junk_files}
    assert not df["path"].str.endswith("Thumbs.db").any()
    # Camera parsed from the name, 1-based; order is sorted by file name within each split.
    for path, camid in zip(df["path"], df["camid"]):
        assert f"_c{camid}s" in os.path.basename(path)
    for split in ("train", "query", "gallery"):
        names = df.loc[df["split"] == split, "path"].tolist()
        assert names == sorted(names)


def test_relative_root_stays_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_market1501(tmp_path / "data" / "market")
    monkeypatch.chdir(tmp_path)
    df = read_market1501("data/market")
    assert df["path"].str.startswith(os.path.join("data", "market", "")).all()
    assert not any(os.path.isabs(p) for p in df["path"])
    first = df[df["split"] == "query"]["path"].iloc[0]
    assert first == os.path.join("data/market", "query", os.path.basename(first))
    # The manifest round-trips and still points at readable files from the same working directory.
    write_manifest(df, "manifest.csv")
    pd.testing.assert_frame_equal(read_manifest("manifest.csv"), df)


def test_dukemtmc_eight_cameras(tmp_path: Path) -> None:
    fake = make_dukemtmc(tmp_path / "DukeMTMC-reID")
    df = read_dukemtmc(fake.root)
    assert_matches(df, fake)
    assert df["camid"].max() == 8
    assert (df["pid"] != 0).all()


def test_cuhk03_np_variants(tmp_path: Path) -> None:
    fakes = make_cuhk03_np(tmp_path / "cuhk03-np")
    for variant, fake in fakes.items():
        df = read_cuhk03_np(tmp_path / "cuhk03-np", variant=variant)
        assert_matches(df, fake)
        assert df["path"].str.contains(os.sep + variant + os.sep, regex=False).all()
        assert df["path"].str.endswith(".png").all()
        assert set(df["camid"]) == {1, 2}
    labeled = read_dataset("cuhk03_labeled", tmp_path / "cuhk03-np")
    detected = read_dataset("cuhk03_detected", tmp_path / "cuhk03-np")
    assert sorted(set(labeled.loc[labeled["split"] == "train", "pid"])) == [1, 2]
    assert sorted(set(detected.loc[detected["split"] == "train", "pid"])) == [3, 4, 6]


def test_cuhk03_np_bad_variant_and_missing_variant(tmp_path: Path) -> None:
    fakes = make_cuhk03_np(tmp_path / "np")
    with pytest.raises(DatasetError, match=r"variant 'both'.*\['labeled', 'detected'\]"):
        read_cuhk03_np(tmp_path / "np", variant="both")
    shutil.rmtree(fakes["detected"].root)
    with pytest.raises(DatasetRootMissingError, match=r"np/detected.*does not exist.*\['labeled/'\]"):
        read_cuhk03_np(tmp_path / "np", variant="detected")
    with pytest.raises(DatasetRootMissingError, match=r"nowhere.*labeled/ and detected/"):
        read_cuhk03_np(tmp_path / "nowhere")


def test_synthetic_uses_its_camera_count(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "syn", num_cameras=3, junk=0, distractors=0)
    df = read_dataset("synthetic", fake.root, num_cameras=3)
    assert_matches(df, fake)
    assert set(df["camid"]) <= {1, 2, 3}
    write_image(fake.split_dir("gallery") / market_name(3, 4, 7))
    with pytest.raises(CameraRangeError, match=r"outside 1\.\.3.*0003_c4s2_001175_07\.jpg \(camera 4\)"):
        read_synthetic(fake.root, num_cameras=3)
    # Eight cameras make the same folder valid, so the reader does not assume Market's six.
    assert len(read_synthetic(fake.root, num_cameras=8)) == len(df) + 1


def test_market_camera_out_of_range(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "m")
    write_image(fake.split_dir("train") / "0002_c7s1_000100_01.jpg")
    write_image(fake.split_dir("query") / "0003_c0s1_000100_01.jpg")
    with pytest.raises(CameraRangeError) as info:
        read_market1501(fake.root)
    message = str(info.value)
    assert "2 image(s)" in message and "1..6" in message
    assert "0002_c7s1_000100_01.jpg (camera 7)" in message and "0003_c0s1_000100_01.jpg (camera 0)" in message


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetRootMissingError) as info:
        read_market1501(tmp_path / "absent")
    message = str(info.value)
    assert str(tmp_path / "absent") in message and "does not exist" in message
    assert "bounding_box_train/, query/, bounding_box_test/" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetRootMissingError, match="is a file, not a folder"):
        read_dukemtmc(tmp_path / "file")


def test_missing_subfolders_all_named(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "m")
    shutil.rmtree(fake.split_dir("query"))
    shutil.rmtree(fake.split_dir("gallery"))
    with pytest.raises(LayoutError, match=r"lacks the sub-folder\(s\) query/, bounding_box_test/") as info:
        read_market1501(fake.root)
    assert str(fake.root) in str(info.value)


def test_nested_root_gets_a_hint(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "download" / "Market-1501-v15.09.15")
    with pytest.raises(
        LayoutError, match=r"lacks.*bounding_box_train/.*Market-1501-v15\.09\.15.*use it as the dataset root"
    ):
        read_market1501(tmp_path / "download")
    assert len(read_market1501(fake.root)) > 0


def test_bad_file_names_listed_with_pattern_and_example(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "m")
    offenders = [f"person_{i}.jpg" for i in range(7)]
    for name in offenders:
        write_image(fake.split_dir("train") / name)
    (fake.split_dir("query") / "notes.txt").write_text("ignored: not an image extension")
    (fake.split_dir("query") / "._0003_c1s1_000001_01.jpg").write_bytes(b"macOS resource fork")
    with pytest.raises(FileNameError) as info:
        read_market1501(fake.root)
    message = str(info.value)
    assert "7 image file(s)" in message and "and 2 more" in message
    assert str(fake.split_dir("train") / "person_0.jpg") in message
    assert "person_6.jpg" not in message
    assert "PPPP_cCsS_FFFFFF_BB.jpg (for example 0002_c1s1_000451_03.jpg" in message
    assert MARKET1501_PATTERN.regex.pattern in message
    # A Duke name is not a Market name.
    fake2 = make_market1501(tmp_path / "m2")
    write_image(fake2.split_dir("query") / "0005_c2_f0046985.jpg")
    with pytest.raises(FileNameError, match=r"1 image file\(s\).*0005_c2_f0046985\.jpg"):
        read_market1501(fake2.root)


def test_entries_named_like_images_that_are_not_files_are_refused(tmp_path: Path) -> None:
    # A broken link was left out of the manifest without a word: the gallery shrank.
    fake = make_market1501(tmp_path / "m")
    gallery = fake.split_dir("gallery")
    target = sorted(gallery.iterdir())[0]
    (gallery / "0009_c1s1_000001_01.jpg").symlink_to(target.name)  # a working link is an image like any
    assert summarize(read_market1501(fake.root)).loc["gallery", "images"] == fake.counts["gallery"][1] + 1
    broken = gallery / "0009_c2s1_000002_01.jpg"
    broken.symlink_to("../elsewhere/0009_c2s1_000002_01.jpg")
    (fake.split_dir("train") / "0002_c1s1_000009_01.jpg").mkdir()
    with pytest.raises(NotAFileError) as info:
        read_market1501(fake.root)
    message = str(info.value)
    assert message.startswith(f"Market-1501: not an image file, though named like one (2 under {str(fake.root)!r}): ")
    assert f"{broken} (a symbolic link to '../elsewhere/0009_c2s1_000002_01.jpg', which does not exist)" in message
    assert "0002_c1s1_000009_01.jpg (a folder)" in message
    broken.unlink()
    (fake.split_dir("train") / "0002_c1s1_000009_01.jpg").rmdir()
    read_market1501(fake.root)


def test_jpeg_and_png_extensions_any_case(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "m")
    write_image(fake.split_dir("train") / "0002_c1s1_009999_01.JPG")
    write_image(fake.split_dir("train") / "0002_c2s1_009999_02.jpeg")
    write_image(fake.split_dir("train") / "0002_c3s1_009999_03.png")
    df = read_market1501(fake.root)
    assert summarize(df).loc["train", "images"] == fake.counts["train"][1] + 3


def test_corrupt_image_with_verification(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = make_market1501(tmp_path / "m")
    cut = fake.split_dir("gallery") / "0003_c2s1_005000_01.jpg"
    text = fake.split_dir("train") / "0002_c3s1_005000_01.jpg"
    write_truncated_jpeg(cut)
    write_garbage(text)
    # Without verification the reader only lists files.
    assert len(read_market1501(fake.root)) == sum(n for _, n in fake.counts.values()) + 2
    with pytest.raises(CorruptImageError) as info:
        read_market1501(fake.root, verify_images=True)
    message = str(info.value)
    assert "2 image(s) cannot be read" in message
    assert f"{cut} (" in message and f"{text} (" in message and "drop_bad=True" in message

    with caplog.at_level(logging.WARNING):
        df = read_market1501(fake.root, verify_images=True, drop_bad=True)
    warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "dropped 2 unreadable image(s)" in warnings[0].getMessage()
    assert str(cut) in warnings[0].getMessage()
    assert_matches(df, fake)
    assert not set(df["path"]) & {str(cut), str(text)}


def test_junk_and_distractors_outside_gallery_dropped_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = make_market1501(tmp_path / "m")
    write_image(fake.split_dir("train") / "0000_c1s1_000001_01.jpg")
    write_image(fake.split_dir("query") / "0000_c2s1_000001_01.jpg")
    write_image(fake.split_dir("query") / "0000_c3s1_000001_01.jpg")
    write_image(fake.split_dir("query") / "-1_c1s1_000001_01.jpg")
    with caplog.at_level(logging.INFO):
        df = read_market1501(fake.root)
    assert_matches(df, fake)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (
        logging.WARNING,
        "Market-1501: dropped 1 distractor image(s) (pid 0) from the train split; "
        "distractors belong in the gallery only.",
    ) in messages
    assert any(
        lvl == logging.WARNING and "dropped 2 distractor image(s) (pid 0) from the query split" in m
        for lvl, m in messages
    )
    assert any(
        lvl == logging.WARNING and "dropped 1 junk image(s) (pid -1) from the query split" in m
        for lvl, m in messages
    )
    assert any(
        lvl == logging.INFO and "dropped 2 junk image(s) (pid -1) from the gallery split" in m
        for lvl, m in messages
    )
    # The per-split summary table is logged too.
    summary = [m for _, m in messages if "identities" in m]
    assert summary and "train" in summary[-1] and "cameras" in summary[-1]


def test_empty_split_after_filtering(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "m")
    for path in fake.split_dir("query").iterdir():
        path.unlink()
    write_image(fake.split_dir("query") / "-1_c1s1_000001_01.jpg")
    with pytest.raises(EmptySplitError, match=r"query split is empty.*m/query'") as info:
        read_market1501(fake.root)
    assert "junk" in str(info.value)
    for path in fake.split_dir("train").iterdir():
        path.unlink()
    with pytest.raises(EmptySplitError, match=r"train split is empty.*bounding_box_train"):
        read_market1501(fake.root)


def test_empty_split_after_dropping_bad_images(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "m")
    for path in fake.split_dir("query").glob("*.jpg"):
        write_garbage(path)
    with pytest.raises(EmptySplitError, match="query split is empty.*unreadable"):
        read_market1501(fake.root, verify_images=True, drop_bad=True)


def test_custom_folder_names(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "m")
    os.rename(fake.split_dir("train"), fake.root / "train")
    df = read_market_layout(
        fake.root, name="renamed", pattern=MARKET1501_PATTERN, num_cameras=6, train_dir="train"
    )
    assert df.loc[df["split"] == "train", "path"].str.contains(f"{os.sep}train{os.sep}", regex=False).all()


def test_file_name_pattern_checks_itself() -> None:
    import re

    with pytest.raises(ValueError, match="named group"):
        FileNamePattern(re.compile(r"(?P<pid>\d+)_c(\d)\.jpg"), template="PPPP_cC.jpg", example="0001_c1.jpg")
    with pytest.raises(ValueError, match="does not match its own pattern"):
        FileNamePattern(
            re.compile(r"(?P<pid>\d+)_c(?P<camid>\d)\.jpg"), template="PPPP_cC.jpg", example="0001_c1.png"
        )
    assert MARKET1501_PATTERN.parse("-1_c3s2_000001_00.jpg") == (-1, 3)
    assert MARKET1501_PATTERN.parse("0002_c1s1_000451_03.jpg") == (2, 1)
    assert MARKET1501_PATTERN.parse("0002_c1s1_000451_03.jpg.bak") is None


def test_reader_registry(tmp_path: Path) -> None:
    known = ["cuhk03_detected", "cuhk03_labeled", "cuhk03_raw_detected", "cuhk03_raw_labeled", "dukemtmc", "folder",
             "market1501", "msmt17", "synthetic"]
    assert sorted(READERS) == known
    fake = make_market1501(tmp_path / "m")
    pd.testing.assert_frame_equal(read_dataset("market1501", fake.root), read_market1501(fake.root))
    with pytest.raises(UnknownDatasetError) as info:
        read_dataset("market", fake.root)
    assert isinstance(info.value, KeyError)
    assert str(info.value) == f"unknown dataset name 'market'; known datasets are {known}."
    with pytest.raises(TypeError):
        read_dataset("synthetic", fake.root)  # the camera count is required
