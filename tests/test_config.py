import dataclasses
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from clusteralign.config import (
    ConfigError,
    LossConfig,
    ModelConfig,
    StageConfig,
    CheckedSection,
    TypedSection,
    bounded,
    build_experiment,
    build_experiments,
    from_dict,
    sorted_keys,
    to_dict,
)
from clusteralign.pipeline.workflow_config import check_workflow_config

MODELS = {"r18": {"backbone": "resnet18", "base_width": 8}}


def test_defaults_are_the_papers_stage1():
    s = StageConfig()
    assert (s.epochs, s.num_identities, s.num_instances) == (120, 16, 4)
    assert s.optimizer.lr == 3.5e-4 and s.optimizer.weight_decay == 5e-4
    assert s.schedule.milestones == (40, 70) and s.schedule.warmup_epochs == 10
    assert s.loss.triplet_margin == 0.3 and s.loss.label_smoothing == 0.1
    assert s.augment.random_erasing_prob == 0.5 and (s.augment.height, s.augment.width) == (256, 128)


def test_stage2_gets_the_papers_recipe_and_inherits_data_settings():
    exp = build_experiment(
        "e", {"dataset": "d", "model": "r18", "stage1": {"augment": {"height": 64, "width": 32}, "seed": 3}}, MODELS
    )
    s2 = exp.stage2
    assert s2.epochs == 40 and s2.optimizer.lr == 3.5e-6 and s2.schedule.kind == "constant"
    assert s2.loss.triplet_weight == 0 and s2.loss.anchor_weight == 1.0 and s2.loss.label_smoothing == 0
    assert s2.augment.height == 64 and s2.seed == 3
    assert s2.augment.random_erasing_prob == 0.5
    assert exp.model == ModelConfig(backbone="resnet18", base_width=8)


def test_stage2_overrides_win():
    exp = build_experiment("e", {"dataset": "d", "model": "r18", "stage2": {"optimizer": {"lr": 1e-5}}}, MODELS)
    assert exp.stage2.optimizer.lr == 1e-5 and exp.stage2.epochs == 40


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"dataset": "d", "model": "r18", "stage1": {"optimiser": {}}}, "experiments.e.stage1: unknown key(s) optimiser"),
        ({"dataset": "d", "model": "r18", "stage1": {"epochs": "ten"}}, "experiments.e.stage1.epochs: expected int"),
        ({"dataset": "d", "model": "r18", "stage1": {"optimizer": {"name": "adamw"}}}, "stage1.optimizer.name"),
        ({"dataset": "d", "model": "nope"}, "unknown model 'nope'"),
        ({"model": "r18"}, "missing required key 'dataset'"),
        ({"dataset": "d", "model": "r18", "stage1": {"amp": True}}, "stage1.amp"),
    ],
)
def test_bad_values_name_their_key(raw, needle):
    with pytest.raises(ConfigError, match=None) as err:
        build_experiment("e", raw, MODELS)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "section, value, needle",
    [
        ("stage1", {"checkpoint_every": 0}, "experiments.e.stage1.checkpoint_every: must be at least 1, got 0"),
        ("stage1", {"optimizer": {"lr": -1}}, "experiments.e.stage1.optimizer.lr: must be greater than 0, got -1.0"),
        ("stage1", {"optimizer": {"lr": "-1e-4"}}, "stage1.optimizer.lr: must be greater than 0, got -0.0001"),
        ("stage1", {"schedule": {"milestones": [40, 0]}},
         "stage1.schedule.milestones: each item must be at least 1, got [40, 0]"),
        ("stage1", {"augment": {"flip_prob": 2}}, "stage1.augment.flip_prob: must be in [0, 1], got 2.0"),
        ("stage1", {"num_threads": -2}, "stage1.num_threads: must be at least 1, got -2"),
        ("stage1", {"anchors": {"momentum": 1.5}}, "stage1.anchors.momentum: must be in [0, 1], got 1.5"),
        ("stage2", {"loss": {"label_smoothing": 1.5}}, "stage2.loss.label_smoothing: must be in [0, 1], got 1.5"),
        ("features", {"batch_size": 0}, "experiments.e.features.batch_size: must be at least 1, got 0"),
        ("eval", {"max_rank": 0}, "experiments.e.eval.max_rank: must be at least 1, got 0"),
        ("validation", {"lambda_value": -0.1}, "validation.lambda_value: must be in [0, 1], got -0.1"),
    ],
)
def test_values_out_of_range_name_their_key_and_the_range(section, value, needle):
    with pytest.raises(ConfigError) as err:
        build_experiment("e", {"dataset": "d", "model": "r18", section: value}, MODELS)
    assert needle in str(err.value)


