"""What every workflow script does around its one call into the package."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator


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

    import torch

    torch.set_num_threads(max(1, int(smk.threads)))
    try:
        yield log
    except Exception:
        log.exception("rule %s failed", smk.rule)
        raise
