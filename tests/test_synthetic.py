"""The embedded synthetic dataset: Market-1501 layout and naming, determinism, caching, errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image, features

from clusteralign.data.synthetic import planning, record, writer
from clusteralign.data.synthetic import (
    GALLERY_DIR,
    QUERY_DIR,
    SPEC_FILENAME,
    TRAIN_DIR,
    SyntheticRootError,
    SyntheticSpec,
    SyntheticSpecError,
    generate_synthetic,
)

NAME = re.compile(r"^(-1|\d{4})_c(\d)s([1-6])_(\d{6})_(\d{2})\.jpg$")
FOLDERS = (TRAIN_DIR, GALLERY_DIR, QUERY_DIR)


def _records(root: Path) -> dict[str, list[tuple[int, int, str]]]:
    """(pid, camid, name) per folder, parsed with the Market naming regex."""
    out: dict[str, list[tuple[int, int, str]]] = {}
    for folder in FOLDERS:
        rows = []
        for path in sorted((root / folder).iterdir()):
            m = NAME.match(path.name)
            assert m, f"{folder}/{path.name} does not follow the Market-1501 naming"
            rows.append((int(m.group(1)), int(m.group(2)), path.name))
        out[folder] = rows
    return out


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticSpec, dict[str, int]]:
    spec = SyntheticSpec.tiny()
    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    counts = generate_synthetic(root, spec)
    return root, spec, counts


def test_layout_names_and_images(tiny: tuple[Path, SyntheticSpec, dict[str, int]]) -> None:
    root, spec, _ = tiny
    assert sorted(p.name for p in root.iterdir()) == sorted([*FOLDERS, SPEC_FILENAME])
    records = _records(root)
    names = [n for rows in records.values() for _, _, n in rows]
    assert len(names) == len(set(names)), "file names must be unique across the dataset"
    for folder, rows in records.items():
        assert rows, f"{folder} is empty"
        for _, camid, name in rows:
            assert 1 <= camid <= spec.num_cameras
            with Image.open(root / folder / name) as im:
                assert im.format == "JPEG"
                assert im.mode == "RGB"
                assert im.size == (spec.width, spec.height)
    # Rendering is not degenerate: (almost) every image is different.
    assert len(set(_hashes(root).values())) == len(names) + 1


def test_counts_match_spec(tiny: tuple[Path, SyntheticSpec, dict[str, int]]) -> None:
    root, spec, counts = tiny
    records = _records(root)
    assert counts["train"] == len(records[TRAIN_DIR])
    assert counts["query"] == len(records[QUERY_DIR])
    assert counts["gallery"] == len(records[GALLERY_DIR])
    assert (counts["train_ids"], counts["test_ids"]) == (spec.num_train_ids, spec.num_test_ids)

    train_ids = {pid for pid, _, _ in records[TRAIN_DIR]}
    test_ids = {pid for pid, _, _ in records[QUERY_DIR]}
    assert len(train_ids) == spec.num_train_ids
    assert len(test_ids) == spec.num_test_ids
    gallery_pids = Counter(pid for pid, _, _ in records[GALLERY_DIR])
    assert gallery_pids[0] == spec.num_distractors == counts["distractors"]
    assert gallery_pids[-1] == spec.num_junk == counts["junk"]

    per_visit: Counter[tuple[int, int]] = Counter()
    for folder in FOLDERS:
        for pid, camid, _ in records[folder]:
            if pid > 0:
                per_visit[(pid, camid)] += 1
    cams_of: defaultdict[int, set[int]] = defaultdict(set)
    for (pid, camid), n in per_visit.items():
        cams_of[pid].add(camid)
        low = spec.min_images_per_id_per_camera if pid in train_ids else 2
        assert low <= n <= spec.max_images_per_id_per_camera, (pid, camid, n)
    for pid, cams in cams_of.items():
        assert spec.min_cameras_per_id <= len(cams) <= spec.max_cameras_per_id, (pid, cams)


@pytest.mark.parametrize("target", [40, 56])  # the tiny spec draws 49 training images
def test_num_train_images_fixes_the_training_set_size(tmp_path: Path, target: int) -> None:
    drawn = planning.plan(SyntheticSpec.tiny())
    spec = dataclasses.replace(SyntheticSpec.tiny(), num_train_images=target)
    counts = generate_synthetic(tmp_path / "fixed", spec)
    records = _records(tmp_path / "fixed")
    assert counts["train"] == len(records[TRAIN_DIR]) == target
    assert sum(e.folder == TRAIN_DIR for e in drawn) == 49
    # The test side and every training identity's cameras stay as drawn; counts stay in bounds.
    assert (counts["query"], counts["gallery"]) == (sum(e.folder == QUERY_DIR for e in drawn),
                                                    sum(e.folder == GALLERY_DIR for e in drawn))
    visits = Counter((pid, camid) for pid, camid, _ in records[TRAIN_DIR])
    assert set(visits) == {(e.pid, e.camid) for e in drawn if e.folder == TRAIN_DIR}
    assert all(spec.min_images_per_id_per_camera <= n <= spec.max_images_per_id_per_camera
               for n in visits.values())


def test_unset_num_train_images_keeps_older_markers_and_unreachable_one_is_refused() -> None:
    spec = SyntheticSpec.tiny()
    assert "num_train_images" not in spec.to_dict()
    fixed = dataclasses.replace(spec, num_train_images=40)
    assert SyntheticSpec.from_dict(fixed.to_dict()) == fixed
    with pytest.raises(SyntheticSpecError, match=r"num_train_images \(500\) cannot be reached"):
        planning.plan(dataclasses.replace(spec, num_train_images=500))


def test_splits_follow_market_conventions(
    tiny: tuple[Path, SyntheticSpec, dict[str, int]],
) -> None:
    root, spec, _ = tiny
    records = _records(root)
    train_ids = {pid for pid, _, _ in records[TRAIN_DIR]}
    query = [(pid, camid) for pid, camid, _ in records[QUERY_DIR]]
    gallery = [(pid, camid) for pid, camid, _ in records[GALLERY_DIR]]

    # Junk and distractors live in the gallery only.
    assert all(pid > 0 for pid in train_ids)
    assert all(pid > 0 for pid, _ in query)
    # Train and test identities are disjoint; test ids follow the train ids.
    test_ids = {pid for pid, _ in query}
    assert not train_ids & test_ids
    assert max(train_ids) < min(test_ids)
    assert {pid for pid, _ in gallery if pid > 0} == test_ids
    # Exactly one query per (test identity, camera it appears in).
    assert len(query) == len(set(query))
    assert set(query) == {(pid, camid) for pid, camid in gallery if pid > 0}
    # Every query has a true match in another camera, so no query is skipped by evaluation.
    for pid, camid in query:
        assert any(g_pid == pid and g_cam != camid for g_pid, g_cam in gallery), (pid, camid)


# What SyntheticSpec.tiny() writes, pinned: a change to the generator that alters any file name or
# byte fails here (then bump GENERATOR_VERSION, so folders made before count as another dataset, and
# record the new digests). The names depend on numpy's random streams only; the bytes also on the
# drawing and the JPEG encoder, so their digest is kept per numpy, Pillow and libjpeg-turbo version.
TINY_NAMES_SHA256 = "21ee5039a49f084aa1103e1b5f3b0d268dffcb611a53d2db0a2d19ed3c8ebe75"
TINY_FILES_SHA256 = {
    ("2.4.6", "13.0.0", "3.2.0"): "4dbe7b636027695d975f6a26535c3a3f7bbf14ce3244db3e5eeec5d24d80495b",
}


def _digests(root: Path) -> tuple[str, str]:
    """sha256 of every file's relative name, and of every name with its bytes, in sorted order."""
    names, files = hashlib.sha256(), hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix().encode() + b"\0"
        names.update(name)
        files.update(name + hashlib.sha256(path.read_bytes()).digest())
    return names.hexdigest(), files.hexdigest()


