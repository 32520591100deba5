"""Each camera's imaging conditions: colour cast, exposure, blur, scenery and preferred viewpoint.

They make a whole-image colour histogram match the camera rather than the person.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .palette import VIEWS
from .streams import K_CAMERA, pick, stream

if TYPE_CHECKING:
    from .spec import SyntheticSpec


@dataclass(frozen=True)
class Camera:
    """Per-camera imaging conditions."""

    gains: np.ndarray  # per-channel multiplicative colour cast (includes exposure)
    tint: np.ndarray  # additive colour offset
    gamma: float
    saturation: float
    blur: float
    view_probs: np.ndarray
    scale: float
    light: float  # side the light comes from, -1..1
    wall: np.ndarray
    floor: np.ndarray
    horizon: float
    texture: str
    texture_colour: np.ndarray
    texture_period: float
    noise: float


def make_camera(spec: SyntheticSpec, camid: int) -> Camera:
    """Camera `camid` (1-based) of the dataset of `spec`."""
    rng = stream(spec.seed, K_CAMERA, camid)
    cast = spec.camera_cast
    gains = np.exp(rng.normal(0.0, cast, 3)) * np.exp(rng.normal(0.0, 0.6 * cast))
    preferred = int(rng.integers(len(VIEWS)))
    probs = np.full(len(VIEWS), (1.0 - spec.viewpoint_bias) / len(VIEWS))
    probs[preferred] += spec.viewpoint_bias
    # Muted scenery: a grey level with a mild tint, texture a blend of that and a colour.
    wall = rng.uniform(0.15, 0.8) * np.exp(rng.normal(0.0, 0.15, 3))
    floor = rng.uniform(0.2, 0.65) * np.exp(rng.normal(0.0, 0.1, 3))
    texture_colour = 0.5 * wall + 0.5 * rng.uniform(0.05, 0.9, 3)
    f32 = np.float32
    return Camera(
        gains=gains.astype(f32),
        tint=rng.normal(0.0, 0.06 * cast, 3).astype(f32),
        gamma=float(np.exp(rng.normal(0.0, 0.5 * cast))),
        saturation=float(np.exp(rng.normal(0.0, 1.5 * cast))),
        blur=float(rng.uniform(0.0, spec.max_blur)),
        view_probs=probs,
        scale=float(rng.uniform(0.82, 0.95)),
        light=float(rng.uniform(-1.0, 1.0)),
        wall=np.clip(wall, 0.03, 0.95).astype(f32),
        floor=np.clip(floor, 0.03, 0.95).astype(f32),
        horizon=float(rng.uniform(0.45, 0.8)),
        texture=pick(rng, ("pillars", "windows", "bricks", "plain")),
        texture_colour=np.clip(texture_colour, 0.0, 1.0).astype(f32),
        texture_period=float(rng.uniform(0.2, 0.6)),
        noise=float(rng.uniform(0.005, 0.02)),
    )
