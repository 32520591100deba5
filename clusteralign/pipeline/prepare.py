"""Workflow step: a configured dataset -> its manifest (generating the synthetic set if asked)."""

from __future__ import annotations

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


def prepare_dataset(
    name: str, cfg: dict[str, Any], work_dir: Path, manifest_path: Path, workers: int = 1
) -> pd.DataFrame:
    """Read dataset `name` (config section `cfg`) and write its manifest to `manifest_path`.

    `workers` processes render a synthetic set.
    """
    unknown = sorted(set(cfg) - _KEYS)
    if unknown:
        raise ConfigError(f"datasets.{name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}")
    reader = cfg.get("reader")
    if reader not in READERS:
        raise ConfigError(f"datasets.{name}.reader: unknown reader {reader!r}; known: {', '.join(sorted(READERS))}")
    root, extra = dataset_root(name, cfg, Path(work_dir), workers)
    options = {**(cfg.get("reader_options") or {}), **extra}
    manifest = read_dataset(
        reader, root, verify_images=bool(cfg.get("verify_images", False)), drop_bad=bool(cfg.get("drop_bad", False)),
        **options,
    )
    log_summary(manifest, log, name)
    write_manifest(manifest, manifest_path)
    return manifest
