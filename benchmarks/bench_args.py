"""Command-line argument types and the model options the benchmark scripts share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from clusteralign.cli import non_negative_int, positive_int
from clusteralign.models import FAMILIES
from clusteralign.models.resnet import BACKBONES
from clusteralign.pipeline.config_files import ConfigFileError, check_config_file

__all__ = ["add_model_arguments", "non_negative_int", "positive_int", "read_workflow_config"]


def read_workflow_config(p: argparse.ArgumentParser, path: Path, option: str = "") -> dict[str, Any]:
    """A workflow config file as a mapping; anything else is an argparse error naming `option` and the file."""
    name = f"{option} {path}".strip()
    if not path.is_file():
        p.error(f"{name}: no such file")
    try:
        check_config_file(path)  # the workflow's strict reading: every key once, plain data only
    except ConfigFileError as err:
        p.error(f"{option} {err}".strip())
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        p.error(f"{name}: expected a workflow config (datasets, models, experiments), got {config!r}")
    return config


def add_model_arguments(p: argparse.ArgumentParser, *, backbone: str, base_width: int = 64,
                        family: bool = True) -> None:
    """--family (unless the script has its own), --backbone and --base-width, checked by argparse."""
    if family:
        p.add_argument("--family", default="baseline", choices=list(FAMILIES))
    p.add_argument("--backbone", default=backbone, choices=BACKBONES)
    p.add_argument("--base-width", type=positive_int, default=base_width,
                   help="channels of the backbone's first stage (64: the published models)")