def test_tiny_spec_writes_the_pinned_files(tiny: tuple[Path, SyntheticSpec, dict[str, int]]) -> None:
    root, _, _ = tiny
    names, files = _digests(root)
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip(f"the names were pinned with numpy 2's random streams; this is numpy {np.__version__}")
    assert names == TINY_NAMES_SHA256
    versions = (np.__version__, PIL.__version__, features.version("libjpeg_turbo"))
    if versions not in TINY_FILES_SHA256:
        pytest.skip(f"no digest of the bytes recorded for numpy, Pillow, libjpeg-turbo {versions}")
    assert files == TINY_FILES_SHA256[versions]


def test_same_seed_is_byte_identical_and_other_seed_differs(
    tiny: tuple[Path, SyntheticSpec, dict[str, int]], tmp_path: Path
) -> None:
    root, spec, counts = tiny
    again = tmp_path / "again"
    assert generate_synthetic(again, SyntheticSpec.tiny()) == counts
    assert _hashes(again) == _hashes(root)

    other = tmp_path / "other"
    generate_synthetic(other, SyntheticSpec.tiny(seed=spec.seed + 1))
    assert not set(_hashes(other).values()) & set(_hashes(root).values())


def test_worker_processes_write_the_same_bytes(
    tiny: tuple[Path, SyntheticSpec, dict[str, int]], tmp_path: Path
) -> None:
    root, spec, counts = tiny
    assert generate_synthetic(tmp_path / "parallel", spec, workers=2) == counts
    assert _hashes(tmp_path / "parallel") == _hashes(root)
    with pytest.raises(ValueError, match="workers"):
        generate_synthetic(tmp_path / "bad", spec, workers=0)


