"""What each person wears: random looks, and identities built as families of look-alikes.

Members of a family share one look and differ in `family_mutations` details (a pattern, an
accessory, the shoes, one garment's colour, ...), each in their own shade of the family colours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .palette import (
    BOTTOM_KINDS,
    BOTTOM_WEIGHTS,
    CLOTH_COLOURS,
    HAIR_COLOURS,
    MUTATIONS,
    PATTERN_WEIGHTS,
    PATTERNS,
    SKIN_TONES,
)
from .streams import K_FAMILY, K_LOOK, pick, stream

if TYPE_CHECKING:
    from .spec import SyntheticSpec

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Look:
    """The clothing, body and accessories of one person."""

    skin: Colour
    hair: Colour
    hair_long: bool
    top: Colour
    top_alt: Colour
    pattern: str
    pattern_period: float
    long_sleeves: bool
    bottom: Colour
    bottom_kind: str
    shoes: Colour
    hat: Colour | None
    bag: Colour | None
    backpack: Colour | None
    stature: float
    build: float


def cloth_colour(rng: np.random.Generator, palette_size: int) -> Colour:
    """A clothing colour from the first `palette_size` of the palette, common ones more often."""
    palette = CLOTH_COLOURS[:palette_size]
    _, rgb, _ = pick(rng, palette, tuple(w for _, _, w in palette))
    return rgb


def _vary(rng: np.random.Generator, rgb: Colour, amount: float = 0.06) -> Colour:
    """The same named colour as a slightly different dye: a per-identity shade."""
    out = np.clip(np.asarray(rgb) * np.exp(rng.normal(0.0, amount, 3)), 0.02, 0.98)
    return (float(out[0]), float(out[1]), float(out[2]))


def random_look(rng: np.random.Generator, spec: SyntheticSpec) -> Look:
    """A person drawn from scratch: a family's shared look, a distractor, a passer-by."""
    top = cloth_colour(rng, spec.palette_size)
    top_alt = cloth_colour(rng, spec.palette_size)
    while top_alt == top:
        top_alt = cloth_colour(rng, spec.palette_size)
    accessory = rng.random(3) < (0.15, 0.25, 0.22)  # hat, bag, backpack
    return Look(
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
        hair_long=bool(rng.random() < 0.3),
        top=top,
        top_alt=top_alt,
        pattern=pick(rng, PATTERNS, PATTERN_WEIGHTS),
        pattern_period=float(rng.uniform(0.03, 0.06)),
        long_sleeves=bool(rng.random() < 0.55),
        bottom=cloth_colour(rng, spec.palette_size),
        bottom_kind=pick(rng, BOTTOM_KINDS, BOTTOM_WEIGHTS),
        shoes=cloth_colour(rng, spec.palette_size),
        hat=cloth_colour(rng, spec.palette_size) if accessory[0] else None,
        bag=cloth_colour(rng, spec.palette_size) if accessory[1] else None,
        backpack=cloth_colour(rng, spec.palette_size) if accessory[2] else None,
        stature=float(rng.uniform(0.88, 1.0)),
        build=float(rng.uniform(0.85, 1.15)),
    )


def _mutate(rng: np.random.Generator, look: Look, what: str, spec: SyntheticSpec) -> Look:
    """Change one detail of `look`, guaranteeing the result differs from it."""
    for _ in range(100):
        if what == "pattern":
            new = dataclasses.replace(look, pattern=pick(rng, PATTERNS, PATTERN_WEIGHTS))
        elif what == "accessory":
            slot = ("hat", "bag", "backpack")[int(rng.integers(3))]
            current = getattr(look, slot)
            value = cloth_colour(rng, spec.palette_size) if current is None else None
            new = dataclasses.replace(look, **{slot: value})
        elif what == "shoes":
            new = dataclasses.replace(look, shoes=cloth_colour(rng, spec.palette_size))
        elif what == "hair":
            new = dataclasses.replace(look, hair_long=not look.hair_long)
        elif what == "bottom_kind":
            new = dataclasses.replace(look, bottom_kind=pick(rng, BOTTOM_KINDS))
        elif what == "sleeves":
            new = dataclasses.replace(look, long_sleeves=not look.long_sleeves)
        elif what == "top":  # same pattern in another main colour
            new = dataclasses.replace(look, top=cloth_colour(rng, spec.palette_size))
        elif what == "bottom":
            new = dataclasses.replace(look, bottom=cloth_colour(rng, spec.palette_size))
        else:  # "top_alt": the second colour of a pattern (or a plain top gains stripes)
            new = dataclasses.replace(
                look,
                top_alt=cloth_colour(rng, spec.palette_size),
                pattern=look.pattern if look.pattern != "plain" else "hstripes",
            )
        if new.top == new.top_alt:  # a pattern in its own colour would be invisible
            continue
        if new != look:
            return new
    raise RuntimeError(f"could not mutate {what!r}")  # unreachable with the palettes above


def identity_looks(spec: SyntheticSpec, pids: list[int], split: int) -> dict[int, Look]:
    """Looks for one split's identities, built as families of near-duplicates."""
    looks: dict[int, Look] = {}
    for family, start in enumerate(range(0, len(pids), spec.family_size)):
        base = random_look(stream(spec.seed, K_FAMILY, split, family), spec)
        for member, pid in enumerate(pids[start : start + spec.family_size]):
            rng = stream(spec.seed, K_LOOK, pid)
            look = base
            if member > 0:
                order = rng.permutation(len(MUTATIONS))[: spec.family_mutations]
                for k in sorted(order.tolist()):
                    look = _mutate(rng, look, MUTATIONS[k], spec)
            # Each member wears their own shade of the family colours.
            look = dataclasses.replace(
                look,
                top=_vary(rng, look.top),
                top_alt=_vary(rng, look.top_alt),
                bottom=_vary(rng, look.bottom),
                stature=float(np.clip(look.stature + rng.normal(0, 0.02), 0.84, 1.0)),
                build=float(np.clip(look.build + rng.normal(0, 0.04), 0.8, 1.2)),
            )
            looks[pid] = look
    return looks
