"""Where `torch.compile` keeps what it compiled, so that later processes need not compile again.

Inductor stores its compiled graphs, autograd graphs, Triton kernels and autotuning results
on disk, by default in the node's ``/tmp/torchinductor_<user>``. Jobs on one machine share
that; cluster jobs whose nodes (or jobs) have a private ``/tmp`` compile from nothing every
time. The workflow points the caches at a directory of its own (``compile_cache`` in the
config), on the filesystem its jobs share: stage 2 and the control then reuse the kernels
stage 1 compiled, and a rerun reuses its own. Entries are keyed by the graph, the input
shapes, the device and the torch version, and written by atomic rename, so concurrent jobs
and different machines can share one directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import ConfigError

ENV = "TORCHINDUCTOR_CACHE_DIR"
# Relative to the workflow's working directory, which cluster jobs share.
DEFAULT_COMPILE_CACHE = ".cache/torch_compile"


def compile_cache_dir(config: Mapping[str, Any]) -> str | None:
    """The workflow config's ``compile_cache``: a directory, or None for torch's own choice."""
    value = config.get("compile_cache", DEFAULT_COMPILE_CACHE)
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise ConfigError(f"compile_cache: expected a directory path or null, got {value!r}")


def use_compile_cache(directory: str | os.PathLike[str] | None) -> Path | None:
    """Keep torch.compile's on-disk caches in `directory`; None leaves torch's choice alone.

    Set, it replaces ``TORCHINDUCTOR_CACHE_DIR``: torch writes its default into that variable
    when ``torch._dynamo`` is imported, so a value found there may be no one's choice. Torch
    creates the directory when it first asks for it (importing ``torch._dynamo`` is enough).
    """
    if directory is None:
        return None
    path = Path(directory).absolute()
    os.environ[ENV] = str(path)
    return path
