"""Batch augmentation: shapes, determinism, flip, pad+crop, erasing, normalisation, torchvision parity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from clusteralign.train.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentInputError,
    AugmentSpec,
    test_transform,
    train_transform,
)

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
SMALL = AugmentSpec(height=32, width=16, pad=3)
PLAIN = dataclasses.replace(SMALL, flip_prob=0.0, pad=0, random_erasing_prob=0.0)


def images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - MEAN) / STD


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shapes_dtypes_and_memory_format() -> None:
    batch = images(5, 40, 20)
    out = train_transform(batch, SMALL, gen(0))
    assert out.shape == (5, 3, 32, 16) and out.dtype == torch.float32 and out.is_contiguous()
    cl = train_transform(batch, SMALL, gen(0), channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl, out)
    test_out = test_transform(batch, SMALL, channels_last=True)
    assert test_out.shape == (5, 3, 32, 16) and test_out.is_contiguous(memory_format=torch.channels_last)


def test_deterministic_for_a_fixed_generator() -> None:
    batch = images(16, 32, 16)
    a = train_transform(batch, SMALL, gen(3))
    b = train_transform(batch, SMALL, gen(3))
    c = train_transform(batch, SMALL, gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = gen(3)
    first = train_transform(batch, SMALL, g)
    second = train_transform(batch, SMALL, g)
    assert torch.equal(first, a) and not torch.equal(second, a), "the generator advances"


def test_normalisation_values() -> None:
    batch = torch.full((1, 3, 32, 16), 200, dtype=torch.uint8)
    batch[:, 1] = 0
    batch[:, 2] = 255
    out = test_transform(batch, SMALL)
    expected = torch.tensor([(200 / 255 - 0.485) / 0.229, (0 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    assert torch.allclose(out[0, :, 5, 7], expected, atol=1e-5)
    assert torch.allclose(out, expected.view(1, 3, 1, 1).expand_as(out), atol=1e-5)


def test_flip_flips_exactly_the_selected_samples() -> None:
    batch = images(64, 32, 16)
    plain = test_transform(batch, SMALL)
    flipped = plain.flip(-1)
    all_flipped = train_transform(batch, dataclasses.replace(PLAIN, flip_prob=1.0), gen(0))
    assert torch.equal(all_flipped, flipped)
    half = train_transform(batch, dataclasses.replace(PLAIN, flip_prob=0.5), gen(1))
    is_plain = [torch.equal(half[i], plain[i]) for i in range(64)]
    is_flip = [torch.equal(half[i], flipped[i]) for i in range(64)]
    assert all(p != f for p, f in zip(is_plain, is_flip)), "each sample is either untouched or mirrored"
    assert 16 <= sum(is_flip) <= 48


@pytest.mark.parametrize("flip", [False, True])
def test_pad_and_crop_is_a_shifted_window_of_the_padded_image(flip: bool) -> None:
    pad = 3
    spec = dataclasses.replace(PLAIN, pad=pad, flip_prob=1.0 if flip else 0.0)
    batch = images(200, 32, 16, seed=5)
    out = train_transform(batch, spec, gen(2))
    src = batch.flip(-1) if flip else batch
    padded = normalise(torch.nn.functional.pad(src.float(), (pad, pad, pad, pad)))
    offsets = set()
    for i in range(200):
        matches = [
            (oy, ox)
            for oy in range(2 * pad + 1)
            for ox in range(2 * pad + 1)
            if torch.allclose(out[i], padded[i, :, oy : oy + 32, ox : ox + 16], atol=1e-6)
        ]
        assert len(matches) == 1, f"sample {i} matches no single window"
        offsets.add(matches[0])
    ys = {o[0] for o in offsets}
    xs = {o[1] for o in offsets}
    assert ys == set(range(2 * pad + 1)) and xs == set(range(2 * pad + 1)), "all offsets in [0, 2*pad] occur"


def erased_masks(batch: torch.Tensor, spec: AugmentSpec, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output with erasing and the per-pixel mask of what erasing changed (same random stream)."""
    out = train_transform(batch, spec, gen(seed))
    ref = train_transform(batch, dataclasses.replace(spec, random_erasing_prob=0.0), gen(seed))
    return out, (out != ref).any(dim=1)


def test_erasing_rate_area_ratio_and_fill() -> None:
    spec = dataclasses.replace(SMALL, height=64, width=32, random_erasing_prob=0.5, erasing_fill="mean_values")
    batch = images(1500, 64, 32, seed=9)
    out, mask = erased_masks(batch, spec, seed=4)
    erased = mask.flatten(1).any(dim=1)
    assert 0.45 <= erased.float().mean().item() <= 0.55
    mean_fill = torch.tensor(IMAGENET_MEAN).view(3, 1)
    for i in torch.nonzero(erased).flatten()[:300].tolist():
        rows = torch.nonzero(mask[i].any(dim=1)).flatten()
        cols = torch.nonzero(mask[i].any(dim=0)).flatten()
        h = int(rows[-1] - rows[0] + 1)
        w = int(cols[-1] - cols[0] + 1)
        assert int(mask[i].sum()) == h * w, "erased region is one rectangle"
        assert 0.015 <= h * w / (64 * 32) <= 0.42
        assert 0.3 * 0.7 <= h / w <= (1 / 0.3) * 1.3
        assert h < 64 and w < 32
        # reid-strong-baseline's fill: the raw ImageNet mean values written into normalised space.
        box = out[i][:, mask[i]]
        assert torch.allclose(box, mean_fill.expand_as(box))


