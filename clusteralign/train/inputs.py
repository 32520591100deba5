"""What a trained model file records about its test-time inputs (see `models.file.InputSettings`)."""

from __future__ import annotations

from ..config import FeatureConfig, StageConfig
from ..models.file import InputSettings
from .augment import AugmentSpec


def recorded_inputs(stage: StageConfig, features: FeatureConfig) -> InputSettings:
    """The input settings of a stage's evaluation: its input and cache sizes, the feature flip,
    and the normalisation the augment module applies."""
    a = stage.augment
    spec = AugmentSpec(height=a.height, width=a.width)
    return InputSettings(height=a.height, width=a.width, cache_height=a.cache_height or a.height,
                         cache_width=a.cache_width or a.width, flip=features.flip, mean=tuple(spec.mean),
                         std=tuple(spec.std), interpolation=spec.interpolation)


def test_spec(inputs: InputSettings) -> AugmentSpec:
    """The evaluation transform's spec for `inputs`: resize and normalise, nothing random."""
    return AugmentSpec(height=inputs.height, width=inputs.width, flip_prob=0.0, pad=0, random_erasing_prob=0.0,
                       mean=inputs.mean, std=inputs.std, interpolation=inputs.interpolation)  # type: ignore[arg-type]


# pytest collects module-level callables named test_*; this one is a library function.
test_spec.__test__ = False  # type: ignore[attr-defined]
