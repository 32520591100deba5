"""Rendering one image: the camera's scene, the person (misaligned, maybe occluded), then the camera.

The scene is drawn at `_SUPERSAMPLE` times the final size and box-downsampled (cheap
anti-aliasing), then imaged with the camera's colour cast, exposure, noise and blur, and encoded
as a JPEG with fixed settings, so identical pixels give identical bytes.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .appearance import Look, cloth_colour, random_look
from .cameras import Camera
from .palette import VIEWS
from .person import paint_person
from .planning import ROLE_ID, ROLE_JUNK, Entry
from .streams import K_IMAGE, stream

if TYPE_CHECKING:
    from .spec import SyntheticSpec

_SUPERSAMPLE = 2  # draw at twice the size, then box-downsample: cheap anti-aliasing


def _rgb8(colour: np.ndarray) -> tuple[int, int, int]:
    c = np.clip(np.asarray(colour, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(int)
    return (int(c[0]), int(c[1]), int(c[2]))


def _render_background(camera: Camera, shape: tuple[int, int], clutter: float,
                       palette_size: int, rng: np.random.Generator) -> np.ndarray:
    """The camera's scene behind a person, shifted and re-cluttered per image: (H, W, 3) float."""
    h, w = shape
    horizon = int(round(h * np.clip(camera.horizon + rng.normal(0.0, 0.03), 0.3, 0.9)))
    img = Image.new("RGB", (w, h), _rgb8(camera.wall))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, horizon, w, h), fill=_rgb8(camera.floor))
    period = camera.texture_period * w
    phase = rng.uniform(0.0, period)
    tc = _rgb8(camera.texture_colour)
    starts = np.arange(-period + phase, w, period)
    if camera.texture == "pillars":
        for x in starts:
            draw.rectangle((x, 0, x + 0.35 * period, horizon - 1), fill=tc)
    elif camera.texture == "windows":
        for x in starts:
            for y in np.arange(-period + phase, horizon - 0.6 * period, period):
                draw.rectangle((x, y, x + 0.55 * period, y + 0.6 * period), fill=tc)
    elif camera.texture == "bricks":
        mortar = _rgb8(camera.wall * 0.6)
        course = 0.25 * period
        for i, y in enumerate(np.arange(0.0, horizon, course)):
            draw.line((0, y, w, y), fill=mortar, width=2)
            for x in starts + (0.5 * period if i % 2 else 0.0):
                draw.line((x, y, x, y + course), fill=mortar, width=2)
    joint = _rgb8(camera.floor * 0.75)
    for y in range(horizon, h, max(4, int(0.12 * h))):
        draw.line((0, y, w, y), fill=joint, width=1)
    for _ in range(int(rng.poisson(clutter))):
        colour = np.asarray(cloth_colour(rng, palette_size)) * rng.uniform(0.6, 1.1)
        x0, y0 = rng.uniform(-0.2 * w, w), rng.uniform(0.0, h)
        bw, bh = rng.uniform(0.1, 0.5) * w, rng.uniform(0.05, 0.35) * h
        shape_fn = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape_fn((x0, y0, x0 + bw, y0 + bh), fill=_rgb8(colour))
    # Uneven illumination down the scene.
    grad = (1.0 + rng.normal(0.0, 0.12) * np.linspace(-1.0, 1.0, h, dtype=np.float32)) / 255.0
    return np.asarray(img, dtype=np.float32) * grad[:, None, None].astype(np.float32)


def render_image(entry: Entry, looks: Mapping[int, Look], camera: Camera, spec: SyntheticSpec) -> bytes:
    """Render one entry as JPEG bytes."""
    rng = stream(spec.seed, K_IMAGE, entry.role, entry.pid, entry.camid, entry.index)
    img = _render_scene(entry, looks, camera, spec, rng)
    return _encode(_through_camera(img, camera, spec, rng), camera, spec, rng)


