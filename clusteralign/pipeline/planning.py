"""Checks run while the Snakefile is read, before Snakemake looks at any file on disk.

Snakemake reads an exception raised in an input function, and a missing input file, as "this
rule cannot make the file": when the file already exists from an earlier run it takes it as a
source and plans nothing, so a config naming a missing archive printed "Nothing to be done"
after `make run`. Run at the top level of the Snakefile, these checks stop the plan whatever
is on disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..config import ConfigError, ExperimentConfig
from ..data.dataset_config import DatasetConfig
from ..data.readers import INPUT_OPTIONS
from .prepare import check_archive_available


def check_planned_files(config: Mapping[str, Any], experiments: Mapping[str, ExperimentConfig]) -> None:
    """Raise, naming the config key, when a file or folder a configured experiment reads is missing.

    Datasets and models no experiment uses (to train on, or as a `test_datasets` entry) are not
    checked: nothing reads them.
    """
    for name in sorted({dataset for exp in experiments.values() for dataset in exp.evaluated_on}):
        dataset = DatasetConfig.from_mapping(name, config["datasets"][name])
        check_archive_available(dataset)
        folders = {}
        if dataset.source is not None and dataset.source.path is not None:
            folders[f"datasets.{name}.source.path"] = dataset.source.path
        for option in sorted(INPUT_OPTIONS & set(dataset.reader_options)):
            if dataset.reader_options[option] is not None:
                folders[f"datasets.{name}.reader_options.{option}"] = Path(dataset.reader_options[option])
        for key, folder in folders.items():
            if not folder.is_dir():
                what = "is a file, not a folder" if folder.exists() else "does not exist"
                raise FileNotFoundError(f"{key}: the folder {folder} {what} (relative paths are taken from the "
                                        f"workflow's working directory, {Path.cwd()})")
    for name, exp in experiments.items():
        weights = exp.model.pretrained_file()
        if weights is not None and not Path(weights).is_file():
            model = config["experiments"][name]["model"]
            what = "is a folder, not a file" if Path(weights).exists() else "does not exist"
            raise FileNotFoundError(f"models.{model}.pretrained: the weights file {weights} {what} (relative "
                                    f"paths are taken from the workflow's working directory, {Path.cwd()})")


def _is_wildcard(part: str, wildcard: str) -> bool:
    return re.fullmatch(r"\{" + wildcard + r"(,.*)?\}", part) is not None


def reserved_names(paths: Iterable[str], wildcard: str = "experiment") -> tuple[str, list[str]]:
    """The folder that holds one entry per `{wildcard}`, and the literal names the workflow writes beside them.

    From the rules' output, log and benchmark paths: with `results/{experiment}/...` and
    `results/report.html`, an experiment named report.html would collide with the report.
    """
    split = [str(path).split("/") for path in paths]
    parents = {tuple(parts[:i]) for parts in split for i, part in enumerate(parts) if _is_wildcard(part, wildcard)}
    if not parents:
        return "", []
    if len(parents) > 1:  # pragma: no cover - a layout this workflow does not have
        raise ValueError(f"{{{wildcard}}} appears under several folders: {sorted(parents)}")
    (parent,) = parents
    names = {parts[len(parent)] for parts in split
             if len(parts) > len(parent) and tuple(parts[:len(parent)]) == parent and "{" not in parts[len(parent)]}
    return "/".join(parent), sorted(names)


def check_experiment_names(experiments: Iterable[str], paths: Iterable[str]) -> None:
    """Raise when an experiment's name is one the workflow's own outputs use (`paths`: the rules' paths)."""
    folder, reserved = reserved_names(paths)
    # Compared across case: on a case-insensitive file system Report/ and report/ are one folder.
    taken = {name.lower(): name for name in reserved}
    for name in experiments:
        if name.lower() in taken:
            raise ConfigError(
                f"experiments.{name}: the name is reserved, because the workflow writes {folder}/{taken[name.lower()]} "
                f"itself; choose another (reserved: {', '.join(reserved)})")
