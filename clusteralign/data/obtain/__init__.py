"""Obtaining a dataset: a local folder used in place, a local archive, or a URL downloaded on request.

Archives are verified against the configured checksum, then extracted safely into a temporary
folder beside the destination and renamed into place, so the destination is either absent or
complete. A small marker file in the destination records which archive (size, modification time,
sha256 and md5) it came from; a later call whose source matches the marker does no work at all.
Downloads only happen when the source sets ``allow_download``; they resume a partial ``.part``
file with an HTTP Range request.

One concern per module: `source` (the typed `DatasetSource` and its schema), `checksum`,
`download` (resumed, verified downloads), `archives` (safe extraction within limits), `locking`
(jobs taking turns on one archive), `extracted` (the record of an extraction and its
installation), `obtaining` (`obtain_dataset`, which puts them together).
"""

from __future__ import annotations

from .archives import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SIZE_GB, TAR_SUFFIXES, ZIP_SUFFIXES, archive_format, safe_extract
from .checksum import file_digests, verify_file
from .download import PART_SUFFIX, download_file
from .extracted import MARKER_FORMAT, MARKER_NAME, read_marker
from .obtaining import obtain_dataset
from .source import DatasetSource, source_schema, url_filename

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_SIZE_GB",
    "MARKER_FORMAT",
    "MARKER_NAME",
    "PART_SUFFIX",
    "TAR_SUFFIXES",
    "ZIP_SUFFIXES",
    "DatasetSource",
    "archive_format",
    "download_file",
    "file_digests",
    "obtain_dataset",
    "read_marker",
    "safe_extract",
    "source_schema",
    "url_filename",
    "verify_file",
]
