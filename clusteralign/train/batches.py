"""An epoch's augmented training batches, several augmented per call.

On a GPU the augmentation of one batch of 64 is about a hundred small kernels, each with
little work, so their cost is mostly their count: the data path took 0.7 ms of a 9.9 ms
graphed ResNet-50 step on an H200 (the gap between the benchmark's model-only and full
step). Augmenting `chunk` batches per call pays that count once per chunk. The random
numbers are still drawn one batch at a time, in the same calls as without chunks, and every
choice depends only on an image's own row, so the batches are the same whatever the chunk
(tested); the chunk is a speed setting only.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .augment import AugmentSpec, train_transform, train_uniforms

# Batches per call on a GPU: 8 x 64 images at 256x128 keep the transform's float32
# intermediates near 1 GB while its per-batch launch cost falls eightfold.
CUDA_CHUNK = 8


def default_chunk(device: torch.device) -> int:
    """Batches augmented per call when the config leaves it to us: several on a GPU, one on the CPU.

    On the CPU a larger call is no faster (each operation already has enough work) and
    its intermediates fall out of cache.
    """
    return CUDA_CHUNK if device.type == "cuda" else 1


def augmented_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batches: torch.Tensor,
    spec: AugmentSpec,
    generator: torch.Generator,
    *,
    chunk: int = 1,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (augmented images, labels) for each row of `batches` (indices into `images`), in order.

    `chunk` rows are augmented per call. With the "normal" erasing fill the fill values are
    drawn per call, so there the chunk is 1 to keep the output independent of it.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    if spec.erasing_fill == "normal" and spec.random_erasing_prob > 0:
        chunk = 1
    size = batches.shape[1] if batches.dim() == 2 else 0
    for start in range(0, len(batches), chunk):
        rows = batches[start : start + chunk]
        flat = rows.reshape(-1)
        draws = [train_uniforms(size, spec, generator, images.device) for _ in range(len(rows))]
        u = draws[0] if len(draws) == 1 else torch.cat(draws)
        x = train_transform(images[flat], spec, generator, uniforms=u, channels_last=channels_last)
        y = labels[flat]
        for i in range(len(rows)):
            yield x[i * size : (i + 1) * size], y[i * size : (i + 1) * size]