def test_existing_dataset_with_same_spec_is_left_alone(
    tiny: tuple[Path, SyntheticSpec, dict[str, int]],
) -> None:
    root, spec, counts = tiny
    marker = root / SPEC_FILENAME
    before = marker.stat().st_mtime_ns, marker.stat().st_ino
    assert generate_synthetic(root, SyntheticSpec.tiny()) == counts
    assert (marker.stat().st_mtime_ns, marker.stat().st_ino) == before
    recorded = json.loads(marker.read_text())
    assert recorded["spec"] == spec.to_dict()
    assert recorded["counts"] == counts
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]


def test_different_spec_is_refused_unless_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate_synthetic(root, SyntheticSpec.tiny())
    before = _hashes(root)
    changed = dataclasses.replace(SyntheticSpec.tiny(), num_junk=5)
    with pytest.raises(SyntheticRootError, match="num_junk") as info:
        generate_synthetic(root, changed)
    assert str(root) in str(info.value)
    assert _hashes(root) == before

    counts = generate_synthetic(root, changed, overwrite=True)
    assert counts["junk"] == 5
    assert json.loads((root / SPEC_FILENAME).read_text())["spec"]["num_junk"] == 5
    assert sum(1 for p in (root / GALLERY_DIR).iterdir() if p.name.startswith("-1_")) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "temporary folders left over"


def test_older_generator_version_counts_as_a_different_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    generate_synthetic(root, SyntheticSpec.tiny())
    monkeypatch.setattr(record, "GENERATOR_VERSION", record.GENERATOR_VERSION + 1)
    with pytest.raises(SyntheticRootError, match="generator version"):
        generate_synthetic(root, SyntheticSpec.tiny())


