"""Reader for the Market-1501 folder layout shared by Market-1501, DukeMTMC-reID and CUHK03-NP.

A dataset root holds three folders of images (train, query, gallery) whose file names encode
the identity and the camera, e.g. ``0002_c1s1_000451_03.jpg``. Identity ``-1`` marks junk images
(never used) and identity ``0`` marks distractors (kept in the gallery, never a match).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import pandas as pd

from clusteralign.data.errors import (
    CameraRangeError,
    DatasetRootMissingError,
    EmptySplitError,
    FileNameError,
    LayoutError,
    NotAFileError,
    listing,
)
from clusteralign.data.images import unreadable_images
from clusteralign.data.manifest import DISTRACTOR_PID, JUNK_PID, Record, build_manifest, log_summary

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class FileNamePattern:
    """How a dataset encodes identity and camera in an image file name.

    ``regex`` must match a whole file name and define the named groups ``pid`` and ``camid``;
    ``template`` (e.g. ``PPPP_cC_FFFFFFF.jpg``) and ``example`` (a real-looking name) are shown in
    error messages.
    """

    regex: re.Pattern[str]
    template: str
    example: str

    def __post_init__(self) -> None:
        missing = {"pid", "camid"} - set(self.regex.groupindex)
        if missing:
            raise ValueError(
                f"file name pattern {self.regex.pattern!r} lacks the named group(s) {sorted(missing)}."
            )
        if self.parse(self.example) is None:
            raise ValueError(
                f"example file name {self.example!r} does not match its own pattern {self.regex.pattern!r}."
            )

    def parse(self, file_name: str) -> tuple[int, int] | None:
        """Return (pid, camid) from a file name, or None when the name does not match."""
        match = self.regex.fullmatch(file_name)
        if match is None:
            return None
        return int(match.group("pid")), int(match.group("camid"))


@dataclass(frozen=True)
class _Parsed:
    """One image file found in a split folder."""

    path: str
    pid: int
    camid: int


def read_market_layout(
    root: str | os.PathLike[str],
    *,
    name: str,
    pattern: FileNamePattern,
    num_cameras: int,
    train_dir: str = "bounding_box_train",
    query_dir: str = "query",
    gallery_dir: str = "bounding_box_test",
    verify_images: bool = False,
    drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read a Market-style dataset folder into a manifest (see ``clusteralign.data.manifest``).

    Junk images (pid -1) are dropped; distractors (pid 0) are kept in the gallery and dropped
    from train and query with a warning. With ``verify_images`` every kept image is fully decoded
    first: an unreadable one raises ``CorruptImageError`` unless ``drop_bad`` is set, in which case
    unreadable images are dropped with one warning. ``name`` is the dataset's name in messages.
    """
    if num_cameras < 1:
        raise ValueError(f"{name}: num_cameras must be >= 1, got {num_cameras}.")
    root_text = os.fspath(root)
    split_dirs = {"train": train_dir, "query": query_dir, "gallery": gallery_dir}
    _check_folders(root_text, name, split_dirs, pattern)

    found: dict[str, list[_Parsed]] = {}
    unmatched: list[str] = []
    not_files: list[str] = []
    for split, sub in split_dirs.items():
        folder = os.path.join(root_text, sub)
        found[split], bad_names, bad_entries = _scan_folder(folder, pattern)
        unmatched.extend(bad_names)
        not_files.extend(bad_entries)
    if not_files:
        # Left out, they would shrink a split without a word (a copy whose links lost their targets).
        raise NotAFileError(
            f"{name}: not an image file, though named like one ({len(not_files)} under {root_text!r}): "
            f"{listing(not_files)}. Restore what they should hold, or remove them."
        )
    if unmatched:
        raise FileNameError(
            f"{name}: {len(unmatched)} image file(s) under {root_text!r} do not follow the expected name pattern "
            f"{pattern.template} (for example {pattern.example}; regular expression {pattern.regex.pattern}): "
            f"{listing(unmatched)}. "
            "Rename or remove them, or check that this is the right dataset."
        )

    off_range = [
        f"{p.path} (camera {p.camid})"
        for items in found.values()
        for p in items
        if not 1 <= p.camid <= num_cameras
    ]
    if off_range:
        raise CameraRangeError(
            f"{name}: {len(off_range)} image(s) name a camera outside 1..{num_cameras}: {listing(off_range)}. "
            f"{name} has {num_cameras} camera(s); check the dataset or the configured camera count."
        )

    kept = {split: _drop_junk_and_distractors(name, split, items) for split, items in found.items()}
    if verify_images:
        bad = unreadable_images(name, [p.path for items in kept.values() for p in items], drop_bad, num_workers)
        kept = {split: [p for p in items if p.path not in bad] for split, items in kept.items()}

    for split, items in kept.items():
        if not items:
            folder = os.path.join(root_text, split_dirs[split])
            raise EmptySplitError(
                f"{name}: the {split} split is empty: {folder!r} has no usable images after dropping junk "
                f"(pid {JUNK_PID}), misplaced distractors (pid {DISTRACTOR_PID}) and unreadable files; "
                f"expected {', '.join(IMAGE_EXTENSIONS)} files named like {pattern.example!r}."
            )

    records: dict[str, list[Record]] = {
        split: [(p.path, p.pid, p.camid) for p in items] for split, items in kept.items()
    }
    manifest = build_manifest(records["train"], records["query"], records["gallery"])
    log_summary(manifest, logger, f"{name} ({root_text})")
    return manifest


