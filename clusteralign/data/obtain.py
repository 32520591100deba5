"""Obtaining a dataset: a local folder used in place, a local archive, or a URL downloaded on request.

Archives are verified against the configured checksum, then extracted safely into a temporary
folder beside the destination and renamed into place, so the destination is either absent or
complete. A small marker file in the destination records which archive (size, modification time,
sha256 and md5) it came from; a later call whose source matches the marker does no work at all.
Downloads only happen when the source sets ``allow_download``; they resume a partial ``.part``
file with an HTTP Range request.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from clusteralign.data.errors import (
    ArchiveError,
    ArchiveLimitError,
    ChecksumMismatchError,
    DatasetRootMissingError,
    DownloadError,
    DownloadNotAllowedError,
    LayoutError,
    SourceConfigError,
    UnsafeArchiveError,
)
from clusteralign.io import install_folder, write_json

logger = logging.getLogger(__name__)

MARKER_NAME = ".clusteralign-extracted.json"
"""File inside an extracted dataset folder that records the archive it came from."""
MARKER_FORMAT = 1
PART_SUFFIX = ".part"
ZIP_SUFFIXES: tuple[str, ...] = (".zip",)
TAR_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_CHUNK = 1 << 20
_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}
_MAX_LISTED = 8
# Extraction limits, checked against what an archive declares before anything is written. The
# largest real dataset, MSMT17 V1, holds 126,441 images in about 130,000 entries (with its
# identity folders and list files); 500,000 entries is almost four times that, and 32 GB would
# take MSMT17's images averaging 250 KB each. A dataset's source raises either.
DEFAULT_MAX_ENTRIES = 500_000
DEFAULT_MAX_SIZE_GB = 32.0
_GB = 10**9


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from: exactly one of ``path``, ``archive`` or ``url``.

    - ``path``: a local folder used in place (nothing is copied or written);
    - ``archive``: a local .zip / .tar / .tar.gz / .tgz (also .tar.bz2, .tar.xz) file, extracted once;
    - ``url``: an archive downloaded only when ``allow_download`` is true, to ``filename``
      (default: the last part of the URL path) beside the destination folder.

    ``sha256`` / ``md5`` (hex, optional, both allowed) verify the archive. ``subdir`` names the
    folder inside the archive (or inside ``path``) that is the dataset root, e.g.
    ``Market-1501-v15.09.15``. ``max_entries`` and ``max_size_gb`` raise the limits an archive's
    declared entry count and total size are checked against before extraction (None: the
    defaults, `DEFAULT_MAX_ENTRIES` and `DEFAULT_MAX_SIZE_GB`).
    """

    path: Path | None = None
    archive: Path | None = None
    url: str | None = None
    allow_download: bool = False
    sha256: str | None = None
    md5: str | None = None
    subdir: str | None = None
    filename: str | None = None
    max_entries: int | None = None
    max_size_gb: float | None = None

    def __post_init__(self) -> None:
        for name in ("path", "archive"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                    raise SourceConfigError(f"source.{name}: expected a non-empty file path, got {value!r}.")
                object.__setattr__(self, name, Path(value))
        given = [name for name in ("path", "archive", "url") if getattr(self, name) is not None]
        if len(given) != 1:
            what = "none of them" if not given else f"{' and '.join(given)}"
            raise SourceConfigError(
                f"a dataset source needs exactly one of path (a local folder), archive (a local .zip/.tar/"
                f".tar.gz/.tgz file) or url (downloaded when allow_download is true); got {what}."
            )
        if self.url is not None:
            parsed = urllib.parse.urlparse(self.url) if isinstance(self.url, str) else None
            if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise SourceConfigError(f"source.url: expected an http:// or https:// URL, got {self.url!r}.")
        if not isinstance(self.allow_download, bool):
            raise SourceConfigError(f"source.allow_download: expected true or false, got {self.allow_download!r}.")
        for algorithm in ("sha256", "md5"):
            value = getattr(self, algorithm)
            if value is None:
                continue
            normal = value.strip().lower() if isinstance(value, str) else None
            if normal is None or not _HEX[algorithm].fullmatch(normal):
                size = 64 if algorithm == "sha256" else 32
                raise SourceConfigError(
                    f"source.{algorithm}: expected {size} hexadecimal digits, got {value!r}."
                )
            object.__setattr__(self, algorithm, normal)
        if self.path is not None and (self.sha256 or self.md5):
            raise SourceConfigError(
                "source: sha256/md5 verify an archive or a download, not a folder; remove them from a "
                "`path:` source or point `archive:` at the archive instead."
            )
        if self.subdir is not None:
            object.__setattr__(self, "subdir", _relative_folder(self.subdir, "source.subdir"))
        if self.filename is not None:
            if self.url is None:
                raise SourceConfigError("source.filename: only a url source is saved under a file name.")
            if (not isinstance(self.filename, str) or not self.filename or "/" in self.filename
                    or "\\" in self.filename or self.filename in (".", "..")):
                raise SourceConfigError(f"source.filename: expected a plain file name, got {self.filename!r}.")
        self._check_limits()

    def _check_limits(self) -> None:
        given = [name for name in ("max_entries", "max_size_gb") if getattr(self, name) is not None]
        if given and self.path is not None:
            raise SourceConfigError(f"source.{given[0]}: limits an archive's extraction; a `path:` folder has none.")
        entries, size = self.max_entries, self.max_size_gb
        if entries is not None and (isinstance(entries, bool) or not isinstance(entries, int) or entries < 1):
            raise SourceConfigError(f"source.max_entries: expected a whole number of at least 1, got {entries!r}.")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size < float("inf"):
                raise SourceConfigError(f"source.max_size_gb: expected a finite number above 0, got {size!r}.")
            object.__setattr__(self, "max_size_gb", float(size))

    def extraction_limits(self) -> tuple[int, int]:
        """The most entries and bytes (declared) an archive of this source may extract to."""
        size_gb = DEFAULT_MAX_SIZE_GB if self.max_size_gb is None else self.max_size_gb
        return (DEFAULT_MAX_ENTRIES if self.max_entries is None else self.max_entries), int(size_gb * _GB)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], key: str = "source") -> DatasetSource:
        """Build a source from a config mapping; errors name ``key`` and the offending entry."""
        if not isinstance(data, Mapping):
            raise SourceConfigError(f"{key}: expected a mapping with one of path, archive or url, got {data!r}.")
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise SourceConfigError(f"{key}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}.")
        # In code None means "not given"; in a config file an empty value is a mistake (the schema says so too).
        nulls = sorted(name for name, value in data.items() if value is None)
        if nulls:
            raise SourceConfigError(f"{key}.{nulls[0]}: got null (an empty value); give a value or leave the key out.")
        try:
            return cls(**dict(data))
        except SourceConfigError as err:
            # Messages name fields as "source.<field>"; say where in the config file the source sits.
            message = str(err)
            if message.startswith("source"):
                message = key + message[len("source"):]
            else:
                message = f"{key}: {message}"
            raise SourceConfigError(message) from None

    @property
    def kind(self) -> str:
        """Which of ``path``, ``archive`` or ``url`` this source is."""
        return "path" if self.path is not None else "archive" if self.archive is not None else "url"

    def extraction_name(self) -> str | None:
        """A folder name shared by every source of the same checksummed archive, else None.

        Without a checksum, two archives of one name cannot be told apart, so each dataset
        keeps its own folder.
        """
        digest = self.sha256 or self.md5
        if self.path is not None or digest is None:
            return None
        filename = self.archive.name if self.archive is not None else (self.filename or url_filename(self.url))
        stem = next((filename[: -len(sfx)] for sfx in ZIP_SUFFIXES + TAR_SUFFIXES
                     if filename.lower().endswith(sfx)), filename)
        return f"{stem}-{digest.lower()[:12]}"

    def archive_path(self, dest: Path) -> Path:
        """The local archive file: ``archive`` itself, or where a ``url`` is (or will be) downloaded."""
        if self.archive is not None:
            return self.archive
        if self.url is None:
            raise SourceConfigError("source: a `path:` folder has no archive file.")
        return Path(dest).parent / (self.filename or url_filename(self.url))


