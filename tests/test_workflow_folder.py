"""The tiny workflow on a `folder` dataset without camera ids, then its trained model used outside it."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from clusteralign.cli import main
from clusteralign.data.manifest import read_manifest
from clusteralign.infer.extractor import FeatureExtractor
from clusteralign.infer.images import to_pixels
from clusteralign.infer.outputs import read_features
from clusteralign.io import torch_load
from clusteralign.models.file import ModelFile
from clusteralign.train.augment import test_transform
from clusteralign.train.inputs import test_spec
from test_workflow import TINY, snakemake, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder_run(tiny_dataset, tmp_path_factory):
    """A workflow folder whose dataset is the synthetic set's people, one folder each (distractors left out).

    Its stages are also tested on the tiny synthetic set itself (`test_datasets`): the cross-domain table.
    """
    workdir = tmp_path_factory.mktemp("folder_workflow")
    _, manifest = tiny_dataset
    for path, pid in zip(manifest["path"], manifest["pid"]):
        if pid > 0:
            target = workdir / "data/people" / f"person{pid:03d}" / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    config = copy.deepcopy(TINY)
    config["datasets"]["people"] = {"reader": "folder", "source": {"path": "data/people"}, "verify_images": True}
    config["experiments"]["tiny"].update(dataset="people", control=False, test_datasets=["synthetic"])
    write_config(workdir, config)
    snakemake(workdir)
    return workdir


def test_the_workflow_trains_and_reports_on_a_folder_dataset(folder_run, tiny_dataset):
    manifest = read_manifest(folder_run / "results/datasets/people/manifest.csv")
    people = tiny_dataset[1].loc[tiny_dataset[1]["pid"] > 0, "pid"].nunique()
    assert manifest["pid"].nunique() == people and manifest["camid"].is_unique  # one camera per image
    assert set(manifest["path"].str.split("/").str[2]) == {f"person{p:03d}" for p in
                                                          tiny_dataset[1].loc[tiny_dataset[1]["pid"] > 0, "pid"]}
    assert "every image is a camera of its own" in (folder_run / "logs/prepare_dataset/people.log").read_text()
    assert (folder_run / "results/report.html").is_file()
    for stage in ("stage1", "stage2"):
        assert (folder_run / f"results/tiny/rep0/{stage}/eval/people/metrics.json").is_file()


def test_the_report_has_the_cross_domain_table(folder_run):
    md = (folder_run / "results/report.md").read_text(encoding="utf-8")
    table = md[md.index("### Cross-domain"):].split("\n\n")[1].splitlines()
    assert table[0] == ("|  | R1 (%) on people (trained on) | mAP (%) on people (trained on) | R1 (%) on synthetic | "
                        "mAP (%) on synthetic |")
    metrics = json.loads((folder_run / "results/tiny/rep0/stage2/eval/synthetic/metrics.json").read_text())
    row = table[3].split(" | ")
    assert row[0] == "| Stage 2 (anchor)" and row[4] == f"{100 * metrics['mAP']:.1f} |"
    summary = pd.read_csv(folder_run / "results/summary.csv")
    assert sorted(set(summary["test_dataset"])) == ["people", "synthetic"] and len(summary) == 4
    inputs = ModelFile.load(folder_run / "results/tiny/rep0/stage2/model.pt").meta["input"]
    assert (inputs["height"], inputs["width"], inputs["flip"]) == (64, 32, True)


def workflow_features(run: Path) -> dict[str, np.ndarray]:
    """Path (relative to the workflow folder) -> the feature the workflow extracted for it."""
    payload = torch_load(run / "results/tiny/rep0/stage2/eval/people/features.pt")
    return {p: f for split in ("query", "gallery")
            for p, f in zip(payload[split]["paths"], payload[split]["features"].numpy())}


def test_extract_gives_the_workflows_features(folder_run, monkeypatch):
    monkeypatch.chdir(folder_run)
    assert main(["extract", "--model", "results/tiny/rep0/stage2/model.pt", "--images", "data/people",
                 "--out", "features.parquet"]) == 0
    features, files = read_features("features.parquet")
    expected = workflow_features(folder_run)
    assert len(files) == len(list((folder_run / "data/people").rglob("*.jpg"))) > len(expected)
    row = {f"data/people/{name}": i for i, name in enumerate(files)}
    np.testing.assert_allclose(np.stack([features[row[p]] for p in expected]), np.stack(list(expected.values())),
                               rtol=1e-5, atol=1e-5)


def test_search_ranks_the_folder_with_the_trained_model(folder_run, monkeypatch):
    monkeypatch.chdir(folder_run)
    query = sorted((folder_run / "data/people").iterdir())[-1]
    assert main(["search", "--model", "results/tiny/rep0/stage2/model.pt", "--query", str(query.relative_to(folder_run)),
                 "--gallery", "data/people", "--top", "5", "--out", "search"]) == 0
    with open("search/matches.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    queries = sorted(p.name for p in query.iterdir())
    assert len(rows) == 5 * len(queries) and {r["query"] for r in rows} == set(queries)
    assert all(r["gallery"] != f"{query.name}/{r['query']}" for r in rows)  # never an image with itself
    assert Path("search/matches.html").read_text().count('class="row"') == len(queries)


def test_the_onnx_export_matches_torch_through_onnxruntime(folder_run, monkeypatch):
    monkeypatch.chdir(folder_run)
    assert main(["export", "--model", "results/tiny/rep0/stage2/model.pt", "--format", "onnx", "--out", "m.onnx"]) == 0
    expected = workflow_features(folder_run)
    inputs = FeatureExtractor("results/tiny/rep0/stage2/model.pt").inputs
    batch = test_transform(to_pixels(list(expected), (inputs.cache_height, inputs.cache_width)), test_spec(inputs))
    session = ort.InferenceSession("m.onnx", providers=["CPUExecutionProvider"])
    out = session.run(["features"], {"images": batch.numpy()})[0]
    np.testing.assert_allclose(out, np.stack(list(expected.values())), rtol=0, atol=1e-4)
