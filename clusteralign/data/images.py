"""Image decoding: every image decoded once into one pre-allocated uint8 tensor.

Training and evaluation keep the whole (small, 256x128) dataset in memory as uint8, so decoding
happens once per run instead of once per epoch. For images this small most of PIL's time is
Python (opening the file, parsing headers) that holds the GIL, so threads do not scale (on 2
cores, 2 threads decoded 128x64 JPEGs slower than 1); forked processes do, and they write
straight into one shared buffer, so nothing is copied back.
"""

from __future__ import annotations

import logging
import math
import mmap
import multiprocessing
import multiprocessing.pool
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from clusteralign.data.errors import CorruptImageError, DatasetError, listing

if TYPE_CHECKING:
    import torch

PathLike = str | os.PathLike[str]


def verify_image(path: PathLike) -> str | None:
    """Fully decode one image file; return None when it is readable, else the reason it is not."""
    try:
        with Image.open(path) as image:
            # verify() alone misses truncated JPEG data; a full decode catches every failure mode.
            image.load()
            if image.width < 1 or image.height < 1:
                return f"image has no pixels ({image.width}x{image.height})"
    except FileNotFoundError:
        return "file does not exist"
    except IsADirectoryError:
        return "is a folder, not an image file"
    except UnidentifiedImageError:
        return "not a recognised image format (empty, truncated header or not an image)"
    except Exception as exc:  # noqa: BLE001 - PIL signals bad data with many exception types
        return f"cannot be decoded: {type(exc).__name__}: {exc}"
    return None


def find_bad_images(paths: Sequence[PathLike], num_workers: int | None = None) -> dict[str, str]:
    """Verify many images; return {path: reason} for the unreadable ones, in input order.

    ``num_workers`` processes verify, as in `load_images`.
    """
    paths = [os.fspath(p) for p in paths]
    num_workers = _resolve_workers(num_workers)
    if _forks(num_workers, len(paths)):
        with _pool(num_workers, len(paths)) as pool:
            reasons = pool.map(verify_image, paths, chunksize=_chunk_size(len(paths), num_workers))
    else:
        reasons = [verify_image(p) for p in paths]
    return {p: r for p, r in zip(paths, reasons) if r is not None}


def unreadable_images(name: str, paths: Sequence[PathLike], drop_bad: bool, num_workers: int | None = None) -> set[str]:
    """Verify every image of dataset `name`: raise naming the unreadable ones, or, with
    ``drop_bad``, warn once and return them for the caller to leave out."""
    bad = find_bad_images(paths, num_workers=num_workers)
    if not bad:
        return set()
    listed = listing([f"{path} ({reason})" for path, reason in bad.items()])
    if not drop_bad:
        raise CorruptImageError(
            f"{name}: {len(bad)} image(s) cannot be read: {listed}. Replace them, or pass drop_bad=True to leave "
            "unreadable images out of the manifest."
        )
    logging.getLogger(__name__).warning("%s: dropped %d unreadable image(s): %s.", name, len(bad), listed)
    return set(bad)


def load_images(
    paths: Sequence[PathLike], size: tuple[int, int] | None, num_workers: int | None = None
) -> torch.Tensor:
    """Decode images into a uint8 RGB tensor N x 3 x H x W, bicubic-resized to ``size`` = (H, W) if given.

    Without ``size`` every image must already have the size of the first one. ``num_workers``
    processes decode (default: torch's thread count, i.e. the job's threads; 0 or 1 decode in
    this process). Row ``i`` of the result is ``paths[i]`` whatever the number of workers. A
    missing or corrupt file raises ``CorruptImageError`` naming it.
    """
    import torch

    paths = [os.fspath(p) for p in paths]
    if size is not None:
        size = _check_size(size)
    num_workers = _resolve_workers(num_workers)
    if not paths:
        height, width = size if size is not None else (0, 0)
        return torch.empty((0, 3, height, width), dtype=torch.uint8)

    first = _decode(paths[0], size)
    height, width = first.shape[:2]
    shape = (len(paths), 3, height, width)
    forked = _forks(num_workers, len(paths) - 1)  # the first image is decoded already
    # One allocation for the whole set, which every worker writes its own rows of. A forked
    # worker inherits an anonymous shared mapping (unlike torch's shared memory, not bounded by
    # a container's small /dev/shm).
    rows = (np.frombuffer(mmap.mmap(-1, math.prod(shape)), dtype=np.uint8).reshape(shape) if forked
            else np.empty(shape, dtype=np.uint8))
    rows[0] = first.transpose(2, 0, 1)
    job = _DecodeJob(paths, size, rows)
    if not forked:
        job(range(1, len(paths)))
        return torch.from_numpy(rows)
    chunk = _chunk_size(len(paths) - 1, num_workers)
    chunks = [range(i, min(i + chunk, len(paths))) for i in range(1, len(paths), chunk)]
    # Forked workers inherit the job as it is (initargs are not pickled under fork): the shared
    # rows stay shared, and each task sends only its range. The first error stops the others.
    with _pool(num_workers, len(chunks), _adopt, (job,)) as pool:
        for _ in pool.imap_unordered(_run_adopted, chunks):
            pass
    return torch.from_numpy(rows)


