"""What determines a synthetic dataset: `SyntheticSpec`, its presets and the checks of its values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .palette import CLOTH_COLOURS, MUTATIONS


class SyntheticSpecError(ValueError):
    """A `SyntheticSpec` field holds a value of the wrong type or outside its allowed range."""


@dataclass(frozen=True)
class SyntheticSpec:
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

    num_train_ids: int = 150
    num_test_ids: int = 100
    num_cameras: int = 6
    min_cameras_per_id: int = 2
    max_cameras_per_id: int = 5
    min_images_per_id_per_camera: int = 1
    max_images_per_id_per_camera: int = 5
    num_distractors: int = 120
    num_junk: int = 40
    height: int = 128
    width: int = 64
    jpeg_quality: int = 90
    occlusion_prob: float = 0.1
    seed: int = 0
    family_size: int = 2
    family_mutations: int = 3
    palette_size: int = 14
    colour_jitter: float = 0.06
    camera_cast: float = 0.12
    background_clutter: float = 0.8
    max_blur: float = 0.8
    misalignment: float = 0.04
    viewpoint_bias: float = 0.4
    num_train_images: int | None = None

    def __post_init__(self) -> None:
        self._validate()

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
    def from_dict(cls, values: Mapping[str, Any]) -> SyntheticSpec:
        """Build a spec from a mapping (e.g. a config section); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SyntheticSpecError(
                f"Unknown synthetic dataset setting(s) {', '.join(map(repr, unknown))}. "
                f"Expected only keys among: {', '.join(sorted(known))}."
            )
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain JSON-ready dict (field name -> value)."""
        values = dataclasses.asdict(self)
        # Left out when unset, so that folders generated before the field existed keep the
        # marker they were written with and still count as the same dataset.
        if values["num_train_images"] is None:
            del values["num_train_images"]
        return values

    # ----------------------------------------------------------------------------------------

    def _validate(self) -> None:
        ints = {
            "num_train_ids": (1, 9998),
            "num_test_ids": (1, 9998),
            "num_cameras": (2, 9),  # one digit after "c" in Market names
            "min_cameras_per_id": (2, 9),
            "max_cameras_per_id": (2, 9),
            "min_images_per_id_per_camera": (1, 1000),
            "max_images_per_id_per_camera": (2, 1000),
            "num_distractors": (0, 1_000_000),
            "num_junk": (0, 1_000_000),
            "height": (32, 2048),
            "width": (16, 1024),
            "jpeg_quality": (1, 95),
            "seed": (0, 2**63 - 1),
            "family_size": (1, 1000),
            "family_mutations": (1, len(MUTATIONS)),
            "palette_size": (2, len(CLOTH_COLOURS)),
        }
        floats = {
            "occlusion_prob": (0.0, 1.0),
            "colour_jitter": (0.0, 1.0),
            "camera_cast": (0.0, 1.0),
            "background_clutter": (0.0, 50.0),
            "max_blur": (0.0, 10.0),
            "misalignment": (0.0, 0.5),
            "viewpoint_bias": (0.0, 1.0),
        }
        if self.num_train_images is not None:
            ints["num_train_images"] = (1, 10_000_000)
        for name, (lo, hi) in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise SyntheticSpecError(
                    f"SyntheticSpec.{name} must be an integer, got {value!r} "
                    f"({type(value).__name__})."
                )
            if not lo <= value <= hi:
                raise SyntheticSpecError(
                    f"SyntheticSpec.{name} must be between {lo} and {hi}, got {value}."
                )
            # Plain Python numbers keep the spec JSON-ready and its comparisons exact.
            object.__setattr__(self, name, int(value))
        for name, (lo, hi) in floats.items():
            value = getattr(self, name)
            number = (int, float, np.floating, np.integer)
            if isinstance(value, bool) or not isinstance(value, number):
                raise SyntheticSpecError(
                    f"SyntheticSpec.{name} must be a number, got {value!r} "
                    f"({type(value).__name__})."
                )
            if not (lo <= float(value) <= hi):  # also rejects NaN
                raise SyntheticSpecError(
                    f"SyntheticSpec.{name} must be between {lo} and {hi}, got {value}."
                )
            object.__setattr__(self, name, float(value))
        if self.num_train_ids + self.num_test_ids > 9999:
            raise SyntheticSpecError(
                "SyntheticSpec.num_train_ids + num_test_ids must be at most 9999, because person "
                f"ids are written with four digits; got {self.num_train_ids + self.num_test_ids}."
            )
        if self.min_cameras_per_id > self.max_cameras_per_id:
            raise SyntheticSpecError(
                f"SyntheticSpec.min_cameras_per_id ({self.min_cameras_per_id}) must not exceed "
                f"max_cameras_per_id ({self.max_cameras_per_id})."
            )
        if self.max_cameras_per_id > self.num_cameras:
            raise SyntheticSpecError(
                f"SyntheticSpec.max_cameras_per_id ({self.max_cameras_per_id}) must not exceed "
                f"num_cameras ({self.num_cameras}): an identity appears in distinct cameras."
            )
        if self.min_images_per_id_per_camera > self.max_images_per_id_per_camera:
            raise SyntheticSpecError(
                "SyntheticSpec.min_images_per_id_per_camera "
                f"({self.min_images_per_id_per_camera}) must not exceed "
                f"max_images_per_id_per_camera ({self.max_images_per_id_per_camera})."
            )
