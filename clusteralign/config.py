"""Typed configuration: dataclasses built from the validated YAML.

Every setting a stage reads is a field here with the paper's value as its default, so a
config file only states what differs; one exception: `pretrained` defaults to "none", since
ImageNet weights are a file the user provides (the paper's configs under configs/ set it).
`from_dict` rejects unknown keys, wrong types and values out of a field's range with the
dotted key path, e.g. ``experiments.market.stage1.optimizer.lr``. The ranges are declared
once, on the fields (`bounded`), and the generated JSON schema states them too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union


class ConfigError(ValueError):
    """A configuration value is missing, misspelt, of the wrong type or out of range."""


# JSON schema's names for the bounds, so the schema generator copies them as they are.
BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")


def bounded(default: Any, **bounds: float) -> Any:
    """A field whose values (each item, for a list) must lie within JSON-schema-style bounds."""
    unknown = set(bounds) - set(BOUNDS)
    if unknown:  # pragma: no cover - a typo in this module
        raise TypeError(f"unknown bound(s) {unknown}")
    return field(default=default, metadata={"bounds": bounds})


def _range_text(bounds: dict[str, float]) -> str:
    low = ("[", bounds["minimum"]) if "minimum" in bounds else ("(", bounds.get("exclusiveMinimum"))
    high = ("]", bounds["maximum"]) if "maximum" in bounds else (")", bounds.get("exclusiveMaximum"))
    if low[1] is not None and high[1] is not None:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low[1] is not None:
        return f"at least {low[1]}" if low[0] == "[" else f"greater than {low[1]}"
    return f"at most {high[1]}" if high[0] == "]" else f"less than {high[1]}"


def _within(value: float, bounds: dict[str, float]) -> bool:
    return (value >= bounds.get("minimum", value) and value <= bounds.get("maximum", value)
            and ("exclusiveMinimum" not in bounds or value > bounds["exclusiveMinimum"])
            and ("exclusiveMaximum" not in bounds or value < bounds["exclusiveMaximum"]))


class CheckedSection:
    """Checks every `bounded` field of a config dataclass when it is built."""

    # What its bad values raise, here and in `from_dict`: a subclass of ConfigError names the domain.
    _error: ClassVar[type[ConfigError]] = ConfigError

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            bounds = f.metadata.get("bounds")
            value = getattr(self, f.name)
            if not bounds or value is None:
                continue
            if isinstance(value, tuple):
                if not all(_within(v, bounds) for v in value):
                    raise self._error(f"{f.name}: each item must be {_range_text(bounds)}, got {list(value)}")
            elif not _within(value, bounds):
                raise self._error(f"{f.name}: must be {_range_text(bounds)}, got {value!r}")


class TypedSection(CheckedSection):
    """A `CheckedSection` dataclass whose field types are checked also when it is built in code.

    For the settings that code builds as often as a config file does (a synthetic spec, a dataset
    source): each value goes through `from_dict`'s conversion, so a test or a script gets the same
    one-line error as a config file, and the same stored values (an int for a float field becomes
    a float, text for a path field a Path).
    """

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            try:
                value = _convert(getattr(self, f.name), hints[f.name], f.name)
            except ConfigError as err:
                raise (err if isinstance(err, self._error) else self._error(str(err))) from None
            object.__setattr__(self, f.name, value)
        super().__post_init__()


# --------------------------------------------------------------------------- sections


# `pretrained` values that are not file paths.
PRETRAINED_KEYWORDS = ("none", "imagenet", "imagenet_v1")
# torchvision's own ResNets (the IBN-a and SE-ResNeXt trunks come from their authors' code).
PLAIN_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


@dataclass(frozen=True)
class ModelConfig(CheckedSection):
    """Which network to build; see clusteralign/models/.

    Each family's module docstring states its published training recipe.
    """

    # baseline: strong BNNeck baseline; ft_net / pcb: layumi's baselines; mgn; abd: ABD-Net.
    family: Literal["baseline", "ft_net", "pcb", "mgn", "abd"] = "baseline"
    # se_resnext50 only fits the families that treat the trunk as a whole (baseline, ft_net, pcb).
    backbone: Literal[
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet50_ibn_a", "resnet101_ibn_a", "se_resnext50"
    ] = "resnet50"
    # Channels of the first stage; torchvision's networks use 64. Narrower widths
    # give the small CPU models the tests and the synthetic default train.
    base_width: int = bounded(64, minimum=1)
    # MGN and ABD-Net set their branches' strides themselves and ignore this.
    last_stride: Literal[1, 2] = 1
    # "none", "imagenet" (torchvision's current weights from the local torch cache; IBN-a and
    # SE-ResNeXt: their public checkpoints in the same cache), "imagenet_v1" (torchvision's original
    # ResNet files, e.g. resnet50-19c8e357.pth, which the paper's reference code loads), or a file path.
    pretrained: str = "none"
    allow_download: bool = False
    neck: Literal["bnneck", "none"] = "bnneck"
    # Width of each branch/part embedding; None = the family's published value
    # (ft_net 512, pcb 256, mgn 256, abd 1024).
    embed_dim: Optional[int] = bounded(None, minimum=1)
    # Horizontal parts; None = the family's value (pcb 6, abd 2; MGN's 2 + 3 are fixed).
    num_parts: Optional[int] = bounded(None, minimum=1)
    # Dropout before the identity classifiers of ft_net, pcb and ABD-Net's global branch.
    dropout: float = bounded(0.5, minimum=0, exclusiveMaximum=1)
    # ABD-Net's diversity regularisers (reference --of-beta, --ow-beta, --of-start-epoch); 0 switches
    # off. The start epoch takes effect through the model's set_epoch(), which the trainer calls.
    of_weight: float = bounded(1e-6, minimum=0)
    ow_weight: float = bounded(1e-3, minimum=0)
    of_start_epoch: int = bounded(23, minimum=0)
    # Convolutions under the weight term: "stem" is what the reference code reaches (its
    # module walk stops at residual blocks), "backbone" every backbone conv as the paper says.
    ow_scope: Literal["stem", "backbone"] = "stem"
    # A ReLU after the stem's batch norm. null: as the reference code builds each network: the
    # strong baseline's plain ResNets have none (the line is commented out in its resnet.py), every
    # other trunk (IBN-a, SE-ResNeXt, and the ResNets of ft_net, PCB, MGN, ABD-Net) has it.
    stem_relu: Optional[bool] = None

    def pretrained_file(self) -> str | None:
        """The weights file `pretrained` names, or None for the keywords (the torch cache)."""
        return None if self.pretrained in PRETRAINED_KEYWORDS else self.pretrained

    def has_stem_relu(self) -> bool:
        """Whether the trunk's stem ends in a ReLU (`stem_relu`, or the reference's choice when null)."""
        if self.stem_relu is not None:
            return self.stem_relu
        return not (self.family == "baseline" and self.backbone in PLAIN_RESNETS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family in ("mgn", "abd") and not self.backbone.startswith("resnet"):
            raise ConfigError(
                f"backbone: family {self.family!r} splits a ResNet into branches and needs a resnet* backbone, "
                f"got {self.backbone!r}"
            )
        if self.pretrained == "imagenet_v1" and self.backbone not in PLAIN_RESNETS:
            raise ConfigError(
                f"pretrained: imagenet_v1 names torchvision's original files of {', '.join(PLAIN_RESNETS)}; "
                f"backbone {self.backbone!r} has one public ImageNet checkpoint: use `imagenet`"
            )
        if self.stem_relu is False and self.backbone == "se_resnext50":
            raise ConfigError("stem_relu: se_resnext50's stem always ends in a ReLU (as in its reference code)")


@dataclass(frozen=True)
class AugmentConfig(CheckedSection):
    """Input size and training augmentation (Luo et al.'s strong baseline)."""

    height: int = bounded(256, minimum=1)
    width: int = bounded(128, minimum=1)
    flip_prob: float = bounded(0.5, minimum=0, maximum=1)
    pad: int = bounded(10, minimum=0)
    random_erasing_prob: float = bounded(0.5, minimum=0, maximum=1)
    # What an erased box holds, in normalised space: "zero" (the mean pixel, as the paper's
    # reference code erases), "mean_values" (the ImageNet mean values written into the normalised
    # image, as reid-strong-baseline's code does: a light grey box) or "normal" (random values).
    erasing_fill: Literal["zero", "mean_values", "normal"] = "zero"
    # Images are decoded once and cached at this size (default: the input size).
    cache_height: Optional[int] = bounded(None, minimum=1)
    cache_width: Optional[int] = bounded(None, minimum=1)


@dataclass(frozen=True)
class OptimizerConfig(CheckedSection):
    name: Literal["adam", "sgd"] = "adam"
    lr: float = bounded(3.5e-4, exclusiveMinimum=0)
    weight_decay: float = bounded(5e-4, minimum=0)
    momentum: float = bounded(0.9, minimum=0, maximum=1)
    # Bias parameters' group: reid-strong-baseline's code defaults are twice the lr and no decay,
    # its published configs (followed here) the same lr and decay as the weights.
    bias_lr_factor: float = bounded(1.0, minimum=0)
    weight_decay_bias: float = bounded(5e-4, minimum=0)


@dataclass(frozen=True)
class ScheduleConfig(CheckedSection):
    kind: Literal["warmup_multistep", "constant"] = "warmup_multistep"
    warmup_epochs: int = bounded(10, minimum=0)
    warmup_factor: float = bounded(0.01, minimum=0, maximum=1)
    milestones: tuple[int, ...] = bounded((40, 70), minimum=1)
    gamma: float = bounded(0.1, exclusiveMinimum=0)


@dataclass(frozen=True)
class LossConfig(CheckedSection):
    """Loss weights; a weight of 0 switches a term off."""

    ce_weight: float = bounded(1.0, minimum=0)
    label_smoothing: float = bounded(0.1, minimum=0, maximum=1)
    triplet_weight: float = bounded(1.0, minimum=0)
    # None selects the soft-margin triplet.
    triplet_margin: Optional[float] = bounded(0.3, minimum=0)
    center_weight: float = bounded(0.0, minimum=0)
    center_lr: float = bounded(0.5, exclusiveMinimum=0)
    anchor_weight: float = bounded(0.0, minimum=0)
    anchor_kind: Literal["mse", "l1", "intra_inter"] = "mse"
    # The ranking term's margin (intra_inter only); None: the soft ranking term.
    anchor_margin: Optional[float] = bounded(None, minimum=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.anchor_margin is not None and self.anchor_kind != "intra_inter":
            raise ConfigError(f"anchor_margin: applies to anchor_kind intra_inter only, not {self.anchor_kind!r}")


@dataclass(frozen=True)
class AnchorConfig(CheckedSection):
    """How the anchor dictionary (one mean feature per training identity) is kept."""

    update: Literal["epoch", "fixed", "momentum"] = "epoch"
    momentum: float = bounded(0.9, minimum=0, maximum=1)
    weighting: Literal["mean", "probability"] = "mean"


@dataclass(frozen=True)
class FeatureConfig(CheckedSection):
    """How test features are extracted (validation, anchors and the final evaluation)."""

    flip: bool = True
    batch_size: int = bounded(256, minimum=1)


@dataclass(frozen=True)
class EvalConfig(CheckedSection):
    """How query features are ranked against the gallery."""

    metric: Literal["euclidean", "cosine"] = "euclidean"
    normalize: bool = True
    rerank: bool = False
    k1: int = bounded(20, minimum=1)
    k2: int = bounded(6, minimum=1)
    lambda_value: float = bounded(0.3, minimum=0, maximum=1)
    max_rank: int = bounded(50, minimum=1)


@dataclass(frozen=True)
class FinalEvalConfig(EvalConfig):
    """The final evaluation: how query features are ranked against the gallery, and where.

    Validation during training keeps its stage's device and has no such setting.
    """

    # Where distances, re-ranking and ranks are computed, a block of queries at a time: "cpu"
    # ranks with the compiled ranker; "cuda" keeps all of it on the GPU with a torch ranker (its
    # float32 rounding differs in the last digits); "auto" picks CUDA when visible.
    device: Literal["auto", "cpu", "cuda"] = "cpu"


@dataclass(frozen=True)
class StageConfig(CheckedSection):
    """One training stage. Defaults are stage 1 of the paper (the strong baseline)."""

    epochs: int = bounded(120, minimum=1)
    # "pk": P identities x K images per batch (what the triplet loss needs); "random": plain
    # shuffled batches of `batch_size` images, the last incomplete one dropped (the reference
    # code's stage 2, which has no triplet loss).
    sampler: Literal["pk", "random"] = "pk"
    num_identities: int = bounded(16, minimum=2)
    num_instances: int = bounded(4, minimum=1)
    batch_size: int = bounded(64, minimum=1)
    seed: int = bounded(0, minimum=0)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Validate every N epochs and after the last one (0: after the last one only).
    eval_every: int = bounded(1, minimum=0)
    # At each validation, also the training set's distances to its own and the nearest other
    # identity's anchor (report: learning curves). It costs one more pass over the training
    # images, as long as query and gallery together on Market; epochs that refresh stage 2's
    # anchors log them anyway.
    anchor_diagnostics: bool = True
    checkpoint_every: int = bounded(1, minimum=1)
    # "auto" picks CUDA when visible.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16"] = "none"
    # NHWC activations: the layout cuDNN's tensor-core kernels and oneDNN's CPU kernels prefer
    # (on this project's 2-core CPU, stage 1 of config.yaml trains 1.3x faster with it).
    channels_last: bool = True
    # torch.compile the model (default mode). On a GPU it pays inside `cuda_graph`; alone its
    # kernels cost more to launch than they save at batch 64 (README, Performance).
    compile: bool = False
    deterministic: bool = True
    num_threads: Optional[int] = bounded(None, minimum=1)
    # Data-parallel processes, one per GPU, started with torchrun by the workflow's training rules.
    world_size: int = bounded(1, minimum=1)
    # Batch-norm statistics over all processes' batches, so N processes train like one.
    sync_bn: bool = True
    # Capture the whole training step as one CUDA graph and replay it: no per-kernel launch
    # cost, which dominates small batches of large models. CUDA only (ignored on the CPU).
    # With `compile`, the graph holds the compiled model's fused kernels.
    cuda_graph: bool = False
    # Training batches augmented per call; 0 lets the trainer choose (8 on a GPU, where one
    # batch's ~100 small kernels cost more to launch than to run, 1 on the CPU). The batches
    # are the same whatever the value.
    augment_chunk: int = bounded(0, minimum=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cuda_graph:
            conflicts = [what for what, bad in (
                (f"world_size {self.world_size} (one process only)", self.world_size > 1),
                ("the centre loss (its own optimizer step)", bool(self.loss.center_weight)),
                (f"optimizer {self.optimizer.name} (adam only)", self.optimizer.name != "adam"),
            ) if bad]
            if conflicts:
                raise ConfigError(f"cuda_graph: cannot be combined with {', '.join(conflicts)}")
        if self.loss.triplet_weight and self.sampler == "random":
            raise ConfigError(
                "sampler: the triplet loss needs P x K batches (sampler: pk); random batches may hold no positive "
                "pair (set loss.triplet_weight: 0 to train without it)"
            )
        if self.loss.triplet_weight and self.num_instances < 2:
            raise ConfigError(
                f"num_instances: the triplet loss needs at least 2 images per identity in a batch, got {self.num_instances}"
            )

    def check_schedule(self) -> None:
        """Raise a ConfigError when a milestone or the warm-up lies at or past `epochs`.

        Not part of building a stage: a benchmark or a test may shorten a stage on purpose and
        keep its schedule. The workflow's config check calls it for every configured stage.
        """
        # Epochs count from 0: a milestone m lowers the lr from epoch m on, and the warm-up
        # runs through epoch warmup_epochs - 1. Either at or past `epochs` never happens.
        schedule = self.schedule
        if schedule.kind != "warmup_multistep":
            return
        late = [m for m in schedule.milestones if m >= self.epochs]
        if late:
            raise ConfigError(
                f"schedule.milestones: {late} not below epochs ({self.epochs}), so the lr would never drop there "
                f"(a milestone m lowers it from epoch m, counted from 0); give milestones below {self.epochs}, "
                "[] for none, or `schedule: {kind: constant}`")
        if schedule.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"schedule.warmup_epochs: {schedule.warmup_epochs} is not below epochs ({self.epochs}), so the "
                f"stage would end before its lr reached optimizer.lr; give fewer warm-up epochs (0 for none)")


def null_section(key: str) -> str:
    """The message for a section left empty: `stage1:` with nothing under it is YAML's null."""
    return (f"{key}: expected a mapping of settings, got null (an empty section): give it settings, or {{}} "
            "for the defaults")


@dataclass(frozen=True)
class InferenceConfig(CheckedSection):
    """How a trained stage's test features are computed: its input size, device and precision.

    The anchors and the evaluation's features of a stage are extracted with these settings of
    the stage that consumes them (`of`); validation during training uses its own stage's.
    """

    height: int = bounded(256, minimum=1)
    width: int = bounded(128, minimum=1)
    # Images are decoded once and cached at this size (default: the input size).
    cache_height: Optional[int] = bounded(None, minimum=1)
    cache_width: Optional[int] = bounded(None, minimum=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16"] = "none"
    channels_last: bool = True

    @classmethod
    def of(cls, stage: StageConfig) -> InferenceConfig:
        """The inference settings of a training stage."""
        a = stage.augment
        return cls(height=a.height, width=a.width, cache_height=a.cache_height, cache_width=a.cache_width,
                   device=stage.device, amp=stage.amp, channels_last=stage.channels_last)

    @property
    def cache_size(self) -> tuple[int, int]:
        """(H, W) at which images are decoded and held in memory."""
        return (self.cache_height or self.height, self.cache_width or self.width)


# Ranked queries the evaluation keeps in ranking.json: the most a report can show.
RANKING_EXAMPLES = 20


@dataclass(frozen=True)
class ReportConfig(CheckedSection):
    """The final report's title, and the ranked queries each retrieval figure shows."""

    title: str = "ClusterAlign ReID report"
    retrieval_examples: int = bounded(5, minimum=1, maximum=RANKING_EXAMPLES)


def stage2_defaults() -> dict[str, Any]:
    """Stage 2 of the paper: new Adam, constant lr 3.5e-6, 40 epochs, CE + anchor loss, random batches of 64."""
    return {
        "epochs": 40,
        "sampler": "random",
        "optimizer": {"lr": 3.5e-6},
        "schedule": {"kind": "constant"},
        "loss": {
            "label_smoothing": 0.0,
            "triplet_weight": 0.0,
            "anchor_weight": 1.0,
        },
    }


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: a dataset, a model, and the settings of both stages."""

    name: str
    dataset: str
    model: ModelConfig
    stage1: StageConfig
    stage2: StageConfig
    features: FeatureConfig
    # Validation during training is kept apart from `eval` so that changing the final
    # evaluation (say, switching re-ranking on) never retrains a stage.
    validation: EvalConfig
    eval: FinalEvalConfig
    # Also train stage 2 without the anchor loss (same start, schedule and seed): the report
    # then separates what the anchor loss buys from what more training at a small lr buys.
    control: bool = False
    # Independent replicates of the whole experiment; replicate r trains every stage with seed + r.
    replicates: int = 1
    # Other datasets whose test split (query/gallery) every trained stage is also evaluated on:
    # the cross-domain table (e.g. trained on Market-1501, tested on DukeMTMC-reID).
    test_datasets: tuple[str, ...] = ()

    @property
    def evaluated_on(self) -> tuple[str, ...]:
        """Every dataset whose test split each trained stage is evaluated on: its own first."""
        return (self.dataset, *self.test_datasets)

    @property
    def stage2_control(self) -> StageConfig:
        """Stage 2 with the anchor loss switched off."""
        return dataclasses.replace(self.stage2, loss=dataclasses.replace(self.stage2.loss, anchor_weight=0.0))

    def replicate(self, index: int) -> ExperimentConfig:
        """Replicate `index` (0-based): every stage's seed moved by `index`, all else the same."""
        if not 0 <= index < self.replicates:
            raise ConfigError(f"experiments.{self.name}: replicate {index} out of range; replicates: {self.replicates}")
        return dataclasses.replace(
            self,
            stage1=dataclasses.replace(self.stage1, seed=self.stage1.seed + index),
            stage2=dataclasses.replace(self.stage2, seed=self.stage2.seed + index),
        )


# --------------------------------------------------------------------------- building


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """The field types of a config dataclass, its annotations evaluated once."""
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is Path:
        return "path"
    if origin is dict:
        return "mapping"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


# YAML 1.1 (PyYAML) reads a number written without a dot, such as 1e-6, as a string: a float
# field takes such text too. The schema accepts the same pattern.
FLOAT_TEXT = r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?"


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # built in code already, and checked then
            return value
        if value is None:
            raise ConfigError(null_section(key))
        return from_dict(tp, value, key)
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise ConfigError(f"{key}: expected one of {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            if dataclasses.is_dataclass(arg):  # its own message names the key inside it
                return _convert(value, arg, key)
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, os.PathLike)) and os.fspath(value):
            return Path(value)
        raise ConfigError(f"{key}: expected a file or folder path, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and re.fullmatch(FLOAT_TEXT, value):
            number = float(value)
        if number is not None:
            # YAML's .inf and .nan are floats that every bound lets through (NaN compares false)
            # and would only show up as diverged features after an epoch.
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this module does not know
        raise TypeError(f"unsupported config field type {tp!r} at {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: Any, key: str = "config", *, given: Mapping[str, Any] | None = None) -> Any:
    """Build dataclass `cls` from a mapping, naming the dotted key of any bad value.

    `given`: fields the caller sets (an entry's name, say), which the mapping may not. Errors are
    of `cls`'s own ConfigError subclass when it declares one (`CheckedSection._error`).
    """
    error = getattr(cls, "_error", ConfigError)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise error(f"{key}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in (given or {})}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise error(f"{key}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}")
    kwargs = dict(given or {})
    for name, f in fields.items():
        if name in data:
            try:
                kwargs[name] = _convert(data[name], hints[name], f"{key}.{name}")
            except ConfigError as err:
                raise (err if isinstance(err, error) else error(str(err))) from None
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise error(f"{key}: missing required key {name!r}")
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a cross-field check in __post_init__
        raise (type(err) if isinstance(err, error) else error)(_under(key, str(err), fields)) from None


def _under(key: str, message: str, fields: Mapping[str, Any]) -> str:
    """A section's check `message` under its key: ``key.field: ...`` when it names a field first, else ``key: ...``."""
    named = re.match(r"([A-Za-z_][A-Za-z0-9_]*)[.:\[]", message)
    return f"{key}.{message}" if named and named.group(1) in fields else f"{key}: {message}"


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Return `base` updated recursively by `override` (mappings merge, other values replace)."""
    merged = dict(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def sorted_keys(obj: Any) -> Any:
    """`obj` with every mapping's keys in sorted order, so a reordered YAML section compares equal."""
    if isinstance(obj, dict):
        return {k: sorted_keys(obj[k]) for k in sorted(obj, key=str)}
    if isinstance(obj, list):
        return [sorted_keys(v) for v in obj]
    return obj


def to_dict(obj: Any) -> Any:
    """Plain (YAML/JSON-ready) form of a config dataclass; tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


# Settings of how a stage runs that never change what it produces (tests/test_trainer.py checks
# that weights, history and metrics are identical whatever their values). They are left out of
# the workflow's rerun parameters and of the checkpoint's fingerprint, so changing one neither
# retrains a stage nor restarts one that was interrupted.
RUN_ONLY_SETTINGS = ("checkpoint_every", "augment_chunk")


def result_settings(stage: StageConfig) -> dict[str, Any]:
    """A stage's settings that decide its outputs: all but `RUN_ONLY_SETTINGS`, in plain form."""
    return {k: v for k, v in to_dict(stage).items() if k not in RUN_ONLY_SETTINGS}


@dataclass(frozen=True)
class RunSettings:
    """A stage's `RUN_ONLY_SETTINGS`, as the training rule hands them to its script.

    Snakemake compares a rule's parameters of plain types (numbers, strings, lists, dicts) with
    those of the last run to decide a rerun, and skips parameters of any other type: as an
    object of this class, these settings reach the script but never rerun a stage.
    """

    checkpoint_every: int
    augment_chunk: int

    @classmethod
    def of(cls, stage: StageConfig) -> RunSettings:
        return cls(**{k: getattr(stage, k) for k in RUN_ONLY_SETTINGS})


def with_run_settings(settings: dict[str, Any], run: RunSettings, key: str) -> StageConfig:
    """The stage of `result_settings` output `settings`, with the run-only settings `run`."""
    return from_dict(StageConfig, {**settings, **to_dict(run)}, key)


def build_experiments(config: dict[str, Any]) -> dict[str, ExperimentConfig]:
    """Every ``experiments`` entry of a workflow config, checked against its ``models`` and ``datasets``."""
    datasets = config.get("datasets") or {}
    experiments = {}
    for name, raw in (config.get("experiments") or {}).items():
        exp = build_experiment(name, raw, config.get("models") or {})
        named = [("dataset", exp.dataset)] + [(f"test_datasets[{i}]", d) for i, d in enumerate(exp.test_datasets)]
        for key, dataset in named:
            if dataset not in datasets:
                raise ConfigError(
                    f"experiments.{name}.{key}: unknown dataset {dataset!r}; "
                    f"defined in `datasets`: {', '.join(sorted(datasets)) or 'none'}"
                )
        experiments[name] = exp
    return experiments


def _validation(raw: Any, key: str) -> EvalConfig:
    cfg = from_dict(EvalConfig, raw, key)
    if cfg.rerank:
        raise ConfigError(f"{key}.rerank: validation during training never re-ranks; re-ranking is part of the "
                          "final evaluation: set `eval: {rerank: true}`")
    return cfg


def _section(raw: dict[str, Any], name: str, key: str) -> Any:
    """`raw[name]`, or None (the defaults) when absent; present, it must be a mapping (null too is refused)."""
    if name in raw and raw[name] is None:
        raise ConfigError(null_section(f"{key}.{name}"))
    if name in raw and not isinstance(raw[name], dict):
        raise ConfigError(f"{key}.{name}: expected a mapping, got {raw[name]!r}")
    return raw.get(name)


def build_experiment(name: str, raw: dict[str, Any], models: dict[str, Any]) -> ExperimentConfig:
    """Resolve one `experiments.<name>` entry against the `models` section."""
    key = f"experiments.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping, got {raw!r}")
    for required in ("dataset", "model"):
        if required not in raw:
            raise ConfigError(f"{key}: missing required key {required!r}")
        if not isinstance(raw[required], str):
            raise ConfigError(f"{key}.{required}: expected the name of one of the {required}s, got {raw[required]!r}")
    model_name = raw["model"]
    if model_name not in models:
        raise ConfigError(
            f"{key}.model: unknown model {model_name!r}; defined in `models`: {', '.join(sorted(models)) or 'none'}"
        )
    allowed = {"dataset", "model", "stage1", "stage2", "features", "validation", "eval", "control", "replicates",
               "test_datasets"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    stage1 = from_dict(StageConfig, _section(raw, "stage1", key), f"{key}.stage1")
    # Stage 2 inherits stage 1's data and run settings (input size, seed, device), then the
    # paper's stage-2 recipe (random batches of 64, not stage 1's P x K), then what the
    # experiment says about stage 2.
    inherited = {k: to_dict(getattr(stage1, k)) for k in
                 ("seed", "augment", "eval_every", "anchor_diagnostics",
                  "checkpoint_every", "device", "amp", "channels_last", "compile", "deterministic", "num_threads",
                  "anchors", "world_size", "sync_bn", "cuda_graph", "augment_chunk")}
    stage2_raw = deep_merge(deep_merge(inherited, stage2_defaults()), _section(raw, "stage2", key))
    stage2 = from_dict(StageConfig, stage2_raw, f"{key}.stage2")
    return ExperimentConfig(
        name=name,
        dataset=raw["dataset"],
        model=from_dict(ModelConfig, _section(models, model_name, "models"), f"models.{model_name}"),
        stage1=stage1,
        stage2=stage2,
        features=from_dict(FeatureConfig, _section(raw, "features", key), f"{key}.features"),
        validation=_validation(_section(raw, "validation", key), f"{key}.validation"),
        eval=from_dict(FinalEvalConfig, _section(raw, "eval", key), f"{key}.eval"),
        control=_convert(raw.get("control", False), bool, f"{key}.control"),
        replicates=_replicates(raw.get("replicates", 1), f"{key}.replicates"),
        test_datasets=_test_datasets(raw.get("test_datasets", []), raw["dataset"], f"{key}.test_datasets"),
    )


def _test_datasets(value: Any, own: str, key: str) -> tuple[str, ...]:
    names = _convert(value, tuple[str, ...], key)
    for i, name in enumerate(names):
        if name == own:
            raise ConfigError(f"{key}[{i}]: {name!r} is the experiment's own dataset, which is always evaluated")
        if name in names[:i]:
            raise ConfigError(f"{key}[{i}]: {name!r} is listed twice")
    return names


def _replicates(value: Any, key: str) -> int:
    count = _convert(value, int, key)
    if count < 1:
        raise ConfigError(f"{key}: must be at least 1, got {count}")
    return count
