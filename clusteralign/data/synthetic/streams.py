"""Independent random streams, one per thing drawn, all derived from the spec's seed.

A stream is keyed by what it draws (`K_CAMERA` and the camera id, `K_IMAGE` and the image's
role, person, camera and number, ...), so an image does not depend on the order in which the
others are drawn, and worker processes rendering any share of the images write the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Keys that separate the random streams (first entry after the seed).
K_CAMERA, K_FAMILY, K_LOOK, K_PLAN, K_VISIT, K_IMAGE, K_EXTRA = range(1, 8)


def stream(seed: int, *keys: int) -> np.random.Generator:
    """The random stream of `keys` under `seed`."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def pick(rng: np.random.Generator, options: tuple, weights: tuple | None = None) -> Any:
    """One of `options`, uniformly or with the given relative weights."""
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]
