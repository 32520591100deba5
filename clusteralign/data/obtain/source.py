"""Where a dataset comes from: the typed ``source`` of a dataset entry, and its JSON schema."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from clusteralign.config import TypedSection, bounded
from clusteralign.config import from_dict as build_from_dict
from clusteralign.data.errors import SourceConfigError

from .archives import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SIZE_GB, GB, TAR_SUFFIXES, ZIP_SUFFIXES

_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}


@dataclass(frozen=True)
class DatasetSource(TypedSection):
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

    path: Optional[Path] = None
    archive: Optional[Path] = None
    url: Optional[str] = None
    allow_download: bool = False
    sha256: Optional[str] = None
    md5: Optional[str] = None
    subdir: Optional[str] = None
    filename: Optional[str] = None
    max_entries: Optional[int] = bounded(None, minimum=1)
    max_size_gb: Optional[float] = bounded(None, exclusiveMinimum=0)

    _error = SourceConfigError

    def __post_init__(self) -> None:
        super().__post_init__()  # each field's type and range
        given = [name for name in ("path", "archive", "url") if getattr(self, name) is not None]
        if len(given) != 1:
            what = "none of them" if not given else f"{' and '.join(given)}"
            raise SourceConfigError(
                f"a dataset source needs exactly one of path (a local folder), archive (a local .zip/.tar/"
                f".tar.gz/.tgz file) or url (downloaded when allow_download is true); got {what}"
            )
        if self.url is not None:
            parsed = urllib.parse.urlparse(self.url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise SourceConfigError(f"url: expected an http:// or https:// URL, got {self.url!r}")
        self._check_checksums()
        if self.subdir is not None:
            object.__setattr__(self, "subdir", _relative_folder(self.subdir, "subdir"))
        if self.filename is not None:
            if self.url is None:
                raise SourceConfigError("filename: only a url source is saved under a file name")
            if not self.filename or "/" in self.filename or "\\" in self.filename or self.filename in (".", ".."):
                raise SourceConfigError(f"filename: expected a plain file name, got {self.filename!r}")
        limits = [name for name in ("max_entries", "max_size_gb") if getattr(self, name) is not None]
        if limits and self.path is not None:
            raise SourceConfigError(f"{limits[0]}: limits an archive's extraction; a `path:` folder has none")

    def _check_checksums(self) -> None:
        for algorithm in ("sha256", "md5"):
            value = getattr(self, algorithm)
            if value is None:
                continue
            normal = value.strip().lower()
            if not _HEX[algorithm].fullmatch(normal):
                size = 64 if algorithm == "sha256" else 32
                raise SourceConfigError(f"{algorithm}: expected {size} hexadecimal digits, got {value!r}")
            object.__setattr__(self, algorithm, normal)
        if self.path is not None and (self.sha256 or self.md5):
            raise SourceConfigError(
                "sha256/md5 verify an archive or a download, not a folder; remove them from a `path:` source or "
                "point `archive:` at the archive instead"
            )

    def extraction_limits(self) -> tuple[int, int]:
        """The most entries and bytes (declared) an archive of this source may extract to."""
        size_gb = DEFAULT_MAX_SIZE_GB if self.max_size_gb is None else self.max_size_gb
        return (DEFAULT_MAX_ENTRIES if self.max_entries is None else self.max_entries), int(size_gb * GB)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], key: str = "source") -> DatasetSource:
        """Build a source from a config mapping; errors name ``key`` and the offending entry."""
        if not isinstance(data, Mapping):  # null too: a source has no defaults
            raise SourceConfigError(f"{key}: expected a mapping with one of path, archive or url, got {data!r}")
        # In code None means "not given"; in a config file an empty value is a mistake (the schema says so too).
        nulls = sorted(f.name for f in fields(cls) if f.name in data and data[f.name] is None)
        if nulls:
            raise SourceConfigError(f"{key}.{nulls[0]}: got null (an empty value); give a value or leave the key out")
        return build_from_dict(cls, data, key)

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
    """JSON schema of a dataset ``source`` mapping in config.yaml (``DatasetSource`` checks the rest).

    Written out rather than generated: it states what only ``__post_init__`` checks (one of path,
    archive or url; the checksums' digits; an http URL). The ranges are the fields' own.
    """
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
            "max_entries": {"type": "integer", **_bounds("max_entries"),
                            "description": f"Most archive entries extracted (default {DEFAULT_MAX_ENTRIES})."},
            "max_size_gb": {"type": "number", **_bounds("max_size_gb"),
                            "description": f"Most GB an archive declares (default {DEFAULT_MAX_SIZE_GB:g})."},
        },
        "oneOf": [{"required": ["path"]}, {"required": ["archive"]}, {"required": ["url"]}],
    }


def _bounds(name: str) -> dict[str, float]:
    """The range a `DatasetSource` field declares."""
    return dict(next(f for f in fields(DatasetSource) if f.name == name).metadata["bounds"])


def _relative_folder(value: str, key: str) -> str:
    """A relative folder path without ``..``, as ``a/b``."""
    text = value.replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if text.startswith("/") or ".." in parts or not parts:
        raise SourceConfigError(
            f"{key}: expected a relative folder inside the archive (no leading '/', no '..'), got {value!r}"
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
