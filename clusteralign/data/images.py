"""Image decoding: every image decoded once into one pre-allocated uint8 tensor.

Training and evaluation keep the whole (small, 256x128) dataset in memory as uint8, so decoding
happens once per run instead of once per epoch. PIL releases the GIL while decoding and
resizing, which is why a thread pool (not processes) gives parallel speed-up here without
copying the output between processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clusteralign.data.errors import CorruptImageError, DatasetError

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


def find_bad_images(paths: Sequence[PathLike], num_workers: int = 2) -> dict[str, str]:
    """Verify many images in a thread pool; return {path: reason} for the unreadable ones, in input order."""
    reasons = _map_in_threads(verify_image, list(paths), num_workers)
    return {os.fspath(p): r for p, r in zip(paths, reasons) if r is not None}


def load_images(
    paths: Sequence[PathLike], size: tuple[int, int] | None, num_workers: int = 2
) -> torch.Tensor:
    """Decode images into a uint8 RGB tensor N x 3 x H x W, bicubic-resized to ``size`` = (H, W) if given.

    Without ``size`` every image must already have the size of the first one. Row ``i`` of the
    result is ``paths[i]`` whatever the number of workers. A missing or corrupt file raises
    ``CorruptImageError`` naming it.
    """
    paths = [os.fspath(p) for p in paths]
    if size is not None:
        size = _check_size(size)
    if num_workers < 0:
        raise ValueError(
            f"num_workers must be >= 0 (0 or 1 decode in the calling thread), got {num_workers}."
        )
    if not paths:
        height, width = size if size is not None else (0, 0)
        return torch.empty((0, 3, height, width), dtype=torch.uint8)

    first = _decode(paths[0], size)
    height, width = first.shape[:2]
    # One allocation for the whole set; workers write straight into their own rows.
    out = torch.empty((len(paths), 3, height, width), dtype=torch.uint8)
    rows = out.numpy()
    rows[0] = first.transpose(2, 0, 1)

    def fill(index: int) -> None:
        pixels = _decode(paths[index], size)
        if pixels.shape[:2] != (height, width):
            raise DatasetError(
                f"image {paths[index]!r} is {pixels.shape[0]}x{pixels.shape[1]} (HxW) but {paths[0]!r} is "
                f"{height}x{width}; images of different sizes need a target size (pass size=(H, W))."
            )
        rows[index] = pixels.transpose(2, 0, 1)

    _map_in_threads(fill, range(1, len(paths)), num_workers)
    return out


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


def _map_in_threads(function, items, num_workers: int) -> list:
    """Apply ``function`` to ``items`` in order using ``num_workers`` threads; stop early on the first error."""
    items = list(items)
    if num_workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    executor = ThreadPoolExecutor(max_workers=num_workers)
    try:
        results = list(executor.map(function, items))
    except BaseException:
        # Drop the queued work so the error surfaces now rather than after every other image.
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    return results
