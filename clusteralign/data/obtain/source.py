"""Where a dataset comes from: the typed ``source`` of a dataset entry, and its JSON schema."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from clusteralign.data.errors import SourceConfigError

from .archives import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SIZE_GB, GB, TAR_SUFFIXES, ZIP_SUFFIXES

_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}


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
        return (DEFAULT_MAX_ENTRIES if self.max_entries is None else self.max_entries), int(size_gb * GB)

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
