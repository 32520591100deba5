"""The real Snakemake workflow: lint, schema, bad config, one full tiny run, and what reruns."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clusteralign.data.obtain import MARKER_NAME
from clusteralign.report.figures import FIGURE_KEYS

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "tests/config/tiny.yaml").read_text())


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow of this checkout in `workdir` (which holds its own config.yaml)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--resources", "gpu=1", *args]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(workdir: Path) -> Counter:
    """Rule -> number of jobs a dry run would execute."""
    out = snakemake(workdir, "-n").stdout
    if "Nothing to be done" in out:
        return Counter()
    table = out.split("Job stats:", 1)[1]
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
                    if m.group(1) != "total"})


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def test_lint_and_format_are_clean():
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run([str(Path(sys.executable).parent / "snakefmt"), "--check", "."], cwd=ROOT,
                         capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_planning_imports_no_torch():
    # The Snakefile's imports run in every Snakemake start, each job's included: torch would
    # add seconds to every one of them.
    code = ("import sys, clusteralign.pipeline.workflow_config, clusteralign.config, clusteralign.data.dataset_config\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_committed_schema_is_generated_from_the_dataclasses():
    from clusteralign.schema import render

    assert (ROOT / "schemas/config.schema.yaml").read_text() == render(), (
        "schemas/config.schema.yaml is stale: run `python -m clusteralign.schema > schemas/config.schema.yaml`"
    )


def test_default_config_dry_runs_before_any_data_exists(tmp_path):
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    jobs = planned_jobs(tmp_path)
    assert jobs["prepare_dataset"] == 1 and jobs["train_stage1"] == 1 and jobs["train_stage2"] == 1
    assert jobs["train_stage2_control"] == 1 and jobs["evaluate"] == 3 and jobs["report"] == 1


def test_numbers_yaml_reads_as_text_are_numbers(tmp_path):
    # PyYAML (YAML 1.1) loads an unquoted 1e-6 as the string "1e-6".
    assert yaml.safe_load("lr: 1e-6") == {"lr": "1e-6"}
    config = copy.deepcopy(TINY)
    config["experiments"]["tiny"]["stage2"]["optimizer"] = {"lr": "1e-6"}
    write_config(tmp_path, config)
    assert planned_jobs(tmp_path)["train_stage2"] == 1


def planned_gpus(workdir: Path) -> dict[str, set[int]]:
    """Rule -> the `gpu` resource values of its planned jobs (absent: 0)."""
    # Snakemake caps a job's request at the global limit: allow more than any job asks for.
    out = snakemake(workdir, "-n", "--resources", "gpu=8").stdout
    gpus: dict[str, set[int]] = {}
    for rule, resources in re.findall(r"^rule (\w+):\n(?:.*\n)*?\s+resources: (.*)$", out, re.M):
        match = re.search(r"\bgpu=(\d+)", resources)
        gpus.setdefault(rule, set()).add(int(match.group(1)) if match else 0)
    return gpus


def test_gpu_requests_follow_each_stages_device(tmp_path):
    config = copy.deepcopy(TINY)  # every stage on the CPU: no job holds a GPU
    write_config(tmp_path, config)
    assert {rule: g for rule, g in planned_gpus(tmp_path).items() if g != {0}} == {}
    config["experiments"]["tiny"]["stage1"].update(device="auto", world_size=2)
    write_config(tmp_path, config)
    gpus = planned_gpus(tmp_path)
    # stage 2 inherits the device and the process count
    assert gpus["train_stage1"] == gpus["train_stage2"] == gpus["train_stage2_control"] == {2}
    assert gpus["anchors"] == gpus["extract_features"] == {1}
    assert gpus["prepare_dataset"] == gpus["evaluate"] == gpus["report"] == {0}
    config["experiments"]["tiny"]["eval"] = {"device": "cuda"}  # the final evaluation on the GPU
    write_config(tmp_path, config)
    assert planned_gpus(tmp_path)["evaluate"] == {1}


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: c["experiments"]["tiny"]["stage1"].update(optimiser={"lr": 1}), "optimiser"),
        (lambda c: c["experiments"]["tiny"]["stage1"].update(epochs="two"), "epochs"),
        (lambda c: c["experiments"]["tiny"]["stage1"].update(optimizer={"lr": "fast"}), "fast"),
        (lambda c: c["experiments"]["tiny"].update(model="resnet999"), "unknown model 'resnet999'"),
        (lambda c: c["experiments"]["tiny"].update(dataset="market"), "unknown dataset 'market'"),
        (lambda c: c["datasets"]["synthetic"].update(reader="nope"), "nope"),
        # ranges: the typed check names the key path and the bound
        (lambda c: c["experiments"]["tiny"]["stage1"].update(checkpoint_every=0),
         "experiments.tiny.stage1.checkpoint_every: must be at least 1, got 0"),
        (lambda c: c["experiments"]["tiny"].update(eval={"lambda_value": 2}), "experiments.tiny.eval.lambda_value"),
        (lambda c: c.update(compile_cache=3), "compile_cache: expected a directory path or null, got 3"),
        (lambda c: c.update(compile_cache=" "), "compile_cache: expected a directory path or null"),
        # a misspelt top-level key, a model nothing uses, a lone overlay
        (lambda c: c.update(experiment={}), "unknown top-level key(s) experiment; allowed: datasets"),
        (lambda c: c["models"].update(spare={"backbone": "resnet19"}), "models.spare.backbone"),
        (lambda c: c.pop("datasets"), "give config.yaml first: --configfile config.yaml your_overlay.yaml"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, edit, needle):
    config = copy.deepcopy(TINY)
    edit(config)
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert needle in output
    # One line naming the key, not the schema's dump of the whole schema and config.
    assert len(output.splitlines()) < 20, output
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "edit, path, needle",
    [
        (lambda c: c["datasets"].update(synthetic={"reader": "market1501", "source": {"archive": "data/m.zip"}}),
         "data/m.zip", "datasets.synthetic.source.archive: data/m.zip does not exist"),
        (lambda c: c["datasets"].update(synthetic={"reader": "market1501", "source": {"path": "data/Market"}}),
         "data/Market/", "Missing input files for rule prepare_dataset"),
        (lambda c: c["models"]["tiny"].update(pretrained="weights/r18.pth"), "weights/r18.pth",
         "Missing input files for rule train_stage1"),
    ],
    ids=["archive", "folder", "pretrained"],
)
def test_a_missing_local_file_stops_the_plan_naming_it(tmp_path, edit, path, needle):
    # A missing file a config points to is found before any job, not when its job runs (after
    # hours in a cluster's queue, say).
    config = copy.deepcopy(TINY)
    edit(config)
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    assert needle in result.stdout + result.stderr and path.rstrip("/") in result.stdout + result.stderr
    (tmp_path / path).parent.mkdir(parents=True)
    if path.endswith("/"):
        (tmp_path / path).mkdir()
    else:
        (tmp_path / path).write_bytes(b"")
    assert planned_jobs(tmp_path)["prepare_dataset"] == 1


def test_an_archive_deleted_after_extraction_is_not_needed(tmp_path):
    # docs/datasets.md: the extraction's record is trusted once the archive is gone.
    config = copy.deepcopy(TINY)
    config["datasets"]["synthetic"] = {"reader": "market1501", "source": {"archive": "data/m.zip"}}
    write_config(tmp_path, config)
    (tmp_path / "resources/datasets/synthetic").mkdir(parents=True)
    (tmp_path / "resources/datasets/synthetic" / MARKER_NAME).write_text("{}")
    assert planned_jobs(tmp_path)["prepare_dataset"] == 1


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    write_config(workdir, TINY)
    snakemake(workdir)
    return workdir


def test_full_run_writes_the_report(finished_run):
    html = (finished_run / "results/report.html").read_text()
    assert "<img" in html and "data:image/png;base64," in html
    for stage in ("stage1", "stage2", "stage2_control"):
        for name in ("model.pt", "history.csv", "anchors.json", "metrics.json", "ranking.json"):
            assert (finished_run / "results/tiny" / stage / name).is_file(), (stage, name)
    assert (finished_run / "results/tiny/stage1/tb").is_dir()
    assert (finished_run / "logs/train_stage1/tiny.log").read_text().count("stage1 epoch") == 2
    control = pd.read_csv(finished_run / "results/tiny/stage2_control/history.csv")
    assert "loss_anchor" not in control and "loss_anchor" in pd.read_csv(finished_run / "results/tiny/stage2/history.csv")


def test_snakemakes_own_report_labels_every_figure(finished_run, tmp_path):
    snakemake(finished_run, "--report", str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text()
    labelled = {(m["experiment"], m["figure"]) for m in re.finditer(
        r'"results/report/[^"]+\.png": \{[^{}]*"labels": \{"experiment": "(?P<experiment>[^"]+)", '
        r'"figure": "(?P<figure>[^"]+)"\}', html)}
    assert labelled == {("tiny", figure) for figure in FIGURE_KEYS}


def test_finished_workflow_has_nothing_to_do(finished_run):
    assert planned_jobs(finished_run) == Counter()


def test_reordered_dataset_keys_are_no_change(finished_run, tmp_path):
    copy_dir = _edited(finished_run, tmp_path, lambda c: None)
    config = copy.deepcopy(TINY)
    config["datasets"]["synthetic"] = dict(reversed(config["datasets"]["synthetic"].items()))
    (copy_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned_jobs(copy_dir) == Counter()


def test_a_forced_rerun_of_stage1_retrains_nothing(finished_run, tmp_path):
    # Stage 1 resumes its finished checkpoint and rewrites the same model.pt byte for byte,
    # so stage 2 and the control, which fingerprint that file, resume theirs too.
    copy_dir = _edited(finished_run, tmp_path, lambda c: None)
    before = (copy_dir / "results/tiny/stage1/model.pt").read_bytes()
    # --until: the three trainings and what they need (stage 1's anchors), not the evaluations.
    snakemake(copy_dir, "--forcerun", "train_stage1", "--until", "train_stage2", "train_stage2_control")
    assert (copy_dir / "results/tiny/stage1/model.pt").read_bytes() == before
    for rule in ("train_stage1", "train_stage2", "train_stage2_control"):
        log = (copy_dir / f"logs/{rule}/tiny.log").read_text()
        assert "resuming from" in log and " epoch 1/" not in log, (rule, log[-2000:])


def _edited(workdir: Path, tmp_path: Path, edit) -> Path:
    """A copy of the finished run with an edited config (timestamps and metadata kept)."""
    copy_dir = tmp_path / "copy"
    shutil.copytree(workdir, copy_dir, symlinks=True)
    config = copy.deepcopy(TINY)
    edit(config)
    write_config(copy_dir, config)
    return copy_dir


@pytest.mark.parametrize(
    "edit, expected",
    [
        # a stage-2 setting: stage 2 and everything after it, never stage 1
        (lambda c: c["experiments"]["tiny"]["stage2"].update(optimizer={"lr": 1e-5}),
         {"train_stage2": 1, "train_stage2_control": 1, "anchors": 2, "extract_features": 2, "evaluate": 2,
          "report": 1, "all": 1}),
        # a stage-1 setting: from stage 1 on
        (lambda c: c["experiments"]["tiny"]["stage1"].update(epochs=3),
         {"train_stage1": 1, "train_stage2": 1, "train_stage2_control": 1, "anchors": 3, "extract_features": 3,
          "evaluate": 3, "report": 1, "all": 1}),
        # an evaluation-only setting: evaluation and the report
        (lambda c: c["experiments"]["tiny"].update(eval={"rerank": True}), {"evaluate": 3, "report": 1, "all": 1}),
        # a report-only setting: the report
        (lambda c: c["report"].update(title="another title"), {"report": 1, "all": 1}),
        # where compiled kernels are kept, how often a stage checkpoints, how many batches it
        # augments at once, a dataset's default written out: nothing
        (lambda c: c.update(compile_cache="elsewhere"), {}),
        (lambda c: c["experiments"]["tiny"]["stage1"].update(checkpoint_every=2, augment_chunk=3), {}),
        (lambda c: c["datasets"]["synthetic"]["generate"].update(seed=0), {}),
        (lambda c: c["datasets"]["synthetic"].update(verify_images=False), {}),
    ],
    ids=["stage2", "stage1", "eval", "report", "compile_cache", "run_only", "default_seed", "default_flag"],
)
def test_only_what_changed_reruns(finished_run, tmp_path, edit, expected):
    assert planned_jobs(_edited(finished_run, tmp_path, edit)) == Counter(expected)