def source_schema() -> dict[str, Any]:
    """JSON schema of a dataset ``source`` mapping in config.yaml (``DatasetSource`` checks the rest)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "Where a real dataset comes from: a folder used in place, a local archive, or a URL.",
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "A local folder used in place."},
            "archive": {"type": "string", "minLength": 1, "description": "A local .zip/.tar/.tar.gz/.tgz file."},
            "url": {"type": "string", "pattern": "^https?://", "description": "Downloaded if allow_download."},
            "allow_download": {"type": "boolean"},
            "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
            "md5": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
            "subdir": {"type": "string", "minLength": 1, "description": "The dataset root inside the archive."},
            "filename": {"type": "string", "minLength": 1, "description": "Name to save a download under."},
            "max_entries": {"type": "integer", "minimum": 1,
                            "description": f"Most archive entries extracted (default {DEFAULT_MAX_ENTRIES})."},
            "max_size_gb": {"type": "number", "exclusiveMinimum": 0,
                            "description": f"Most GB an archive declares (default {DEFAULT_MAX_SIZE_GB:g})."},
        },
        "oneOf": [{"required": ["path"]}, {"required": ["archive"]}, {"required": ["url"]}],
    }


def _relative_folder(value: object, key: str) -> str:
    """A relative folder path without ``..``, as ``a/b``."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise SourceConfigError(f"{key}: expected a folder name inside the archive, got {value!r}.")
    text = os.fspath(value).replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if text.startswith("/") or ".." in parts or not parts:
        raise SourceConfigError(
            f"{key}: expected a relative folder inside the archive (no leading '/', no '..'), got {value!r}."
        )
    return "/".join(parts)


