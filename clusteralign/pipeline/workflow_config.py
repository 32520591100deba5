"""The whole workflow config checked before anything is planned, each error one line naming its key.

The typed check runs first and accepts nothing the JSON schema refuses (tests/test_workflow_config.py
tries every field with values of every kind), so the schema check after it, also one line here,
is a second opinion that never fires on a config the typed check let through. Snakemake's own
`validate` would follow its message with the whole schema and config, a hundred lines and more.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, ModelConfig, ReportConfig, build_experiments, from_dict, null_section
from ..data.dataset_config import DatasetConfig
from ..train.compile_cache import compile_cache_dir

TOP_LEVEL_KEYS = ("datasets", "models", "experiments", "report", "compile_cache")
REQUIRED_KEYS = ("datasets", "models", "experiments")
# Names become folder and file names (results/<experiment>/, logs/<rule>/<experiment>.log).
NAME = re.compile(r"[A-Za-z0-9_-]+")
_LONGEST_MESSAGE = 300


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
        for name in config[section]:
            if not isinstance(name, str) or not NAME.fullmatch(name):
                raise ConfigError(f"{section}: the name {name!r} is not allowed; names are made of letters, digits, "
                                  "_ and - (they become folder and file names)")
    for name, entry in config["datasets"].items():
        DatasetConfig.from_mapping(name, entry)
    for name, entry in config["models"].items():
        if entry is None:
            raise ConfigError(null_section(f"models.{name}"))
        from_dict(ModelConfig, entry, f"models.{name}")
    for name, experiment in build_experiments(dict(config)).items():
        for stage in ("stage1", "stage2"):  # the control trains with stage 2's schedule
            try:
                getattr(experiment, stage).check_schedule()
            except ConfigError as err:
                raise ConfigError(f"experiments.{name}.{stage}.{err}") from None
    if "report" in config and config["report"] is None:
        raise ConfigError(null_section("report"))
    from_dict(ReportConfig, config.get("report"), "report")
    compile_cache_dir(config)


def check_against_schema(config: Mapping[str, Any], schema_path: str | Path) -> None:
    """Raise a one-line ConfigError naming the key of the first place `config` breaks the JSON schema."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(str(schema_path)).iter_errors(dict(config)))
    if error is None:
        return
    key = ".".join(str(part) for part in error.absolute_path) or "config"
    message = " ".join(error.message.split())
    if len(message) > _LONGEST_MESSAGE:
        message = message[:_LONGEST_MESSAGE] + " ..."
    raise ConfigError(f"{key}: {message} (schema {schema_path})")


@functools.lru_cache(maxsize=4)
def _validator(schema_path: str) -> Any:
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    return jsonschema.validators.validator_for(schema)(schema)
