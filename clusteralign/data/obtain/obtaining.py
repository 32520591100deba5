"""A dataset's root folder from its source: a folder used in place, or an archive extracted once.

An archive is verified against the configured checksum (downloaded first when the source allows
it), extracted beside the destination and renamed into place; jobs preparing one archive at the
same time take turns on it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from clusteralign.data.errors import (
    DatasetRootMissingError,
    DownloadNotAllowedError,
    LayoutError,
    SourceConfigError,
)

from .checksum import verify_file
from .download import download_file
from .extracted import (
    MARKER_FORMAT,
    check_replaceable,
    check_root,
    children,
    extract_atomically,
    marker_matches,
    read_marker,
)
from .locking import flocked
from .source import DatasetSource

logger = logging.getLogger(__name__)


def obtain_dataset(source: DatasetSource, dest: str | os.PathLike[str], *, progress: bool | None = None) -> Path:
    """Make the dataset described by ``source`` available and return its root folder.

    A ``path`` source is returned as is (joined with ``subdir``); ``dest`` is unused. An
    ``archive`` or ``url`` source is verified and extracted into ``dest`` (replacing an earlier
    extraction of a different archive, never a folder this function did not make), and
    ``dest / subdir`` is returned. ``progress`` shows a download progress bar (default: when
    stderr is a terminal).
    """
    if not isinstance(source, DatasetSource):
        raise SourceConfigError(f"source must be a DatasetSource, got {type(source).__name__}.")
    if source.path is not None:
        return _local_folder(source)
    return _obtain_archive(source, Path(dest), progress)


def _extracted_already(source: DatasetSource, dest: Path, archive: Path, root: Path) -> bool:
    """Whether ``dest`` holds this archive's extraction; raises if ``dest`` is a folder we may not replace."""
    marker = read_marker(dest)
    if marker is not None and marker_matches(marker, source, archive):
        check_root(root, dest, source, archive)
        return True
    check_replaceable(dest, marker)
    return False


def _obtain_archive(source: DatasetSource, dest: Path, progress: bool | None) -> Path:
    """Verify (or download) the archive and extract it into ``dest`` unless that is done already."""
    archive = source.archive_path(dest)
    root = dest / source.subdir if source.subdir else dest

    if _extracted_already(source, dest, archive, root):
        logger.info("%s: already extracted from %s; nothing to do.", dest, archive.name)
        return root

    if archive.is_file():
        digests = verify_file(archive, sha256=source.sha256, md5=source.md5)
    elif source.url is None:
        what = "is a folder, not an archive file" if archive.is_dir() else "does not exist"
        raise DatasetRootMissingError(
            f"archive {str(archive)!r} {what}; expected a .zip, .tar, .tar.gz or .tgz file. Check source.archive."
        )
    elif not source.allow_download:
        raise DownloadNotAllowedError(
            f"the dataset for {str(dest)!r} must be downloaded from {source.url}, but the source does not allow "
            f"downloads. Set `allow_download: true` in its source, or download the file by hand to "
            f"{str(archive)!r} (or anywhere, and configure `archive:` with that path)."
        )
    else:
        digests = download_file(source.url, archive, sha256=source.sha256, md5=source.md5, progress=progress)
    # Datasets that read the same archive (CUHK03 labeled and detected) share `dest` and may be
    # prepared by concurrent jobs: the second waits here, then finds the first's extraction.
    # The lock is the archive file itself (opened for reading): it creates no file.
    with flocked(archive, "rb", f"{dest}: another process is preparing it; waiting for it to finish."):
        if _extracted_already(source, dest, archive, root):
            logger.info("%s: extracted from %s by another process meanwhile.", dest, archive.name)
            return root
        info = archive.stat()
        record = {
            "format": MARKER_FORMAT,
            "archive": archive.name,
            "size": info.st_size,
            "mtime_ns": info.st_mtime_ns,
            "sha256": digests["sha256"],
            "md5": digests["md5"],
            "url": source.url,
        }
        extract_atomically(archive, dest, source, record)
    return root


def _local_folder(source: DatasetSource) -> Path:
    """Check a ``path`` source and return its root (with ``subdir``)."""
    assert source.path is not None
    folder = source.path
    if not folder.is_dir():
        what = "is a file, not a folder (use `archive:` for an archive)" if folder.exists() else "does not exist"
        raise DatasetRootMissingError(f"dataset folder {str(folder)!r} (source.path) {what}.")
    if source.subdir is None:
        return folder
    root = folder / source.subdir
    if not root.is_dir():
        raise LayoutError(
            f"dataset folder {str(folder)!r} has no sub-folder {source.subdir!r} (source.subdir); folders present: "
            f"{children(folder)}."
        )
    return root
