"""What a checkpoint was trained on, so that a stale one is never resumed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from ..config import ModelConfig, StageConfig, result_settings, to_dict
from ..io import file_sha256


def stage_fingerprint(name: str, model: ModelConfig, stage: StageConfig, manifest: pd.DataFrame,
                      starting_files: list[Path | None]) -> str:
    """A digest of the stage's name, settings, data, starting weights and anchors, and the package's code.

    Run-only settings (checkpoint_every, augment_chunk) change nothing a checkpoint holds and are
    left out, so a stage resumes across a change of them.
    """
    h = hashlib.sha256()
    h.update(json.dumps([name, to_dict(model), result_settings(stage)], sort_keys=True).encode())
    h.update(pd.util.hash_pandas_object(manifest, index=False).to_numpy().tobytes())
    for path in starting_files:
        if path is not None:
            h.update(file_sha256(path).encode())
    h.update(source_digest())
    return h.hexdigest()


def source_digest() -> bytes:
    """A digest of every .py and .pyx file of the package.

    Snakemake reruns a job when its script changes, not when the package it calls does: after an
    edit to a loss or a model, a checkpoint of the old code must not be resumed.
    """
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(p for ext in ("*.py", "*.pyx") for p in package.rglob(ext)):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(file_sha256(path).encode())
    return h.digest()
