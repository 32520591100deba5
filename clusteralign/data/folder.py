"""Reader ``folder``: a dataset of one's own, one sub-folder per identity, cameras optional.

Layout: ``<root>/<identity>/<image>.jpg`` (also ``.jpeg``, ``.png``), any folder and file names.
Identities are numbered 1, 2, ... in sorted folder-name order (pid 0 is the manifest's distractor
and never used here). A seeded draw splits the identities into training and test identities, and
each test identity's images into queries and gallery images.

Camera ids come from the file names when ``camera_pattern`` (a regular expression with a named
group ``camid``) is given. Without it every image counts as a camera of its own: the Market-1501
protocol then excludes no gallery image of a query's identity (it only excludes same-camera
ones), so every other image of the person counts as a correct match.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from clusteralign.config import ConfigError, CheckedSection, bounded
from clusteralign.data.errors import (
    DatasetRootMissingError,
    EmptySplitError,
    FileNameError,
    LayoutError,
    listing,
)
from clusteralign.data.images import unreadable_images
from clusteralign.data.layout import IMAGE_EXTENSIONS
from clusteralign.data.manifest import Record, build_manifest, log_summary

logger = logging.getLogger(__name__)

NAME = "folder"


@dataclass(frozen=True)
class FolderOptions(CheckedSection):
    """The ``reader_options`` of reader ``folder`` (the reader's keyword arguments, checked)."""

    # A regular expression searched in each file name; its group `camid` is the camera. Unset:
    # every image is a camera of its own (see the module docstring for what that does to scoring).
    camera_pattern: Optional[str] = None
    # Share of the identities (drawn with `seed`) that train; the rest are query and gallery.
    train_fraction: float = bounded(0.5, exclusiveMinimum=0, exclusiveMaximum=1)
    # Query images drawn from each test identity; its other images form the gallery.
    queries_per_identity: int = bounded(1, minimum=1)
    seed: int = bounded(0, minimum=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.camera_pattern is not None:
            try:
                groups = re.compile(self.camera_pattern).groupindex
            except re.error as err:
                raise ConfigError(
                    f"camera_pattern: not a regular expression ({err}): {self.camera_pattern!r}") from None
            if "camid" not in groups:
                raise ConfigError(f"camera_pattern: needs a named group (?P<camid>...) that matches the camera, "
                                  f"got {self.camera_pattern!r}")


@dataclass(frozen=True)
class _Image:
    path: str
    pid: int
    camera: str | None


def read_folder(
    root: str | os.PathLike[str],
    *,
    camera_pattern: str | None = None,
    train_fraction: float = 0.5,
    queries_per_identity: int = 1,
    seed: int = 0,
    verify_images: bool = False,
    drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read ``<root>/<identity>/<image>`` folders into a manifest with a seeded train/query/gallery split."""
    options = FolderOptions(camera_pattern=camera_pattern, train_fraction=train_fraction,
                            queries_per_identity=queries_per_identity, seed=seed)
    root_text = os.fspath(root)
    images = _scan(root_text)
    if options.camera_pattern is not None:
        images = _with_cameras(images, re.compile(options.camera_pattern))
    if verify_images:
        bad = unreadable_images(NAME, [im.path for im in images], drop_bad, num_workers)
        images = [im for im in images if im.path not in bad]
    camids = _camera_ids(images)
    by_pid: dict[int, list[Record]] = {}
    for im in images:
        by_pid.setdefault(im.pid, []).append((im.path, im.pid, camids[im.path]))
    train, query, gallery = _split(root_text, by_pid, options)
    manifest = build_manifest(train, query, gallery)
    if options.camera_pattern is None:
        logger.info("%s: no camera_pattern, so every image is a camera of its own: a query's correct matches are "
                    "all gallery images of its identity (no same-camera exclusion).", NAME)
    log_summary(manifest, logger, f"{NAME} ({root_text})")
    return manifest


def _scan(root: str) -> list[_Image]:
    """Every image of every identity folder, identities numbered 1.. in sorted folder order."""
    example = os.path.join(root, "<identity>", "<image>.jpg")
    if not os.path.isdir(root):
        what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise DatasetRootMissingError(f"{NAME}: dataset root {root!r} {what}; expected a folder with one sub-folder "
                                      f"per identity, e.g. {example}.")
    with os.scandir(root) as entries:
        listed = sorted((e.name, e.is_dir()) for e in entries if not e.name.startswith("."))
    loose = [os.path.join(root, n) for n, is_dir in listed if not is_dir and n.lower().endswith(IMAGE_EXTENSIONS)]
    if loose:
        raise LayoutError(f"{NAME}: {len(loose)} image(s) lie directly in the dataset root {root!r}: "
                          f"{listing(loose)}; put each person's images in a sub-folder of their own, e.g. {example}.")
    images: list[_Image] = []
    empty: list[str] = []
    folders = [n for n, is_dir in listed if is_dir]
    for pid, folder in enumerate(folders, start=1):
        with os.scandir(os.path.join(root, folder)) as entries:
            # Sorted, so the manifest (and the split drawn from it) never depends on the listing order.
            files = sorted(e.name for e in entries if e.is_file() and not e.name.startswith(".")
                           and e.name.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            empty.append(os.path.join(root, folder))
        images += [_Image(os.path.join(root, folder, f), pid, None) for f in files]
    if empty:
        logger.warning("%s: %d identity folder(s) hold no %s images and are left out: %s.", NAME, len(empty),
                       "/".join(IMAGE_EXTENSIONS), listing(empty))
    if len(folders) - len(empty) < 2:
        raise LayoutError(f"{NAME}: dataset root {root!r} has {len(folders) - len(empty)} identity folder(s) with "
                          f"images; expected at least 2 (some train, the others are queried), laid out as {example}.")
    return images


def _with_cameras(images: list[_Image], pattern: re.Pattern[str]) -> list[_Image]:
    """The images with the camera each file name names; an error lists the names the pattern misses."""
    found, unmatched = [], []
    for im in images:
        match = pattern.search(os.path.basename(im.path))
        if match is None or not match.group("camid"):
            unmatched.append(im.path)
        else:
            found.append(_Image(im.path, im.pid, match.group("camid")))
    if unmatched:
        raise FileNameError(f"{NAME}: {len(unmatched)} image file name(s) do not match camera_pattern "
                            f"{pattern.pattern!r}: {listing(unmatched)}. Fix the pattern (it is searched in each "
                            "file name; its group camid is the camera), or leave it out to treat every image as a "
                            "camera of its own.")
    return found


def _camera_ids(images: list[_Image]) -> dict[str, int]:
    """Path -> camera id: as written when every camera is a number from 1, else 1.. in sorted order;
    without cameras one id per image."""
    if not images or images[0].camera is None:
        return {im.path: i for i, im in enumerate(images, start=1)}
    names = {im.camera for im in images}
    if all(n.isdigit() and int(n) >= 1 for n in names):
        return {im.path: int(im.camera) for im in images}
    numeric = all(n.isdigit() for n in names)
    ordered = sorted(names, key=lambda n: (int(n), n) if numeric else (0, n))
    number = {n: i for i, n in enumerate(ordered, start=1)}
    logger.info("%s: cameras %s numbered %s.", NAME, ", ".join(ordered[:10]) + (" ..." if len(ordered) > 10 else ""),
                f"1..{len(ordered)}")
    return {im.path: number[im.camera] for im in images}


def _split(root: str, by_pid: dict[int, list[Record]],
           options: FolderOptions) -> tuple[list[Record], list[Record], list[Record]]:
    """Seeded: which identities train, and which images of each test identity are queries."""
    pids = sorted(by_pid)
    if len(pids) < 2:
        raise EmptySplitError(f"{NAME}: {root!r} has {len(pids)} identity with readable images left; expected at "
                              "least 2 (some train, the others are queried).")
    num_train = min(max(round(options.train_fraction * len(pids)), 1), len(pids) - 1)
    order = np.random.default_rng(options.seed).permutation(len(pids))
    train_pids = {pids[i] for i in order[:num_train]}
    train, query, gallery = [], [], []
    unqueried = 0
    for pid in pids:
        records = by_pid[pid]
        if pid in train_pids:
            train += records
            continue
        # A generator per identity: adding or removing one person leaves the others' draws alone.
        chosen = _queries(records, options.queries_per_identity, np.random.default_rng([options.seed, pid]))
        unqueried += not chosen
        query += [r for i, r in enumerate(records) if i in chosen]
        gallery += [r for i, r in enumerate(records) if i not in chosen]
    if not query:
        raise EmptySplitError(f"{NAME}: no test identity of {root!r} can be queried: each needs two images "
                              "(from two cameras when camera_pattern is set), one query and one gallery image.")
    if unqueried:
        logger.info("%s: %d test identities have no query (a single image, or a single camera); their images "
                    "stay in the gallery.", NAME, unqueried)
    return train, query, gallery


def _queries(records: list[Record], count: int, rng: np.random.Generator) -> set[int]:
    """Indices of up to `count` queries, each left with a gallery image of its identity from another camera."""
    chosen: set[int] = set()
    for i in rng.permutation(len(records)).tolist():
        if len(chosen) == count:
            break
        left = [r for j, r in enumerate(records) if j != i and j not in chosen]
        # Every query chosen so far, and this one, must keep a match the protocol counts.
        if all(any(r[2] != records[q][2] for r in left) for q in (*chosen, i)):
            chosen.add(i)
    return chosen
