"""The embedded synthetic person re-identification dataset, written in the Market-1501 layout.

`generate_synthetic(root, spec)` renders person-like JPEG images (numpy + PIL only) into
`<root>/bounding_box_train/`, `<root>/bounding_box_test/` and `<root>/query/` with Market-1501
file names (`0002_c1s1_000451_03.jpg`, distractors `0000_...`, junk `-1_...`), so the same readers,
training and evaluation code run on it as on the real benchmark, on two CPU cores, in minutes.

What makes it a re-identification problem rather than a colour-matching one:
- identities come in look-alike *families* that share a look (clothing colours, pattern, body
  shape, hair, accessories) and differ in a few details (a pattern, an accessory, the shoes, one
  garment's colour, ...), some visible from some viewpoints only (a chest logo from the front);
  clothing colours come from a small palette weighted towards dark neutrals, as in real crowds;
- every camera has its own colour cast, exposure, background, blur and preferred viewpoint, so a
  whole-image colour histogram matches the camera rather than the person;
- detections are misaligned, some images are occluded by objects or passers-by.

Everything random derives from `spec.seed` through `numpy.random.SeedSequence` keyed by what is
being drawn (a camera, a family, an identity, an image), so a given image does not depend on the
order in which the others are drawn, and the same spec gives byte-identical files on the same
platform and library versions.

One concern per module, each importing only those above it:
`palette` (the vocabulary of looks), `spec` (`SyntheticSpec`), `streams` (the keyed random
streams), `appearance` (identities' looks), `cameras` (imaging conditions), `planning` (which
images exist and their names), `person` (drawing one person), `rendering` (one image),
`record` (the folder's `synthetic_spec.json`), `writer` (`generate_synthetic`).
"""

from __future__ import annotations

from .planning import GALLERY_DIR, QUERY_DIR, TRAIN_DIR
from .record import GENERATOR_VERSION, SPEC_FILENAME, SyntheticRootError
from .spec import SyntheticSpec, SyntheticSpecError
from .writer import generate_synthetic

__all__ = [
    "GALLERY_DIR",
    "GENERATOR_VERSION",
    "QUERY_DIR",
    "SPEC_FILENAME",
    "TRAIN_DIR",
    "SyntheticRootError",
    "SyntheticSpec",
    "SyntheticSpecError",
    "generate_synthetic",
]
