"""The workflow on a real SLURM: the cluster profile, results equal to a local run, a killed job resumed.

Starts a single-node SLURM on localhost with tests/slurm/cluster.sh (munged, MariaDB, slurmdbd,
slurmctld, slurmd; needs root and Debian's packages, skipped with the reason otherwise), runs the
tiny workflow through `snakemake --profile profiles/slurm --profile tests/slurm/profile` while the
same workflow runs locally, kills stage 1's SLURM job once it has written a checkpoint, and checks
that the retry resumed from it and that both runs reached the same weights and metrics.
Set CLUSTERALIGN_REQUIRE_SLURM=1 (as .ci/run does) to fail instead of skipping.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from clusteralign.models.file import ModelFile

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "tests/slurm/cluster.sh"
PROFILES = ("--profile", str(ROOT / "profiles/slurm"), "--profile", str(ROOT / "tests/slurm/profile"))
NEEDED = ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "sbatch", "squeue", "sacct", "scancel")
# Long enough that stage 1's job is still training well after its first checkpoint (~0.3 s an epoch).
STAGE1_EPOCHS = 16
RUN_LIMIT_S = 480
STAGES = ("stage1", "stage2", "stage2_control")
GPU_RULES = ("train", "anchors", "extract_features")
# The executor plugin's job comment: rule_<rule>_wildcards_<wildcard values joined by "_">.
STAGE1_JOB = "rule_train_wildcards_tiny_0_stage1"
SLURM_VARIABLES = ("SBATCH_PARTITION", "SBATCH_ACCOUNT", "CLUSTERALIGN_GPU_PARTITION")


def _cluster_unavailable() -> str | None:
    missing = [name for name in NEEDED if shutil.which(name) is None]
    if missing:
        return (f"SLURM is not installed (missing {', '.join(missing)}); "
                "`tests/slurm/cluster.sh install` installs Debian's packages (as root)")
    if os.geteuid() != 0:
        return "starting munged and the SLURM daemons needs root"
    conf = Path("/etc/slurm/slurm.conf")
    base = Path(os.environ.get("CLUSTERALIGN_SLURM_BASE", "/tmp/clusteralign-slurm"))
    if conf.is_symlink() and not Path(os.readlink(conf)).is_relative_to(base / "etc"):
        return f"{conf} links to {os.readlink(conf)}: another test cluster is configured here"
    if conf.exists() and not conf.is_symlink():
        return f"{conf} belongs to a configured cluster; not starting a test cluster over it"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster():
    """KEY -> value from `cluster.sh up`; afterwards the daemons are stopped by pid, and checked gone."""
    reason = _cluster_unavailable()
    if reason:
        if os.environ.get("CLUSTERALIGN_REQUIRE_SLURM") == "1":
            pytest.fail(f"CLUSTERALIGN_REQUIRE_SLURM=1, but {reason}")
        pytest.skip(reason)
    up = subprocess.run([str(CLUSTER_SH), "up"], capture_output=True, text=True, timeout=180)
    if up.returncode != 0:
        subprocess.run([str(CLUSTER_SH), "down"], capture_output=True, timeout=180)
        pytest.fail(f"tests/slurm/cluster.sh up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    info = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    pids = {key.removeprefix("PID_"): int(value) for key, value in info.items() if key.startswith("PID_")}
    assert {"slurmctld", "slurmd", "slurmdbd", "mariadbd"} <= pids.keys(), up.stdout
    try:
        yield info
    finally:
        down = subprocess.run([str(CLUSTER_SH), "down"], capture_output=True, text=True, timeout=180)
        still = {name: pid for name, pid in pids.items() if _alive(pid)}
        assert down.returncode == 0 and not still, f"teardown left {still} running:\n{down.stderr}"


def _config() -> dict:
    config = yaml.safe_load((ROOT / "tests/config/tiny.yaml").read_text())
    config["experiments"]["tiny"]["stage1"]["epochs"] = STAGE1_EPOCHS
    # "auto" (the CPU on a machine without a GPU) instead of tiny.yaml's "cpu": a stage forced
    # onto the CPU asks for no GPU, and this test checks that the GPU requests reach SLURM.
    config["experiments"]["tiny"]["stage1"]["device"] = "auto"
    return config


def _workdir(path: Path) -> Path:
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(_config()))
    return path


def _env(**slurm: str) -> dict[str, str]:
    """This process's environment with one thread per job and exactly the given SLURM variables."""
    env = {key: value for key, value in os.environ.items() if key not in SLURM_VARIABLES}
    return {**env, "OMP_NUM_THREADS": "1", **slurm}