def _render_scene(entry: Entry, looks: Mapping[int, Look], camera: Camera, spec: SyntheticSpec,
                  rng: np.random.Generator) -> np.ndarray:
    """The supersampled scene: background, the person and what occludes them; (H, W, 3) float."""
    h, w = spec.height * _SUPERSAMPLE, spec.width * _SUPERSAMPLE
    img = _render_background(camera, (h, w), spec.background_clutter, spec.palette_size, rng)

    if entry.role == ROLE_ID:
        look = looks[entry.pid]
    else:
        # Distractors and junk are people outside every identity; junk is a bad detection.
        look = random_look(rng, spec)
    mis = spec.misalignment
    height = h * entry.scale * look.stature * np.exp(rng.normal(0.0, 0.03))
    cx = w / 2 + rng.normal(0.0, mis) * w
    top = (h - height) / 2 + rng.normal(0.0, mis) * h
    if entry.role == ROLE_JUNK:
        # Mostly background with a fragment of a person: the detector fired on the wrong place.
        cx = w * (rng.choice([-0.1, 1.1]) + rng.normal(0.0, 0.1))
        top += rng.uniform(-0.4, 0.4) * h
        height *= rng.uniform(0.8, 1.6)
    stride = float(rng.uniform(-1.0, 1.0))
    view = VIEWS[entry.view]

    occlusion = rng.random() < spec.occlusion_prob
    passerby = occlusion and rng.random() < 0.5
    paint_person(img, look, view, cx, top, height, stride, entry.facing_left, camera.light)
    if passerby:
        other = random_look(rng, spec)
        ox = cx + rng.choice([-1.0, 1.0]) * rng.uniform(0.45, 0.75) * w
        oh = height * rng.uniform(0.9, 1.1)
        paint_person(img, other, VIEWS[int(rng.integers(3))], ox, top, oh,
                     float(rng.uniform(-1, 1)), bool(rng.random() < 0.5), camera.light)
    if occlusion and not passerby:
        # A pole, a bin, a car bonnet: a block covering one side or the bottom of the box.
        colour = np.asarray(cloth_colour(rng, spec.palette_size), dtype=np.float32)
        colour = colour * rng.uniform(0.5, 1.0)
        if rng.random() < 0.5:
            y0 = int(h * rng.uniform(0.55, 0.8))
            img[y0:] = colour
        else:
            bw = int(w * rng.uniform(0.2, 0.4))
            x0 = 0 if rng.random() < 0.5 else w - bw
            img[:, x0 : x0 + bw] = colour
    return img


def _through_camera(img: np.ndarray, camera: Camera, spec: SyntheticSpec,
                    rng: np.random.Generator) -> np.ndarray:
    """The supersampled scene as the camera records it at the final size: 8-bit RGB pixels."""
    # Box-downsample the supersampled scene, then image it with the camera at final size.
    s = _SUPERSAMPLE
    img = sum(img[i::s, j::s] for j in range(s) for i in range(s)) * (1.0 / (s * s))
    # Camera: colour cast and exposure, contrast curve, saturation; then per-shot jitter.
    img = np.clip(img * camera.gains + camera.tint, 0.0, 1.0) ** camera.gamma
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * camera.saturation
    jitter = np.exp(rng.normal(0.0, spec.colour_jitter, 3) + rng.normal(0.0, 0.08))
    img = img * jitter.astype(np.float32)
    img += camera.noise * rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _encode(pixels: np.ndarray, camera: Camera, spec: SyntheticSpec, rng: np.random.Generator) -> bytes:
    """The camera's blur, then JPEG bytes."""
    out = Image.fromarray(pixels, "RGB")
    radius = camera.blur + rng.uniform(0.0, 0.3) * spec.max_blur
    if radius > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    buf = io.BytesIO()
    # Fixed encoder settings: byte-identical output for identical pixels.
    out.save(buf, format="JPEG", quality=spec.jpeg_quality, subsampling=2, optimize=False,
             progressive=False)
    return buf.getvalue()
