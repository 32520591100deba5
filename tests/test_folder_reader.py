"""Reader `folder`: one sub-folder per identity, cameras from a file-name pattern or one per image."""

from __future__ import annotations

import inspect
import logging
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from clusteralign.config import ConfigError
from clusteralign.data.dataset_config import DatasetConfig
from clusteralign.data.errors import (
    CorruptImageError,
    DatasetRootMissingError,
    EmptySplitError,
    FileNameError,
    LayoutError,
)
from clusteralign.data.folder import FolderOptions, read_folder
from clusteralign.data.manifest import read_manifest, write_manifest
from clusteralign.data.readers import read_dataset
from clusteralign.eval.rank import evaluate_rank
from fixtures import write_garbage, write_image

PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank")


def write_people(root: Path, per_person: int = 4, cameras: int = 2, people=PEOPLE) -> dict[str, list[Path]]:
    """`root/<name>/<name>_c<camera>_<k>.jpg`: cameras alternate within each person."""
    written = {}
    for p, name in enumerate(people):
        written[name] = [root / name / f"{name}_c{1 + k % cameras}_{k:03d}.jpg" for k in range(per_person)]
        for k, path in enumerate(written[name]):
            write_image(path, seed=100 * p + k)
    (root / "alice" / "Thumbs.db").write_bytes(b"\x00")  # not an image: ignored
    return written


def test_identities_are_numbered_in_folder_order_and_split_by_the_seed(tmp_path):
    write_people(tmp_path)
    df = read_folder(tmp_path)
    folder_of = {pid: Path(p).parent.name for p, pid in zip(df["path"], df["pid"])}
    assert folder_of == {i: name for i, name in enumerate(PEOPLE, start=1)}
    train, query, gallery = (df[df["split"] == s] for s in ("train", "query", "gallery"))
    assert train["pid"].nunique() == 3 and not set(train["pid"]) & set(query["pid"])
    assert set(query["pid"]) == set(gallery["pid"]) and len(query) == 3 and len(gallery) == 9
    # Same seed, same split; another seed, another one.
    assert read_folder(tmp_path).equals(df)
    splits = {tuple(sorted(set(read_folder(tmp_path, seed=s).query("split == 'train'")["pid"]))) for s in range(6)}
    assert len(splits) > 1
    assert set(read_folder(tmp_path, train_fraction=0.8, queries_per_identity=2).query("split == 'query'")
               .groupby("pid").size()) == {2}


def test_without_a_camera_pattern_every_image_is_its_own_camera(tmp_path, caplog):
    write_people(tmp_path)
    with caplog.at_level(logging.INFO, logger="clusteralign.data.folder"):
        df = read_folder(tmp_path)
    assert sorted(df["camid"]) == list(range(1, len(df) + 1))
    assert "every image is a camera of its own" in caplog.text
    # So the Market protocol counts every gallery image of the query's identity as a match:
    # a gallery ranked by identity gives perfect scores, nothing excluded, no query skipped.
    q, g = df[df["split"] == "query"], df[df["split"] == "gallery"]
    dist = (q["pid"].to_numpy()[:, None] != g["pid"].to_numpy()[None, :]).astype(np.float32)
    result = evaluate_rank(dist, q["pid"], g["pid"], q["camid"], g["camid"], max_rank=1)
    assert (result.num_valid, result.mAP, result.mINP) == (len(q), 1.0, 1.0)


def test_cameras_from_a_file_name_pattern(tmp_path):
    write_people(tmp_path, cameras=3)
    df = read_folder(tmp_path, camera_pattern=r"_c(?P<camid>\d+)_")
    assert dict(zip(df["path"], df["camid"])) == {p: int(Path(p).name.split("_c")[1][0]) for p in df["path"]}
    # Every query keeps a gallery image of its identity from another camera.
    q, g = df[df["split"] == "query"], df[df["split"] == "gallery"]
    for pid, cam in zip(q["pid"], q["camid"]):
        assert ((g["pid"] == pid) & (g["camid"] != cam)).any()


def test_camera_names_that_are_not_numbers_from_1_are_numbered(tmp_path):
    for k, cam in enumerate(["east", "west", "east", "north"]):
        for name in ("ann", "ben"):
            write_image(tmp_path / name / f"{cam}-{k}.png", seed=k)
    df = read_folder(tmp_path, camera_pattern=r"^(?P<camid>[a-z]+)-")
    assert {Path(p).name.split("-")[0]: c for p, c in zip(df["path"], df["camid"])} == {
        "east": 1, "north": 2, "west": 3}
    shutil.rmtree(tmp_path / "ann"), shutil.rmtree(tmp_path / "ben")
    for k, cam in enumerate([0, 1, 0, 2]):  # 0-based camera numbers
        for name in ("ann", "ben"):
            write_image(tmp_path / name / f"c{cam}_{k}.jpg", seed=k)
    df = read_folder(tmp_path, camera_pattern=r"c(?P<camid>\d+)_")
    assert {Path(p).name.split("_")[0]: c for p, c in zip(df["path"], df["camid"])} == {"c0": 1, "c1": 2, "c2": 3}


