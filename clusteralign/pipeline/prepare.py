"""Workflow step: a configured dataset -> its manifest (generating the synthetic set if asked)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..data.dataset_config import DatasetConfig
from ..data.manifest import log_summary, write_manifest
from ..data.obtain import MARKER_NAME, obtain_dataset
from ..data.readers import read_dataset
from ..data.synthetic import generate_synthetic

log = logging.getLogger(__name__)

# Retrieved datasets live outside results/ (Snakemake's convention: resources/), so cleaning
# results never throws away a 20 GB extraction.
RESOURCES = Path("resources/datasets")


def extraction_dir(dataset: DatasetConfig) -> Path:
    """Where the workflow extracts or downloads `dataset`'s archive."""
    # Datasets reading one checksummed archive (CUHK03 labeled and detected) share its extraction.
    return RESOURCES / (dataset.source.extraction_name() or dataset.name)


def check_archive_available(dataset: DatasetConfig) -> None:
    """Raise, naming the key, when `dataset`'s local archive is missing and was never extracted.

    Run when the workflow is planned, so a missing archive stops it before any job.
    """
    source = dataset.source
    if source is None or source.archive is None or source.archive.is_file():
        return
    dest = extraction_dir(dataset)
    if not (dest / MARKER_NAME).is_file():
        raise FileNotFoundError(
            f"datasets.{dataset.name}.source.archive: {source.archive} does not exist, and {dest} holds no "
            f"extraction of it (relative paths are taken from the workflow's working directory, {Path.cwd()}; "
            f"docs/datasets.md says where to get each archive)"
        )


def dataset_root(dataset: DatasetConfig, work_dir: Path, workers: int = 1) -> Path:
    """Generate, extract, download or locate the images of `dataset`."""
    if dataset.generate is not None:
        root = work_dir / "images"
        # The workflow owns this folder: a changed `generate:` section replaces the old images.
        counts = generate_synthetic(root, dataset.generate, overwrite=True, workers=workers)
        log.info("%s: synthetic images in %s: %s", dataset.name, root, counts)
        return root
    source = dataset.source
    if source.path is not None and not Path(source.path).is_dir():
        raise FileNotFoundError(
            f"datasets.{dataset.name}.source.path: dataset folder {source.path} does not exist (relative paths are "
            f"taken from the workflow's working directory, {Path.cwd()})"
        )
    return obtain_dataset(source, extraction_dir(dataset))


def prepare_dataset(dataset: DatasetConfig, work_dir: Path, manifest_path: Path, workers: int = 1) -> pd.DataFrame:
    """Read `dataset` and write its manifest to `manifest_path`; `workers` processes render a synthetic
    set or verify the images."""
    root = dataset_root(dataset, Path(work_dir), workers)
    manifest = read_dataset(dataset.reader, root, **dataset.reader_arguments(workers))
    log_summary(manifest, log, dataset.name)
    write_manifest(manifest, manifest_path)
    return manifest
