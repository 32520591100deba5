"""What determines a synthetic dataset: `SyntheticSpec`, its presets and the ranges of its values.

The ranges are declared on the fields (`bounded`) and checked, with the types, by the config's
one validator, whether a spec comes from a config file (`from_dict`) or is built in code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from clusteralign.config import ConfigError, TypedSection, bounded
from clusteralign.config import from_dict as build_from_dict

from .palette import CLOTH_COLOURS, MUTATIONS


class SyntheticSpecError(ConfigError):
    """A `SyntheticSpec` field holds a value of the wrong type or outside its allowed range."""


@dataclass(frozen=True)
class SyntheticSpec(TypedSection):
    """Everything that determines a synthetic dataset; equal specs give identical files.

    Sizes: train identities get `min_images_per_id_per_camera..max_images_per_id_per_camera`
    images in each of their cameras; test identities get at least 2 per camera (one becomes the
    query of that camera, the rest go to the gallery), so every query has a true match in another
    camera. Each identity appears in `min_cameras_per_id..max_cameras_per_id` distinct cameras.
    `num_train_images`, when given, fixes the training set's size exactly (e.g. Market-1501's
    12,936): images are then added to or removed from randomly chosen training visits, within
    the per-camera bounds, until the drawn counts sum to it.

    Difficulty knobs. The defaults are calibrated so that a ResNet-18 of quarter width trained
    from scratch (cross-entropy + batch-hard triplet, P x K = 16 x 4, Adam 3.5e-4) for about
    four minutes on two CPU cores reaches roughly 60-65% mAP / 70% rank-1, while an 8x8x8 RGB
    histogram of the whole image stays near chance (about 1% mAP), because it matches cameras
    rather than people:
    `family_size` identities share one look and differ in `family_mutations` details;
    `palette_size` clothing colours to choose from (fewer means more shared colours);
    `colour_jitter` per-image colour noise (log-gain std); `camera_cast` strength of each camera's
    colour cast and exposure; `background_clutter` mean number of coloured objects behind people;
    `max_blur` largest Gaussian blur radius in pixels; `misalignment` detector box jitter as a
    fraction of the image size; `viewpoint_bias` how strongly each camera prefers one viewpoint
    (0 means all views equally likely everywhere).
    """

    # Person ids are written with four digits (num_train_ids + num_test_ids is at most 9999).
    num_train_ids: int = bounded(150, minimum=1, maximum=9998)
    num_test_ids: int = bounded(100, minimum=1, maximum=9998)
    num_cameras: int = bounded(6, minimum=2, maximum=9)  # one digit after "c" in Market names
    min_cameras_per_id: int = bounded(2, minimum=2, maximum=9)
    max_cameras_per_id: int = bounded(5, minimum=2, maximum=9)
    min_images_per_id_per_camera: int = bounded(1, minimum=1, maximum=1000)
    max_images_per_id_per_camera: int = bounded(5, minimum=2, maximum=1000)
    num_distractors: int = bounded(120, minimum=0, maximum=1_000_000)
    num_junk: int = bounded(40, minimum=0, maximum=1_000_000)
    height: int = bounded(128, minimum=32, maximum=2048)
    width: int = bounded(64, minimum=16, maximum=1024)
    jpeg_quality: int = bounded(90, minimum=1, maximum=95)
    occlusion_prob: float = bounded(0.1, minimum=0, maximum=1)
    seed: int = bounded(0, minimum=0, maximum=2**63 - 1)
    family_size: int = bounded(2, minimum=1, maximum=1000)
    family_mutations: int = bounded(3, minimum=1, maximum=len(MUTATIONS))
    palette_size: int = bounded(14, minimum=2, maximum=len(CLOTH_COLOURS))
    colour_jitter: float = bounded(0.06, minimum=0, maximum=1)
    camera_cast: float = bounded(0.12, minimum=0, maximum=1)
    background_clutter: float = bounded(0.8, minimum=0, maximum=50)
    max_blur: float = bounded(0.8, minimum=0, maximum=10)
    misalignment: float = bounded(0.04, minimum=0, maximum=0.5)
    viewpoint_bias: float = bounded(0.4, minimum=0, maximum=1)
    num_train_images: int | None = bounded(None, minimum=1, maximum=10_000_000)

    _error = SyntheticSpecError

    def __post_init__(self) -> None:
        super().__post_init__()  # each field's type and range
        if self.num_train_ids + self.num_test_ids > 9999:
            raise SyntheticSpecError(
                "num_test_ids: num_train_ids + num_test_ids must be at most 9999, because person ids are "
                f"written with four digits; got {self.num_train_ids + self.num_test_ids}"
            )
        if self.min_cameras_per_id > self.max_cameras_per_id:
            raise SyntheticSpecError(
                f"min_cameras_per_id: must not exceed max_cameras_per_id ({self.max_cameras_per_id}), "
                f"got {self.min_cameras_per_id}"
            )
        if self.max_cameras_per_id > self.num_cameras:
            raise SyntheticSpecError(
                f"max_cameras_per_id: must not exceed num_cameras ({self.num_cameras}), as an identity appears "
                f"in distinct cameras; got {self.max_cameras_per_id}"
            )
        if self.min_images_per_id_per_camera > self.max_images_per_id_per_camera:
            raise SyntheticSpecError(
                "min_images_per_id_per_camera: must not exceed max_images_per_id_per_camera "
                f"({self.max_images_per_id_per_camera}), got {self.min_images_per_id_per_camera}"
            )

    @classmethod
    def tiny(cls, seed: int = 0) -> SyntheticSpec:
        """A few dozen small images in seconds, for tests: 8 train ids, 6 test ids, 3 cameras."""
        return cls(
            num_train_ids=8,
            num_test_ids=6,
            num_cameras=3,
            min_cameras_per_id=2,
            max_cameras_per_id=3,
            min_images_per_id_per_camera=1,
            max_images_per_id_per_camera=3,
            num_distractors=4,
            num_junk=3,
            height=64,
            width=32,
            seed=seed,
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], key: str = "SyntheticSpec") -> SyntheticSpec:
        """Build a spec from a mapping (e.g. a config section); errors name `key` and the setting."""
        return build_from_dict(cls, values, key)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain JSON-ready dict (field name -> value)."""
        values = dataclasses.asdict(self)
        # Left out when unset, so that folders generated before the field existed keep the
        # marker they were written with and still count as the same dataset.
        if values["num_train_images"] is None:
            del values["num_train_images"]
        return values
