"""Errors raised while reading datasets, manifests and images.

Every error carries a one-paragraph message that names the file, folder or manifest column
at fault and says what was expected, so a user can fix the input without reading code.
"""

from __future__ import annotations

from clusteralign.config import ConfigError

# Offending items a message lists before it counts the rest.
MAX_LISTED = 5


def listing(items: list[str]) -> str:
    """The first few items joined for a message, with a count of the rest."""
    shown = "; ".join(items[:MAX_LISTED])
    return shown + (f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


class DatasetError(ValueError):
    """Base class for every problem with dataset files, manifests or images."""


class DatasetRootMissingError(DatasetError, FileNotFoundError):
    """The dataset root folder (or a variant folder inside it) does not exist."""


class LayoutError(DatasetError):
    """The dataset root exists but expected sub-folders are missing."""


class FileNameError(DatasetError):
    """Image file names do not follow the dataset's naming pattern."""


class NotAFileError(DatasetError):
    """An entry named like an image is not a file (a broken symbolic link, a folder)."""


class CameraRangeError(DatasetError):
    """A camera number parsed from a file name is outside the dataset's camera range."""


class CorruptImageError(DatasetError):
    """An image file cannot be opened or decoded."""


class EmptySplitError(DatasetError):
    """A split (train, query or gallery) has no images left after filtering."""


class ManifestError(DatasetError):
    """A manifest table or CSV file breaks the manifest contract."""


class ManifestMissingError(ManifestError, FileNotFoundError):
    """The manifest CSV file does not exist."""


class UnknownDatasetError(DatasetError, KeyError):
    """A dataset name that no reader is registered for."""

    def __str__(self) -> str:
        # KeyError would show the message repr-quoted; keep it readable like the others.
        return str(self.args[0]) if self.args else ""


class SourceConfigError(DatasetError, ConfigError):
    """A dataset source (folder, archive or URL in the config) is specified wrongly."""


class ArchiveError(DatasetError):
    """An archive cannot be read: unknown format, damaged, or missing the expected folder."""


class UnsafeArchiveError(ArchiveError):
    """An archive entry would write outside the extraction folder or is not a plain file, folder or link."""


class ArchiveLimitError(ArchiveError):
    """An archive declares more entries or bytes than its dataset's extraction limits allow."""


class ChecksumMismatchError(DatasetError):
    """A file's sha256 or md5 differs from the configured checksum."""


class DownloadNotAllowedError(DatasetError):
    """A dataset needs downloading but the source does not set ``allow_download``."""


class DownloadError(DatasetError, OSError):
    """A download failed (network, HTTP status, or a connection that ended early)."""


class Cuhk03RawError(DatasetError):
    """The raw CUHK03 release (cuhk-03.mat) or a new-protocol split file is missing or malformed."""


class ListFileError(DatasetError):
    """A dataset list file (e.g. MSMT17's list_train.txt) is missing or has a malformed line."""
