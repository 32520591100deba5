"""The paper's reference code, switchable: stem ReLU, original ImageNet file, erasing fill, stage-2 sampler."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from clusteralign.config import AugmentConfig, ConfigError, ModelConfig, StageConfig, build_experiment, from_dict
from clusteralign.models import build_model
from clusteralign.models.file import ModelFile
from clusteralign.models.pretrained import PretrainedWeightsError, imagenet_cache_path
from clusteralign.train.sampler import PKSampler, RandomBatchSampler, SamplerConfigError, batch_sampler
from clusteralign.train.inputs import train_augment

MODELS = {"r18": {"backbone": "resnet18", "base_width": 8}}


# --------------------------------------------------------------------------- stem ReLU


def _stem(model: nn.Module) -> nn.Module:
    return model.base.relu if hasattr(model, "base") else model.trunk.relu


@pytest.mark.parametrize("family, backbone, relu", [
    ("baseline", "resnet50", False),         # the strong baseline's resnet.py: the line is commented out
    ("baseline", "resnet18", False),
    ("baseline", "resnet50_ibn_a", True),    # its IBN-a trunk keeps the ReLU
    ("ft_net", "resnet50", True),            # layumi's torchvision ResNets
])
def test_the_stem_relu_defaults_to_the_reference_codes_choice(family, backbone, relu):
    cfg = ModelConfig(family=family, backbone=backbone, base_width=8)
    assert cfg.stem_relu is None and cfg.has_stem_relu() is relu
    assert ModelConfig(family=family, backbone=backbone, stem_relu=not relu).has_stem_relu() is (not relu)


def test_the_stem_relu_switch_changes_the_network_not_its_weights():
    x = torch.randn(2, 3, 64, 32)
    torch.manual_seed(0)
    without = build_model(ModelConfig(backbone="resnet18", base_width=8), num_classes=3).eval()
    with_relu = build_model(ModelConfig(backbone="resnet18", base_width=8, stem_relu=True), num_classes=3).eval()
    with_relu.load_state_dict(without.state_dict())  # same keys: the switch adds no parameter
    assert isinstance(without.base.relu, nn.Identity) and isinstance(with_relu.base.relu, nn.ReLU)
    stem = without.base
    pre = stem.bn1(stem.conv1(x))
    assert (pre < 0).any(), "negative values reach the max-pool without the ReLU"
    assert not torch.allclose(without(x).embedding(), with_relu(x).embedding())


def test_multi_branch_families_follow_the_switch():
    cfg = ModelConfig(family="mgn", backbone="resnet18", base_width=8, embed_dim=16, stem_relu=False)
    model = build_model(cfg, num_classes=3)
    assert any(isinstance(m, nn.Identity) for m in model.modules())
    assert sum(isinstance(m, nn.ReLU) for m in build_model(
        ModelConfig(family="mgn", backbone="resnet18", base_width=8, embed_dim=16), num_classes=3).modules()) > 0


def test_se_resnext_keeps_its_relu():
    with pytest.raises(ConfigError, match="stem_relu: se_resnext50's stem always ends in a ReLU"):
        ModelConfig(backbone="se_resnext50", stem_relu=False)


def test_model_files_from_before_the_switch_rebuild_with_the_relu(tmp_path):
    cfg = ModelConfig(backbone="resnet18", base_width=8, stem_relu=True)
    model = build_model(cfg, num_classes=3)
    path = tmp_path / "old.pt"
    ModelFile(cfg, 3, [1, 2, 3], model.state_dict(), {}).save(path)
    saved = torch.load(path, weights_only=True)
    del saved["model"]["stem_relu"]  # what files written before the switch hold
    torch.save(saved, path)
    loaded = ModelFile.load(path)
    assert loaded.model_cfg.has_stem_relu() and isinstance(loaded.build().base.relu, nn.ReLU)


# --------------------------------------------------------------------------- original ImageNet file


def test_imagenet_v1_reads_torchvisions_original_file_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = imagenet_cache_path("resnet50", "imagenet_v1")
    assert path.name == "resnet50-19c8e357.pth" and path.parent == tmp_path / "hub/checkpoints"
    assert imagenet_cache_path("resnet50").name != path.name  # `imagenet`: today's default file
    with pytest.raises(PretrainedWeightsError, match=r"resnet50-19c8e357\.pth"):
        build_model(ModelConfig(backbone="resnet50", pretrained="imagenet_v1"), num_classes=3)
    reference = torchvision.models.resnet18(weights=None)
    path18 = imagenet_cache_path("resnet18", "imagenet_v1")
    assert path18.name == "resnet18-5c106cde.pth"
    path18.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path18)
    model = build_model(ModelConfig(backbone="resnet18", pretrained="imagenet_v1"), num_classes=3)
    assert torch.equal(model.base.conv1.weight, reference.conv1.weight)


def test_imagenet_v1_is_only_for_torchvisions_resnets():
    with pytest.raises(ConfigError, match="pretrained: imagenet_v1 names torchvision's original files"):
        ModelConfig(backbone="resnet50_ibn_a", pretrained="imagenet_v1")
    assert ModelConfig(pretrained="imagenet_v1").pretrained_file() is None


# --------------------------------------------------------------------------- erasing fill


def test_erasing_fill_reaches_the_augmentation():
    assert AugmentConfig().erasing_fill == "zero"
    assert train_augment(StageConfig().augment).erasing_fill == "zero"
    stage = from_dict(StageConfig, {"augment": {"erasing_fill": "mean_values"}})
    assert train_augment(stage.augment).erasing_fill == "mean_values"
    with pytest.raises(ConfigError, match="augment.erasing_fill: expected one of"):
        from_dict(StageConfig, {"augment": {"erasing_fill": "grey"}}, "stage1")


# --------------------------------------------------------------------------- stage-2 sampler


def test_stage2_draws_random_batches_of_64_like_the_reference():
    exp = build_experiment("e", {"dataset": "d", "model": "r18"}, MODELS)
    assert exp.stage1.sampler == "pk" and exp.stage2.sampler == "random" and exp.stage2.batch_size == 64
    assert exp.stage2_control.sampler == "random"
    pk = build_experiment("e", {"dataset": "d", "model": "r18", "stage2": {"sampler": "pk"}}, MODELS)
    assert pk.stage2.sampler == "pk"


def test_random_batches_cannot_carry_the_triplet_loss():
    with pytest.raises(ConfigError, match="sampler: the triplet loss needs P x K batches"):
        from_dict(StageConfig, {"sampler": "random"})
    assert from_dict(StageConfig, {"sampler": "random", "loss": {"triplet_weight": 0}}).sampler == "random"


def _labels() -> list[int]:
    return [pid for pid in range(40) for _ in range(5)]  # 200 images, 5 of each identity


def test_random_batches_are_not_pk_batches():
    labels = _labels()
    random = batch_sampler("random", labels, num_identities=16, num_instances=4, batch_size=64, seed=0)
    pk = batch_sampler("pk", labels, num_identities=16, num_instances=4, batch_size=64, seed=0)
    assert isinstance(random, RandomBatchSampler) and isinstance(pk, PKSampler)
    for batch in pk:
        counts = torch.bincount(torch.tensor([labels[i] for i in batch]))
        assert sorted(counts[counts > 0].tolist()) == [4] * 16
    shapes = set()
    for batch in random:
        counts = torch.bincount(torch.tensor([labels[i] for i in batch]))
        shapes.add(tuple(sorted(counts[counts > 0].tolist())))
    assert all(shape != (4,) * 16 for shape in shapes) and len(shapes) == len(random)


def test_random_batches_cover_each_image_once_and_drop_the_rest():
    sampler = RandomBatchSampler(200, 64, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 and all(len(b) == 64 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 192 and all(0 <= i < 200 for i in flat)
    sampler.set_epoch(1)
    assert list(sampler) != batches
    again = RandomBatchSampler(200, 64, seed=3)
    assert list(again) == batches  # the state is (seed, epoch) alone: a resumed run continues exactly


def test_random_batches_split_disjointly_over_processes():
    ranks = [list(RandomBatchSampler(200, 32, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    for a, b in zip(*ranks):
        assert not set(a) & set(b)
    single = list(RandomBatchSampler(200, 64, seed=1))
    assert [sorted(a + b) for a, b in zip(*ranks)] == [sorted(s) for s in single]


def test_too_few_images_for_a_random_batch_name_the_setting():
    with pytest.raises(SamplerConfigError, match="batch_size: random batches of 64 images need at least 64"):
        RandomBatchSampler(40, 64)
