"""Extracting a zip or tar archive safely: every entry checked before it is written, within limits.

Refused, naming the archive and the entry: absolute paths, ``..`` components, links that resolve
outside the extraction folder, device files and FIFOs; and an archive that declares more entries or
bytes than the limits, before anything is written.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

from clusteralign.data.errors import ArchiveError, ArchiveLimitError, UnsafeArchiveError

from .checksum import CHUNK

ZIP_SUFFIXES: tuple[str, ...] = (".zip",)
TAR_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Extraction limits, checked against what an archive declares before anything is written. The
# largest real dataset, MSMT17 V1, holds 126,441 images in about 130,000 entries (with its
# identity folders and list files); 500,000 entries is almost four times that, and 32 GB would
# take MSMT17's images averaging 250 KB each. A dataset's source raises either.
DEFAULT_MAX_ENTRIES = 500_000
DEFAULT_MAX_SIZE_GB = 32.0
GB = 10**9


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
                 max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = int(DEFAULT_MAX_SIZE_GB * GB)) -> None:
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
                    f"more than {max_bytes / GB:g} GB of files")
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
                    shutil.copyfileobj(src, out, CHUNK)
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