def url_filename(url: str) -> str:
    """The file name at the end of a URL's path, e.g. ``Market-1501-v15.09.15.zip``."""
    name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rstrip("/").rsplit("/", 1)[-1])
    if not name or name in (".", ".."):
        raise SourceConfigError(
            f"source.url {url!r} does not end in a file name; set source.filename to the archive's name."
        )
    return name


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


@contextlib.contextmanager
def _flocked(path: Path, mode: str, waiting: str, *, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (opened with ``mode``) for the block; log ``waiting`` if it waits.

    ``remove``: ``path`` is a lock file of its own, deleted when the block ends. A waiter that
    then gets the lock of the deleted file opens ``path`` again, so one process holds it at a time.
    """
    while True:
        lock = open(path, mode)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("%s", waiting)
                fcntl.flock(lock, fcntl.LOCK_EX)
            if remove and (not path.exists() or os.stat(path).st_ino != os.fstat(lock.fileno()).st_ino):
                continue  # its holder deleted it on the way out: lock the current file instead
            try:
                yield
            finally:
                if remove:
                    path.unlink(missing_ok=True)
                fcntl.flock(lock, fcntl.LOCK_UN)
            return
        finally:
            lock.close()


def _extracted_already(source: DatasetSource, dest: Path, archive: Path, root: Path) -> bool:
    """Whether ``dest`` holds this archive's extraction; raises if ``dest`` is a folder we may not replace."""
    marker = read_marker(dest)
    if marker is not None and _marker_matches(marker, source, archive):
        _check_root(root, dest, source, archive)
        return True
    _check_replaceable(dest, marker)
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
    with _flocked(archive, "rb", f"{dest}: another process is preparing it; waiting for it to finish."):
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
        _extract_atomically(archive, dest, source, record)
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
            f"{_children(folder)}."
        )
    return root


# --------------------------------------------------------------------------- checksums


def file_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """The sha256 and md5 of a file, computed in one pass."""
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def verify_file(
    path: str | os.PathLike[str], *, sha256: str | None = None, md5: str | None = None, remove_on_mismatch: bool = False
) -> dict[str, str]:
    """Hash ``path`` and compare with the expected checksums; return both digests.

    A mismatch raises ``ChecksumMismatchError`` giving the expected and actual hashes; with
    ``remove_on_mismatch`` the file is deleted first (used for downloads, never for a user's file).
    """
    digests = file_digests(path)
    expected = {"sha256": sha256, "md5": md5}
    wrong = [
        f"expected {algorithm} {want}, got {digests[algorithm]}"
        for algorithm, want in expected.items()
        if want is not None and digests[algorithm] != want.lower()
    ]
    if wrong:
        if remove_on_mismatch:
            Path(path).unlink(missing_ok=True)
            fate = "The downloaded file was removed; run again to download it afresh"
        else:
            fate = "The file was left in place; replace it with an intact copy, or correct the checksum in the config"
        raise ChecksumMismatchError(
            f"checksum mismatch for {os.fspath(path)!r}: {'; '.join(wrong)}. The file is damaged, incomplete or a "
            f"different release. {fate}."
        )
    return digests


