"""The synthetic people's vocabulary: clothing colours, skin and hair tones, patterns, viewpoints.

Plain data (no drawing, no randomness), so the spec can bound its `palette_size` and
`family_mutations` by these tables without importing the generator.
"""

from __future__ import annotations

# (name, linear-ish RGB in 0..1, how common). Ordered so that a small `palette_size` keeps the
# everyday dark and neutral colours, which is what makes real crowds hard to tell apart.
CLOTH_COLOURS: tuple[tuple[str, tuple[float, float, float], float], ...] = (
    ("black", (0.09, 0.09, 0.10), 3.0),
    ("white", (0.88, 0.88, 0.86), 2.0),
    ("grey", (0.50, 0.50, 0.51), 2.0),
    ("navy", (0.11, 0.15, 0.34), 2.0),
    ("denim", (0.26, 0.36, 0.56), 2.0),
    ("red", (0.72, 0.12, 0.13), 1.0),
    ("khaki", (0.64, 0.57, 0.40), 1.0),
    ("brown", (0.40, 0.26, 0.15), 1.0),
    ("green", (0.20, 0.46, 0.23), 1.0),
    ("yellow", (0.90, 0.78, 0.22), 1.0),
    ("pink", (0.90, 0.56, 0.66), 1.0),
    ("purple", (0.43, 0.23, 0.53), 1.0),
    ("orange", (0.92, 0.48, 0.13), 1.0),
    ("sky", (0.52, 0.71, 0.90), 1.0),
    ("charcoal", (0.26, 0.26, 0.28), 1.0),
    ("olive", (0.42, 0.42, 0.18), 1.0),
    ("maroon", (0.42, 0.10, 0.14), 1.0),
    ("teal", (0.10, 0.45, 0.47), 1.0),
    ("beige", (0.80, 0.72, 0.58), 1.0),
    ("cyan", (0.25, 0.75, 0.85), 1.0),
)
SKIN_TONES = (
    (0.96, 0.80, 0.69),
    (0.90, 0.71, 0.56),
    (0.78, 0.57, 0.42),
    (0.62, 0.43, 0.30),
    (0.45, 0.30, 0.20),
    (0.32, 0.21, 0.14),
)
HAIR_COLOURS = (
    (0.06, 0.05, 0.05),
    (0.20, 0.13, 0.08),
    (0.38, 0.25, 0.14),
    (0.55, 0.28, 0.14),
    (0.80, 0.68, 0.42),
    (0.62, 0.62, 0.62),
)
PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo")
PATTERN_WEIGHTS = (0.45, 0.15, 0.1, 0.1, 0.2)
BOTTOM_KINDS = ("trousers", "shorts", "skirt")
BOTTOM_WEIGHTS = (0.7, 0.18, 0.12)
VIEWS = ("front", "back", "side")
# Details in which members of a look-alike family may differ from each other.
MUTATIONS = ("pattern", "accessory", "shoes", "hair", "bottom_kind", "sleeves", "top_alt",
             "top", "bottom")
