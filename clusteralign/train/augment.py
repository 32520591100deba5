"""Batch-wise image transforms run on the training device.

Input is a uint8 batch (N x C x H x W) already decoded in memory; every random choice
is drawn for the whole batch at once from an explicit ``torch.Generator`` and applied
with index arithmetic and masks, never with a Python loop over samples. The train
pipeline follows the strong ReID baseline: resize, horizontal flip, zero pad + random
crop, normalise, random erasing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Interpolation = Literal["bicubic", "bilinear"]
ErasingFill = Literal["zero", "mean_values", "normal"]


class AugmentInputError(ValueError):
    """The image batch handed to a transform has the wrong type or shape."""


@dataclass(frozen=True)
class AugmentSpec:
    """Settings of the train/test transforms (defaults: the strong baseline's).

    ``erasing_fill`` chooses what an erased box holds, in normalised space:

    - ``"zero"`` (default): 0 in every channel, i.e. the ImageNet mean colour, as the
      paper's reference code erases (``RandomErasing(mean=(0, 0, 0))`` after ``Normalize``);
    - ``"mean_values"``: the per-channel ImageNet mean *values* (0.485, 0.456, 0.406)
      written into the already-normalised tensor, exactly what reid-strong-baseline's
      ``RandomErasing(mean=PIXEL_MEAN)`` does after ``Normalize`` (a light grey box, not
      the mean colour);
    - ``"normal"``: independent standard-normal values per pixel and channel.

    Erasing follows Zhong et al. / the reference: with probability
    ``random_erasing_prob`` a box of area fraction ~ U(erasing_area) and aspect ratio
    h/w ~ U(erasing_ratio, 1/erasing_ratio) is tried up to ``erasing_attempts`` times
    until it fits strictly inside the image; if no attempt fits, nothing is erased.
    """

    height: int = 256
    width: int = 128
    flip_prob: float = 0.5
    pad: int = 10
    random_erasing_prob: float = 0.5
    erasing_area: tuple[float, float] = (0.02, 0.4)
    erasing_ratio: float = 0.3
    erasing_fill: ErasingFill = "zero"
    erasing_attempts: int = 100
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: Interpolation = "bicubic"

    def __post_init__(self) -> None:
        problems = []
        if self.height < 1 or self.width < 1:
            problems.append(f"height and width must be >= 1 (got {self.height} x {self.width})")
        if not 0.0 <= self.flip_prob <= 1.0:
            problems.append(f"flip_prob must lie in [0, 1] (got {self.flip_prob})")
        if self.pad < 0:
            problems.append(f"pad must be >= 0 (got {self.pad})")
        if not 0.0 <= self.random_erasing_prob <= 1.0:
            problems.append(f"random_erasing_prob must lie in [0, 1] (got {self.random_erasing_prob})")
        lo, hi = self.erasing_area
        if not 0.0 < lo <= hi <= 1.0:
            problems.append(f"erasing_area must be (low, high) with 0 < low <= high <= 1 (got {self.erasing_area})")
        if not 0.0 < self.erasing_ratio <= 1.0:
            problems.append(f"erasing_ratio must lie in (0, 1] (got {self.erasing_ratio})")
        if self.erasing_fill not in get_args(ErasingFill):
            problems.append(f"erasing_fill must be one of {get_args(ErasingFill)} (got {self.erasing_fill!r})")
        if self.erasing_attempts < 1:
            problems.append(f"erasing_attempts must be >= 1 (got {self.erasing_attempts})")
        if len(self.mean) != len(self.std) or len(self.mean) == 0:
            problems.append(f"mean and std need one value per channel (got {len(self.mean)} and {len(self.std)})")
        if any(s <= 0 for s in self.std):
            problems.append(f"std values must be > 0 (got {self.std})")
        if self.interpolation not in get_args(Interpolation):
            problems.append(f"interpolation must be one of {get_args(Interpolation)} (got {self.interpolation!r})")
        if problems:
            raise ValueError("Invalid AugmentSpec: " + "; ".join(problems) + ".")


def _check_images(images: torch.Tensor, spec: AugmentSpec) -> None:
    if not isinstance(images, torch.Tensor):
        raise AugmentInputError(f"expected the image batch as a torch.Tensor, got {type(images).__name__}.")
    channels = len(spec.mean)
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != channels:
        raise AugmentInputError(
            f"expected a uint8 image batch of shape (N, {channels}, H, W), got dtype {images.dtype} and shape "
            f"{tuple(images.shape)}."
        )


def _round_like_pil(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 255] and round half up, as PIL does when it stores a pass as uint8."""
    return x.clamp_(0.0, 255.0).add_(0.5).floor_()


def _resize(images: torch.Tensor, spec: AugmentSpec) -> torch.Tensor:
    """Float batch (integer values 0..255) at the spec size, matching PIL / torchvision resizing.

    PIL (and torchvision's uint8 tensor path) resamples horizontally, stores the result
    as uint8, then resamples vertically. Doing the two passes separately with the same
    clamp-and-round in between matches it to within one grey level on rare pixels,
    whereas a single float pass differs by up to ~18 levels next to sharp edges, where
    the bicubic overshoot would otherwise be carried into the second pass.
    """
    x = images.float()
    height, width = x.shape[-2:]
    # antialias=True also when enlarging: PyTorch's antialiased kernels are PIL's
    # (bicubic a=-0.5), which plain bicubic (a=-0.75) is not.
    if width != spec.width:
        x = F.interpolate(x, size=(height, spec.width), mode=spec.interpolation, align_corners=False, antialias=True)
        x = _round_like_pil(x)
    if height != spec.height:
        x = F.interpolate(
            x, size=(spec.height, spec.width), mode=spec.interpolation, align_corners=False, antialias=True
        )
        x = _round_like_pil(x)
    return x


@functools.lru_cache(maxsize=64)
def _channel_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A cached (1, C, 1, 1) tensor of per-channel values on ``device``.

    Building it from a Python list at every step would be a blocking host-to-device copy
    on CUDA, stalling the queue of kernels the training step relies on.
    """
    return torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1, 1)


def _normalize(x: torch.Tensor, spec: AugmentSpec) -> torch.Tensor:
    """(x / 255 - mean) / std in place, folded into one multiply-add."""
    scale = tuple(1.0 / (255.0 * s) for s in spec.std)
    shift = tuple(m / s for m, s in zip(spec.mean, spec.std))
    return x.mul_(_channel_constant(scale, x.device, x.dtype)).sub_(_channel_constant(shift, x.device, x.dtype))


def _uniform(n: int, columns: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # A generator on the images' device avoids the copy; otherwise it is queued without
    # a stream synchronisation.
    return torch.rand((n, columns), generator=generator, device=generator.device).to(device, non_blocking=True)


def _randint_below(u: torch.Tensor, upper: torch.Tensor | int) -> torch.Tensor:
    """Integers in [0, upper) from uniforms in [0, 1)."""
    scaled = torch.floor(u * upper).long()
    # u < 1 in exact arithmetic, but u * upper may round up to upper in float32.
    if isinstance(upper, int):
        return scaled.clamp_max(upper - 1)
    return torch.minimum(scaled, upper - 1)


def _flip_pad_crop(x: torch.Tensor, flip: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, pad: int) -> torch.Tensor:
    """Flip selected samples, zero-pad by ``pad`` and crop at per-sample offsets, as one gather.

    Output pixel (i, j) of sample n is padded pixel (i + oy, j + ox), i.e. source pixel
    (i + oy - pad, j + ox - pad) of the (possibly flipped) image, or 0 outside it.
    """
    n, c, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).unsqueeze(0) + (oy - pad).unsqueeze(1)
    cols = torch.arange(w, device=dev).unsqueeze(0) + (ox - pad).unsqueeze(1)
    inside = ((rows >= 0) & (rows < h)).unsqueeze(2) & ((cols >= 0) & (cols < w)).unsqueeze(1)
    rows = rows.clamp(0, h - 1)
    cols = cols.clamp(0, w - 1)
    cols = torch.where(flip.unsqueeze(1), w - 1 - cols, cols)
    # One flat source index per output pixel, shared by the channels: a single gather
    # (about twice as fast on CPU as advanced indexing, and it keeps NCHW layout).
    index = (rows.unsqueeze(2) * w + cols.unsqueeze(1)).view(n, 1, h * w).expand(n, c, h * w)
    out = torch.gather(x.reshape(n, c, h * w), 2, index).view(n, c, h, w)
    return out * inside.unsqueeze(1).to(out.dtype)


def _erase(x: torch.Tensor, u: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """Random erasing on a normalised batch; ``u`` holds 1 + 4 * attempts uniforms per sample."""
    n, c, h, w = x.shape
    a = spec.erasing_attempts
    dev = x.device
    do_erase = u[:, 0] < spec.random_erasing_prob
    u_area, u_ratio, u_y, u_x = u[:, 1:].reshape(n, 4, a).unbind(1)
    lo, hi = spec.erasing_area
    r1 = spec.erasing_ratio
    target = (lo + (hi - lo) * u_area) * float(h * w)
    ratio = r1 + (1.0 / r1 - r1) * u_ratio
    box_h = torch.round(torch.sqrt(target * ratio)).long()
    box_w = torch.round(torch.sqrt(target / ratio)).long()
    fits = (box_h < h) & (box_w < w)
    first = torch.argmax(fits.to(torch.uint8), dim=1, keepdim=True)  # first fitting attempt
    do_erase = do_erase & fits.any(dim=1)
    box_h = box_h.gather(1, first).squeeze(1)
    box_w = box_w.gather(1, first).squeeze(1)
    top = _randint_below(u_y.gather(1, first).squeeze(1), h - box_h + 1)
    left = _randint_below(u_x.gather(1, first).squeeze(1), w - box_w + 1)
    r = torch.arange(h, device=dev).unsqueeze(0)
    col = torch.arange(w, device=dev).unsqueeze(0)
    in_rows = (r >= top.unsqueeze(1)) & (r < (top + box_h).unsqueeze(1))
    in_cols = (col >= left.unsqueeze(1)) & (col < (left + box_w).unsqueeze(1))
    mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1) & do_erase.view(n, 1, 1)).unsqueeze(1)
    if spec.erasing_fill == "mean_values":
        fill = _channel_constant(tuple(spec.mean), dev, x.dtype)
    elif spec.erasing_fill == "zero":
        fill = torch.zeros((), dtype=x.dtype, device=dev)
    else:
        fill = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        fill = fill.to(dev, non_blocking=True)
    return torch.where(mask, fill, x)


def _finish(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def _uniform_columns(spec: AugmentSpec) -> int:
    """Uniforms per image: flip, crop offsets y and x, erase or not, then 4 per erasing attempt."""
    return 3 + 1 + 4 * spec.erasing_attempts


def train_uniforms(n: int, spec: AugmentSpec, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The uniforms ``train_transform`` draws for ``n`` images: one row per image, on ``device``."""
    return _uniform(n, _uniform_columns(spec), generator, device)


def train_transform(
    images: torch.Tensor,
    spec: AugmentSpec,
    generator: torch.Generator,
    *,
    uniforms: torch.Tensor | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Training augmentation of a uint8 batch (N x C x H x W) -> normalised float32 (N x C x height x width).

    Steps: resize (antialiased ``spec.interpolation`` as PIL does it, see ``_resize``); per-sample
    horizontal flip with ``flip_prob``; zero padding by ``pad`` then a random crop back to
    size (offsets uniform in [0, 2 * pad]); normalisation with ``mean``/``std``; random
    erasing (see :class:`AugmentSpec`). The random numbers come from ``generator``, so a
    generator in a fixed state gives identical output; give it the images' device (a
    generator elsewhere works, at the cost of a copy per call). Nothing here reads a
    value back to the host, so on CUDA the call only queues kernels.
    ``uniforms`` (from ``train_uniforms``) replaces this call's draw: every per-sample choice
    depends only on the sample's own row, so a batch gets the same output alone or inside a
    larger call. ``channels_last`` selects the output memory format.
    """
    _check_images(images, spec)
    n = images.shape[0]
    dev = images.device
    x = _resize(images, spec)
    # One draw for every per-sample decision, whatever the probabilities: the stream
    # and thus the flips and crops stay the same when only the erasing settings change.
    u = train_uniforms(n, spec, generator, dev) if uniforms is None else uniforms
    if u.shape != (n, _uniform_columns(spec)):
        raise AugmentInputError(f"expected uniforms of shape ({n}, {_uniform_columns(spec)}) for {n} images, "
                                f"got {tuple(u.shape)}.")
    flip = u[:, 0] < spec.flip_prob
    span = 2 * spec.pad + 1
    oy = _randint_below(u[:, 1], span)
    ox = _randint_below(u[:, 2], span)
    x = _flip_pad_crop(x, flip, oy, ox, spec.pad)
    x = _normalize(x, spec)
    if spec.random_erasing_prob > 0:
        x = _erase(x, u[:, 3:], spec, generator)
    return _finish(x, channels_last)


def test_transform(images: torch.Tensor, spec: AugmentSpec, *, channels_last: bool = False) -> torch.Tensor:
    """Evaluation transform of a uint8 batch: resize as in training, then normalise (float32)."""
    _check_images(images, spec)
    x = _normalize(_resize(images, spec), spec)
    return _finish(x, channels_last)


# pytest collects module-level callables named test_*; this one is a library function.
test_transform.__test__ = False  # type: ignore[attr-defined]