def test_validation_refuses_re_ranking_and_stage2_inherits_the_augment_chunk():
    with pytest.raises(ConfigError, match=r"experiments.e.validation.rerank: validation during training never re-ranks"):
        build_experiment("e", {"dataset": "d", "model": "r18", "validation": {"rerank": True}}, MODELS)
    exp = build_experiment("e", {"dataset": "d", "model": "r18", "stage1": {"augment_chunk": 4}}, MODELS)
    assert exp.stage2.augment_chunk == exp.stage2_control.augment_chunk == 4


def test_only_the_final_evaluation_has_a_device():
    exp = build_experiment("e", {"dataset": "d", "model": "r18", "eval": {"device": "cuda"}}, MODELS)
    assert exp.eval.device == "cuda" and build_experiment("e", {"dataset": "d", "model": "r18"}, MODELS).eval.device == "cpu"
    with pytest.raises(ConfigError, match=r"experiments.e.validation: unknown key\(s\) device"):
        build_experiment("e", {"dataset": "d", "model": "r18", "validation": {"device": "cpu"}}, MODELS)
    with pytest.raises(ConfigError, match=r"experiments.e.eval.device: expected one of 'auto' \| 'cpu' \| 'cuda'"):
        build_experiment("e", {"dataset": "d", "model": "r18", "eval": {"device": "gpu"}}, MODELS)


def test_the_edges_of_each_range_and_null_are_accepted():
    exp = build_experiment("e", {"dataset": "d", "model": "r18", "stage1": {
        "eval_every": 0, "seed": 0, "num_threads": None, "augment": {"pad": 0, "flip_prob": 1, "random_erasing_prob": 0},
        "schedule": {"warmup_epochs": 0, "warmup_factor": 1}, "loss": {"triplet_margin": None, "label_smoothing": 0},
        "anchors": {"momentum": 0}}, "eval": {"lambda_value": 1}}, MODELS)
    assert exp.stage1.eval_every == 0 and exp.stage1.augment.pad == 0 and exp.eval.lambda_value == 1.0
    with pytest.raises(ConfigError, match=r"models.m.dropout: must be in \[0, 1\), got 1.0"):
        from_dict(ModelConfig, {"dropout": 1}, "models.m")


def test_bool_is_not_an_int_and_int_is_a_float():
    with pytest.raises(ConfigError):
        from_dict(StageConfig, {"epochs": True})
    assert from_dict(LossConfig, {"ce_weight": 1}).ce_weight == 1.0
    assert from_dict(LossConfig, {"triplet_margin": None}).triplet_margin is None
    # YAML 1.1 reads 1e-6 (no dot) as text; a float field takes it, and nothing else textual.
    assert from_dict(LossConfig, {"anchor_margin": "1e-6", "anchor_kind": "intra_inter"}).anchor_margin == 1e-6
    with pytest.raises(ConfigError, match=r"config.ce_weight: expected float"):
        from_dict(LossConfig, {"ce_weight": "one"})


def test_round_trip():
    s = from_dict(StageConfig, {"schedule": {"milestones": [5, 8]}})
    assert s.schedule.milestones == (5, 8)
    assert from_dict(StageConfig, to_dict(s)) == s


def test_triplet_needs_two_images_per_identity():
    with pytest.raises(ConfigError, match=r"experiments.e.stage1.num_instances: the triplet loss needs"):
        build_experiment("e", {"dataset": "d", "model": "r18", "stage1": {"num_instances": 1}}, MODELS)
    # stage 2 has no triplet term by default, so K = 1 is fine there
    exp = build_experiment("e", {"dataset": "d", "model": "r18", "stage2": {"num_instances": 1}}, MODELS)
    assert exp.stage2.num_instances == 1


def test_control_is_stage2_without_the_anchor_loss():
    exp = build_experiment("e", {"dataset": "d", "model": "r18", "control": True, "stage2": {"epochs": 7}}, MODELS)
    assert exp.control and exp.stage2_control.loss.anchor_weight == 0.0
    assert exp.stage2_control.epochs == 7 and exp.stage2_control.optimizer == exp.stage2.optimizer
    with pytest.raises(ConfigError, match="experiments.e.control"):
        build_experiment("e", {"dataset": "d", "model": "r18", "control": "yes"}, MODELS)


def test_cuda_graph_names_what_it_cannot_be_combined_with():
    raw = {"cuda_graph": True, "world_size": 2, "loss": {"center_weight": 5e-4},
           "optimizer": {"name": "sgd"}}
    with pytest.raises(ConfigError, match=r"experiments.e.stage1.cuda_graph: cannot be combined with") as err:
        build_experiment("e", {"dataset": "d", "model": "r18", "stage1": raw}, MODELS)
    for part in ("world_size 2", "centre loss", "optimizer sgd"):
        assert part in str(err.value)
    exp = build_experiment("e", {"dataset": "d", "model": "r18", "stage1": {"cuda_graph": True, "compile": True}}, MODELS)
    assert exp.stage2.cuda_graph  # inherited, like the other device settings