def test_an_identity_seen_by_one_camera_only_is_never_a_query(tmp_path):
    write_people(tmp_path, cameras=1)
    with pytest.raises(EmptySplitError, match="no test identity of .* can be queried"):
        read_folder(tmp_path, camera_pattern=r"_c(?P<camid>\d+)_")
    write_image(tmp_path / "single" / "single_c1_000.jpg")  # one image: no query either
    df = read_folder(tmp_path, train_fraction=0.1)
    assert "single" in {Path(p).parent.name for p in df.query("split == 'gallery'")["path"]}
    assert "single" not in {Path(p).parent.name for p in df.query("split == 'query'")["path"]}


def test_file_names_the_pattern_misses_are_listed(tmp_path):
    write_people(tmp_path)
    write_image(tmp_path / "bob" / "snapshot.jpg")
    with pytest.raises(FileNameError, match=r"1 image file name\(s\) do not match camera_pattern .*bob/snapshot.jpg"):
        read_folder(tmp_path, camera_pattern=r"_c(?P<camid>\d+)_")


@pytest.mark.parametrize("setup, error, message", [
    (lambda root: None, DatasetRootMissingError, "does not exist; expected a folder with one sub-folder per identity"),
    (lambda root: write_image(root / "loose.jpg"), LayoutError, "lie directly in the dataset root"),
    (lambda root: write_image(root / "only" / "a.jpg"), LayoutError, "has 1 identity folder(s) with images"),
    (lambda root: (root / "empty").mkdir(parents=True), LayoutError, "has 0 identity folder(s)"),
])
def test_layout_errors_name_the_folder(tmp_path, setup, error, message):
    root = tmp_path / "people"
    setup(root)
    with pytest.raises(error) as err:
        read_folder(root)
    assert message in str(err.value) and str(root) in str(err.value)


def test_empty_identity_folders_are_left_out_with_a_warning(tmp_path, caplog):
    write_people(tmp_path)
    (tmp_path / "zed").mkdir()
    with caplog.at_level(logging.WARNING):
        df = read_folder(tmp_path)
    assert "1 identity folder(s) hold no" in caplog.text and "zed" in caplog.text
    assert df["pid"].max() == len(PEOPLE)


def test_unreadable_images_stop_or_are_dropped(tmp_path):
    write_people(tmp_path)
    write_garbage(tmp_path / "carol" / "carol_c1_999.jpg")
    with pytest.raises(CorruptImageError, match="carol_c1_999.jpg"):
        read_folder(tmp_path, verify_images=True)
    df = read_folder(tmp_path, verify_images=True, drop_bad=True)
    assert not df["path"].str.endswith("carol_c1_999.jpg").any() and len(df) == 4 * len(PEOPLE)


def test_the_manifest_round_trips_and_the_registry_knows_the_reader(tmp_path):
    write_people(tmp_path / "people")
    df = read_dataset("folder", tmp_path / "people", seed=3)
    write_manifest(df, tmp_path / "manifest.csv")
    assert read_manifest(tmp_path / "manifest.csv").equals(df)


def test_options_have_one_set_of_defaults():
    params = inspect.signature(read_folder).parameters
    assert {f.name: f.default for f in fields(FolderOptions)} == {
        name: params[name].default for name in (f.name for f in fields(FolderOptions))}


@pytest.mark.parametrize("options, message", [
    ({"train_fraction": 1.5}, "datasets.d.reader_options.train_fraction: must be in (0, 1), got 1.5"),
    ({"train_fraction": "half"}, "datasets.d.reader_options.train_fraction: expected float, got 'half'"),
    ({"queries_per_identity": 0}, "datasets.d.reader_options.queries_per_identity: must be at least 1"),
    ({"camera_pattern": "_c(\\d+)"}, "datasets.d.reader_options.camera_pattern: needs a named group (?P<camid>"),
    ({"camera_pattern": "_c(?P<camid>"}, "datasets.d.reader_options.camera_pattern: not a regular expression"),
    ({"camera": "x"}, "unknown option(s) camera; reader folder accepts camera_pattern, train_fraction"),
])
def test_bad_reader_options_stop_the_plan_naming_the_key(options, message):
    with pytest.raises(ConfigError) as err:
        DatasetConfig.from_mapping("d", {"reader": "folder", "source": {"path": "p"}, "reader_options": options})
    assert message in str(err.value)


def test_reader_options_defaults_are_written_out():
    written = DatasetConfig.from_mapping("d", {"reader": "folder", "source": {"path": "p"}}).to_mapping()
    assert written["reader_options"] == {"camera_pattern": None, "queries_per_identity": 1, "seed": 0,
                                         "train_fraction": 0.5}
