"""Taking turns on a file: an exclusive ``flock`` held for a block, for jobs preparing the same data."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def flocked(path: Path, mode: str, waiting: str, *, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (opened with ``mode``) for the block; log ``waiting`` if it waits.

    ``remove``: ``path`` is a lock file of its own, deleted when the block ends. A waiter that
    then gets the lock of the deleted file opens ``path`` again, so one process holds it at a time.
    """
    while True:
        lock = open(path, mode)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("%s", waiting)
                fcntl.flock(lock, fcntl.LOCK_EX)
            if remove and (not path.exists() or os.stat(path).st_ino != os.fstat(lock.fileno()).st_ino):
                continue  # its holder deleted it on the way out: lock the current file instead
            try:
                yield
            finally:
                if remove:
                    path.unlink(missing_ok=True)
                fcntl.flock(lock, fcntl.LOCK_UN)
            return
        finally:
            lock.close()