def test_build_experiments_checks_each_dataset_name():
    config = {"datasets": {"d": {}}, "models": MODELS,
              "experiments": {"a": {"dataset": "d", "model": "r18"}, "b": {"dataset": "nope", "model": "r18"}}}
    with pytest.raises(ConfigError, match=r"experiments.b.dataset: unknown dataset 'nope'; defined in `datasets`: d"):
        build_experiments(config)
    del config["experiments"]["b"]
    assert list(build_experiments(config)) == ["a"]


def test_sorted_keys_orders_every_mapping_and_keeps_lists_in_order():
    raw = {"source": {"path": "p", "md5": "m"}, "reader": "r", "opts": [{"z": 1, "a": 2}, 3]}
    out = sorted_keys(raw)
    assert out == raw and list(out) == ["opts", "reader", "source"] and list(out["source"]) == ["md5", "path"]
    assert list(out["opts"][0]) == ["a", "z"] and out["opts"][1] == 3


def test_only_a_named_weights_file_is_a_pretrained_file():
    # The workflow makes it an input of stage 1; "imagenet" is looked up when the job runs.
    assert ModelConfig().pretrained_file() is None
    assert ModelConfig(pretrained="imagenet").pretrained_file() is None
    assert ModelConfig(pretrained="weights/r50.pth").pretrained_file() == "weights/r50.pth"


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "1e999"])
def test_infinite_or_nan_floats_are_refused_naming_the_key(value):
    # YAML's .inf passes every bound, and NaN compares false with each; either only showed up
    # after an epoch, as diverged features.
    assert yaml.safe_load("lr: .inf") == {"lr": float("inf")}
    with pytest.raises(ConfigError, match=r"experiments.e.stage1.optimizer.lr: expected a finite number, got"):
        build_experiment("e", {"dataset": "d", "model": "r18", "stage1": {"optimizer": {"lr": value}}}, MODELS)
    with pytest.raises(ConfigError, match=r"experiments.e.stage2.loss.triplet_margin: expected float \| null"):
        build_experiment("e", {"dataset": "d", "model": "r18", "stage2": {"loss": {"triplet_margin": value}}}, MODELS)


@pytest.mark.parametrize("schedule, needle", [
    ({"milestones": [40, 70]}, "experiments.e.stage1.schedule.milestones: [40, 70] not below epochs (40)"),
    ({"milestones": [10, 50, 60]}, "schedule.milestones: [50, 60] not below epochs (40)"),
    ({"warmup_epochs": 40, "milestones": [20]}, "experiments.e.stage1.schedule.warmup_epochs: 40 is not below epochs"),
])
def test_milestones_and_warm_up_beyond_the_epochs_are_refused(schedule, needle):
    config = {"datasets": {"d": {"reader": "synthetic", "generate": {}}}, "models": MODELS,
              "experiments": {"e": {"dataset": "d", "model": "r18", "stage1": {"epochs": 40, "schedule": schedule}}}}
    with pytest.raises(ConfigError) as err:
        check_workflow_config(config)
    assert needle in str(err.value)
    # Only the workflow's config check refuses them: a benchmark or a test may shorten a stage on purpose.
    stage = build_experiments(config)["e"].stage1
    assert dataclasses.replace(stage, epochs=2).epochs == 2


def test_a_schedule_inside_the_epochs_or_constant_is_fine():
    exp = build_experiment("e", {"dataset": "d", "model": "r18", "stage1": {
        "epochs": 40, "schedule": {"warmup_epochs": 39, "milestones": [39]}}}, MODELS)
    exp.stage1.check_schedule()
    # Stage 2's constant lr has no milestones to reach, whatever they are (its defaults are 40, 70).
    exp = build_experiment("e", {"dataset": "d", "model": "r18", "stage2": {"epochs": 5}}, MODELS)
    assert exp.stage2.schedule.kind == "constant" and exp.stage2.schedule.milestones == (40, 70)
    exp.stage2.check_schedule()
    # A stage-2 warm-up schedule is its own: stage 1's is not inherited, so it is checked too.
    exp = build_experiment("e", {"dataset": "d", "model": "r18", "stage2": {"schedule": {"kind": "warmup_multistep"}}},
                           MODELS)
    with pytest.raises(ConfigError, match=r"^schedule.milestones: \[40, 70\] not below epochs"):
        exp.stage2.check_schedule()