# --------------------------------------------------------------------------- download


def download_file(
    url: str,
    target: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
) -> dict[str, str]:
    """Download ``url`` to ``target`` via ``target.part``, resuming a partial file; return its digests.

    The data goes to ``<target>.part`` first; a rerun continues it with an HTTP Range request
    (a server that ignores Range restarts it). When complete it is verified, then renamed to
    ``target``. A checksum mismatch removes the partial file and raises ``ChecksumMismatchError``;
    network failures raise ``DownloadError`` and keep the partial file for the next attempt.
    Concurrent calls for one target download it once (they take turns on ``<target>.lock``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two jobs downloading one URL (datasets that share an archive) take turns: the second
    # waits, then verifies and uses the first's file instead of appending to its partial one.
    with _flocked(target.with_name(target.name + ".lock"), "a",
                  f"{target}: another process is downloading it; waiting for it to finish.", remove=True):
        if target.is_file():
            logger.info("%s: downloaded by another process meanwhile.", target)
            return verify_file(target, sha256=sha256, md5=md5)
        return _download_unlocked(url, target, sha256, md5, progress, timeout)


def _download_unlocked(url: str, target: Path, sha256: str | None, md5: str | None, progress: bool | None,
                       timeout: float) -> dict[str, str]:
    part = target.with_name(target.name + PART_SUFFIX)
    show = sys.stderr.isatty() if progress is None else progress
    for _attempt in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        try:
            _fetch(url, part, offset, show, timeout)
            break
        except _RestartDownload:
            part.unlink(missing_ok=True)
    else:  # pragma: no cover - two restarts in a row mean the server keeps changing its answer
        raise DownloadError(f"downloading {url}: the server's answers to a resumed download were inconsistent.")
    digests = verify_file(part, sha256=sha256, md5=md5, remove_on_mismatch=True)
    os.replace(part, target)
    logger.info("downloaded %s to %s (%d bytes)", url, target, target.stat().st_size)
    return digests


class _RestartDownload(Exception):
    """The partial file cannot be continued; start again from the first byte."""


def _fetch(url: str, part: Path, offset: int, show: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (which holds ``offset`` bytes), or raise _RestartDownload."""
    headers = {"User-Agent": "clusteralign-obtain/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # Nothing left past our offset: the part is complete if the server's total agrees.
            total = _content_range_total(err.headers.get("Content-Range"))
            err.close()
            if total == offset:
                return
            raise _RestartDownload from None
        err.close()
        raise DownloadError(
            f"downloading {url} failed: HTTP {err.code} {err.reason}. Check the URL, or download the file by hand "
            f"and configure `archive:` with its path."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"downloading {url} failed: {reason}. Check the network, or download the file by hand and configure "
            f"`archive:` with its path."
        ) from None

    with response:
        status = response.status
        if offset and status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                raise _RestartDownload
            mode = "ab"
        elif status == 200:
            if offset:
                logger.info("%s: the server does not resume downloads; starting again.", url)
            offset, mode = 0, "wb"
        else:
            raise DownloadError(f"downloading {url} failed: unexpected HTTP status {status}.")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        received = offset
        bar = _progress_bar(total, offset, part.name, show)
        try:
            with open(part, mode) as out:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as err:
                        raise DownloadError(
                            f"downloading {url} stopped after {received} bytes ({err}). The partial file "
                            f"{str(part)!r} is kept; run again to resume."
                        ) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and received != total:
        raise DownloadError(
            f"downloading {url} stopped after {received} of {total} bytes. The partial file {str(part)!r} is "
            f"kept; run again to resume."
        )


def _content_range_start(header: str | None) -> int | None:
    """First byte position of a ``Content-Range: bytes a-b/n`` header."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", header or "")
    return int(match.group(1)) if match else None


def _content_range_total(header: str | None) -> int | None:
    """Total size in a ``Content-Range: bytes */n`` (or ``a-b/n``) header."""
    match = re.fullmatch(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)\s*", header or "")
    return int(match.group(1)) if match else None


def _progress_bar(total: int | None, initial: int, name: str, show: bool):
    """A tqdm byte counter, or None when not shown."""
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name)


# --------------------------------------------------------------------------- extraction


def archive_format(path: str | os.PathLike[str]) -> str:
    """``"zip"`` or ``"tar"`` from the file name, else from the first bytes of the file."""
    name = os.fspath(path).lower()
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    try:
        if zipfile.is_zipfile(path):
            return "zip"
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError as err:
        raise ArchiveError(f"cannot read archive {os.fspath(path)!r}: {err}.") from err
    raise ArchiveError(
        f"{os.fspath(path)!r} is not a zip or tar archive (expected a name ending in "
        f"{', '.join(ZIP_SUFFIXES + TAR_SUFFIXES)}, or zip/tar content)."
    )


def safe_extract(archive: str | os.PathLike[str], target: str | os.PathLike[str], *,
                 max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = int(DEFAULT_MAX_SIZE_GB * _GB)) -> None:
    """Extract a zip or tar archive into the existing folder ``target``, refusing unsafe entries.

    Refused (``UnsafeArchiveError``, naming the archive and the entry): absolute paths, ``..``
    components, symbolic or hard links that resolve outside ``target``, and anything that is not
    a regular file, folder or link (device files, FIFOs). Each entry is checked before it is
    written, so nothing is ever written outside ``target``; the caller discards ``target`` on error.
    An archive declaring more than ``max_entries`` entries or ``max_bytes`` bytes in all is refused
    (``ArchiveLimitError``) before anything is written: zip and tar readers write no more than
    each entry declares.
    """
    target_real = os.path.realpath(target)
    if not os.path.isdir(target_real):
        raise ArchiveError(f"extraction folder {os.fspath(target)!r} does not exist.")
    kind = archive_format(archive)
    try:
        _check_declared(Path(archive), kind, max_entries, max_bytes)
        if kind == "zip":
            links = _extract_zip(Path(archive), target_real)
        else:
            links = _extract_tar(Path(archive), target_real)
    except (zipfile.BadZipFile, tarfile.ReadError, EOFError, zlib.error) as err:
        raise ArchiveError(
            f"archive {os.fspath(archive)!r} is damaged or not a {kind} file ({type(err).__name__}: {err})."
        ) from err
    # A link checked at creation can end up pointing outside once later links exist; check them all at the end.
    for link, name in links:
        if not _inside(os.path.realpath(link), target_real):
            _unsafe(archive, name, "is a link that resolves outside the extraction folder")


def _declared(archive: Path, kind: str) -> Iterator[int]:
    """The size each entry of the archive declares, in archive order."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            yield from (info.file_size for info in zf.infolist())
    else:
        # A tar has no index: its headers are read through (decompressing it once more).
        with tarfile.open(archive, "r:*") as tar:
            yield from (member.size for member in tar)


def _check_declared(archive: Path, kind: str, max_entries: int, max_bytes: int) -> None:
    """Raise ArchiveLimitError when the archive declares more entries or bytes than allowed."""
    count = total = 0
    for size in _declared(archive, kind):
        count, total = count + 1, total + size
        if count > max_entries or total > max_bytes:
            what = (f"more than {max_entries:,} entries" if count > max_entries else
                    f"more than {max_bytes / _GB:g} GB of files")
            key = "max_entries" if count > max_entries else "max_size_gb"
            raise ArchiveLimitError(
                f"refusing to extract {str(archive)!r}: it declares {what}, above the limit (the defaults leave "
                f"room for the largest real dataset, MSMT17, several times over). If this archive is what you "
                f"expect, raise `{key}` in the dataset's source; nothing was extracted."
            )


def _unsafe(archive: str | os.PathLike[str], name: str, why: str) -> None:
    raise UnsafeArchiveError(
        f"refusing to extract {os.fspath(archive)!r}: entry {name!r} {why}. Archives with such entries are "
        f"not extracted at all; check where the archive came from."
    )


def _safe_parts(archive: Path, name: str) -> list[str]:
    """Path components of an entry name, refusing absolute names and ``..``."""
    if "\x00" in name:
        _unsafe(archive, name, "has a NUL character in its name")
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"[A-Za-z]:", text):
        _unsafe(archive, name, "has an absolute path")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        _unsafe(archive, name, "has a '..' component that climbs out of the extraction folder")
    return parts


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _destination(archive: Path, name: str, parts: list[str], target: str) -> str:
    """Where an entry goes, refusing one whose parent resolves (through links) outside ``target``."""
    dest = os.path.join(target, *parts)
    if not _inside(os.path.realpath(dest), target):
        _unsafe(archive, name, "would be written outside the extraction folder (through a link)")
    return dest