def _resolve_workers(num_workers: int | None) -> int:
    """The worker count asked for, by default torch's thread count (the job's threads)."""
    if num_workers is None:
        import torch

        return torch.get_num_threads()
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (0 or 1 work in the calling process), got {num_workers}.")
    return num_workers


def _forks(num_workers: int, items: int) -> bool:
    """Whether `items` are spread over forked worker processes."""
    # Forked, as torch's DataLoader workers are on Linux. Spawned ones would import torch again
    # (seconds each) and the caller's main script, which a Snakemake script does not guard. The
    # workers run only PIL and NumPy, never the parent's thread pools or CUDA, whose locks make
    # forking a threaded process unsafe (the synthetic writer spawns: rendering pays for the imports).
    return (num_workers > 1 and items > 1 and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)  # a daemon (a pool's worker) may not fork


def _pool(num_workers: int, tasks: int, initializer=None, initargs: tuple = ()) -> multiprocessing.pool.Pool:
    return multiprocessing.get_context("fork").Pool(min(num_workers, tasks), initializer, initargs)


def _chunk_size(items: int, num_workers: int) -> int:
    # About four chunks per worker keep every worker busy to the end.
    return max(1, min(256, math.ceil(items / (4 * num_workers))))


_ADOPTED: "_DecodeJob | None" = None


def _adopt(job: "_DecodeJob") -> None:
    global _ADOPTED
    _ADOPTED = job


def _run_adopted(indices: range) -> None:
    assert _ADOPTED is not None
    _ADOPTED(indices)


class _DecodeJob:
    """Decodes the images at some indices of ``paths`` into those rows of ``rows``."""

    def __init__(self, paths: list[str], size: tuple[int, int] | None, rows: np.ndarray):
        self.paths, self.size, self.rows = paths, size, rows

    def __call__(self, indices: range) -> None:
        height, width = self.rows.shape[2:]
        for index in indices:
            pixels = _decode(self.paths[index], self.size)
            if pixels.shape[:2] != (height, width):
                raise DatasetError(
                    f"image {self.paths[index]!r} is {pixels.shape[0]}x{pixels.shape[1]} (HxW) but "
                    f"{self.paths[0]!r} is {height}x{width}; images of different sizes need a target size "
                    "(pass size=(H, W))."
                )
            self.rows[index] = pixels.transpose(2, 0, 1)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Return ``size`` as (H, W) ints after checking it holds two positive integers."""
    try:
        height, width = (int(v) for v in size)
        valid = (height, width) == tuple(size) and height > 0 and width > 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"size must be None or two positive integers (height, width), got {size!r}.")
    return height, width


def _decode(path: str, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one image to an H x W x 3 uint8 RGB array, bicubic-resized to ``size`` if given."""
    try:
        with Image.open(path) as image:
            image.load()
            # Skip convert()'s full copy for the common case of an RGB file.
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            if size is not None and rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            return np.asarray(rgb)
    except Exception as exc:  # noqa: BLE001 - any decode failure becomes one error that names the file
        reason = verify_image(path) or f"{type(exc).__name__}: {exc}"
        raise CorruptImageError(
            f"cannot read image {path!r}: {reason}. Replace or delete the file, or rebuild the manifest "
            "with verify_images=True and drop_bad=True to leave unreadable images out."
        ) from exc
