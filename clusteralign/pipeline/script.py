"""What every workflow script does around its one call into the package."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..io import UnreadableFileError, remove_stale_temporaries
from ..train.compile_cache import compile_cache_dir, use_compile_cache
from .supervision import stop_with_snakemake


_FORK_HOOKS_REGISTERED = False
# Where the workflow writes what its jobs make (never a file the user gave, such as weights).
RESULTS = "results"


def with_rerun_hint(err: UnreadableFileError, inputs: Iterable[str]) -> UnreadableFileError | None:
    """`err` saying how to make the file again, when it is an input an earlier job wrote; else None.

    Snakemake sees a truncated model.pt as up to date, so running the workflow as before fails
    again; `--forcerun` makes the file afresh (a training stage resumes its finished checkpoint).
    """
    if err.path is None:
        return None
    path = Path(os.path.normpath(err.path))
    written = {Path(os.path.normpath(p)) for p in inputs if Path(os.path.normpath(p)).parts[:1] == (RESULTS,)}
    if path not in written:
        return None
    return UnreadableFileError(
        f"{err}. An earlier job of the workflow wrote it, so running the workflow as before fails again: add "
        f"`--forcerun {path}` at the end of the command to make it afresh", err.path)


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit in this process, so that an interrupted write is cleaned up.

    SLURM's time limit and Snakemake's cancellation send SIGTERM. Processes forked from this
    one (decoding workers) get SIGTERM's default back at the fork itself: a pool stops its
    workers with SIGTERM while it holds their queue's lock, and a Python-level handler runs
    only between bytecodes, so a SIGTERM landing just before a worker blocks on that lock was
    never acted on, and the pool waited for the worker forever (seen in a workflow run).
    """
    global _FORK_HOOKS_REGISTERED

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    if not _FORK_HOOKS_REGISTERED:
        # Blocked across the fork, so the child cannot receive it while it still has the
        # handler; the child unblocks it only once the default is back (a pending one then kills).
        os.register_at_fork(
            before=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}),
            after_in_parent=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM}),
            after_in_child=_default_sigterm_in_child,
        )
        _FORK_HOOKS_REGISTERED = True


def _default_sigterm_in_child() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


@contextmanager
def workflow_step(smk: Any) -> Iterator[logging.Logger]:
    """Log to the rule's log and stderr, set its threads and compile cache, record any failure."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if smk.log:
        os.makedirs(os.path.dirname(str(smk.log[0])) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(str(smk.log[0]), mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    logging.captureWarnings(True)
    log = logging.getLogger(f"clusteralign.{smk.rule}")
    exit_on_sigterm()
    # Killed with -9, Snakemake would leave this job running as an orphan.
    stop_with_snakemake(log)
    # This job is its outputs' only writer: what a killed attempt left half written goes.
    for output in smk.output:
        for stale in remove_stale_temporaries(output):
            log.info("removed %s, left by an earlier attempt", stale)

    # Inductor reads it at its first compile; torchrun's processes inherit it.
    use_compile_cache(compile_cache_dir(smk.config))
    import torch

    torch.set_num_threads(max(1, int(smk.threads)))
    try:
        yield log
    except UnreadableFileError as err:
        log.exception("rule %s failed", smk.rule)
        hinted = with_rerun_hint(err, smk.input)
        if hinted is None:
            raise
        log.error("%s", hinted)
        raise hinted from None
    except Exception:
        log.exception("rule %s failed", smk.rule)
        raise
    except SystemExit as stop:
        # Else a job stopped by its time limit or a cancel ends its log without a word.
        log.error("rule %s stopped (exit status %s), e.g. by SIGTERM from SLURM or Snakemake", smk.rule, stop.code)
        raise
    except KeyboardInterrupt:
        log.error("rule %s stopped by Ctrl-C", smk.rule)
        raise
