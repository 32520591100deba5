"""A workflow job stops itself when the Snakemake that started it is gone.

Locally, Snakemake runs a job's script from a thread of its own process, through bash. Killed
with -9, it left bash and the script running as orphans: a training job trained on for hours
while the user ran `--unlock` and started the workflow again. Every job watches its nearest
Snakemake ancestor; once that is gone, the job sends itself SIGTERM, which `exit_on_sigterm`
turns into a clean exit (a file being written is removed, the last checkpoint stays for the
rerun to resume).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import psutil

# Seconds between two looks at the Snakemake process: a job outlives it by about this much.
POLL_SECONDS = 2.0


def is_snakemake(cmdline: list[str]) -> bool:
    """Whether a command line starts Snakemake: `snakemake ...`, `python .../snakemake ...`, `python -m snakemake`.

    A shell whose command merely mentions .snakemake/scripts/ is not Snakemake.
    """
    if any(os.path.basename(arg) == "snakemake" for arg in cmdline[:2]):
        return True
    return any(arg == "-m" and following == "snakemake" for arg, following in zip(cmdline, cmdline[1:]))


def snakemake_ancestor(pid: int | None = None) -> psutil.Process | None:
    """The nearest ancestor of process `pid` (default: this one) that is Snakemake, or None."""
    try:
        process = psutil.Process(pid)
        for parent in process.parents():
            try:
                if is_snakemake(parent.cmdline()):
                    return parent
            except (psutil.AccessDenied, psutil.ZombieProcess):
                continue
    except psutil.NoSuchProcess:
        return None
    return None


def stop_when_gone(watched: psutil.Process, log: logging.Logger,
                   poll_seconds: float = POLL_SECONDS) -> threading.Thread:
    """Send this process SIGTERM once `watched` has ended; returns the (daemon) watching thread.

    `psutil.Process.is_running` also compares start times, so a new process that happens to
    reuse the pid does not count as the old one.
    """
    me = os.getpid()

    def watch() -> None:
        try:
            # A killed process nobody has reaped yet is a zombie: gone all the same.
            while watched.is_running() and watched.status() != psutil.STATUS_ZOMBIE:
                threading.Event().wait(poll_seconds)
        except psutil.NoSuchProcess:
            pass  # ended between the two looks
        log.error("Snakemake (pid %d), which started this job, is gone: stopping the job; a training stage keeps its "
                  "last checkpoint, and the next run resumes from it", watched.pid)
        os.kill(me, signal.SIGTERM)

    thread = threading.Thread(target=watch, name="snakemake-watch", daemon=True)
    thread.start()
    return thread


def stop_with_snakemake(log: logging.Logger) -> psutil.Process | None:
    """Watch this job's Snakemake (if it has one) and stop the job when it is gone; returns the one watched."""
    watched = snakemake_ancestor()
    if watched is not None:
        stop_when_gone(watched, log)
    return watched
