"""`FeatureExtractor`: test features of one's own images from a trained `model.pt`."""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..config import FeatureConfig, StageConfig
from ..io import UnreadableFileError
from ..models.file import InputSettings, ModelFile
from ..train.distributed import resolve_device
from ..train.features import extract_features
from ..train.inputs import recorded_inputs, test_spec
from .images import ImageInput, to_pixels


def model_inputs(model: ModelFile, path: str | os.PathLike[str], input_size: tuple[int, int] | None = None,
                 flip: bool | None = None) -> InputSettings:
    """The input settings `model` was trained with, `input_size` (H, W) and `flip` replacing them when given.

    A model file written before the settings were recorded needs `input_size` (its stage's
    `augment: {height, width}`); its flip then defaults to the workflow's (`features.flip`, on).
    """
    recorded = InputSettings.from_meta(model.meta)
    if recorded is None:
        if input_size is None:
            raise UnreadableFileError(
                f"{path}: records no input size (written before model files recorded one); pass the size its "
                "stage trained at, the experiment's `augment: {height, width}` (input_size=(H, W), or "
                "--input-size H W)")
        recorded = recorded_inputs(StageConfig(), FeatureConfig())
    if input_size is not None and (recorded.height, recorded.width) != tuple(input_size):
        # A size of one's own: decoded straight to it, as for a stage without a cache size.
        height, width = input_size
        recorded = replace(recorded, height=height, width=width, cache_height=height, cache_width=width)
    return recorded if flip is None else replace(recorded, flip=flip)


class FeatureExtractor:
    """Features of images from a trained model file, exactly as the workflow's evaluation extracts them.

    For example::

        extract = FeatureExtractor("results/synthetic_resnet18/rep0/stage2/model.pt")
        features = extract(["a.jpg", "b.jpg"])   # (2, D) float32 on the CPU

    Called on image paths, PIL images or uint8 arrays (H x W x 3 RGB, or H x W grey) of any
    size, alone or in a list: each is resized to the input size the model was trained at
    (recorded in the file), normalised, and, if the model's experiment flip-averages its test
    features, averaged with its mirror image. Images go through the network `batch_size` at a
    time. The result is not L2-normalised; the workflow's ranking normalises before measuring
    Euclidean distances.

    `device`: "auto" (CUDA when visible), "cpu" or "cuda". `input_size` (H, W) and `flip`
    replace the recorded settings; `num_workers` processes decode image files (default: torch's
    thread count).
    """

    def __init__(self, model_path: str | os.PathLike[str], device: str = "auto", *, batch_size: int = 64,
                 input_size: tuple[int, int] | None = None, flip: bool | None = None,
                 num_workers: int | None = None):
        # Before the model file is read: a wrong argument is the caller's, not the file's.
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not (device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", str(device))):
            raise ValueError(f"device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if input_size is not None and not (len(input_size) == 2 and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in input_size)):
            raise ValueError(f"input_size {input_size!r}: expected (H, W), two positive integers")
        input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.model_path = Path(model_path)
        self.model_file = ModelFile.load(self.model_path)
        self.inputs = model_inputs(self.model_file, self.model_path, input_size, flip)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.model = self.model_file.build().to(self.device).eval()
        # The workflow's default layout; its kernels are the ones the evaluation's numbers come from.
        self.model.to(memory_format=torch.channels_last)
        self._spec = test_spec(self.inputs)

    @property
    def feature_dim(self) -> int:
        """D, the width of each feature."""
        return int(self.model.embedding_dim)

    def __call__(self, images: ImageInput | Iterable[ImageInput], *, progress: bool = False) -> torch.Tensor:
        """(N, D) float32 features on the CPU, one row per image in the order given.

        `progress` shows a progress bar (on a terminal) when there is more than one batch.
        """
        items = _as_list(images)
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        feats = []
        # disable=None: a bar on a terminal only, never in a log file.
        with tqdm(total=len(items), unit="img", desc="features", leave=False,
                  disable=None if progress and len(batches) > 1 else True) as bar:
            for batch in batches:
                pixels = to_pixels(batch, (self.inputs.cache_height, self.inputs.cache_width), self.num_workers)
                out, _ = extract_features(self.model, pixels, self._spec, device=self.device,
                                          batch_size=len(batch), flip=self.inputs.flip, channels_last=True)
                feats.append(out.float().cpu())
                bar.update(len(batch))
        return torch.cat(feats) if feats else torch.empty(0, self.feature_dim)


def _as_list(images: Any) -> Sequence[Any]:
    # One image (a path, a PIL image, an array of one image's shape) or many.
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        return [images] if images.ndim in (2, 3) else list(images)
    return list(images)
