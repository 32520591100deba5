"""Writing the dataset: every planned image rendered into a folder beside the target, then moved into place."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from clusteralign.io import install_folder

from .appearance import identity_looks
from .cameras import make_camera
from .planning import GALLERY_DIR, QUERY_DIR, TRAIN_DIR, Entry, plan
from .record import SPEC_FILENAME, existing, make_marker, matches, read_marker
from .rendering import render_image
from .spec import SyntheticSpec, SyntheticSpecError


def _counts(entries: list[Entry], spec: SyntheticSpec) -> dict[str, int]:
    per_folder = {TRAIN_DIR: 0, GALLERY_DIR: 0, QUERY_DIR: 0}
    for e in entries:
        per_folder[e.folder] += 1
    return {
        "train": per_folder[TRAIN_DIR],
        "query": per_folder[QUERY_DIR],
        "gallery": per_folder[GALLERY_DIR],
        "train_ids": spec.num_train_ids,
        "test_ids": spec.num_test_ids,
        "distractors": spec.num_distractors,
        "junk": spec.num_junk,
    }


def render_chunk(folder: Path, spec: SyntheticSpec, entries: list[Entry]) -> None:
    """Render and write `entries`; runs in the calling process or in a worker process."""
    cameras = {c: make_camera(spec, c) for c in range(1, spec.num_cameras + 1)}
    train_pids = list(range(1, spec.num_train_ids + 1))
    test_pids = list(range(spec.num_train_ids + 1, spec.num_train_ids + spec.num_test_ids + 1))
    looks = {**identity_looks(spec, train_pids, 0), **identity_looks(spec, test_pids, 1)}
    for entry in entries:
        data = render_image(entry, looks, cameras[entry.camid], spec)
        with open(folder / entry.folder / entry.name, "wb") as f:
            f.write(data)


def _render_into(folder: Path, spec: SyntheticSpec, workers: int) -> dict[str, int]:
    entries = plan(spec)
    for sub in (TRAIN_DIR, GALLERY_DIR, QUERY_DIR):
        (folder / sub).mkdir()
    if workers <= 1:
        render_chunk(folder, spec, entries)
    else:
        # Every image has its own random stream, so splitting the work changes no byte.
        # Spawned (not forked) workers: the caller may already run threads (torch).
        chunks = [entries[i :: 4 * workers] for i in range(4 * workers)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            # Consuming the results re-raises a worker's error here.
            list(pool.map(render_chunk, [folder] * len(chunks), [spec] * len(chunks), chunks))
    counts = _counts(entries, spec)
    # Written last: its presence means every image before it was written.
    (folder / SPEC_FILENAME).write_text(json.dumps(make_marker(spec, counts), indent=2) + "\n")
    return counts


def _default_workers(spec: SyntheticSpec) -> int:
    """One process for small sets (starting a worker costs about half a second), else the CPUs."""
    approx_images = (
        (spec.num_train_ids + spec.num_test_ids)
        * (spec.min_cameras_per_id + spec.max_cameras_per_id) / 2
        * (spec.min_images_per_id_per_camera + spec.max_images_per_id_per_camera) / 2
    )
    if approx_images < 1000:
        return 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, available or 1))


def generate_synthetic(root: str | os.PathLike, spec: SyntheticSpec | None = None, *,
                       overwrite: bool = False, workers: int | None = None) -> dict[str, int]:
    """Write the synthetic dataset for `spec` (default `SyntheticSpec()`) to `root`.

    Returns image counts: `train`, `query`, `gallery` (distractors and junk included) plus
    `train_ids`, `test_ids`, `distractors`, `junk`. The folder is generated beside `root` and
    renamed into place, so `root` is either absent or complete. If `root` already holds the
    complete dataset of an equal spec (per its `synthetic_spec.json`), nothing is written. A
    `root` made from another spec or generator version, or modified since, raises
    `SyntheticRootError` unless `overwrite=True`; a non-empty folder that is not a synthetic
    dataset is never written to. `workers` processes render the images (default: one for
    small sets, up to 8 for large ones); the files do not depend on it.
    """
    spec = SyntheticSpec() if spec is None else spec
    if not isinstance(spec, SyntheticSpec):
        raise SyntheticSpecError(f"spec must be a SyntheticSpec, got {type(spec).__name__}.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}.")
    root = Path(root)
    state = existing(root, spec, overwrite)
    if isinstance(state, dict):
        return state

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        os.chmod(tmp, 0o755)
        counts = _render_into(tmp, spec, _default_workers(spec) if workers is None else workers)
        if state:
            install_folder(tmp, root)
        else:
            try:
                os.replace(tmp, root)  # also succeeds onto an empty folder
            except OSError:
                # Another process finished the same dataset first: keep theirs if it matches.
                marker_path = root / SPEC_FILENAME
                if marker_path.is_file() and matches(read_marker(marker_path), spec):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return counts
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