@pytest.mark.parametrize("raw, key", [
    ({"stage1": None}, "experiments.e.stage1"),
    ({"stage2": None}, "experiments.e.stage2"),
    ({"stage2": {"optimizer": None}}, "experiments.e.stage2.optimizer"),
    ({"stage1": {"schedule": None}}, "experiments.e.stage1.schedule"),
    ({"features": None}, "experiments.e.features"),
    ({"validation": None}, "experiments.e.validation"),
    ({"eval": None}, "experiments.e.eval"),
])
def test_an_empty_section_is_refused_like_the_schema_does(raw, key):
    # `stage1:` with nothing under it is null. Read as "the defaults", an empty stage-2
    # `optimizer:` would have replaced stage 2's recipe (lr 3.5e-6) with stage 1's defaults.
    with pytest.raises(ConfigError) as err:
        build_experiment("e", {"dataset": "d", "model": "r18", **raw}, MODELS)
    assert str(err.value) == (f"{key}: expected a mapping of settings, got null (an empty section): give it "
                              "settings, or {} for the defaults")
    empty = {name: ({} if value is None else {next(iter(value)): {}}) for name, value in raw.items()}
    build_experiment("e", {"dataset": "d", "model": "r18", **empty}, MODELS)
    with pytest.raises(ConfigError, match=r"^models.r18: expected a mapping of settings, got null"):
        build_experiment("e", {"dataset": "d", "model": "r18"}, {"r18": None})


class PlaceError(ConfigError):
    pass


@dataclasses.dataclass(frozen=True)
class Place(TypedSection):
    """A typed section that code builds too, with an error class of its own."""

    _error = PlaceError
    where: Path
    size: Optional[int] = bounded(None, minimum=1)
    ratio: float = bounded(0.5, minimum=0, maximum=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.where.is_absolute():
            raise PlaceError(f"where: must be a relative path, got {str(self.where)!r}")
        if self.size is not None and self.ratio == 0:
            raise PlaceError("a place with a size needs a ratio above 0")


@dataclasses.dataclass(frozen=True)
class Entry(CheckedSection):
    name: str
    place: Optional[Place] = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


def test_a_typed_section_built_in_code_is_checked_and_converted_as_from_dict_does():
    place = Place(where="data/x", ratio=1)
    assert place.where == Path("data/x") and place.ratio == 1.0 and isinstance(place.ratio, float)
    assert Place(where=Path("y"), ratio="1e-1").ratio == 0.1
    assert from_dict(Place, {"where": "data/x", "ratio": 1}) == place
    for kwargs, message in [
        ({"where": ""}, "where: expected a file or folder path, got ''"),
        ({"where": 3}, "where: expected a file or folder path, got 3"),
        ({"where": "x", "size": True}, "size: expected int | null, got True"),
        ({"where": "x", "size": 0}, "size: must be at least 1, got 0"),
        ({"where": "x", "ratio": "half"}, "ratio: expected float, got 'half'"),
        ({"where": "/x"}, "where: must be a relative path, got '/x'"),
    ]:
        with pytest.raises(PlaceError) as err:
            Place(**kwargs)
        assert str(err.value) == message


def test_from_dict_names_the_key_inside_an_optional_section_and_keeps_its_error_class():
    entry = from_dict(Entry, {"place": {"where": "x", "size": 2}, "options": {"k": 1}}, "things.a", given={"name": "a"})
    assert entry == Entry("a", Place(Path("x"), 2), {"k": 1})
    assert from_dict(Entry, {}, "things.a", given={"name": "a"}) == Entry("a")
    for raw, error, message in [
        ({"place": {"where": "x", "size": "big"}}, PlaceError, "things.a.place.size: expected int | null, got 'big'"),
        ({"place": {"wher": "x"}}, PlaceError, "things.a.place: unknown key(s) wher; allowed: ratio, size, where"),
        ({"place": {}}, PlaceError, "things.a.place: missing required key 'where'"),
        ({"place": ["x"]}, PlaceError, "things.a.place: expected a mapping, got ['x']"),
        ({"place": {"where": "/x"}}, PlaceError, "things.a.place.where: must be a relative path, got '/x'"),
        # A check of the section as a whole names the section, not a key in it.
        ({"place": {"where": "x", "size": 1, "ratio": 0}}, PlaceError,
         "things.a.place: a place with a size needs a ratio above 0"),
        ({"options": [1]}, ConfigError, "things.a.options: expected a mapping, got [1]"),
        # A field the caller gives is not a key of the mapping.
        ({"name": "b"}, ConfigError, "things.a: unknown key(s) name; allowed: options, place"),
    ]:
        with pytest.raises(error) as err:
            from_dict(Entry, raw, "things.a", given={"name": "a"})
        assert str(err.value) == message
