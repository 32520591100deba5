import pytest
import torch
import torchvision

from clusteralign.config import ModelConfig
from clusteralign.models import StrongBaseline, build_model
from clusteralign.models.file import ModelFile
from clusteralign.models.pretrained import PretrainedWeightsError, load_backbone_weights
from clusteralign.models.resnet import build_resnet


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_state_dict_loads_strictly(arch, tmp_path):
    """Our ResNet keeps torchvision's parameter names, so ImageNet weights fit exactly."""
    reference = getattr(torchvision.models, arch)(weights=None)
    path = tmp_path / f"{arch}.pth"
    torch.save(reference.state_dict(), path)
    trunk = build_resnet(arch, base_width=64, last_stride=1)
    load_backbone_weights(trunk, arch, str(path))
    for name, tensor in trunk.state_dict().items():
        assert torch.equal(tensor, reference.state_dict()[name]), name


def test_last_stride_one_doubles_the_map():
    x = torch.randn(2, 3, 64, 32)
    assert build_resnet("resnet18", 8, last_stride=1)(x).shape[-2:] == (4, 2)
    assert build_resnet("resnet18", 8, last_stride=2)(x).shape[-2:] == (2, 1)


def test_resnet50_parameter_count_matches_torchvision():
    ours = sum(p.numel() for p in build_resnet("resnet50").parameters())
    theirs = sum(p.numel() for n, p in torchvision.models.resnet50().named_parameters() if not n.startswith("fc."))
    assert ours == theirs


def test_bnneck_outputs_and_frozen_bias():
    model = StrongBaseline(num_classes=5, backbone="resnet18", base_width=8)
    out = model(torch.randn(4, 3, 64, 32))
    assert out.features[0].shape == (4, 64) and out.embeddings[0].shape == (4, 64)
    assert out.logits[0].shape == (4, 5)
    assert not model.bottleneck.bias.requires_grad and model.classifier.bias is None
    out.logits[0].sum().backward()
    assert model.bottleneck.bias.grad is None and model.base.conv1.weight.grad is not None


def test_missing_imagenet_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match=r"checkpoints.*resnet50.*allow_download"):
        build_model(ModelConfig(backbone="resnet50", pretrained="imagenet"), num_classes=3)


def test_downloaded_weights_are_checked_and_read_weights_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        torch.save(torchvision.models.resnet18(), dst)  # a pickled network: must not be unpickled

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(PretrainedWeightsError, match=r"resnet18-f37072fd\.pth: holds pickled"):
        build_model(ModelConfig(backbone="resnet18", pretrained="imagenet", allow_download=True), num_classes=3)
    # torchvision's file names carry the first digits of their SHA-256, which the download checks.
    assert calls == [("https://download.pytorch.org/models/resnet18-f37072fd.pth", "f37072fd")]


def test_wrong_weights_file_is_named(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        build_model(ModelConfig(backbone="resnet18", base_width=16, pretrained=str(path)), num_classes=3)
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "none.pth")), num_classes=3)
    whole = tmp_path / "whole_model.pth"
    torch.save(torchvision.models.resnet18(), whole)  # a pickled network, not its state dict
    with pytest.raises(PretrainedWeightsError, match=r"pretrained weights .*whole_model\.pth: holds pickled"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(whole)), num_classes=3)


def test_model_file_round_trip(tmp_path):
    cfg = ModelConfig(backbone="resnet18", base_width=8)
    model = build_model(cfg, num_classes=4)
    ModelFile(cfg, 4, [7, 8, 9, 10], model.state_dict(), {"stage": "stage1"}).save(tmp_path / "m.pt")
    loaded = ModelFile.load(tmp_path / "m.pt")
    assert loaded.pids == [7, 8, 9, 10] and loaded.model_cfg == cfg
    rebuilt = loaded.build().eval()
    x = torch.randn(2, 3, 64, 32)
    assert torch.equal(rebuilt(x).embedding(), model.eval()(x).embedding())
