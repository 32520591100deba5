"""The seed's model families: shapes, published sizes, pretrained key formats, and both training stages.

Families: strong baseline with ResNet50-IBN-a and SE-ResNeXt50, layumi's ft_net and PCB, MGN,
ABD-Net. Shape and training tests use narrow networks (base_width 8 or 16, 16-d embeddings)
on 64x32 inputs; the size and key-format tests build the full-width networks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from clusteralign.config import ConfigError, ModelConfig, build_experiment, from_dict
from clusteralign.models import build_model
from clusteralign.models.abd import feature_orthogonality, spectral_gap, weight_orthogonality
from clusteralign.models.file import ModelFile
from clusteralign.models.ibn import IBN
from clusteralign.models.pretrained import PretrainedWeightsError
from clusteralign.train.trainer import StageSpec, train_stage

NUM_CLASSES = 5
B = 4

# name -> (ModelConfig fields, per-entry dims of features, of embeddings, number of classifiers)
TINY: dict[str, tuple[dict, list[int], list[int], int]] = {
    "baseline_ibn": (dict(backbone="resnet50_ibn_a", base_width=8), [256], [256], 1),
    "baseline_se": (dict(backbone="se_resnext50", base_width=16), [512], [512], 1),
    "ft_net": (dict(family="ft_net", backbone="resnet50", base_width=8, embed_dim=16), [256], [16], 1),
    "pcb": (dict(family="pcb", backbone="resnet50", base_width=8, embed_dim=16), [256] * 6, [16] * 6, 6),
    "mgn": (dict(family="mgn", backbone="resnet50", base_width=8, embed_dim=16), [256] * 3, [16] * 8, 8),
    "abd": (dict(family="abd", backbone="resnet50", base_width=8, embed_dim=16), [16] * 3, [16] * 3, 3),
}


def tiny_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**TINY[name][0]), NUM_CLASSES)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", list(TINY))
def test_forward_shapes_and_test_feature(name):
    _, feature_dims, embedding_dims, n_logits = TINY[name]
    model = tiny_model(name).train()
    out = model(torch.randn(B, 3, 64, 32))
    assert [f.shape for f in out.features] == [(B, d) for d in feature_dims]
    assert [e.shape for e in out.embeddings] == [(B, d) for d in embedding_dims]
    assert [lg.shape for lg in out.logits] == [(B, NUM_CLASSES)] * n_logits
    # The test feature (and the anchor loss's target) is every branch/part embedding, concatenated.
    assert model.embedding_dim == sum(embedding_dims) == out.embedding().shape[1]
    assert {model.branch_feature_dim} == set(feature_dims)
    total = sum(F.cross_entropy(lg, torch.arange(B) % NUM_CLASSES) for lg in out.logits)
    total = total + sum(out.aux_losses.values(), torch.zeros(()))
    total.backward()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and torch.isfinite(first_conv.weight.grad).all()
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(B, 3, 64, 32))
    assert out.aux_losses == {} and out.embedding().shape == (B, model.embedding_dim)
    assert torch.isfinite(out.embedding()).all()


def test_ibn_a_stages_and_instance_half():
    trunk = tiny_model("baseline_ibn").base
    for stage in (trunk.layer1, trunk.layer2, trunk.layer3):
        assert all(isinstance(block.bn1, IBN) and isinstance(block.bn2, nn.BatchNorm2d) for block in stage)
    assert all(type(block.bn1) is nn.BatchNorm2d for block in trunk.layer4)
    assert type(trunk.bn1) is nn.BatchNorm2d
    ibn = trunk.layer1[0].bn1.train()
    x = torch.randn(3, ibn.half * 2, 5, 4)
    # Rescaling one image changes nothing in the instance-normalised half (appearance invariance)...
    scaled = x.clone()
    scaled[0] *= 7.0
    assert torch.allclose(ibn(scaled)[:, : ibn.half], ibn(x)[:, : ibn.half], atol=1e-4)
    # ...but the batch-normalised half depends on the batch.
    assert not torch.allclose(ibn(scaled)[1:, ibn.half :], ibn(x)[1:, ibn.half :], atol=1e-3)


def test_se_gate_acts_on_the_residual_branch_before_the_addition():
    block = tiny_model("baseline_se").base.layer2[1].eval()
    x = torch.rand(2, block.conv1.in_channels, 6, 4)
    with torch.no_grad():
        block.se_module.fc2.weight.zero_()
        block.se_module.fc2.bias.fill_(-60.0)  # gate ~ 0: only the identity path remains
        assert torch.allclose(block(x), torch.relu(x), atol=1e-6)
        block.se_module.fc2.bias.fill_(60.0)  # gate ~ 1: a plain ResNeXt bottleneck
        plain = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))))
        assert torch.allclose(block(x), torch.relu(plain + x), atol=1e-5)


def test_pcb_parts_are_horizontal_stripes():
    model = tiny_model("pcb").eval()
    x = torch.randn(2, 3, 96, 32)  # a 6 x 2 final map: one row per part
    with torch.no_grad():
        fmap = model.base(x)
        out = model(x)
    assert fmap.shape[2] == 6
    for i, part in enumerate(out.features):
        assert torch.allclose(part, fmap[:, :, i].mean(dim=-1), atol=1e-5)


def test_mgn_branch_strides_and_max_pooled_global_features():
    model = tiny_model("mgn").eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        shared = model.backbone(x)
        maps = [model.p1(shared), model.p2(shared), model.p3(shared)]
        out = model(x)
    assert maps[0].shape[2:] == (2, 1) and maps[1].shape[2:] == maps[2].shape[2:] == (4, 2)
    for z, m in zip(out.features, maps):
        assert torch.allclose(z, m.amax(dim=(2, 3)))


def test_abd_feature_term_waits_for_its_epoch_and_weight_scope():
    model = tiny_model("abd").train()
    x = torch.randn(B, 3, 64, 32)
    assert set(model(x).aux_losses) == {"of", "ow"}
    model.set_epoch(model.of_start_epoch - 1)
    assert set(model(x).aux_losses) == {"ow"}
    model.set_epoch(model.of_start_epoch)
    assert set(model(x).aux_losses) == {"of", "ow"}
    assert model.regularised_convs() == [model.stem[0]]
    wide = build_model(ModelConfig(**{**TINY["abd"][0], "ow_scope": "backbone"}), NUM_CLASSES)
    assert len(wide.regularised_convs()) == 43 + 2 * 10  # stem + stages 1-3, two stage-4 copies


# --------------------------------------------------------------------------- orthogonality terms


def test_spectral_gap_estimate_on_known_spectra():
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
    gram = q @ torch.diag(torch.tensor([100.0, 1.0, 0.5])) @ q.T
    assert spectral_gap(gram).item() == pytest.approx(99.5, rel=0.02)
    assert spectral_gap(4.0 * torch.eye(5)).item() == pytest.approx(0.0, abs=1e-5)


def test_orthogonality_terms_vanish_exactly_for_orthonormal_rows():
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(1)))
    filters = q[:6].reshape(6, 3, 2, 2)  # 6 orthonormal filters
    assert weight_orthogonality(filters).item() == pytest.approx(0.0, abs=1e-6)
    fmaps = q[:4].reshape(1, 4, 3, 4).repeat(2, 1, 1, 1)  # each map: 4 orthonormal channels
    assert feature_orthogonality(fmaps).item() == pytest.approx(0.0, abs=1e-4)
    w = torch.randn(6, 3, 2, 2, generator=torch.Generator().manual_seed(2), requires_grad=True)
    before = weight_orthogonality(w)
    before.backward()
    with torch.no_grad():
        after = weight_orthogonality(w - 1e-3 * w.grad)
    assert before.item() > 0 and after.item() < before.item()


# --------------------------------------------------------------------------- published sizes

# Each reference figure counts what the reference's model object holds, with 751 classes
# (Market-1501) unless it is an ImageNet model.
IMAGENET_FC = 2048 * 1000 + 1000


def full_size(**fields) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(ModelConfig(**fields), 751, load_pretrained=False)
    return n_params(model)


def trunk_size(backbone: str) -> int:
    with torch.device("meta"):
        model = build_model(ModelConfig(backbone=backbone), 751, load_pretrained=False)
    return n_params(model.base)


def test_resnet50_ibn_a_has_resnet50s_published_size():
    # IBN-Net (Pan et al.) adds no parameters: affine IN has BN's two per channel. ResNet-50 with
    # its 1000-way classifier: 25,557,032 (torchvision's published count, "25.6M").
    assert trunk_size("resnet50_ibn_a") + IMAGENET_FC == pytest.approx(25_557_032, rel=0.01)


def test_se_resnext50_matches_published_size():
    # SE-ResNeXt-50 (32x4d) with its ImageNet classifier: 27.6 M (Hu et al.; timm's
    # seresnext50_32x4d model card, "Params (M): 27.6").
    assert trunk_size("se_resnext50") + IMAGENET_FC == pytest.approx(27.6e6, rel=0.01)


def test_ft_net_and_pcb_match_layumis_models():
    # layumi's ft_net(751) keeps torchvision's whole resnet50 (25,557,032, its unused ImageNet fc
    # included) + ClassBlock: 2048*512+512 + 2*512 + 512*751+751 = 1,435,375 -> 26,992,407.
    assert full_size(family="ft_net") + IMAGENET_FC == pytest.approx(26_992_407, rel=0.01)
    # layumi's PCB(751): resnet50 + 6 x (2048*256+256 + 2*256 + 256*751+751 = 718,063) -> 29,865,410.
    assert full_size(family="pcb") + IMAGENET_FC == pytest.approx(29_865_410, rel=0.01)


def test_mgn_matches_reference_size():
    # seathiefwang/MGN-pytorch, 751 classes: shared stem..res_conv4_1 2,957,376 + 3 branches x
    # (res_conv4_2..6 5,585,920 + res_conv5 14,964,736) + 8 reductions x 524,800 = 68,807,744
    # without classifiers, + 8 classifiers x (256*751+751) = 70,351,800. (We follow the paper's
    # bias-free classifiers: 6,008 fewer.)
    assert full_size(family="mgn") == pytest.approx(70_351_800, rel=0.01)


def test_abd_matches_reference_size():
    # VITA-Group/ABD-Net's published command (resnet50, branches global + abd, abd-np 2, abd-dan
    # cam pam, shallow CAM), 751 classes, counted from its module definitions: shared stem..stage 3
    # with shallow CAM 8,543,297 + two stage-4 copies 29,929,472 + global head 2,869,999 +
    # attentive branch 27,832,416 = 69,175,184 (69.18 M).
    assert full_size(family="abd") == pytest.approx(69_175_184, rel=0.01)


# --------------------------------------------------------------------------- pretrained formats


@pytest.fixture(scope="module")
def torchvision_resnet50(tmp_path_factory):
    torch.manual_seed(3)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path_factory.mktemp("tv") / "resnet50.pth"
    torch.save(state, path)
    return path, state


def ibn_a_public_state(resnet50_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """XingangPan/IBN-Net's resnet50_ibn_a key format, derived from torchvision's ResNet-50 keys."""
    out = {}
    for k, v in resnet50_state.items():
        m = re.fullmatch(r"(layer[123]\.\d+\.bn1)\.(weight|bias|running_mean|running_var|num_batches_tracked)", k)
        if m is None:
            out[k] = v
            continue
        prefix, field = m.groups()
        half = resnet50_state[f"{prefix}.weight"].shape[0] // 2
        if field in ("weight", "bias"):
            out[f"{prefix}.IN.{field}"] = v[:half].clone()
        out[f"{prefix}.BN.{field}"] = v if field == "num_batches_tracked" else v[half:].clone()
    return out


def se_resnext50_public_state() -> dict[str, torch.Tensor]:
    """Cadene's se_resnext50_32x4d key format and shapes, written out from its layout."""
    g = torch.Generator().manual_seed(4)
    state: dict[str, torch.Tensor] = {}

    def conv(name, *shape, bias=False):
        state[f"{name}.weight"] = torch.randn(*shape, generator=g) * 0.01
        if bias:
            state[f"{name}.bias"] = torch.randn(shape[0], generator=g) * 0.01

    def bn(name, c):
        state[f"{name}.weight"] = torch.rand(c, generator=g) + 0.5
        state[f"{name}.bias"] = torch.randn(c, generator=g) * 0.1
        state[f"{name}.running_mean"] = torch.randn(c, generator=g) * 0.1
        state[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(7)

    conv("layer0.conv1", 64, 3, 7, 7)
    bn("layer0.bn1", 64)
    in_ch = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        width, out_ch = planes * 4 // 64 * 32, planes * 4
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            conv(f"{p}.conv1", width, in_ch, 1, 1)
            bn(f"{p}.bn1", width)
            conv(f"{p}.conv2", width, width // 32, 3, 3)
            bn(f"{p}.bn2", width)
            conv(f"{p}.conv3", out_ch, width, 1, 1)
            bn(f"{p}.bn3", out_ch)
            conv(f"{p}.se_module.fc1", out_ch // 16, out_ch, 1, 1, bias=True)
            conv(f"{p}.se_module.fc2", out_ch, out_ch // 16, 1, 1, bias=True)
            if i == 0:
                conv(f"{p}.downsample.0", out_ch, in_ch, 1, 1)
                bn(f"{p}.downsample.1", out_ch)
            in_ch = out_ch
    state["last_linear.weight"] = torch.randn(1000, 2048, generator=g)
    state["last_linear.bias"] = torch.randn(1000, generator=g)
    return state


def test_public_ibn_a_checkpoint_loads_strictly(torchvision_resnet50, tmp_path, monkeypatch):
    public = ibn_a_public_state(torchvision_resnet50[1])
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(public, checkpoints / "resnet50_ibn_a-d9d0bb7b.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_model(ModelConfig(backbone="resnet50_ibn_a", pretrained="imagenet"), NUM_CLASSES)
    loaded = model.base.state_dict()
    for k, v in public.items():
        if not k.startswith("fc."):
            assert torch.equal(loaded[k], v), k


def test_missing_public_checkpoint_says_where_it_belongs(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match=r"checkpoints.*se_resnext50_32x4d-a260b3a4\.pth.*allow_download"):
        build_model(ModelConfig(backbone="se_resnext50", pretrained="imagenet"), NUM_CLASSES)


def test_public_se_resnext50_checkpoint_loads_strictly(tmp_path):
    public = se_resnext50_public_state()
    path = tmp_path / "se_resnext50_32x4d.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in public.items()}}, path)  # a DataParallel save
    model = build_model(ModelConfig(backbone="se_resnext50", pretrained=str(path)), NUM_CLASSES)
    loaded = model.base.state_dict()
    assert set(loaded) == {k for k in public if not k.startswith("last_linear.")}
    for k in ("layer0.conv1.weight", "layer3.5.se_module.fc2.bias", "layer4.0.downsample.1.running_var"):
        assert torch.equal(loaded[k], public[k]), k
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        build_model(ModelConfig(backbone="se_resnext50", base_width=32, pretrained=str(path)), NUM_CLASSES)


def test_imagenet_resnet50_reaches_every_branch(torchvision_resnet50):
    path, state = torchvision_resnet50

    def same(module: nn.Module, prefix: str) -> bool:
        return all(torch.equal(v, state[f"{prefix}.{k}"]) for k, v in module.state_dict().items())

    mgn = build_model(ModelConfig(family="mgn", pretrained=str(path)), NUM_CLASSES)
    assert same(mgn.backbone[6], "layer3.0")
    for branch in (mgn.p1, mgn.p2, mgn.p3):
        assert same(branch[0][0], "layer3.1") and same(branch[1], "layer4")
    abd = build_model(ModelConfig(family="abd", pretrained=str(path)), NUM_CLASSES)
    assert same(abd.stem[0], "conv1") and same(abd.global_conv5, "layer4") and same(abd.abd_conv5, "layer4")
    pcb = build_model(ModelConfig(family="pcb", pretrained=str(path)), NUM_CLASSES)
    assert same(pcb.base.layer4, "layer4")


# --------------------------------------------------------------------------- configuration


def test_model_config_rejects_bad_family_settings():
    with pytest.raises(ConfigError, match=r"models\.m\.backbone: family 'mgn'.*resnet"):
        from_dict(ModelConfig, {"family": "mgn", "backbone": "se_resnext50"}, "models.m")
    with pytest.raises(ConfigError, match=r"models\.m\.dropout"):
        from_dict(ModelConfig, {"family": "ft_net", "dropout": 1.5}, "models.m")
    with pytest.raises(ConfigError, match=r"models\.m\.family"):
        from_dict(ModelConfig, {"family": "hacnn"}, "models.m")


# --------------------------------------------------------------------------- both stages


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY))
def test_two_stage_run(name, tiny_dataset, tmp_path):
    fields, *_ = TINY[name]
    family = fields.get("family", "baseline")
    if family == "abd":
        # The feature regulariser starts at epoch index 1, so the trainer's epoch hook shows.
        fields = {**fields, "of_start_epoch": 1}
    uses_triplet = family not in ("ft_net", "pcb")  # layumi's recipes train with cross-entropy only
    raw = {
        "dataset": "synthetic",
        "model": name,
        "stage1": {
            "epochs": 2,
            "num_identities": 4,
            "num_instances": 2,
            "augment": {"height": 64, "width": 32},
            "schedule": {"warmup_epochs": 1, "milestones": []},
            "loss": {"triplet_weight": 1.0 if uses_triplet else 0.0},
            "num_threads": 1,
            "device": "cpu",  # tests/test_cuda.py covers the CUDA paths
        },
        "stage2": {"epochs": 1, "optimizer": {"lr": 3.5e-5}, "batch_size": 8},
    }
    exp = build_experiment(name, raw, {name: fields})
    manifest = tiny_dataset[1]

    def run(stage: str, out: Path, **kw) -> pd.DataFrame:
        cfg = exp.stage1 if stage == "stage1" else exp.stage2
        return train_stage(StageSpec(stage, manifest, exp.model, cfg, exp.features, exp.validation, out, **kw))

    h1 = run("stage1", tmp_path / "s1")
    assert list(h1["epoch"]) == [1, 2]
    assert ("loss_triplet" in h1) == uses_triplet
    if family == "abd":
        assert h1["loss_of"].isna().tolist() == [True, False] and (h1["loss_ow"] > 0).all()
    h2 = run("stage2", tmp_path / "s2", init_model=tmp_path / "s1" / "model.pt")
    assert "loss_triplet" not in h2 and (h2["loss_anchor"] > 0).all()
    if family == "abd":  # stage 2 counts on from stage 1's epochs
        assert (h2["loss_of"] > 0).all()
    for h in (h1, h2):
        assert h[["loss_total", "mAP", "R1", "anchor_dist_own"]].notna().all().all()

    first, second = ModelFile.load(tmp_path / "s1" / "model.pt"), ModelFile.load(tmp_path / "s2" / "model.pt")
    assert second.model_cfg == exp.model
    assert any(not torch.equal(v, second.state_dict[k]) for k, v in first.state_dict.items())
    model = second.build().eval()
    with torch.no_grad():
        emb = model(torch.randn(2, 3, 64, 32)).embedding()
    assert emb.shape == (2, model.embedding_dim)
