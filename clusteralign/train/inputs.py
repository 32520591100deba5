"""How a stage's images are prepared: the training and test transforms' specs, and what model.pt records.

The transforms themselves live in `augment`; this module turns typed settings into their specs
(`train_augment`, `test_augment`), and into the input settings a model file records for
feature extraction outside the workflow (`recorded_inputs`, `models.file.InputSettings`).
"""

from __future__ import annotations

from ..config import AugmentConfig, FeatureConfig, InferenceConfig, StageConfig
from ..models.file import InputSettings
from .augment import AugmentSpec


def train_augment(augment: AugmentConfig) -> AugmentSpec:
    """The training transform of a stage's `augment` settings."""
    return AugmentSpec(height=augment.height, width=augment.width, flip_prob=augment.flip_prob, pad=augment.pad,
                       random_erasing_prob=augment.random_erasing_prob, erasing_fill=augment.erasing_fill)


def test_augment(inference: InferenceConfig) -> AugmentSpec:
    """The test transform at the inference settings' input size: resize and normalise, nothing random."""
    return AugmentSpec(height=inference.height, width=inference.width, flip_prob=0.0, pad=0, random_erasing_prob=0.0)


def recorded_inputs(stage: StageConfig, features: FeatureConfig) -> InputSettings:
    """The input settings of a stage's evaluation: its input and cache sizes, the feature flip,
    and the normalisation the augment module applies."""
    inference = InferenceConfig.of(stage)
    spec = test_augment(inference)
    cache_height, cache_width = inference.cache_size
    return InputSettings(height=inference.height, width=inference.width, cache_height=cache_height,
                         cache_width=cache_width, flip=features.flip, mean=tuple(spec.mean), std=tuple(spec.std),
                         interpolation=spec.interpolation)


def test_spec(inputs: InputSettings) -> AugmentSpec:
    """The evaluation transform's spec for recorded `inputs`: resize and normalise, nothing random."""
    return AugmentSpec(height=inputs.height, width=inputs.width, flip_prob=0.0, pad=0, random_erasing_prob=0.0,
                       mean=inputs.mean, std=inputs.std, interpolation=inputs.interpolation)  # type: ignore[arg-type]


# pytest collects module-level callables named test_*; these are library functions.
test_augment.__test__ = False  # type: ignore[attr-defined]
test_spec.__test__ = False  # type: ignore[attr-defined]
