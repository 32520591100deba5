"""An epoch's augmented batches: the same batches whatever the chunk, on the CPU and on a GPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from clusteralign.config import ConfigError, StageConfig
from clusteralign.train.augment import AugmentInputError, AugmentSpec, train_transform, train_uniforms
from clusteralign.train.batches import CUDA_CHUNK, augmented_batches, default_chunk

# Enlarged from the cache, flipped, padded and cropped, erased: every random step is on.
SPEC = AugmentSpec(height=32, width=16, pad=3)


def cache(n: int = 40, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 24, 12), dtype=torch.uint8, generator=g)
    return images.to(device), (torch.arange(n) % 10).to(device)


def epoch_batches(device: str = "cpu", num: int = 7, size: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 40, (num, size), generator=g).to(device)


def run(chunk: int, spec: AugmentSpec = SPEC, device: str = "cpu", channels_last: bool = False):
    images, labels = cache(device=device)
    gen = torch.Generator(device=device).manual_seed(5)
    out = [(x.clone(), y.clone()) for x, y in augmented_batches(
        images, labels, epoch_batches(device), spec, gen, chunk=chunk, channels_last=channels_last)]
    return out, gen.get_state()


@pytest.mark.parametrize("chunk", [2, 3, 7, 50])
def test_the_batches_do_not_depend_on_the_chunk(chunk: int) -> None:
    one, state_one = run(1)
    many, state_many = run(chunk)
    assert len(one) == len(many) == 7
    for (x1, y1), (xc, yc) in zip(one, many):
        assert torch.equal(x1, xc) and torch.equal(y1, yc)
    # The next epoch starts from the same random state too.
    assert torch.equal(state_one, state_many)


def test_chunk_one_is_the_plain_per_batch_transform() -> None:
    images, labels = cache()
    gen = torch.Generator().manual_seed(5)
    expected = [(train_transform(images[idx], SPEC, gen), labels[idx]) for idx in epoch_batches()]
    got, _ = run(1)
    # The batches differ from one another (the random choices move on), and match the plain path.
    assert not torch.equal(got[0][0], got[1][0])
    for (x, y), (xe, ye) in zip(got, expected):
        assert torch.equal(x, xe) and torch.equal(y, ye)


def test_channels_last_batches_hold_the_same_values() -> None:
    plain, _ = run(3)
    cl, _ = run(3, channels_last=True)
    for (x, _), (xc, _) in zip(plain, cl):
        assert xc.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x, xc)


def test_normal_fill_falls_back_to_one_batch_per_call() -> None:
    spec = dataclasses.replace(SPEC, erasing_fill="normal", random_erasing_prob=1.0)
    one, _ = run(1, spec)
    many, _ = run(4, spec)
    for (x1, _), (xc, _) in zip(one, many):
        assert torch.equal(x1, xc)


def test_bad_chunk_and_uniforms_are_refused() -> None:
    images, labels = cache()
    with pytest.raises(ValueError, match="chunk must be at least 1, got 0"):
        next(augmented_batches(images, labels, epoch_batches(), SPEC, torch.Generator(), chunk=0))
    u = train_uniforms(5, SPEC, torch.Generator(), torch.device("cpu"))
    with pytest.raises(AugmentInputError, match=r"uniforms of shape \(6, 404\) for 6 images, got \(5, 404\)"):
        train_transform(images[:6], SPEC, torch.Generator(), uniforms=u)


def test_chunk_defaults_and_config() -> None:
    assert default_chunk(torch.device("cpu")) == 1
    assert default_chunk(torch.device("cuda")) == CUDA_CHUNK > 1
    assert StageConfig(augment_chunk=4).augment_chunk == 4
    with pytest.raises(ConfigError, match="augment_chunk: must be at least 0, got -1"):
        StageConfig(augment_chunk=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_batches_do_not_depend_on_the_chunk_on_cuda() -> None:
    one, state_one = run(1, device="cuda")
    many, state_many = run(CUDA_CHUNK, device="cuda", channels_last=True)
    for (x1, y1), (xc, yc) in zip(one, many):
        assert torch.equal(x1, xc) and torch.equal(y1, yc)
    assert torch.equal(state_one, state_many)
