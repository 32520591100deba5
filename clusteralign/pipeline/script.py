"""What every workflow script does around its one call into the package."""

from __future__ import annotations

import logging
import os
import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from ..io import remove_stale_temporaries


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # SLURM's time limit and Snakemake's own cancellation send SIGTERM: as an exception it
    # unwinds the step, so a file being written is removed rather than left half done.
    raise SystemExit(128 + signum)


@contextmanager
def workflow_step(smk: Any) -> Iterator[logging.Logger]:
    """Log to the rule's log file and stderr, use the rule's thread count, record any failure."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if smk.log:
        os.makedirs(os.path.dirname(str(smk.log[0])) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(str(smk.log[0]), mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    logging.captureWarnings(True)
    log = logging.getLogger(f"clusteralign.{smk.rule}")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # This job is its outputs' only writer: what a killed attempt left half written goes.
    for output in smk.output:
        for stale in remove_stale_temporaries(output):
            log.info("removed %s, left by an earlier attempt", stale)

    import torch

    torch.set_num_threads(max(1, int(smk.threads)))
    try:
        yield log
    except Exception:
        log.exception("rule %s failed", smk.rule)
        raise