def _check_folders(root: str, name: str, split_dirs: dict[str, str], pattern: FileNamePattern) -> None:
    """Raise a clear error when the root or any split folder is missing."""
    expected = ", ".join(f"{sub}/" for sub in split_dirs.values())
    if not os.path.isdir(root):
        what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise DatasetRootMissingError(
            f"{name}: dataset root {root!r} {what}; expected a folder containing {expected} "
            f"with images named like {pattern.example!r}."
        )
    missing = [sub for sub in split_dirs.values() if not os.path.isdir(os.path.join(root, sub))]
    if missing:
        hint = _nested_root_hint(root, list(split_dirs.values()))
        raise LayoutError(
            f"{name}: dataset root {root!r} lacks the sub-folder(s) {', '.join(f'{m}/' for m in missing)}; "
            f"expected {expected} side by side in it.{hint}"
        )


def _nested_root_hint(root: str, subs: list[str]) -> str:
    """Suggest a child folder that has the full layout: archives often unpack into one extra folder."""
    try:
        with os.scandir(root) as entries:
            children = sorted(entry.path for entry in entries if entry.is_dir())
    except OSError:
        return ""
    for child in children:
        if all(os.path.isdir(os.path.join(child, sub)) for sub in subs):
            return f" The folder {child!r} has that layout: use it as the dataset root."
    return ""


def _scan_folder(folder: str, pattern: FileNamePattern) -> tuple[list[_Parsed], list[str], list[str]]:
    """List image files in one split folder (sorted by name).

    Returns the parsed images, the paths of unmatched names, and entries named like images
    that are not files (described, for messages).
    """
    parsed: list[_Parsed] = []
    unmatched: list[str] = []
    not_files: list[str] = []
    with os.scandir(folder) as entries:
        # Sorted so the manifest order never depends on the file system's listing order.
        listed = sorted((entry.name, entry.is_file()) for entry in entries)
    for file_name, is_file in listed:
        # Hidden files (e.g. macOS "._" resource forks) and non-images (Thumbs.db) are not data.
        if file_name.startswith(".") or not file_name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        path = os.path.join(folder, file_name)
        if not is_file:
            not_files.append(_not_a_file(path))
            continue
        ids = pattern.parse(file_name)
        if ids is None:
            unmatched.append(path)
        else:
            parsed.append(_Parsed(path, *ids))
    return parsed, unmatched, not_files


def _not_a_file(path: str) -> str:
    if os.path.islink(path) and not os.path.exists(path):
        return f"{path} (a symbolic link to {os.readlink(path)!r}, which does not exist)"
    return f"{path} ({'a folder' if os.path.isdir(path) else 'not a regular file'})"


def _drop_junk_and_distractors(name: str, split: str, items: list[_Parsed]) -> list[_Parsed]:
    """Drop junk everywhere and distractors outside the gallery, logging what was dropped."""
    junk = sum(1 for p in items if p.pid == JUNK_PID)
    misplaced = sum(1 for p in items if p.pid == DISTRACTOR_PID and split != "gallery")
    kept = [p for p in items if p.pid != JUNK_PID and not (p.pid == DISTRACTOR_PID and split != "gallery")]
    if junk:
        # Junk belongs in the gallery of Market-1501; anywhere else it is unexpected.
        log = logger.info if split == "gallery" else logger.warning
        log("%s: dropped %d junk image(s) (pid %d) from the %s split.", name, junk, JUNK_PID, split)
    if misplaced:
        logger.warning(
            "%s: dropped %d distractor image(s) (pid %d) from the %s split; distractors belong in the gallery only.",
            name,
            misplaced,
            DISTRACTOR_PID,
            split,
        )
    return kept


