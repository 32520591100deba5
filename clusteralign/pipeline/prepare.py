"""Workflow step: a configured dataset -> its manifest (generating the synthetic set if asked)."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import ConfigError
from ..data.manifest import log_summary, write_manifest
from ..data.readers import READERS, read_dataset

log = logging.getLogger(__name__)

_KEYS = {"reader", "generate", "source", "reader_options", "verify_images", "drop_bad"}

# Retrieved datasets live outside results/ (Snakemake's convention: resources/), so cleaning
# results never throws away a 20 GB extraction.
RESOURCES = Path("resources/datasets")


def dataset_root(name: str, cfg: dict[str, Any], work_dir: Path, workers: int = 1) -> tuple[Path, dict[str, Any]]:
    """Generate, extract, download or locate the images of dataset `name`.

    Returns (root, extra reader arguments).
    """
    from ..data.obtain import DatasetSource, obtain_dataset
    from ..data.synthetic import SyntheticSpec, generate_synthetic

    key = f"datasets.{name}"
    if "generate" in cfg:
        spec = SyntheticSpec.from_dict(cfg["generate"] or {})
        root = work_dir / "images"
        # The workflow owns this folder: a changed `generate:` section replaces the old images.
        counts = generate_synthetic(root, spec, overwrite=True, workers=workers)
        log.info("%s: synthetic images in %s: %s", name, root, counts)
        return root, {"num_cameras": spec.num_cameras}
    if "source" not in cfg:
        raise ConfigError(f"{key}: give either `generate:` (synthetic) or `source:` (path, archive or url)")
    source = DatasetSource.from_mapping(cfg["source"], f"{key}.source")
    if source.path is not None and not Path(source.path).is_dir():
        raise FileNotFoundError(
            f"{key}.source.path: dataset folder {source.path} does not exist (relative paths are taken from the "
            f"workflow's working directory, {Path.cwd()})"
        )
    # Datasets reading one checksummed archive (CUHK03 labeled and detected) share its extraction.
    return obtain_dataset(source, RESOURCES / (source.extraction_name() or name)), {}


def check_dataset_config(name: str, cfg: Any) -> dict[str, Any]:
    """Check a `datasets:` entry before any work; returns its reader options."""
    key = f"datasets.{name}"
    if not isinstance(cfg, dict):
        raise ConfigError(f"{key}: expected a mapping, got {cfg!r}")
    unknown = sorted(set(cfg) - _KEYS)
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}")
    reader = cfg.get("reader")
    if reader not in READERS:
        raise ConfigError(f"{key}.reader: unknown reader {reader!r}; known: {', '.join(sorted(READERS))}")
    if "generate" in cfg and reader != "synthetic":
        raise ConfigError(f"{key}: `generate:` renders a synthetic set, read by reader synthetic, not {reader!r}")
    if cfg.get("drop_bad") and not cfg.get("verify_images"):
        raise ConfigError(f"{key}.drop_bad: needs `verify_images: true` (only verified images are found unreadable)")
    options = cfg.get("reader_options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{key}.reader_options: expected a mapping, got {options!r}")
    # The dataset's own keys, and what a generated set supplies, are not reader options.
    params = list(inspect.signature(READERS[reader]).parameters.values())[1:]
    given_elsewhere = {"verify_images", "drop_bad"} | ({"num_cameras"} if "generate" in cfg else set())
    accepted = [p.name for p in params if p.name not in given_elsewhere]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{key}.reader_options: unknown option(s) {', '.join(unknown)}; reader {reader} accepts "
            f"{', '.join(accepted) or 'none'}"
            + ("; verify_images and drop_bad are keys of the dataset itself" if given_elsewhere & set(unknown) else "")
        )
    missing = [p.name for p in params if p.name in accepted and p.name not in options
               and p.default is inspect.Parameter.empty]
    if missing:
        raise ConfigError(f"{key}.reader_options: reader {reader} needs {', '.join(missing)} here"
                          + (" (or a `generate:` section)" if reader == "synthetic" else ""))
    return options


def prepare_dataset(
    name: str, cfg: dict[str, Any], work_dir: Path, manifest_path: Path, workers: int = 1
) -> pd.DataFrame:
    """Read dataset `name` (config section `cfg`) and write its manifest to `manifest_path`.

    `workers` processes render a synthetic set.
    """
    options = check_dataset_config(name, cfg)
    root, extra = dataset_root(name, cfg, Path(work_dir), workers)
    manifest = read_dataset(
        cfg["reader"], root, verify_images=bool(cfg.get("verify_images", False)),
        drop_bad=bool(cfg.get("drop_bad", False)), **options, **extra,
    )
    log_summary(manifest, log, name)
    write_manifest(manifest, manifest_path)
    return manifest
