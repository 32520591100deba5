"""One training of a stage's output folder at a time.

Two processes training into one folder would overwrite each other's checkpoints. That happens
when Snakemake is killed and started again while its old job still runs (the old job stops
itself within seconds, `clusteralign.pipeline.supervision`), or when two Snakemake runs are
told to ignore each other's lock. The second training waits a little for the first to end,
then refuses, naming it.

The lock is an flock on a file in the folder: the kernel drops it when its holder exits, however
it exits, so no stale lock is ever left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".training.lock"
# Long enough for a stopped orphan (and its torchrun ranks) to exit; see supervision.POLL_SECONDS.
WAIT_SECONDS = 120.0


class StageBusyError(RuntimeError):
    """Another live process trains into the same stage folder."""


def _holder(lock: Path) -> str:
    """Who holds `lock`, as its holder wrote it down."""
    try:
        info = json.loads(lock.read_text())
        return (f"pid {info['pid']} on {info['host']}, started {info['started']} "
                f"({' '.join(info['command'])[:200]})")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its name"


@contextlib.contextmanager
def stage_lock(folder: str | os.PathLike[str], wait_seconds: float = WAIT_SECONDS) -> Iterator[None]:
    """Hold the training lock of the stage folder `folder` for the block.

    Waits up to `wait_seconds` for another holder to end, then raises StageBusyError naming it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with open(path, "a+") as f:
        deadline = time.monotonic() + wait_seconds
        waiting = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StageBusyError(
                        f"{folder}: another process is training this stage: {_holder(path)}. Two trainings of one "
                        "stage would overwrite each other's checkpoints; stop that one, or let it finish, then run "
                        "again") from None
                if not waiting:
                    log.warning("%s: another process is training this stage (%s); waiting up to %.0f s for it to end",
                                folder, _holder(path), wait_seconds)
                    waiting = True
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        try:
            f.seek(0)
            f.truncate()
            json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv}, f)
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
