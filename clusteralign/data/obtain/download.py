"""Downloading an archive: resumed with an HTTP Range request, verified, then renamed into place."""

from __future__ import annotations

import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from clusteralign.data.errors import DownloadError

from .checksum import CHUNK, verify_file
from .locking import flocked

logger = logging.getLogger(__name__)

PART_SUFFIX = ".part"


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
    with flocked(target.with_name(target.name + ".lock"), "a",
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
        with open(part, mode) as out, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                           unit_divisor=1024, desc=part.name, disable=not show) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    raise DownloadError(
                        f"downloading {url} stopped after {received} bytes ({err}). The partial file "
                        f"{str(part)!r} is kept; run again to resume."
                    ) from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
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
