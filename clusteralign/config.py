"""Typed configuration: dataclasses built from the validated YAML.

Every setting a stage reads is a field here with the paper's value as its default, so a
config file only states what differs. `from_dict` rejects unknown keys and wrong types
with the dotted key path, e.g. ``experiments.market.stage1.optimizer.lr``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union


class ConfigError(ValueError):
    """A configuration value is missing, misspelt or of the wrong type."""


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ModelConfig:
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
    base_width: int = 64
    # MGN and ABD-Net set their branches' strides themselves and ignore this.
    last_stride: Literal[1, 2] = 1
    # "none", "imagenet" (torchvision weights from the local torch cache; IBN-a and
    # SE-ResNeXt: their public checkpoints in the same cache), or a file path.
    pretrained: str = "none"
    allow_download: bool = False
    neck: Literal["bnneck", "none"] = "bnneck"
    # Width of each branch/part embedding; None = the family's published value
    # (ft_net 512, pcb 256, mgn 256, abd 1024).
    embed_dim: Optional[int] = None
    # Horizontal parts; None = the family's value (pcb 6, abd 2; MGN's 2 + 3 are fixed).
    num_parts: Optional[int] = None
    # Dropout before the identity classifiers of ft_net, pcb and ABD-Net's global branch.
    dropout: float = 0.5
    # ABD-Net's diversity regularisers (reference --of-beta, --ow-beta, --of-start-epoch); 0 switches
    # off. The start epoch takes effect through the model's set_epoch(), which the trainer calls.
    of_weight: float = 1e-6
    ow_weight: float = 1e-3
    of_start_epoch: int = 23
    # Convolutions under the weight term: "stem" is what the reference code reaches (its
    # module walk stops at residual blocks), "backbone" every backbone conv as the paper says.
    ow_scope: Literal["stem", "backbone"] = "stem"

    def __post_init__(self) -> None:
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ConfigError(f"embed_dim: must be a positive width or null, got {self.embed_dim}")
        if self.num_parts is not None and self.num_parts < 1:
            raise ConfigError(f"num_parts: must be at least 1 or null, got {self.num_parts}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.of_weight < 0 or self.ow_weight < 0 or self.of_start_epoch < 0:
            raise ConfigError("of_weight, ow_weight, of_start_epoch: must not be negative")
        if self.family in ("mgn", "abd") and not self.backbone.startswith("resnet"):
            raise ConfigError(
                f"backbone: family {self.family!r} splits a ResNet into branches and needs a resnet* backbone, "
                f"got {self.backbone!r}"
            )


@dataclass(frozen=True)
class AugmentConfig:
    """Input size and training augmentation (Luo et al.'s strong baseline)."""

    height: int = 256
    width: int = 128
    flip_prob: float = 0.5
    pad: int = 10
    random_erasing_prob: float = 0.5
    # Images are decoded once and cached at this size (default: the input size).
    cache_height: Optional[int] = None
    cache_width: Optional[int] = None


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adam", "sgd"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    # The strong baseline trains biases with twice the lr and no weight decay.
    bias_lr_factor: float = 1.0
    weight_decay_bias: float = 5e-4


@dataclass(frozen=True)
class ScheduleConfig:
    kind: Literal["warmup_multistep", "constant"] = "warmup_multistep"
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    milestones: tuple[int, ...] = (40, 70)
    gamma: float = 0.1


@dataclass(frozen=True)
class LossConfig:
    """Loss weights; a weight of 0 switches a term off."""

    ce_weight: float = 1.0
    label_smoothing: float = 0.1
    triplet_weight: float = 1.0
    # None selects the soft-margin triplet.
    triplet_margin: Optional[float] = 0.3
    center_weight: float = 0.0
    center_lr: float = 0.5
    anchor_weight: float = 0.0
    anchor_kind: Literal["mse", "l1", "intra_inter"] = "mse"
    anchor_margin: Optional[float] = None


@dataclass(frozen=True)
class AnchorConfig:
    """How the anchor dictionary (one mean feature per training identity) is kept."""

    update: Literal["epoch", "fixed", "momentum"] = "epoch"
    momentum: float = 0.9
    weighting: Literal["mean", "probability"] = "mean"


@dataclass(frozen=True)
class FeatureConfig:
    """How test features are extracted (validation, anchors and the final evaluation)."""

    flip: bool = True
    batch_size: int = 256


@dataclass(frozen=True)
class EvalConfig:
    """How query features are ranked against the gallery."""

    metric: Literal["euclidean", "cosine"] = "euclidean"
    normalize: bool = True
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    max_rank: int = 50


@dataclass(frozen=True)
class StageConfig:
    """One training stage. Defaults are stage 1 of the paper (the strong baseline)."""

    epochs: int = 120
    num_identities: int = 16
    num_instances: int = 4
    seed: int = 0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval_every: int = 1
    # At each validation, also the training set's distances to its own and the nearest other
    # identity's anchor (report: learning curves). It costs one more pass over the training
    # images, as long as query and gallery together on Market; epochs that refresh stage 2's
    # anchors log them anyway.
    anchor_diagnostics: bool = True
    checkpoint_every: int = 1
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
    num_threads: Optional[int] = None
    # Data-parallel processes, one per GPU, started with torchrun by the workflow's training rules.
    world_size: int = 1
    # Batch-norm statistics over all processes' batches, so N processes train like one.
    sync_bn: bool = True
    # Capture the whole training step as one CUDA graph and replay it: no per-kernel launch
    # cost, which dominates small batches of large models. CUDA only (ignored on the CPU).
    # With `compile`, the graph holds the compiled model's fused kernels.
    cuda_graph: bool = False
    # Training batches augmented per call; 0 lets the trainer choose (8 on a GPU, where one
    # batch's ~100 small kernels cost more to launch than to run, 1 on the CPU). The batches
    # are the same whatever the value.
    augment_chunk: int = 0

    def __post_init__(self) -> None:
        if self.augment_chunk < 0:
            raise ConfigError(f"augment_chunk: must be 0 (automatic) or a number of batches, got {self.augment_chunk}")
        if self.world_size < 1:
            raise ConfigError(f"world_size: must be at least 1, got {self.world_size}")
        if self.epochs < 1:
            raise ConfigError(f"epochs: must be at least 1, got {self.epochs}")
        if self.num_identities < 2 or self.num_instances < 1:
            raise ConfigError("num_identities must be >= 2 and num_instances >= 1 (a P x K batch)")
        if self.cuda_graph:
            conflicts = [what for what, bad in (
                (f"world_size {self.world_size} (one process only)", self.world_size > 1),
                ("the centre loss (its own optimizer step)", bool(self.loss.center_weight)),
                (f"optimizer {self.optimizer.name} (adam only)", self.optimizer.name != "adam"),
            ) if bad]
            if conflicts:
                raise ConfigError(f"cuda_graph: cannot be combined with {', '.join(conflicts)}")
        if self.loss.triplet_weight and self.num_instances < 2:
            raise ConfigError(
                f"num_instances: the triplet loss needs at least 2 images per identity in a batch, got {self.num_instances}"
            )


def stage2_defaults() -> dict[str, Any]:
    """Stage 2 of the paper: new Adam, constant lr 3.5e-6, 40 epochs, CE + anchor loss."""
    return {
        "epochs": 40,
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
    eval: EvalConfig
    # Also train stage 2 without the anchor loss (same start, schedule and seed): the report
    # then separates what the anchor loss buys from what more training at a small lr buys.
    control: bool = False

    @property
    def stage2_control(self) -> StageConfig:
        """Stage 2 with the anchor loss switched off."""
        return dataclasses.replace(self.stage2, loss=dataclasses.replace(self.stage2.loss, anchor_weight=0.0))


# --------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
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
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and re.fullmatch(FLOAT_TEXT, value):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this module does not know
        raise TypeError(f"unsupported config field type {tp!r} at {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: Any, key: str = "config") -> Any:
    """Build dataclass `cls` from a mapping, naming the dotted key of any bad value."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{key}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{key}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: missing required key {name!r}")
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a cross-field check in __post_init__
        raise ConfigError(f"{key}.{err}") from None


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Return `base` updated recursively by `override` (mappings merge, other values replace)."""
    merged = dict(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def to_dict(obj: Any) -> Any:
    """Plain (YAML/JSON-ready) form of a config dataclass; tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def build_experiments(config: dict[str, Any]) -> dict[str, ExperimentConfig]:
    """Every ``experiments`` entry of a workflow config, checked against its ``models`` and ``datasets``."""
    datasets = config.get("datasets") or {}
    experiments = {}
    for name, raw in (config.get("experiments") or {}).items():
        exp = build_experiment(name, raw, config.get("models") or {})
        if exp.dataset not in datasets:
            raise ConfigError(
                f"experiments.{name}.dataset: unknown dataset {exp.dataset!r}; "
                f"defined in `datasets`: {', '.join(sorted(datasets)) or 'none'}"
            )
        experiments[name] = exp
    return experiments


def build_experiment(name: str, raw: dict[str, Any], models: dict[str, Any]) -> ExperimentConfig:
    """Resolve one `experiments.<name>` entry against the `models` section."""
    key = f"experiments.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping, got {raw!r}")
    for required in ("dataset", "model"):
        if required not in raw:
            raise ConfigError(f"{key}: missing required key {required!r}")
    model_name = raw["model"]
    if model_name not in models:
        raise ConfigError(
            f"{key}.model: unknown model {model_name!r}; defined in `models`: {', '.join(sorted(models)) or 'none'}"
        )
    allowed = {"dataset", "model", "stage1", "stage2", "features", "validation", "eval", "control"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    stage1 = from_dict(StageConfig, raw.get("stage1"), f"{key}.stage1")
    # Stage 2 inherits stage 1's data settings (input size, sampler, device), then the
    # paper's stage-2 recipe, then what the experiment says about stage 2.
    inherited = {k: to_dict(getattr(stage1, k)) for k in
                 ("num_identities", "num_instances", "seed", "augment", "eval_every", "anchor_diagnostics",
                  "checkpoint_every", "device", "amp", "channels_last", "compile", "deterministic", "num_threads",
                  "anchors", "world_size", "sync_bn", "cuda_graph")}
    stage2_raw = deep_merge(deep_merge(inherited, stage2_defaults()), raw.get("stage2"))
    stage2 = from_dict(StageConfig, stage2_raw, f"{key}.stage2")
    return ExperimentConfig(
        name=name,
        dataset=raw["dataset"],
        model=from_dict(ModelConfig, models[model_name], f"models.{model_name}"),
        stage1=stage1,
        stage2=stage2,
        features=from_dict(FeatureConfig, raw.get("features"), f"{key}.features"),
        validation=from_dict(EvalConfig, raw.get("validation"), f"{key}.validation"),
        eval=from_dict(EvalConfig, raw.get("eval"), f"{key}.eval"),
        control=_convert(raw.get("control", False), bool, f"{key}.control"),
    )
