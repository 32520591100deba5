"""MSMT17: 15 cameras, images listed in text files rather than named by split folders.

Layout (V1): ``<root>/train/`` and ``<root>/test/`` hold one folder per identity, and the list
files ``list_train.txt``, ``list_val.txt`` (both over ``train/``), ``list_query.txt`` and
``list_gallery.txt`` (over ``test/``) have one ``<path> <label>`` line per image, e.g.
``0000/0000_000_01_0303morning_0015_0.jpg 0``. The camera is the third ``_``-separated field of
the file name (``01``). V2 (``mask_train_v2/``, ``mask_test_v2/``) is read the same way.

As in the published MSMT17 figures (1,041 identities, 32,621 training images), train and val are
combined into the training split; pass ``combine_val=False`` for list_train.txt alone.

Labels in the list files count identities from 0 (train and test separately), while the manifest
reserves pid 0 for distractors: every pid is therefore the list label plus 1.
"""

from __future__ import annotations

import logging
import os
import re

import pandas as pd

from clusteralign.data.errors import (
    CameraRangeError,
    DatasetRootMissingError,
    EmptySplitError,
    LayoutError,
    ListFileError,
    listing,
)
from clusteralign.data.images import unreadable_images
from clusteralign.data.manifest import Record, build_manifest, log_summary

logger = logging.getLogger(__name__)

NUM_CAMERAS = 15
PID_OFFSET = 1
LIST_FILES: dict[str, str] = {
    "train": "list_train.txt",
    "val": "list_val.txt",
    "query": "list_query.txt",
    "gallery": "list_gallery.txt",
}
# Image folders of each release: (training images, test images).
VERSION_DIRS: dict[str, tuple[str, str]] = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}

# "0000_000_01_0303morning_0015_0.jpg": identity, index, camera, date + time of day, frame, box.
MSMT17_NAME = re.compile(r"\d+_\d+_(?P<camid>\d+)_[^/\\]*\.(?:jpe?g|png)", re.IGNORECASE)


def read_msmt17(
    root: str | os.PathLike[str],
    *,
    combine_val: bool = True,
    verify_images: bool = False,
    drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read MSMT17 (V1 or V2 layout) from its list files into a manifest; pid = list label + 1."""
    root_text = os.fspath(root)
    train_dir, test_dir = _image_dirs(root_text)
    lists = ("train", "val", "query", "gallery") if combine_val else ("train", "query", "gallery")
    missing = [LIST_FILES[key] for key in lists if not os.path.isfile(os.path.join(root_text, LIST_FILES[key]))]
    if missing:
        raise LayoutError(
            f"MSMT17: {root_text!r} lacks the list file(s) {missing}; expected {', '.join(LIST_FILES.values())} "
            f"beside {train_dir}/ and {test_dir}/."
        )
    folder_of = {"train": train_dir, "val": train_dir, "query": test_dir, "gallery": test_dir}
    parsed = {key: _read_list(root_text, LIST_FILES[key], folder_of[key]) for key in lists}
    records: dict[str, list[Record]] = {
        "train": parsed["train"] + parsed.get("val", []),
        "query": parsed["query"],
        "gallery": parsed["gallery"],
    }

    absent = [path for items in records.values() for path, _, _ in items if not os.path.isfile(path)]
    if absent:
        raise DatasetRootMissingError(
            f"MSMT17: {len(absent)} image(s) named in the list files under {root_text!r} do not exist: "
            f"{listing(absent)}. The list files and the image folders come from different copies or an "
            "incomplete extraction."
        )
    if verify_images:
        bad = unreadable_images("MSMT17", [r[0] for items in records.values() for r in items], drop_bad, num_workers)
        records = {split: [r for r in items if r[0] not in bad] for split, items in records.items()}
    for split, items in records.items():
        if not items:
            raise EmptySplitError(f"MSMT17: the {split} split of {root_text!r} is empty; its list file has no images.")
    manifest = build_manifest(records["train"], records["query"], records["gallery"])
    log_summary(manifest, logger, f"MSMT17 ({root_text})")
    return manifest


def _image_dirs(root: str) -> tuple[str, str]:
    """The (train, test) image folders of whichever MSMT17 version ``root`` holds."""
    expected = " or ".join(f"{a}/ and {b}/" for a, b in VERSION_DIRS.values())
    if not os.path.isdir(root):
        what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise DatasetRootMissingError(
            f"MSMT17: dataset root {root!r} {what}; expected a folder with {expected} and the list files "
            f"{', '.join(LIST_FILES.values())}."
        )
    for train_dir, test_dir in VERSION_DIRS.values():
        if os.path.isdir(os.path.join(root, train_dir)) and os.path.isdir(os.path.join(root, test_dir)):
            return train_dir, test_dir
    with os.scandir(root) as entries:
        present = sorted(entry.name + "/" for entry in entries if entry.is_dir())
    raise LayoutError(
        f"MSMT17: dataset root {root!r} lacks the image folders: expected {expected} (folders present: "
        f"{present or 'none'}). Archives unpack into MSMT17_V1/; use that folder as the root."
    )


def _read_list(root: str, list_name: str, image_dir: str) -> list[Record]:
    """Parse one list file into (path, pid, camid) records, in file order."""
    list_path = os.path.join(root, list_name)
    records: list[Record] = []
    with open(list_path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            fields = text.split()
            if len(fields) != 2 or not fields[1].isdigit():
                raise ListFileError(
                    f"MSMT17: line {number} of {list_path!r} is {text!r}; expected '<image path> <label>' such as "
                    "'0000/0000_000_01_0303morning_0015_0.jpg 0'."
                )
            relative, label = fields
            name = relative.replace("\\", "/").rsplit("/", 1)[-1]
            match = MSMT17_NAME.fullmatch(name)
            if match is None or relative.startswith("/") or ".." in relative.replace("\\", "/").split("/"):
                raise ListFileError(
                    f"MSMT17: line {number} of {list_path!r} names {relative!r}; expected a relative path to an "
                    "image named like 0000_000_01_0303morning_0015_0.jpg (camera in the third field)."
                )
            camid = int(match.group("camid"))
            if not 1 <= camid <= NUM_CAMERAS:
                raise CameraRangeError(
                    f"MSMT17: line {number} of {list_path!r} names {relative!r} with camera {camid}; MSMT17 has "
                    f"cameras 1..{NUM_CAMERAS}."
                )
            records.append((os.path.join(root, image_dir, *relative.split("/")), int(label) + PID_OFFSET, camid))
    return records


