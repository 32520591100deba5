"""Feature files of `clusteralign extract`: the features and the files they came from, by suffix.

- ``.npy``: the (N, D) float32 array; the file names, one a line, in ``<stem>.files.txt`` beside it;
- ``.pt``: ``{"features": (N, D) float32 tensor, "files": [...], "model": path, "input": {...}}``,
  readable with ``torch.load(weights_only=True)``;
- ``.parquet``: one row per image, columns ``file`` (text) and ``feature`` (a list of D float32),
  the model path and input settings in the schema's metadata (needs pyarrow).

File names are relative to the folder the images were found in, with ``/`` separators.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path, torch_save, write_text

SUFFIXES = (".npy", ".pt", ".parquet")


class FeatureFileError(ValueError):
    """A feature file name with a suffix no writer knows, or a format whose library is missing."""


def check_suffix(path: str | os.PathLike[str]) -> str:
    """The format of `path` by its suffix; an error names the ones known."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise FeatureFileError(f"--out {path}: unknown feature file format {suffix or '(no suffix)'!r}; "
                               f"expected one of {', '.join(SUFFIXES)}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise FeatureFileError(f"--out {path}: writing .parquet needs pyarrow (pip install pyarrow, or the "
                                   "package's `deploy` extra); .npy and .pt need nothing more") from None
    return suffix


def file_list_path(npy_path: str | os.PathLike[str]) -> Path:
    """Where the file names of a ``.npy`` feature file are written."""
    path = Path(npy_path)
    return path.with_name(f"{path.stem}.files.txt")


def write_features(path: str | os.PathLike[str], features: Any, files: list[str], meta: dict[str, Any]) -> list[Path]:
    """Write `features` (N x D) and their `files` in the format of `path`'s suffix; returns what was written.

    `meta` (model path, input settings) goes where the format has room for it (.pt, .parquet).
    """
    suffix = check_suffix(path)
    array = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    if array.ndim != 2 or array.shape[0] != len(files):
        raise FeatureFileError(f"{path}: expected one feature row per file, got {array.shape} for {len(files)} files")
    path = Path(path)
    if suffix == ".npy":
        # The list first: a complete .npy implies its list is complete too.
        write_text(file_list_path(path), "".join(f"{f}\n" for f in files))
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, array)
        return [path, file_list_path(path)]
    if suffix == ".pt":
        import torch

        torch_save({"features": torch.from_numpy(array), "files": list(files), **meta}, path)
        return [path]
    _write_parquet(path, array, files, meta)
    return [path]


def _write_parquet(path: Path, array: np.ndarray, files: list[str], meta: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    feature = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1), type=pa.float32()), array.shape[1])
    table = pa.table({"file": pa.array(files, type=pa.string()), "feature": feature})
    table = table.replace_schema_metadata({"clusteralign": json.dumps(meta, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_features(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """(features N x D float32, file names) of a file `write_features` wrote."""
    suffix = check_suffix(path)
    path = Path(path)
    if suffix == ".npy":
        files = file_list_path(path).read_text(encoding="utf-8").splitlines()
        return np.load(path, allow_pickle=False), files
    if suffix == ".pt":
        from ..io import torch_load_mapping

        obj = torch_load_mapping(path, ("features", "files"), "a clusteralign feature file")
        return obj["features"].numpy(), list(obj["files"])
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    width = table.schema.field("feature").type.list_size
    flat = table.column("feature").combine_chunks().flatten().to_numpy()
    return flat.reshape(-1, width).astype(np.float32, copy=False), table.column("file").to_pylist()