def _check_link(archive: Path, name: str, dest: str, link_target: str, target: str, *, hard: bool) -> None:
    if not link_target or link_target.startswith("/") or re.match(r"[A-Za-z]:", link_target):
        _unsafe(archive, name, f"is a link to the absolute path {link_target!r}")
    # Hard links name a path from the archive root; symbolic links are relative to the link's folder.
    base = target if hard else os.path.dirname(dest)
    resolved = os.path.realpath(os.path.join(base, link_target))
    if not _inside(resolved, target):
        _unsafe(archive, name, f"is a link to {link_target!r}, outside the extraction folder")


def _extract_zip(archive: Path, target: str) -> list[tuple[str, str]]:
    links: list[tuple[str, str]] = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = _safe_parts(archive, info.filename)
            if not parts:
                continue
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            dest = _destination(archive, info.filename, parts, target)
            if info.is_dir() or kind == stat.S_IFDIR:
                os.makedirs(dest, exist_ok=True)
            elif kind == stat.S_IFLNK:
                link_target = zf.read(info).decode("utf-8")
                _check_link(archive, info.filename, dest, link_target, target, hard=False)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.symlink(link_target, dest)
                links.append((dest, info.filename))
            elif kind in (0, stat.S_IFREG):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            else:
                _unsafe(archive, info.filename, "is not a regular file, folder or link (a device file or FIFO)")
    return links