def _snakemake(workdir: Path, *args: str, env: dict[str, str], nice: int = 0) -> subprocess.Popen:
    """Start the workflow of this checkout in `workdir`, logging to `workdir`/run.log, bounded by
    `timeout -k` (an executor that lost track of its jobs can ignore SIGTERM while it waits)."""
    cmd = ["nice", "-n", str(nice), "timeout", "-k", "20", str(RUN_LIMIT_S), sys.executable, "-m", "snakemake",
           "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    with open(workdir / "run.log", "w") as out:
        return subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)


def _log_tail(workdir: Path, chars: int = 6000) -> str:
    return (workdir / "run.log").read_text(errors="replace")[-chars:]


def _running_jobs() -> list[tuple[str, str]]:
    """(job id, comment) of the jobs SLURM lists as pending or running."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k"], capture_output=True, text=True, timeout=30, check=True)
    return [tuple(line.split("|", 1)) for line in out.stdout.splitlines() if "|" in line]


def _accounted_jobs(workdir: Path) -> list[dict[str, str]]:
    """The accounting database's records of the jobs run in `workdir` (allocations, not steps)."""
    fields = ["JobID", "Comment", "State", "Partition", "Account", "ReqTRES", "Timelimit", "WorkDir"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-S", "now-1hour", "-o", ",".join(fields)],
                         capture_output=True, text=True, timeout=30, check=True)
    records = [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines() if line]
    return [record for record in records if record["WorkDir"] == str(workdir)]


def _megabytes(text: str) -> float:
    # sacct writes memory in the largest unit that keeps two decimals: 32000M, 62.50G.
    value, unit = float(text[:-1]), text[-1]
    return value * {"M": 1, "G": 1024, "T": 1024**2}[unit]


def _rule_of(record: dict[str, str]) -> str:
    # The executor plugin submits with --comment rule_<rule>[_wildcards_<values>].
    match = re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", record["Comment"])
    assert match, record
    return match.group(1)