def test_erasing_probability_one_and_other_fills() -> None:
    batch = images(300, 64, 32, seed=1)
    # The default fill is the paper's reference code's: 0 in normalised space, the mean pixel.
    assert SMALL.erasing_fill == "zero"
    spec = dataclasses.replace(SMALL, height=64, width=32, random_erasing_prob=1.0)
    out, mask = erased_masks(batch, spec, seed=0)
    # With 100 attempts practically every sample finds a box that fits.
    assert mask.flatten(1).any(dim=1).float().mean().item() >= 0.99
    assert torch.all(out.permute(1, 0, 2, 3)[:, mask] == 0)
    normal = dataclasses.replace(spec, erasing_fill="normal")
    out_n, mask_n = erased_masks(batch, normal, seed=0)
    vals = out_n.permute(1, 0, 2, 3)[:, mask_n]
    assert abs(vals.mean().item()) < 0.05 and abs(vals.std().item() - 1.0) < 0.05
    assert torch.equal(mask_n, mask), "the fill does not change where the boxes go"


def test_padding_is_black_before_normalisation() -> None:
    batch = torch.full((40, 3, 32, 16), 255, dtype=torch.uint8)
    out = train_transform(batch, dataclasses.replace(PLAIN, pad=3), gen(0))
    black = (-MEAN / STD).view(3)
    white = ((1 - MEAN) / STD).view(3)
    pixels = out.permute(0, 2, 3, 1).reshape(-1, 3)
    is_black = torch.isclose(pixels, black, atol=1e-5).all(dim=1)
    is_white = torch.isclose(pixels, white, atol=1e-5).all(dim=1)
    assert torch.all(is_black | is_white) and is_black.any() and is_white.any()


@pytest.mark.parametrize("shape", [(300, 150), (128, 64), (70, 41)])
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_test_transform_matches_torchvision_per_image(shape: tuple[int, int], mode: str) -> None:
    spec = dataclasses.replace(AugmentSpec(), interpolation=mode)  # type: ignore[arg-type]
    batch = images(3, *shape, seed=11)
    ours = test_transform(batch, spec)
    interp = InterpolationMode.BICUBIC if mode == "bicubic" else InterpolationMode.BILINEAR
    # PIL's fixed-point weights shift a few pixels by a grey level or two (noise images
    # are the worst case); a single-pass float resize would be off by up to ~18 levels.
    two_levels = 2.0 / 255 / min(IMAGENET_STD) + 1e-5
    for i in range(3):
        tensor_ref = normalise(TF.resize(batch[i], [256, 128], interpolation=interp, antialias=True).unsqueeze(0))
        pil = Image.fromarray(batch[i].permute(1, 2, 0).numpy())
        pil_resized = pil.resize((128, 256), Image.BICUBIC if mode == "bicubic" else Image.BILINEAR)
        pil_ref = normalise(torch.from_numpy(np.array(pil_resized)).permute(2, 0, 1).unsqueeze(0))
        for ref in (tensor_ref, pil_ref):
            diff = (ours[i] - ref[0]).abs()
            assert diff.max().item() <= two_levels
            assert (diff > 1e-4).float().mean().item() < 0.02


def test_train_without_randomness_equals_test_transform() -> None:
    batch = images(4, 100, 45)
    assert torch.equal(train_transform(batch, PLAIN, gen(0)), test_transform(batch, PLAIN))


def test_bad_input_and_spec_errors() -> None:
    with pytest.raises(AugmentInputError, match=r"uint8 image batch of shape \(N, 3, H, W\)"):
        test_transform(torch.zeros(2, 3, 8, 8), SMALL)
    with pytest.raises(AugmentInputError, match="uint8"):
        train_transform(torch.zeros(3, 8, 8, dtype=torch.uint8), SMALL, gen(0))
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentSpec(flip_prob=1.5)
    with pytest.raises(ValueError, match="erasing_area"):
        AugmentSpec(erasing_area=(0.5, 0.1))
    with pytest.raises(ValueError, match="interpolation"):
        AugmentSpec(interpolation="lanczos")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_for_the_same_random_stream() -> None:
    batch = images(32, 128, 64)
    cpu = train_transform(batch, AugmentSpec(), gen(0))
    cuda = train_transform(batch.cuda(), AugmentSpec(), gen(0))
    assert cuda.device.type == "cuda"
    close = torch.isclose(cuda.cpu(), cpu, atol=1e-4)
    # Resampling rounds on a different device: allow rare one-level differences.
    assert close.float().mean().item() > 0.995
    g_dev = torch.Generator(device="cuda").manual_seed(1)
    a = train_transform(batch.cuda(), AugmentSpec(), g_dev)
    b = train_transform(batch.cuda(), AugmentSpec(), torch.Generator(device="cuda").manual_seed(1))
    assert torch.equal(a, b)
