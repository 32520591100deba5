"""The typed config check and the JSON schema agree, and the planning checks of names and files."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from clusteralign.config import ConfigError, build_experiments
from clusteralign.pipeline.planning import check_experiment_names, check_planned_files, reserved_names
from clusteralign.pipeline.workflow_config import check_against_schema, check_workflow_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas/config.schema.yaml"
TINY = yaml.safe_load((ROOT / "tests/config/tiny.yaml").read_text())
# A dataset read from a folder, so that a source's keys are tried too.
FOLDER = {"reader": "market1501", "source": {"path": "data/Market"}}
# Values of every JSON kind, and the floats JSON has no word for.
PROBES = [None, {}, [], [1], {"x": 1}, "", "text", "1e-6", 0, -1, 3, 2.5, True, float("inf"), float("nan")]


def schema_paths(schema: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path the schema declares below `prefix`."""
    found = []
    for key, sub in schema.get("properties", {}).items():
        found.append(prefix + (key,))
        found += schema_paths(sub, prefix + (key,))
    return found


def base_config() -> dict:
    config = copy.deepcopy(TINY)
    config["datasets"]["folder"] = copy.deepcopy(FOLDER)
    return config


def all_paths() -> list[tuple]:
    schema = yaml.safe_load(SCHEMA.read_text())
    entries = {"datasets": ["synthetic", "folder"], "models": ["tiny"], "experiments": ["tiny"]}
    paths = [(key,) for key in ("report", "compile_cache")]
    paths += schema_paths(schema["properties"]["report"], ("report",))
    for section, names in entries.items():
        entry = schema["properties"][section]["additionalProperties"]
        for name in names:
            paths.append((section, name))
            paths += schema_paths(entry, (section, name))
    # A generated set has no source, and a folder no generate: each is tried where it belongs.
    return [p for p in paths if p[:3] not in (("datasets", "synthetic", "source"), ("datasets", "folder", "generate"))]


def set_path(config: dict, path: tuple, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return config


def typed_accepts(config: dict) -> bool:
    try:
        check_workflow_config(config)
    except ValueError:  # ConfigError, and the dataset source's own errors
        return False
    return True


def schema_accepts(config: dict) -> bool:
    try:
        check_against_schema(config, SCHEMA)
    except ConfigError:
        return False
    return True


def test_the_base_configs_pass_both_checks():
    for config in (base_config(), yaml.safe_load((ROOT / "config.yaml").read_text())):
        assert typed_accepts(config) and schema_accepts(config)


def test_nothing_the_typed_check_accepts_is_refused_by_the_schema():
    # The typed check runs first, one line per error; if it let through what the schema refuses
    # (an empty `stage1:`, say), the schema's complaint would be the first one the user saw.
    paths = all_paths()
    assert len(paths) > 150 and ("experiments", "tiny", "stage2", "optimizer", "lr") in paths
    disagreements = []
    for path in paths:
        for probe in PROBES:
            config = set_path(base_config(), path, probe)
            if typed_accepts(config) and not schema_accepts(config):
                disagreements.append((".".join(path), probe))
    assert disagreements == [], disagreements


def test_a_schema_error_is_one_line_naming_the_key():
    config = set_path(base_config(), ("experiments", "tiny", "stage1", "optimizer", "lr"), "fast")
    with pytest.raises(ConfigError) as err:
        check_against_schema(config, SCHEMA)
    message = str(err.value)
    assert message.startswith("experiments.tiny.stage1.optimizer.lr: ") and "\n" not in message
    assert len(message) < 500
    # A huge value is cut short rather than repeated whole.
    config = set_path(base_config(), ("report", "title"), {"x" * 10: list(range(2000))})
    with pytest.raises(ConfigError) as err:
        check_against_schema(config, SCHEMA)
    assert str(err.value).startswith("report.title: ") and len(str(err.value)) < 500


def test_the_folder_beside_each_experiment_is_found_from_the_rules_paths():
    paths = ["results/datasets/{dataset}/manifest.csv", "results/{experiment}/stage1/model.pt",
             "results/{experiment,[a-z]+}/{stage}/anchors.pt", "results/report.html", "results/report",
             "logs/train/{experiment}_rep{replicate}_{stage}.log", "results/benchmarks/train/{experiment}_rep{replicate}.tsv"]
    assert reserved_names(paths) == ("results", ["benchmarks", "datasets", "report", "report.html"])
    assert reserved_names(["a/{dataset}.csv"]) == ("", [])
    check_experiment_names(["tiny", "reports"], paths)
    with pytest.raises(ConfigError, match=r"^experiments.REPORT: the name is reserved, because the workflow writes "
                                          r"results/report itself"):
        check_experiment_names(["tiny", "REPORT"], paths)


def test_planned_files_are_checked_for_the_configured_experiments_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = base_config()
    config["models"]["weights"] = {"backbone": "resnet18", "pretrained": "w/r18.pth"}
    check_planned_files(config, build_experiments(config))  # nothing uses the folder dataset or the weights
    tested_on = copy.deepcopy(config)
    first = next(iter(tested_on["experiments"].values()))
    first["test_datasets"] = ["folder"]  # a dataset only tested on is read too
    with pytest.raises(FileNotFoundError, match=r"^datasets.folder.source.path: the folder data/Market does not exist"):
        check_planned_files(tested_on, build_experiments(tested_on))
    config["experiments"]["other"] = {"dataset": "folder", "model": "weights"}
    with pytest.raises(FileNotFoundError, match=r"^datasets.folder.source.path: the folder data/Market does not exist"):
        check_planned_files(config, build_experiments(config))
    (tmp_path / "data").mkdir()
    (tmp_path / "data/Market").write_text("")
    with pytest.raises(FileNotFoundError, match=r"^datasets.folder.source.path: the folder data/Market is a file"):
        check_planned_files(config, build_experiments(config))
    (tmp_path / "data/Market").unlink()
    (tmp_path / "data/Market").mkdir()
    with pytest.raises(FileNotFoundError, match=r"^models.weights.pretrained: the weights file w/r18.pth does not"):
        check_planned_files(config, build_experiments(config))
    (tmp_path / "w").mkdir()
    (tmp_path / "w/r18.pth").write_bytes(b"")
    check_planned_files(config, build_experiments(config))
    config["datasets"]["folder"] = {"reader": "cuhk03_raw_labeled", "source": {"path": "data/Market"},
                                    "reader_options": {"protocol_dir": "splits"}}
    with pytest.raises(FileNotFoundError, match=r"^datasets.folder.reader_options.protocol_dir: the folder splits"):
        check_planned_files(config, build_experiments(config))