@dataclass
class Runs:
    """The finished runs, and what the test saw while the SLURM run was going."""

    local: Path
    slurm: Path
    defaults: Path
    bad_account: Path
    killed_job: str
    epochs_before_kill: int
    model_existed_at_kill: bool


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> Runs:
    base = tmp_path_factory.mktemp("slurm_workflow")
    local, slurm = _workdir(base / "local"), _workdir(base / "slurm")
    defaults, bad_account = _workdir(base / "defaults"), _workdir(base / "bad_account")
    t0 = time.monotonic()
    slurm_proc = _snakemake(slurm, *PROFILES, env=_env(
        SBATCH_PARTITION=cluster["PARTITION"], SBATCH_ACCOUNT=cluster["ACCOUNT"],
        CLUSTERALIGN_GPU_PARTITION=cluster["GPU_PARTITION"]))
    # The reference: the same workflow, config and thread counts, on this machine, niced so that it
    # runs in the time the SLURM run spends waiting for its status polls.
    local_proc = _snakemake(local, "--cores", "2", "--resources", "gpu=1", "--max-threads", "1",
                            env=_env(), nice=15)
    procs = [slurm_proc, local_proc]
    try:
        # Kill stage 1's job once it has a checkpoint and is still training: SIGTERM from the
        # scheduler to every process of the job's steps, which is how a time limit or a preemption
        # begins. (A plain `scancel` would leave the job "CANCELLED by <uid>", a state the executor
        # plugin does not take for a failure, so it would wait for the job forever; see README.)
        stage1 = slurm / "results/tiny/rep0/stage1"
        while not (stage1 / "checkpoints/last.pt").is_file():
            if slurm_proc.poll() is not None:
                pytest.fail(f"the SLURM run ended before stage 1 wrote a checkpoint:\n{_log_tail(slurm)}")
            assert time.monotonic() - t0 < RUN_LIMIT_S, "no stage-1 checkpoint in time"
            time.sleep(0.05)
        jobs = [job for job, comment in _running_jobs() if comment == STAGE1_JOB]
        assert len(jobs) == 1, f"expected one stage-1 training job, squeue lists {_running_jobs()}"
        model_existed = (stage1 / "model.pt").exists()
        # history.csv is written before each checkpoint, and deleted once the job has failed.
        with open(stage1 / "history.csv") as f:
            epochs_before_kill = sum(1 for _ in csv.DictReader(f))
        subprocess.run(["scancel", "--signal=TERM", jobs[0]], check=True, timeout=30)
        killed_at = time.monotonic() - t0

        # While the SLURM run notices the failure: the profile without any SLURM variable (one job),
        # and with an account SLURM does not know.
        target = "results/datasets/synthetic/manifest.csv"
        defaults_proc = _snakemake(defaults, *PROFILES, target, env=_env())
        bad_proc = _snakemake(bad_account, *PROFILES, target, env=_env(SBATCH_ACCOUNT="nosuchaccount"))
        procs += [defaults_proc, bad_proc]
        for workdir, proc in ((slurm, slurm_proc), (local, local_proc), (defaults, defaults_proc)):
            rc = proc.wait(timeout=RUN_LIMIT_S + 30)
            assert rc == 0, f"the run in {workdir} failed ({rc}):\n{_log_tail(workdir)}"
        slurm_s = time.monotonic() - t0
        bad_proc.wait(timeout=RUN_LIMIT_S + 30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"\nall runs done after {slurm_s:.0f}s; stage-1 job {jobs[0]} killed at {killed_at:.0f}s, after epoch "
          f"{epochs_before_kill} of {STAGE1_EPOCHS}; logs in {base}/*/run.log")
    return Runs(local, slurm, defaults, bad_account, jobs[0], epochs_before_kill, model_existed)


def test_results_equal_a_local_run(runs):
    for stage in STAGES:
        for name in ("eval/synthetic/metrics.json", "eval/synthetic/ranking.json", "anchors.json"):
            ours = json.loads((runs.slurm / "results/tiny/rep0" / stage / name).read_text())
            local = json.loads((runs.local / "results/tiny/rep0" / stage / name).read_text())
            assert ours == local, f"{stage}/{name} differs between the SLURM and the local run"
        ours_state = ModelFile.load(runs.slurm / f"results/tiny/rep0/{stage}/model.pt").state_dict
        local_state = ModelFile.load(runs.local / f"results/tiny/rep0/{stage}/model.pt").state_dict
        assert ours_state.keys() == local_state.keys()
        differing = [key for key in ours_state if not torch.equal(ours_state[key], local_state[key])]
        assert not differing, f"{stage} weights differ from the local run's: {differing[:5]}"
    assert (runs.slurm / "results/report.html").is_file()


