"""A job stops itself when its Snakemake is gone, and one stage trains in one process at a time."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from clusteralign.pipeline.supervision import is_snakemake
from clusteralign.train.stage_lock import LOCK_NAME, StageBusyError, stage_lock

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cmdline, expected", [
    (["/work/.venv/bin/python", "/work/.venv/bin/snakemake", "--cores", "2"], True),
    (["/usr/local/bin/snakemake", "-n"], True),
    (["/usr/bin/python3", "-m", "snakemake", "--executor", "slurm-jobstep"], True),
    # Snakemake's shell running a job's script is not Snakemake.
    (["/bin/bash", "-c", "set -euo pipefail;  /work/.venv/bin/python /work/.snakemake/scripts/tmpab.train.py"], False),
    (["/work/.venv/bin/python", "/work/.snakemake/scripts/tmpab.train.py"], False),
    (["/usr/bin/python3", "-m", "pytest", "tests/test_snakemake.py"], False),
    ([], False),
])
def test_snakemake_is_recognised_by_its_command_line(cmdline, expected):
    assert is_snakemake(cmdline) is expected


WATCHING_JOB = """
import logging, sys, time
import psutil
from clusteralign.pipeline.script import exit_on_sigterm
from clusteralign.pipeline.supervision import stop_when_gone
logging.basicConfig(level=logging.INFO)
exit_on_sigterm()
stop_when_gone(psutil.Process(int(sys.argv[1])), logging.getLogger("job"), poll_seconds=0.1)
print("watching", flush=True)
try:
    time.sleep(60)
finally:
    print("cleaned up", flush=True)
"""


def test_a_job_stops_itself_cleanly_once_the_watched_process_is_gone():
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    job = subprocess.Popen([sys.executable, "-c", WATCHING_JOB, str(watched.pid)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline() == "watching\n"
        time.sleep(0.5)
        assert job.poll() is None  # on as long as the watched process is
        watched.kill()  # not reaped yet: a zombie is gone all the same
        out, err = job.communicate(timeout=20)
    finally:
        job.kill()
        watched.kill()
        watched.wait()
    # SIGTERM's exit: SystemExit(128 + 15), through every `finally` on the way out.
    assert job.returncode == 143 and "cleaned up" in out
    assert f"Snakemake (pid {watched.pid}), which started this job, is gone: stopping the job" in err


HOLDER = """
import sys, time
from clusteralign.train.stage_lock import stage_lock
with stage_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(folder: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_second_training_of_a_stage_refuses_naming_the_first(tmp_path):
    folder = tmp_path / "results/exp/stage1"
    holder = hold(folder, 60)
    try:
        started = time.monotonic()
        with pytest.raises(StageBusyError) as err:
            with stage_lock(folder, wait_seconds=1):
                pytest.fail("the lock was held by another process")
        assert time.monotonic() - started >= 1
        message = str(err.value)
        assert message.startswith(f"{folder}: another process is training this stage: pid {holder.pid} on "
                                  f"{socket.gethostname()}, started ")
        assert "stop that one, or let it finish, then run again" in message
    finally:
        holder.kill()  # as kill -9 would: the kernel drops the lock with the process
        holder.wait()
    with stage_lock(folder, wait_seconds=0):
        assert (folder / LOCK_NAME).is_file()


def test_a_second_training_waits_for_the_first_to_end(tmp_path, caplog):
    folder = tmp_path / "stage1"
    holder = hold(folder, 1.5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        with stage_lock(folder, wait_seconds=60):
            waited = time.monotonic() - started
    holder.wait()
    assert 0.5 < waited < 30
    assert f"another process is training this stage (pid {holder.pid} on" in caplog.text
    assert "waiting up to 60 s for it to end" in caplog.text
    # Held and released in one process, again and again.
    for _ in range(2):
        with stage_lock(folder, wait_seconds=0):
            pass


def training_processes(snakemake: psutil.Process) -> list[psutil.Process]:
    """The descendants of `snakemake` that run the training script."""
    return [p for p in snakemake.children(recursive=True)
            if any(arg.endswith(".train.py") for arg in p.cmdline())]


@pytest.mark.slow
def test_kill_9_of_snakemake_leaves_no_training_running(tmp_path):
    config = yaml.safe_load((ROOT / "tests/config/tiny.yaml").read_text())
    # Killed after its first epoch's checkpoint, with far more epochs to go than it could train meanwhile
    # (a tenth of a second each on an idle 2-core machine).
    config["experiments"]["tiny"]["stage1"].update(epochs=60, eval_every=0, anchor_diagnostics=False)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--resources", "gpu=1", "--cores", "2"]
    checkpoint = tmp_path / "results/tiny/rep0/stage1/checkpoints/last.pt"
    with open(tmp_path / "snakemake.out", "w") as out:
        run = subprocess.Popen([*cmd, "results/tiny/rep0/stage1/model.pt"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.is_file() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert checkpoint.is_file(), (tmp_path / "snakemake.out").read_text()[-3000:]
        trainings = training_processes(psutil.Process(run.pid))
        assert len(trainings) == 1
        run.kill()
        run.wait()
        killed = time.monotonic()
        gone, alive = psutil.wait_procs(trainings, timeout=60)
        assert alive == [], "the training outlived its Snakemake by a minute"
        assert time.monotonic() - killed < 30
    finally:
        run.kill()
        for process in training_processes(psutil.Process()):
            process.kill()
    log = (tmp_path / "logs/train/tiny_rep0_stage1.log").read_text()
    assert f"Snakemake (pid {run.pid}), which started this job, is gone: stopping the job" in log
    assert checkpoint.is_file() and not (tmp_path / "results/tiny/rep0/stage1/model.pt").exists()
    # The README's way back: unlock, run again; the stage resumes from its checkpoint.
    subprocess.run([*cmd, "--unlock"], check=True, capture_output=True)
    subprocess.run([*cmd, "--until", "results/tiny/rep0/stage1/model.pt"], check=True, capture_output=True, timeout=900)
    assert "resuming from" in (tmp_path / "logs/train/tiny_rep0_stage1.log").read_text()
