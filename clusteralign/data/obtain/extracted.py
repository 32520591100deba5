"""An extracted dataset folder: the record of the archive it came from, and how it is put in place.

The record (`MARKER_NAME`, written last) lets a later call whose source matches it do no work; a
folder without one was not made here and is never replaced.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clusteralign.data.errors import LayoutError, SourceConfigError
from clusteralign.io import install_folder, write_json

from .archives import safe_extract
from .source import DatasetSource

logger = logging.getLogger(__name__)

MARKER_NAME = ".clusteralign-extracted.json"
"""File inside an extracted dataset folder that records the archive it came from."""
MARKER_FORMAT = 1
# Names of a folder's entries a message lists before it counts the rest.
_MAX_LISTED = 8


def read_marker(dest: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The extraction record in ``dest``, or None when ``dest`` has none (or an unreadable one)."""
    path = Path(dest) / MARKER_NAME
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else None


def marker_matches(marker: Mapping[str, Any], source: DatasetSource, archive: Path) -> bool:
    """Whether ``dest`` already holds the extraction of this source's archive, without reading the archive."""
    for algorithm in ("sha256", "md5"):
        wanted = getattr(source, algorithm)
        if wanted is not None and marker.get(algorithm) != wanted:
            return False
    checksummed = source.sha256 is not None or source.md5 is not None
    if archive.is_file():
        info = archive.stat()
        if marker.get("size") != info.st_size:
            return False
        # Without a configured checksum the file's identity is its size and modification time.
        return checksummed or marker.get("mtime_ns") == info.st_mtime_ns
    # The archive may have been deleted after extraction to save space: trust the record of it.
    if marker.get("archive") != archive.name:
        return False
    logger.info("%s is absent; using the folder extracted from it earlier.", archive)
    return True


def check_root(root: Path, dest: Path, source: DatasetSource, archive: Path) -> None:
    if not root.is_dir():
        raise LayoutError(
            f"archive {str(archive)!r} has no folder {source.subdir!r} (source.subdir); its top level holds "
            f"{children(dest)}. Set source.subdir to the folder that holds the dataset, or leave it out."
        )


def check_replaceable(dest: Path, marker: Mapping[str, Any] | None) -> None:
    """Refuse to replace a folder that obtain_dataset did not make."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise SourceConfigError(f"extraction folder {str(dest)!r} exists and is a file; remove it or choose another.")
    if marker is None and any(dest.iterdir()):
        raise SourceConfigError(
            f"extraction folder {str(dest)!r} is not empty and has no {MARKER_NAME}, so it was not made by this "
            f"pipeline; refusing to replace it. Remove it, choose another folder, or use it in place with `path:`."
        )


def children(folder: Path) -> list[str]:
    """Names in a folder (for messages), hidden ones left out."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []
    return names[:_MAX_LISTED] + ([f"... {len(names) - _MAX_LISTED} more"] if len(names) > _MAX_LISTED else [])


def extract_atomically(archive: Path, dest: Path, source: DatasetSource, record: Mapping[str, Any]) -> None:
    """Extract into a temporary sibling of ``dest``, check ``subdir``, write the marker, rename into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
    try:
        os.chmod(tmp, 0o755)
        logger.info("extracting %s into %s", archive, dest)
        max_entries, max_bytes = source.extraction_limits()
        safe_extract(archive, tmp, max_entries=max_entries, max_bytes=max_bytes)
        check_root(tmp / source.subdir if source.subdir else tmp, tmp, source, archive)
        # Written last: its presence means the extraction before it finished.
        write_json(tmp / MARKER_NAME, dict(record))
        _install(tmp, dest, record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _install(tmp: Path, dest: Path, record: Mapping[str, Any]) -> None:
    """Move the finished extraction into place (see ``install_folder``), tolerating a concurrent twin."""
    try:
        install_folder(tmp, dest)
    except OSError:
        # Another process finished the same extraction first: keep theirs when it records the same archive.
        theirs = read_marker(dest)
        if theirs is not None and theirs.get("sha256") == record.get("sha256"):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        raise