def test_every_job_ran_on_slurm_with_the_profile_requests(runs, cluster):
    records = _accounted_jobs(runs.slurm)
    by_rule: dict[str, list[dict[str, str]]] = {}
    for record in records:
        by_rule.setdefault(_rule_of(record), []).append(record)
    assert {rule: len(jobs) for rule, jobs in by_rule.items()} == {
        "prepare_dataset": 1, "train": 4, "anchors": 3, "extract_features": 3, "evaluate": 3, "report": 1}
    for record in records:
        partition = cluster["GPU_PARTITION"] if _rule_of(record) in GPU_RULES else cluster["PARTITION"]
        assert (record["Partition"], record["Account"]) == (partition, cluster["ACCOUNT"]), record
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.v8+.yaml").read_text())
    # A job's attempt: its place among the records of the same rule and wildcards (the comment).
    attempts: dict[str, int] = {}
    attempt_of = {}
    for record in sorted(records, key=lambda r: int(r["JobID"])):
        attempts[record["Comment"]] = attempt_of[record["JobID"]] = attempts.get(record["Comment"], 0) + 1
    assert sorted(attempt_of[r["JobID"]] for r in records if r["Comment"] == STAGE1_JOB) == [1, 2]
    for rule, requests in profile["set-resources"].items():
        for record in by_rule[rule]:
            tres = dict(item.split("=", 1) for item in record["ReqTRES"].split(","))
            # "N * attempt": a retry asks for more memory.
            per_attempt = int(re.fullmatch(r"(\d+) \* attempt", requests["mem_mb"]).group(1))
            assert _megabytes(tres["mem"]) == per_attempt * attempt_of[record["JobID"]], record
            # GPU counts come from the rules (1; a training stage's world_size under torchrun).
            assert tres.get("gres/gpu") == ("1" if rule in GPU_RULES else None), record
            # An expression may depend on the job's wildcards (the train rule's on its stage).
            stage = record["Comment"].split("_wildcards_")[-1].split("_", 2)[-1]
            runtime = eval(str(requests["runtime"]), {"wildcards": SimpleNamespace(stage=stage)})
            hours, minutes = divmod(runtime, 60)
            assert record["Timelimit"] == f"{hours:02d}:{minutes:02d}:00", record


def test_without_slurm_variables_jobs_go_to_the_default_partition_and_account(runs, cluster):
    [record] = _accounted_jobs(runs.defaults)
    assert _rule_of(record) == "prepare_dataset" and record["State"] == "COMPLETED", record
    # No -p and no -A from the profile: the partition sinfo marks as default, the user's default account.
    assert (record["Partition"], record["Account"]) == (cluster["PARTITION"], cluster["ACCOUNT"]), record


def test_an_unknown_account_stops_the_run_at_submission(runs):
    log = _log_tail(runs.bad_account, 20000)
    assert "nosuchaccount appears to be invalid" in log, log
    assert _accounted_jobs(runs.bad_account) == []
    assert not (runs.bad_account / "results").exists()


def test_a_killed_training_job_is_resubmitted_and_resumes_from_its_checkpoint(runs):
    assert 1 <= runs.epochs_before_kill < STAGE1_EPOCHS
    assert not runs.model_existed_at_kill, "stage 1 had finished before it was killed"
    attempts = [r for r in _accounted_jobs(runs.slurm) if r["Comment"] == STAGE1_JOB]
    assert [(r["JobID"], r["State"]) for r in attempts] == [
        (runs.killed_job, "FAILED"), (attempts[-1]["JobID"], "COMPLETED")]
    log = (runs.slurm / "logs/train/tiny_rep0_stage1.log").read_text()
    resumed = re.search(r"stage1: resuming from \S+ after epoch (\d+)", log)
    assert resumed, f"the retry did not resume from the checkpoint:\n{log[-3000:]}"
    assert runs.epochs_before_kill <= int(resumed.group(1)) < STAGE1_EPOCHS
    with open(runs.slurm / "results/tiny/rep0/stage1/history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(1, STAGE1_EPOCHS + 1))
    # The killed attempt's partial output (history.csv) was deleted, never taken for its result.
    assert "Removing output files of failed job train since" in _log_tail(runs.slurm, 10**7)


def test_finished_slurm_run_has_nothing_left_to_do(runs):
    dry = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(runs.slurm),
         *PROFILES, "-n"], cwd=runs.slurm, capture_output=True, text=True, timeout=120, env=_env())
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
