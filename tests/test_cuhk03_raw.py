"""CUHK03 from the raw release: cuhk-03.mat (MATLAB v7.3 / HDF5) plus the new-protocol split files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clusteralign.data import cuhk03
from clusteralign.data.cuhk03 import (
    CONVERSION_MARKER,
    CONVERTED_DIR,
    convert_cuhk03_raw,
    read_cuhk03_np,
    read_cuhk03_raw,
    read_new_protocol,
)
from clusteralign.data.errors import Cuhk03RawError, DatasetError, DatasetRootMissingError
from clusteralign.data.manifest import summarize
from clusteralign.data.readers import read_dataset
from fixtures import FakeCuhk03Raw, make_cuhk03_raw, write_protocol_mat


@pytest.fixture()
def raw(tmp_path: Path) -> FakeCuhk03Raw:
    return make_cuhk03_raw(tmp_path / "cuhk03")


def files_with_mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("variant", ["labeled", "detected"])
def test_reads_the_new_protocol_split_with_the_right_pixels(raw: FakeCuhk03Raw, variant: str) -> None:
    df = read_cuhk03_raw(raw.root, variant=variant)
    names, labels, splits = raw.protocol[variant]
    table = summarize(df)
    for split, (identities, images) in raw.counts[variant].items():
        assert (table.loc[split, "identities"], table.loc[split, "images"]) == (identities, images), split
    train = df[df["split"] == "train"]
    assert sorted(set(train["pid"])) == raw.train_pids
    assert dict(zip(train["pid"], train["label"])) == {pid: i for i, pid in enumerate(raw.train_pids)}
    assert sorted(set(df.loc[df["split"] == "query", "pid"])) == raw.test_pids
    assert set(df["camid"]) == {1, 2}
    # Every row is the filelist image the split file put in that split, decoded the right way round.
    for path, pid, camid, split in zip(df["path"], df["pid"], df["camid"], df["split"]):
        position = int(Path(path).stem.rsplit("_", 1)[1]) - 1
        name = names[position]
        assert position in splits[split]
        assert pid == labels[position] and camid == int(name.split("_")[2])
        with Image.open(path) as image:
            assert image.format == "PNG"
            np.testing.assert_array_equal(np.asarray(image), raw.pixels[variant][name])
    assert df["path"].str.startswith(str(raw.root / CONVERTED_DIR / variant)).all()


def test_detected_and_labeled_differ_like_the_real_release(raw: FakeCuhk03Raw) -> None:
    labeled = read_dataset("cuhk03_raw_labeled", raw.root)
    detected = read_dataset("cuhk03_raw_detected", raw.root)
    assert (labeled["split"] == "train").sum() + 1 == (detected["split"] == "train").sum()
    # Same cell, different boxes: the pixels differ between the variants.
    first = "1_001_1_01.png"
    assert not np.array_equal(raw.pixels["labeled"][first], raw.pixels["detected"][first])


def test_converted_folder_is_the_cuhk03_np_layout(raw: FakeCuhk03Raw) -> None:
    for variant in ("labeled", "detected"):
        from_raw = read_cuhk03_raw(raw.root, variant=variant)
        from_folder = read_cuhk03_np(raw.root / CONVERTED_DIR, variant=variant)
        pd.testing.assert_frame_equal(from_raw, from_folder)
    assert sorted(os.listdir(raw.root / CONVERTED_DIR)) == ["detected", "labeled"]
    assert sorted(os.listdir(raw.root / CONVERTED_DIR / "labeled")) == [
        CONVERSION_MARKER, "bounding_box_test", "bounding_box_train", "query"
    ]


def test_conversion_happens_once(raw: FakeCuhk03Raw, monkeypatch: pytest.MonkeyPatch) -> None:
    first = read_cuhk03_raw(raw.root, variant="labeled")
    out = raw.root / CONVERTED_DIR / "labeled"
    before = files_with_mtimes(out)

    def must_not_run(*args, **kwargs):
        raise AssertionError("images were written again although the marker records the same sources")

    monkeypatch.setattr(cuhk03, "write_new_protocol_images", must_not_run)
    pd.testing.assert_frame_equal(read_cuhk03_raw(raw.root, variant="labeled"), first)
    assert files_with_mtimes(out) == before


def test_a_new_split_file_is_converted_again(raw: FakeCuhk03Raw) -> None:
    read_cuhk03_raw(raw.root, variant="labeled")
    names, labels, splits = raw.protocol["labeled"]
    # Swap the roles: the old test identities train now.
    moved = {"train": splits["query"] + splits["gallery"], "query": [], "gallery": []}
    for row in splits["train"]:
        view = int(names[row].split("_")[2])
        taken = {(labels[r], int(names[r].split("_")[2])) for r in moved["query"]}
        moved["query" if (labels[row], view) not in taken else "gallery"].append(row)
    write_protocol_mat(raw.protocol_path("labeled"), names, labels, moved)
    df = read_cuhk03_raw(raw.root, variant="labeled")
    assert sorted(set(df.loc[df["split"] == "train", "pid"])) == raw.test_pids
    assert (df["split"] == "train").sum() == len(moved["train"])
    assert sorted(os.listdir(raw.root / CONVERTED_DIR)) == ["labeled"]  # no temporary folders left


def test_split_file_pointing_at_an_empty_cell_writes_nothing(raw: FakeCuhk03Raw) -> None:
    names, labels, splits = raw.protocol["labeled"]
    assert "1_001_1_05.png" not in names  # an empty cell in the fake release
    bad = dict(splits, gallery=splits["gallery"] + [len(names)])
    write_protocol_mat(raw.protocol_path("labeled"), names + ["1_001_1_05.png"], labels + [1], bad)
    with pytest.raises(Cuhk03RawError) as info:
        read_cuhk03_raw(raw.root, variant="labeled")
    message = str(info.value)
    assert "1_001_1_05.png" in message and "camera pair 1, person 1, image 5" in message and "empty" in message
    assert os.listdir(raw.root / CONVERTED_DIR) == []
    write_protocol_mat(raw.protocol_path("labeled"), names + ["6_001_1_01.png"], labels + [1], bad)
    with pytest.raises(Cuhk03RawError, match=r"no labeled image 6_001_1_01\.png.*sizes \[\(3, 10\), \(2, 10\)"):
        read_cuhk03_raw(raw.root, variant="labeled")


def test_split_file_errors_name_the_file_and_field(raw: FakeCuhk03Raw, tmp_path: Path) -> None:
    from scipy.io import savemat

    path = tmp_path / "split.mat"
    names, labels, splits = raw.protocol["labeled"]
    split = read_new_protocol(raw.protocol_path("labeled"))
    assert split.names == tuple(names) and split.pids == tuple(labels)
    assert {k: list(v) for k, v in split.indices.items()} == splits

    savemat(path, {"filelist": np.array([["1_001_1_01.png"]], dtype=object), "labels": np.ones((1, 1))})
    with pytest.raises(Cuhk03RawError, match=r"split\.mat' lacks the field\(s\) \['train_idx', 'query_idx', 'gallery_idx'\]"):
        read_new_protocol(path)
    write_protocol_mat(path, names, labels, dict(splits, query=[len(names)]))
    with pytest.raises(Cuhk03RawError, match=rf"query_idx holds 1 position\(s\) outside 1\.\.{len(names)}"):
        read_new_protocol(path)
    write_protocol_mat(path, names, labels[:-1], splits)
    with pytest.raises(Cuhk03RawError, match="labels has .* entries but filelist has"):
        read_new_protocol(path)
    write_protocol_mat(path, ["img_0001.png"] + names[1:], labels, splits, camids=[1] * len(names))
    with pytest.raises(Cuhk03RawError, match=r"not named like 1_001_1_01\.png.*img_0001\.png"):
        read_new_protocol(path)
    path.write_bytes(b"not a mat file at all")
    with pytest.raises(Cuhk03RawError, match="cannot read CUHK03 split file"):
        read_new_protocol(path)


def test_layout_errors(raw: FakeCuhk03Raw, tmp_path: Path) -> None:
    with pytest.raises(DatasetRootMissingError, match=r"nowhere' does not exist.*cuhk03_release/cuhk-03\.mat"):
        read_cuhk03_raw(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"unknown variant 'both'"):
        read_cuhk03_raw(raw.root, variant="both")
    raw.protocol_path("detected").unlink()
    with pytest.raises(DatasetRootMissingError, match=r"cuhk03_new_protocol_config_detected\.mat is not in"):
        read_cuhk03_raw(raw.root, variant="detected")
    mat = raw.root / "cuhk03_release" / "cuhk-03.mat"
    mat.rename(tmp_path / "kept.mat")
    with pytest.raises(DatasetRootMissingError, match=r"no cuhk-03\.mat under"):
        read_cuhk03_raw(raw.root)
    # An old-style MATLAB file where the v7.3 one belongs.
    from scipy.io import savemat

    savemat(mat, {"labeled": np.zeros((1, 5))})
    with pytest.raises(Cuhk03RawError, match=r"as a MATLAB v7\.3 \(HDF5\) file"):
        read_cuhk03_raw(raw.root)


def test_separate_protocol_and_image_folders_leave_the_root_untouched(raw: FakeCuhk03Raw, tmp_path: Path) -> None:
    protocols = tmp_path / "protocol"
    protocols.mkdir()
    for variant in ("labeled", "detected"):
        shutil.move(raw.protocol_path(variant), protocols / raw.protocol_path(variant).name)
    before = files_with_mtimes(raw.root)
    images = tmp_path / "work" / "cuhk03_images"
    df = read_cuhk03_raw(raw.root, variant="detected", images_dir=images, protocol_dir=protocols)
    assert df["path"].str.startswith(str(images / "detected")).all()
    assert files_with_mtimes(raw.root) == before
    assert convert_cuhk03_raw(raw.root, variant="detected", images_dir=images, protocol_dir=protocols) == (
        images / "detected"
    )


def test_never_replaces_a_folder_it_did_not_write_and_notices_tampering(raw: FakeCuhk03Raw) -> None:
    foreign = raw.root / CONVERTED_DIR / "labeled"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(Cuhk03RawError, match=f"has no {CONVERSION_MARKER}.*refusing to replace it"):
        read_cuhk03_raw(raw.root, variant="labeled")
    assert os.listdir(foreign) == ["notes.txt"]

    read_cuhk03_raw(raw.root, variant="detected")
    gallery = raw.root / CONVERTED_DIR / "detected" / "bounding_box_test"
    next(gallery.iterdir()).unlink()
    with pytest.raises(Cuhk03RawError, match=r"bounding_box_test' holds \d+ PNG images .* Delete"):
        read_cuhk03_raw(raw.root, variant="detected")