def test_modified_dataset_is_detected(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate_synthetic(root, SyntheticSpec.tiny())
    next((root / QUERY_DIR).iterdir()).unlink()
    with pytest.raises(SyntheticRootError, match="modified"):
        generate_synthetic(root, SyntheticSpec.tiny())
    generate_synthetic(root, SyntheticSpec.tiny(), overwrite=True)
    assert generate_synthetic(root, SyntheticSpec.tiny())["query"] == len(
        list((root / QUERY_DIR).iterdir())
    )


def test_foreign_folder_is_never_replaced_but_empty_folder_is_used(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(SyntheticRootError, match="not a synthetic dataset"):
            generate_synthetic(foreign, SyntheticSpec.tiny(), overwrite=overwrite)
    assert (foreign / "notes.txt").read_text() == "keep me"

    empty = tmp_path / "empty"
    empty.mkdir()
    counts = generate_synthetic(empty, SyntheticSpec.tiny())
    assert counts["train"] == len(list((empty / TRAIN_DIR).iterdir()))


def test_unreadable_record_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate_synthetic(root, SyntheticSpec.tiny())
    (root / SPEC_FILENAME).write_text("{ not json")
    with pytest.raises(SyntheticRootError, match=SPEC_FILENAME):
        generate_synthetic(root, SyntheticSpec.tiny())
    generate_synthetic(root, SyntheticSpec.tiny(), overwrite=True)
    assert json.loads((root / SPEC_FILENAME).read_text())["spec"] == SyntheticSpec.tiny().to_dict()


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = writer.render_image
    calls = []

    def failing(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        if len(calls) > 10:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "render_image", failing)
    with pytest.raises(OSError, match="disk full"):
        generate_synthetic(tmp_path / "data", SyntheticSpec.tiny())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"num_cameras": 1}, "num_cameras"),
        ({"num_cameras": 10}, "num_cameras"),
        ({"num_train_ids": 0}, "num_train_ids"),
        ({"num_train_ids": True}, "num_train_ids"),
        ({"num_test_ids": 2.0}, "num_test_ids"),
        ({"num_train_ids": 9000, "num_test_ids": 1000}, "num_test_ids"),
        ({"min_cameras_per_id": 1}, "min_cameras_per_id"),
        ({"min_cameras_per_id": 3, "max_cameras_per_id": 2}, "min_cameras_per_id"),
        ({"max_cameras_per_id": 4}, "max_cameras_per_id"),
        ({"min_images_per_id_per_camera": 0}, "min_images_per_id_per_camera"),
        ({"max_images_per_id_per_camera": 1}, "max_images_per_id_per_camera"),
        ({"min_images_per_id_per_camera": 3, "max_images_per_id_per_camera": 2},
         "min_images_per_id_per_camera"),
        ({"num_junk": -1}, "num_junk"),
        ({"height": 8}, "height"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"occlusion_prob": 1.5}, "occlusion_prob"),
        ({"occlusion_prob": math.nan}, "occlusion_prob"),
        ({"camera_cast": "strong"}, "camera_cast"),
        ({"seed": -1}, "seed"),
        ({"palette_size": 1}, "palette_size"),
        ({"family_mutations": 0}, "family_mutations"),
        ({"num_train_images": 0}, "num_train_images"),
        ({"num_train_images": 12.5}, "num_train_images"),
    ],
)
def test_invalid_spec_names_the_field(changes: dict[str, object], field: str) -> None:
    values = {**SyntheticSpec.tiny().to_dict(), **changes}
    with pytest.raises(SyntheticSpecError, match=field):
        SyntheticSpec(**values)


def test_spec_errors_name_the_setting_and_its_range_in_code_and_in_a_config() -> None:
    with pytest.raises(SyntheticSpecError) as err:
        SyntheticSpec(num_cameras=10)
    assert str(err.value) == "num_cameras: must be in [2, 9], got 10"
    with pytest.raises(SyntheticSpecError) as err:
        SyntheticSpec.from_dict({"num_cameras": 10}, "datasets.s.generate")
    assert str(err.value) == "datasets.s.generate.num_cameras: must be in [2, 9], got 10"
    with pytest.raises(SyntheticSpecError) as err:
        SyntheticSpec.from_dict({"min_cameras_per_id": 4, "max_cameras_per_id": 3}, "datasets.s.generate")
    assert str(err.value) == "datasets.s.generate.min_cameras_per_id: must not exceed max_cameras_per_id (3), got 4"
    # Stored as a config file's values would be: floats as floats, so the recorded spec compares equal.
    spec = SyntheticSpec(camera_cast=0, max_blur=1)
    assert isinstance(spec.camera_cast, float) and spec.to_dict()["max_blur"] == 1.0
    assert SyntheticSpec.from_dict({"camera_cast": 0, "max_blur": 1}) == spec


def test_spec_round_trips_and_rejects_unknown_keys() -> None:
    spec = SyntheticSpec.tiny(seed=7)
    assert SyntheticSpec.from_dict(spec.to_dict()) == spec
    assert SyntheticSpec.from_dict({}) == SyntheticSpec()
    with pytest.raises(SyntheticSpecError, match="num_identities"):
        SyntheticSpec.from_dict({"num_identities": 5})


def test_defaults_have_the_documented_size() -> None:
    spec = SyntheticSpec()
    assert (spec.height, spec.width) == (128, 64)
    assert 100 <= spec.num_train_ids <= 150 and 4 <= spec.num_cameras <= 6
    tiny = SyntheticSpec.tiny()
    assert (tiny.num_train_ids, tiny.num_test_ids, tiny.num_cameras) == (8, 6, 3)
    assert (tiny.height, tiny.width) == (64, 32)
