"""The whole workflow config checked before anything is planned, each error one line naming its key.

Snakemake's schema check (run after this one) names the key too, but follows it with the whole
schema and config, hundreds of lines in which the message is easy to miss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import ConfigError, ModelConfig, ReportConfig, build_experiments, from_dict
from ..data.dataset_config import DatasetConfig
from ..train.compile_cache import compile_cache_dir

TOP_LEVEL_KEYS = ("datasets", "models", "experiments", "report", "compile_cache")
REQUIRED_KEYS = ("datasets", "models", "experiments")


def check_workflow_config(config: Mapping[str, Any]) -> None:
    """Raise a ConfigError naming the first bad key of a workflow config."""
    unknown = sorted(set(config) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ConfigError(
            f"missing top-level key(s) {', '.join(missing)}. A --configfile replaces config.yaml; to change "
            "only part of it, give config.yaml first: --configfile config.yaml your_overlay.yaml")
    for section in REQUIRED_KEYS:
        if not isinstance(config[section], Mapping) or not config[section]:
            raise ConfigError(f"{section}: expected a mapping of names to entries, got {config[section]!r}")
    for name, entry in config["datasets"].items():
        DatasetConfig.from_mapping(name, entry)
    for name, entry in config["models"].items():
        from_dict(ModelConfig, entry, f"models.{name}")
    build_experiments(dict(config))
    from_dict(ReportConfig, config.get("report"), "report")
    compile_cache_dir(config)
