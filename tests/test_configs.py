"""The example configs under configs/ plan and prepare their datasets from generated fixtures."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from clusteralign.config import build_experiments, deep_merge
from fixtures import make_cuhk03_raw, make_dukemtmc, make_market1501, zip_folder

# Every test here trains a stage or runs Snakemake.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def fixture_market(work: Path) -> dict[str, dict]:
    fake = make_market1501(work / "src" / "Market-1501-v15.09.15")
    zip_folder(fake.root, work / "data/Market-1501-v15.09.15.zip")
    return {"market1501": {s: c[1] for s, c in fake.counts.items()}}


def fixture_duke(work: Path) -> dict[str, dict]:
    fake = make_dukemtmc(work / "src" / "DukeMTMC-reID")
    zip_folder(fake.root, work / "data/DukeMTMC-reID.zip")
    return {"dukemtmc": {s: c[1] for s, c in fake.counts.items()}}


def fixture_cuhk03(work: Path) -> dict[str, dict]:
    fake = make_cuhk03_raw(work / "src")
    zip_folder(work / "src/cuhk03_release", work / "data/cuhk03_release.zip")
    (work / "data/cuhk03_protocol").mkdir(parents=True)
    for variant in ("labeled", "detected"):
        shutil.copy(fake.protocol_path(variant), work / "data/cuhk03_protocol")
    return {f"cuhk03_{v}": {s: c[1] for s, c in fake.counts[v].items()} for v in ("labeled", "detected")}


FIXTURES = {"market1501.yaml": fixture_market, "dukemtmc.yaml": fixture_duke, "cuhk03.yaml": fixture_cuhk03}
# Generated datasets need no fixture; preparing the Market-size one takes minutes, so it is
# only planned here (the generator is tested in test_synthetic.py).
GENERATED = ["synthetic_market_size.yaml"]
# Overlays, given after the config they change.
OVERLAYS = {"synthetic_market_size_fast.yaml": "synthetic_market_size.yaml"}


def snakemake(work: Path, configfile: Path | list[Path], *args: str) -> str:
    files = [str(f) for f in (configfile if isinstance(configfile, list) else [configfile])]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", *files, "--cores", "2", *args]
    result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_every_example_config_is_covered():
    assert sorted(p.name for p in (ROOT / "configs").glob("*.yaml")) == sorted([*FIXTURES, *GENERATED, *OVERLAYS])


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_changes_only_what_it_names(overlay, tmp_path):
    base, top = ROOT / "configs" / OVERLAYS[overlay], ROOT / "configs" / overlay
    merged = deep_merge(yaml.safe_load(base.read_text()), yaml.safe_load(top.read_text()))
    before = build_experiments(yaml.safe_load(base.read_text()))
    after = build_experiments(merged)
    assert before.keys() == after.keys()  # it names experiments of its base, adding none
    for name, exp in after.items():
        assert exp != before[name]
        assert exp.stage2 == before[name].stage2 and exp.model == before[name].model
    if overlay == "synthetic_market_size_fast.yaml":
        name = "synthetic_market_size_resnet50"
        stage, reference = after[name].stage1, before[name].stage1
        assert (stage.num_identities, stage.num_instances) == (64, reference.num_instances)
        assert stage.optimizer.lr == 2 * reference.optimizer.lr  # square-root rule for a 4x batch
        assert stage.epochs == reference.epochs and stage.schedule == reference.schedule
    # Snakemake merges the two the same way, and the schema accepts the result.
    plan = snakemake(tmp_path, [base, top], "-n")
    for experiment in after:
        assert f"results/{experiment}/rep0/stage1/model.pt" in plan


@pytest.mark.parametrize("name", GENERATED)
def test_generated_config_plans(name, tmp_path):
    plan = snakemake(tmp_path, ROOT / "configs" / name, "-n")
    for experiment, raw in yaml.safe_load((ROOT / "configs" / name).read_text())["experiments"].items():
        assert f"results/{experiment}/rep0/stage2/eval/{raw['dataset']}/metrics.json" in plan


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_example_config_plans_and_prepares_its_datasets(name, tmp_path):
    config = ROOT / "configs" / name
    expected = FIXTURES[name](tmp_path)
    # The dry run of the config as shipped: both stages, evaluation and the report of every experiment.
    plan = snakemake(tmp_path, config, "-n")
    raw = yaml.safe_load(config.read_text())
    for experiment, entry in raw["experiments"].items():
        assert f"results/{experiment}/rep0/stage2/eval/{entry['dataset']}/metrics.json" in plan
    # Preparing the data for real: published checksums cannot match a fixture, so each is
    # replaced by the fixture archive's (checksum checking itself is tested in test_obtain.py).
    archives = set()
    for dataset in raw["datasets"].values():
        source = dataset["source"]
        source.pop("sha256", None)
        source["md5"] = hashlib.md5((tmp_path / source["archive"]).read_bytes()).hexdigest()
        archives.add(source["archive"])
    fixture_config = tmp_path / "fixture.yaml"
    fixture_config.write_text(yaml.safe_dump(raw))
    snakemake(tmp_path, fixture_config, "--until", "prepare_dataset")
    for dataset, counts in expected.items():
        manifest = pd.read_csv(tmp_path / "results/datasets" / dataset / "manifest.csv")
        assert manifest["split"].value_counts().to_dict() == counts, dataset
    # One extraction per archive, however many datasets read it (CUHK03: labeled and detected).
    extracted = [p for p in (tmp_path / "resources/datasets").iterdir() if p.is_dir()]
    assert len(extracted) == len(archives), extracted
    # Prepared, nothing is left to do, also with the archives deleted (moved aside here). A
    # replaced archive comes with its new checksum, a parameter of every dataset read from it,
    # which re-prepares them all.
    for archive in archives:
        (tmp_path / archive).rename(tmp_path / f"{archive}.aside")
    plan = snakemake(tmp_path, fixture_config, "-n", "--until", "prepare_dataset")
    assert re.search(r"^total\s+0$", plan, re.M), plan[-2000:]
    for archive in archives:
        (tmp_path / f"{archive}.aside").rename(tmp_path / archive)
    archive = sorted(archives)[0]
    with open(tmp_path / archive, "ab") as f:
        f.write(b"replaced")
    readers = [d for d, entry in raw["datasets"].items() if entry["source"]["archive"] == archive]
    for dataset in readers:
        raw["datasets"][dataset]["source"]["md5"] = hashlib.md5((tmp_path / archive).read_bytes()).hexdigest()
    fixture_config.write_text(yaml.safe_dump(raw))
    plan = snakemake(tmp_path, fixture_config, "-n", "--until", "prepare_dataset")
    assert re.search(rf"^prepare_dataset\s+{len(readers)}$", plan, re.M), plan[-2000:]
