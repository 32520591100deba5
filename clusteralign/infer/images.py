"""Images given to a trained model: the files of a folder, and any input turned into a uint8 batch.

Decoding follows the workflow's (`data.images.load_images`): PIL, RGB, a bicubic resize to the
size the model's images were cached at. A PIL image or an array goes through the same steps,
so a file and its decoded pixels give the same features.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image

from ..data.errors import CorruptImageError, DatasetError
from ..data.layout import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    import torch

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


class ImageInputError(DatasetError):
    """An image input that is not a readable image, or a folder that holds none."""


def find_images(folder: str | os.PathLike[str], what: str = "--images") -> list[Path]:
    """The image files (.jpg, .jpeg, .png, any case) under `folder` and its sub-folders, sorted.

    Hidden files and folders are skipped. `what` names the folder's option in errors.
    """
    root = Path(folder)
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise ImageInputError(f"{what} {root}: {state}; expected a folder of {', '.join(IMAGE_EXTENSIONS)} images")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
        raise ImageInputError(f"{what} {root}: holds no images; expected {', '.join(IMAGE_EXTENSIONS)} files "
                              "(in it or in its sub-folders)")
    # Sorted by their path inside the folder, whatever order the file system lists them in.
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _resized(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """H x W x 3 uint8 RGB at `size` = (H, W), as `data.images` decodes a file."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(rgb)


def _array_image(array: np.ndarray, index: int) -> Image.Image:
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ImageInputError(f"image {index}: expected a uint8 array of shape (H, W, 3) (RGB) or (H, W) (grey), "
                              f"got {array.dtype} of shape {array.shape}")
    if min(array.shape[:2]) < 1:
        raise ImageInputError(f"image {index}: the array has no pixels (shape {array.shape})")
    return Image.fromarray(array)


def to_pixels(items: Sequence[Any], size: tuple[int, int], num_workers: int | None = None) -> "torch.Tensor":
    """A uint8 batch (N x 3 x H x W) at `size` of image paths, PIL images and uint8 arrays, in order.

    Files are decoded by `num_workers` processes (as `data.images.load_images`); an unreadable
    one raises naming it.
    """
    import torch

    from ..data.images import load_images, verify_image

    rows = np.empty((len(items), 3, *size), dtype=np.uint8)
    files = [i for i, item in enumerate(items) if isinstance(item, (str, os.PathLike))]
    if files:
        paths = [items[i] for i in files]
        try:
            rows[files] = load_images(paths, size, num_workers=num_workers).numpy()
        except CorruptImageError as err:
            # Named again without the manifest advice the workflow's decoder gives.
            bad = next(((p, reason) for p in paths if (reason := verify_image(p)) is not None), None)
            raise ImageInputError(f"cannot read image {bad[0]}: {bad[1]}" if bad else str(err)) from None
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            continue
        if isinstance(item, np.ndarray):
            item = _array_image(item, i)
        if not isinstance(item, Image.Image):
            raise ImageInputError(f"image {i}: expected a file path, a PIL image or a uint8 array, "
                                  f"got {type(item).__name__}")
        rows[i] = _resized(item, size).transpose(2, 0, 1)
    return torch.from_numpy(rows)
