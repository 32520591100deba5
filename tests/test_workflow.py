"""The real Snakemake workflow: bad configs, one full tiny run, and what reruns (slow: every test runs Snakemake).

The workflow's static checks (lint, schema, imports, the README's commands) are in test_workflow_static.py.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from clusteralign.data.obtain import MARKER_NAME
from clusteralign.report.figures import FIGURE_KEYS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "tests/config/tiny.yaml").read_text())
# The finished run of most tests below: the tiny workflow with two replicates.
TINY_REPLICATED = copy.deepcopy(TINY)
TINY_REPLICATED["experiments"]["tiny"]["replicates"] = 2


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow of this checkout in `workdir` (which holds its own config.yaml)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--resources", "gpu=1", "--cores", "2", *args]
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


def test_default_config_dry_runs_before_any_data_exists(tmp_path):
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    jobs = planned_jobs(tmp_path)
    # three replicates of stage 1, stage 2 and the control
    assert jobs["prepare_dataset"] == 1 and jobs["train"] == 9 and jobs["evaluate"] == 9 and jobs["report"] == 1


def test_numbers_yaml_reads_as_text_are_numbers(tmp_path):
    # PyYAML (YAML 1.1) loads an unquoted 1e-6 as the string "1e-6".
    assert yaml.safe_load("lr: 1e-6") == {"lr": "1e-6"}
    config = copy.deepcopy(TINY)
    config["experiments"]["tiny"]["stage2"]["optimizer"] = {"lr": "1e-6"}
    write_config(tmp_path, config)
    assert planned_jobs(tmp_path)["train"] == 3


def planned_requests(workdir: Path) -> dict[str, set[tuple[int, int]]]:
    """Rule -> the (gpu, threads) requests of its planned jobs (absent: 0 GPUs, 1 thread)."""
    # Snakemake caps a job's requests at the global limits: allow more than any job asks for.
    out = snakemake(workdir, "-n", "--resources", "gpu=8", "--cores", "32").stdout
    requests: dict[str, set[tuple[int, int]]] = {}
    for rule, body in re.findall(r"^rule (\w+):\n((?:.+\n)*?\s+resources: .*)$", out, re.M):
        gpu = re.search(r"\bgpu=(\d+)", body.splitlines()[-1])
        threads = re.search(r"^\s+threads: (\d+)$", body, re.M)
        requests.setdefault(rule, set()).add((int(gpu.group(1)) if gpu else 0, int(threads.group(1)) if threads else 1))
    return requests


def planned_gpus(workdir: Path) -> dict[str, set[int]]:
    """Rule -> the `gpu` resource values of its planned jobs (absent: 0)."""
    return {rule: {gpu for gpu, _ in jobs} for rule, jobs in planned_requests(workdir).items()}


def test_gpu_requests_follow_each_stages_device(tmp_path):
    config = copy.deepcopy(TINY)  # every stage on the CPU: no job holds a GPU
    write_config(tmp_path, config)
    assert {rule: g for rule, g in planned_gpus(tmp_path).items() if g != {0}} == {}
    config["experiments"]["tiny"]["stage1"].update(device="auto", world_size=2)
    write_config(tmp_path, config)
    gpus = planned_gpus(tmp_path)
    # stage 2 inherits the device and the process count
    assert gpus["train"] == {2}
    assert gpus["anchors"] == gpus["extract_features"] == {1}
    assert gpus["prepare_dataset"] == gpus["evaluate"] == gpus["report"] == {0}
    config["experiments"]["tiny"]["eval"] = {"device": "cuda"}  # the final evaluation on the GPU
    write_config(tmp_path, config)
    assert planned_gpus(tmp_path)["evaluate"] == {1}


def test_thread_requests_follow_what_each_job_spends_them_on(tmp_path):
    config = copy.deepcopy(TINY)  # every stage on the CPU: the README's two threads per job
    write_config(tmp_path, config)
    threads = {rule: {t for _, t in jobs} for rule, jobs in planned_requests(tmp_path).items()}
    assert threads["train"] == threads["anchors"] == threads["extract_features"] == {2}
    config["experiments"]["tiny"]["stage1"]["device"] = "auto"
    write_config(tmp_path, config)
    requests = planned_requests(tmp_path)
    for rule in ("train", "anchors", "extract_features"):
        assert requests[rule] == {(1, 8)}, rule
    # Ranking on the CPU keeps its two threads, so evaluations run beside the GPU jobs.
    assert requests["evaluate"] == {(0, 2)}
    # The job every other one waits for renders with what there is.
    assert requests["prepare_dataset"] == {(0, 16)}


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
        # an empty section is null: the typed check and the schema both refuse it, in one line
        (lambda c: c["experiments"]["tiny"].update(stage1=None),
         "experiments.tiny.stage1: expected a mapping of settings, got null (an empty section)"),
        (lambda c: c.update(report=None), "report: expected a mapping of settings, got null"),
        # YAML's .inf: at planning, not after an epoch
        (lambda c: c["experiments"]["tiny"]["stage1"].update(optimizer={"lr": float("inf")}),
         "experiments.tiny.stage1.optimizer.lr: expected a finite number, got inf"),
        (lambda c: c["experiments"]["tiny"]["stage1"].update(schedule={"milestones": [1, 5]}),
         "experiments.tiny.stage1.schedule.milestones: [5] not below epochs (2)"),
        # names the workflow's own outputs use, and names no folder can have
        (lambda c: c["experiments"].update(report=c["experiments"].pop("tiny")),
         "experiments.report: the name is reserved, because the workflow writes results/report itself; choose "
         "another (reserved: benchmarks, datasets, report, report.html, report.md, summary.csv)"),
        (lambda c: c["experiments"].update(Datasets=c["experiments"].pop("tiny")),
         "experiments.Datasets: the name is reserved, because the workflow writes results/datasets itself"),
        (lambda c: c["experiments"].update({"my run": c["experiments"].pop("tiny")}),
         "experiments: the name 'my run' is not allowed"),
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


def test_config_files_are_read_strictly_before_snakemake_reads_them(tmp_path):
    tiny = (ROOT / "tests/config/tiny.yaml").read_text()
    marker = tmp_path / "evaluated"
    yte = f"__use_yte__: true\nreport:\n  title: ?__import__('pathlib').Path({str(marker)!r}).touch() or 't'\n"
    (tmp_path / "config.yaml").write_text(yte + tiny.split("report:")[0])
    result = snakemake(tmp_path, "-n", check=False)
    # config.yaml is checked before Snakemake reads (and would template) it: nothing ran.
    assert result.returncode != 0 and not marker.exists()
    assert "config.yaml, line 1: __use_yte__ turns on Snakemake's YTE templating" in result.stdout + result.stderr
    # A --configfile Snakemake reads (YTE and all) before the workflow starts: refused still.
    (tmp_path / "config.yaml").write_text(tiny)
    (tmp_path / "overlay.yaml").write_text(yte)
    result = snakemake(tmp_path, "-n", "--configfile", "config.yaml", "overlay.yaml", check=False)
    assert result.returncode != 0 and "overlay.yaml, line 1: __use_yte__" in result.stdout + result.stderr
    # A key given twice in a --configfile, named with both lines.
    (tmp_path / "overlay.yaml").write_text("experiments:\n  tiny:\n    stage1:\n      epochs: 2\n      epochs: 200\n")
    result = snakemake(tmp_path, "-n", "--configfile", "config.yaml", "overlay.yaml", check=False)
    out = result.stdout + result.stderr
    assert "overlay.yaml: experiments.tiny.stage1.epochs is given twice, on lines 4 and 5" in out
    # A Python tag, named with its line, instead of "not valid JSON or YAML ... tab indentation".
    (tmp_path / "config.yaml").write_text(tiny.replace("title: tiny", 'title: !!python/object/apply:os.system ["x"]'))
    result = snakemake(tmp_path, "-n", check=False)
    line = tiny.split("title: tiny")[0].count("\n") + 1
    out = result.stdout + result.stderr
    assert f"config.yaml, line {line}: report.title has the tag !!python/object/apply:os.system" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "edit, path, needle",
    [
        (lambda c: c["datasets"].update(synthetic={"reader": "market1501", "source": {"archive": "data/m.zip"}}),
         "data/m.zip", "datasets.synthetic.source.archive: data/m.zip does not exist"),
        (lambda c: c["datasets"].update(synthetic={"reader": "market1501", "source": {"path": "data/Market"}}),
         "data/Market/", "datasets.synthetic.source.path: the folder data/Market does not exist"),
        (lambda c: c["models"]["tiny"].update(pretrained="weights/r18.pth"), "weights/r18.pth",
         "models.tiny.pretrained: the weights file weights/r18.pth does not exist"),
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
    write_config(workdir, TINY_REPLICATED)
    snakemake(workdir)
    return workdir


MISSING_FILES = {
    "archive": (lambda c: c["datasets"].update(market={"reader": "market1501", "source": {"archive": "data/M.zip"}})
                or c["experiments"].update(market_r18={"dataset": "market", "model": "tiny"}),
                "datasets.market.source.archive: data/M.zip does not exist"),
    "folder": (lambda c: c["datasets"].update(synthetic={"reader": "market1501", "source": {"path": "data/M"}}),
               "datasets.synthetic.source.path: the folder data/M does not exist"),
    "pretrained": (lambda c: c["models"]["tiny"].update(pretrained="weights/r18.pth"),
                   "models.tiny.pretrained: the weights file weights/r18.pth does not exist"),
}


@pytest.mark.slow
@pytest.mark.parametrize("missing", list(MISSING_FILES))
def test_a_finished_run_never_hides_a_missing_file(finished_run, tmp_path, missing):
    # Raised inside an input function, the archive's check made Snakemake look for another
    # producer of results/report.html, find the file from the earlier run and plan nothing;
    # a missing folder or weights file (an input) hid the same way. A dry run writes nothing.
    edit, needle = MISSING_FILES[missing]
    config = copy.deepcopy(TINY)
    edit(config)
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(finished_run, "-n", "--configfile", str(tmp_path / "other.yaml"), check=False)
    assert result.returncode != 0 and "Nothing to be done" not in result.stdout + result.stderr
    assert needle in result.stdout + result.stderr


def test_full_run_writes_the_report(finished_run):
    html = (finished_run / "results/report.html").read_text()
    assert "<img" in html and "data:image/png;base64," in html
    for rep in ("rep0", "rep1"):
        for stage in ("stage1", "stage2", "stage2_control"):
            for name in ("model.pt", "history.csv", "anchors.json", "eval/synthetic/metrics.json",
                         "eval/synthetic/ranking.json", "eval/synthetic/per_query.csv"):
                assert (finished_run / "results/tiny" / rep / stage / name).is_file(), (rep, stage, name)
    assert (finished_run / "results/tiny/rep0/stage1/tb").is_dir()
    assert (finished_run / "logs/train/tiny_rep0_stage1.log").read_text().count("stage1 epoch") == 2
    control = pd.read_csv(finished_run / "results/tiny/rep0/stage2_control/history.csv")
    stage2 = pd.read_csv(finished_run / "results/tiny/rep0/stage2/history.csv")
    assert "loss_anchor" not in control and "loss_anchor" in stage2


def test_replicates_train_with_their_own_seeds(finished_run):
    # Replicate r trains with seed + r: the same data, other weights.
    a, b = (torch.load(finished_run / f"results/tiny/rep{r}/stage1/model.pt", weights_only=True) for r in (0, 1))
    assert a["pids"] == b["pids"]
    assert not torch.equal(a["state_dict"]["classifier.weight"], b["state_dict"]["classifier.weight"])


def test_summary_and_report_show_every_replicate_and_the_intervals(finished_run):
    summary = pd.read_csv(finished_run / "results/summary.csv")
    assert len(summary) == 6 and set(summary["replicate"]) == {0, 1}
    assert set(summary["arm"]) == {"stage1", "stage2", "stage2_control"}
    assert summary.groupby("replicate")["seed"].first().tolist() == [0, 1]
    for _, row in summary.iterrows():
        path = f"results/tiny/rep{row.replicate}/{row.arm}/eval/synthetic/metrics.json"
        metrics = json.loads((finished_run / path).read_text())
        assert row["mAP"] == metrics["mAP"] and row["R1"] == metrics["R1"]
    md = (finished_run / "results/report.md").read_text()
    assert md.count("| 0 | Stage") == 3 and md.count("| 1 | Stage") == 3 and md.count("| mean ± sd |") == 3
    assert "95% Student t over the 2 replicates" in md
    assert re.search(r"tiny: the anchor loss's (mAP \w+|gain) over the control is (not )?distinguishable from zero", md)


def test_more_replicates_train_only_the_new_ones(finished_run, tmp_path):
    copy_dir = _edited(finished_run, tmp_path, lambda c: c["experiments"]["tiny"].update(replicates=3))
    out = snakemake(copy_dir, "-n").stdout
    assert planned_jobs(copy_dir) == Counter(
        {"train": 3, "anchors": 3, "extract_features": 3, "evaluate": 3, "report": 1, "all": 1})
    assert "rep0" not in out.split("rule report", 1)[0] and "rep1" not in out.split("rule report", 1)[0]


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
    config = copy.deepcopy(TINY_REPLICATED)
    config["datasets"]["synthetic"] = dict(reversed(config["datasets"]["synthetic"].items()))
    (copy_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned_jobs(copy_dir) == Counter()


def test_a_forced_rerun_of_stage1_retrains_nothing(finished_run, tmp_path):
    # Stage 1 resumes its finished checkpoint and rewrites the same model.pt byte for byte,
    # so stage 2 and the control, which fingerprint that file, resume theirs too.
    copy_dir = _edited(finished_run, tmp_path, lambda c: None)
    stage = "results/tiny/rep0/{}/model.pt".format
    before = (copy_dir / stage("stage1")).read_bytes()
    # --until: replicate 0's three trainings and what they need (stage 1's anchors), not the evaluations.
    snakemake(copy_dir, "--forcerun", stage("stage1"), "--until", stage("stage2"), stage("stage2_control"))
    assert (copy_dir / stage("stage1")).read_bytes() == before
    for name in ("stage1", "stage2", "stage2_control"):
        log = (copy_dir / f"logs/train/tiny_rep0_{name}.log").read_text()
        assert "resuming from" in log and " epoch 1/" not in log, (name, log[-2000:])


@pytest.mark.slow
def test_a_truncated_model_says_how_to_recover_and_that_works(finished_run, tmp_path):
    copy_dir = _edited(finished_run, tmp_path, lambda c: None)
    model = copy_dir / "results/tiny/rep0/stage1/model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    target = "results/tiny/rep0/stage1/anchors.json"
    for attempt in range(2):  # as before, the same failure each time
        result = snakemake(copy_dir, target, check=False)
        assert result.returncode != 0
        out = result.stdout + result.stderr
        assert "results/tiny/rep0/stage1/model.pt: not a readable torch file, perhaps truncated" in out
        assert "add `--forcerun results/tiny/rep0/stage1/model.pt` at the end of the command" in out
    # Stage 1 resumes its finished checkpoint and writes the same model again.
    snakemake(copy_dir, target, "--forcerun", "results/tiny/rep0/stage1/model.pt")
    assert model.read_bytes() == (finished_run / "results/tiny/rep0/stage1/model.pt").read_bytes()


def _edited(workdir: Path, tmp_path: Path, edit) -> Path:
    """A copy of the finished run with an edited config (timestamps and metadata kept)."""
    copy_dir = tmp_path / "copy"
    shutil.copytree(workdir, copy_dir, symlinks=True)
    config = copy.deepcopy(TINY_REPLICATED)
    edit(config)
    write_config(copy_dir, config)
    return copy_dir


@pytest.mark.parametrize(
    "edit, expected",
    [
        # a stage-2 setting: stage 2 and everything after it, never stage 1
        # (both replicates: stage 2 and its control)
        (lambda c: c["experiments"]["tiny"]["stage2"].update(optimizer={"lr": 1e-5}),
         {"train": 4, "anchors": 4, "extract_features": 4, "evaluate": 4, "report": 1, "all": 1}),
        # a stage-1 setting: from stage 1 on
        (lambda c: c["experiments"]["tiny"]["stage1"].update(epochs=3),
         {"train": 6, "anchors": 6, "extract_features": 6, "evaluate": 6, "report": 1, "all": 1}),
        # an evaluation-only setting: evaluation and the report
        (lambda c: c["experiments"]["tiny"].update(eval={"rerank": True}), {"evaluate": 6, "report": 1, "all": 1}),
        # a report-only setting: the report
        (lambda c: c["report"].update(title="another title"), {"report": 1, "all": 1}),
        # another test set: its preparation and the new evaluations of every trained stage, no training
        (lambda c: (c["datasets"].update(other={"reader": "synthetic", "generate": {**c["datasets"]["synthetic"]["generate"],
                                                                                   "seed": 1}}),
                    c["experiments"]["tiny"].update(test_datasets=["other"])),
         {"prepare_dataset": 1, "extract_features": 6, "evaluate": 6, "report": 1, "all": 1}),
        # where compiled kernels are kept, how often a stage checkpoints, how many batches it
        # augments at once, a dataset's default written out: nothing
        (lambda c: c.update(compile_cache="elsewhere"), {}),
        (lambda c: c["experiments"]["tiny"]["stage1"].update(checkpoint_every=2, augment_chunk=3), {}),
        (lambda c: c["datasets"]["synthetic"]["generate"].update(seed=0), {}),
        (lambda c: c["datasets"]["synthetic"].update(verify_images=False), {}),
    ],
    ids=["stage2", "stage1", "eval", "report", "test_datasets", "compile_cache", "run_only", "default_seed",
         "default_flag"],
)
def test_only_what_changed_reruns(finished_run, tmp_path, edit, expected):
    assert planned_jobs(_edited(finished_run, tmp_path, edit)) == Counter(expected)
