"""A `datasets:` entry of the workflow config, checked and typed before any work."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError, CheckedSection, from_dict, null_section
from .obtain import DatasetSource
from .readers import INPUT_OPTIONS, OPTION_TYPES, READERS
from .synthetic import SyntheticSpec


@dataclass(frozen=True)
class DatasetConfig(CheckedSection):
    """One dataset: its reader, and either a synthetic spec to render or a source to obtain."""

    name: str
    reader: str
    generate: Optional[SyntheticSpec] = None
    source: Optional[DatasetSource] = None
    # Keyword arguments of the reader beyond the dataset's own keys (e.g. MSMT17's combine_val).
    reader_options: dict[str, Any] = field(default_factory=dict)
    verify_images: bool = False
    drop_bad: bool = False

    def __post_init__(self) -> None:
        # Also for an entry built in code, not by from_mapping: the steps rely on them.
        super().__post_init__()
        if self.reader not in READERS:
            raise ConfigError(f"reader: unknown reader {self.reader!r}; known: {', '.join(sorted(READERS))}")
        if self.drop_bad and not self.verify_images:
            raise ConfigError("drop_bad: needs `verify_images: true` (only verified images are found unreadable)")
        if self.generate is not None and self.source is not None:
            raise ConfigError("give `generate:` (a synthetic set) or `source:` (path, archive or url), not both")
        if self.generate is None and self.source is None:
            raise ConfigError("give either `generate:` (synthetic) or `source:` (path, archive or url)")
        if self.generate is not None and self.reader != "synthetic":
            raise ConfigError(f"`generate:` renders a synthetic set, read by reader synthetic, not {self.reader!r}")
        _check_reader_options(self.reader, self.reader_options, generated=self.generate is not None)

    @classmethod
    def from_mapping(cls, name: str, cfg: Any) -> DatasetConfig:
        """Check `datasets.<name>` of a workflow config; errors name the key and what was expected."""
        key = f"datasets.{name}"
        if isinstance(cfg, Mapping):
            for section in ("generate", "reader_options"):
                if section in cfg and cfg[section] is None:
                    raise ConfigError(null_section(f"{key}.{section}"))
            if "source" in cfg:
                # Its own reading refuses a null value, which from_dict would take for "not given".
                cfg = {**cfg, "source": DatasetSource.from_mapping(cfg["source"], f"{key}.source")}
        return from_dict(cls, cfg, key, given={"name": name})

    def to_mapping(self) -> dict[str, Any]:
        """The entry with every default written out, as `from_mapping` reads it.

        Equal datasets give equal mappings whatever the config left implicit, so the workflow
        uses this as its rerun parameter: writing out a default reruns nothing.
        """
        out: dict[str, Any] = {"reader": self.reader, "verify_images": self.verify_images, "drop_bad": self.drop_bad}
        if self.generate is not None:
            out["generate"] = self.generate.to_dict()
        if self.source is not None:
            out["source"] = {f.name: os.fspath(v) if isinstance(v, Path) else v
                             for f in fields(self.source) if (v := getattr(self.source, f.name)) is not None}
        defaults = {p.name: p.default for p in _reader_options(self.reader, generated=self.generate is not None)
                    if p.default is not inspect.Parameter.empty}
        options = {**defaults, **self.reader_options}
        if options:
            out["reader_options"] = dict(sorted(options.items()))
        return out

    def local_inputs(self) -> list[Path]:
        """The local files and folders this dataset is read from whenever it is prepared: a `path:`
        source and reader options such as CUHK03's protocol_dir.

        Not an archive, which may be deleted once extracted (its checksum, a parameter, tells a
        replaced one), nor a download.
        """
        paths = [self.source.path] if self.source is not None and self.source.path is not None else []
        paths += [Path(self.reader_options[name]) for name in sorted(INPUT_OPTIONS & set(self.reader_options))
                  if self.reader_options[name] is not None]
        return paths

    def reader_arguments(self, workers: int | None = None) -> dict[str, Any]:
        """Keyword arguments of the reader: the options, the image checks, what a generated set fixes,
        and `workers` (the job's threads) as the processes that verify images."""
        extra = {"num_cameras": self.generate.num_cameras} if self.generate is not None else {}
        return {**self.reader_options, "verify_images": self.verify_images, "drop_bad": self.drop_bad,
                "num_workers": workers, **extra}


def _given_elsewhere(generated: bool) -> set[str]:
    # The dataset's own keys, what a generated set supplies, and the processes that verify images
    # (the job's threads: a setting of speed, never a reason to prepare again) are not reader options.
    return {"verify_images", "drop_bad", "num_workers"} | ({"num_cameras"} if generated else set())


def _reader_options(reader: str, generated: bool) -> list[inspect.Parameter]:
    """The reader's parameters that `reader_options` may set."""
    params = list(inspect.signature(READERS[reader]).parameters.values())[1:]
    return [p for p in params if p.name not in _given_elsewhere(generated)]


def _check_reader_options(reader: str, options: Mapping[str, Any], generated: bool) -> None:
    params = _reader_options(reader, generated)
    accepted = [p.name for p in params]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"reader_options: unknown option(s) {', '.join(unknown)}; reader {reader} accepts "
            f"{', '.join(accepted) or 'none'}"
            + ("; verify_images and drop_bad are keys of the dataset itself"
               if {"verify_images", "drop_bad"} & set(unknown) else "")
            + ("; the processes that verify images are the prepare_dataset job's threads"
               if "num_workers" in unknown else "")
        )
    for name in sorted(INPUT_OPTIONS & set(options)):
        value = options[name]
        if value is not None and not (isinstance(value, (str, os.PathLike)) and os.fspath(value)):
            raise ConfigError(f"reader_options.{name}: expected a file or folder path, got {value!r}")
    if reader in OPTION_TYPES:
        from_dict(OPTION_TYPES[reader], dict(options), "reader_options")
    missing = [p.name for p in params if p.name not in options and p.default is inspect.Parameter.empty]
    if missing:
        raise ConfigError(f"reader_options: reader {reader} needs {', '.join(missing)} here"
                          + (" (or a `generate:` section)" if reader == "synthetic" else ""))