def _extract_tar(archive: Path, target: str) -> list[tuple[str, str]]:
    links: list[tuple[str, str]] = []
    # The stdlib "data" filter (Python >= 3.11.4) repeats our checks; ours run first to name the entry.
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = _safe_parts(archive, member.name)
            if not parts:
                continue
            dest = _destination(archive, member.name, parts, target)
            if member.issym() or member.islnk():
                _check_link(archive, member.name, dest, member.linkname, target, hard=member.islnk())
                if member.issym():
                    links.append((dest, member.name))
            elif not (member.isfile() or member.isdir()):
                _unsafe(archive, member.name, "is not a regular file, folder or link (a device file or FIFO)")
            try:
                tar.extract(member, target, **extra)
            except tarfile.FilterError as err:
                _unsafe(archive, member.name, f"was refused by the tar safety filter ({err})")
    return links


# --------------------------------------------------------------------------- marker and installation


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


def _marker_matches(marker: Mapping[str, Any], source: DatasetSource, archive: Path) -> bool:
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


def _check_root(root: Path, dest: Path, source: DatasetSource, archive: Path) -> None:
    if not root.is_dir():
        raise LayoutError(
            f"archive {str(archive)!r} has no folder {source.subdir!r} (source.subdir); its top level holds "
            f"{_children(dest)}. Set source.subdir to the folder that holds the dataset, or leave it out."
        )


def _check_replaceable(dest: Path, marker: Mapping[str, Any] | None) -> None:
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


def _children(folder: Path) -> list[str]:
    """Names in a folder (for messages), hidden ones left out."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []
    return names[:_MAX_LISTED] + ([f"... {len(names) - _MAX_LISTED} more"] if len(names) > _MAX_LISTED else [])


def _extract_atomically(archive: Path, dest: Path, source: DatasetSource, record: Mapping[str, Any]) -> None:
    """Extract into a temporary sibling of ``dest``, check ``subdir``, write the marker, rename into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
    try:
        os.chmod(tmp, 0o755)
        logger.info("extracting %s into %s", archive, dest)
        max_entries, max_bytes = source.extraction_limits()
        safe_extract(archive, tmp, max_entries=max_entries, max_bytes=max_bytes)
        _check_root(tmp / source.subdir if source.subdir else tmp, tmp, source, archive)
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
