"""Checksums of a file: sha256 and md5 in one pass, compared with the configured ones."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from clusteralign.data.errors import ChecksumMismatchError

CHUNK = 1 << 20
"""Bytes read or copied at a time."""


def file_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """The sha256 and md5 of a file, computed in one pass."""
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
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
