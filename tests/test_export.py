"""`clusteralign export`: ONNX (checked with onnxruntime) and TorchScript graphs give the extractor's features."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from clusteralign.cli import main
from clusteralign.config import ModelConfig
from clusteralign.infer.export import _WindowMaxPool, export_model
from clusteralign.infer.extractor import FeatureExtractor
from clusteralign.infer.images import to_pixels
from clusteralign.models import build_model
from clusteralign.models.file import ModelFile
from clusteralign.train.augment import test_transform
from clusteralign.train.inputs import test_spec
from model_files import tiny_experiment, write_model_file

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model_path(tiny_dataset, tmp_path_factory):
    return write_model_file(tmp_path_factory.mktemp("model") / "model.pt", tiny_dataset[1], tiny_experiment())


def synthetic_images(manifest) -> list[str]:
    return manifest.loc[manifest["split"] != "train", "path"].tolist()


def normalised(extractor: FeatureExtractor, paths: list[str]) -> np.ndarray:
    """The graph's input for `paths`: decoded, resized and normalised as the extractor does."""
    inputs = extractor.inputs
    pixels = to_pixels(paths, (inputs.cache_height, inputs.cache_width))
    return test_transform(pixels, test_spec(inputs)).numpy()


def run_onnx(path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["features"], {"images": batch})[0]


@pytest.mark.slow
def test_onnx_matches_torch_on_the_synthetic_images(tiny_dataset, model_path, tmp_path, capsys):
    assert main(["export", "--model", str(model_path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert "onnx graph of" in capsys.readouterr().out
    paths = synthetic_images(tiny_dataset[1])
    extractor = FeatureExtractor(model_path)
    expected = extractor(paths).numpy()
    batch = normalised(extractor, paths)
    # The batch axis is free: all images at once, one at a time, an odd batch.
    for rows in (slice(None), slice(0, 1), slice(3, 10)):
        out = run_onnx(tmp_path / "m.onnx", batch[rows])
        assert out.dtype == np.float32 and out.shape == expected[rows].shape
        np.testing.assert_allclose(out, expected[rows], rtol=0, atol=TOLERANCE)
    model = onnx.load(tmp_path / "m.onnx")
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["clusteralign.input"])["height"] == 64 and meta["clusteralign.feature_dim"] == "64"
    assert [i.name for i in model.graph.input] == ["images"] and [o.name for o in model.graph.output] == ["features"]


def test_torchscript_matches_torch(tiny_dataset, model_path, tmp_path):
    assert main(["export", "--model", str(model_path), "--format", "torchscript", "--out",
                 str(tmp_path / "m.ts")]) == 0
    paths = synthetic_images(tiny_dataset[1])[:7]
    extractor = FeatureExtractor(model_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates torch.jit.load
        graph = torch.jit.load(tmp_path / "m.ts")
    with torch.no_grad():
        out = graph(torch.from_numpy(normalised(extractor, paths)))
    torch.testing.assert_close(out, extractor(paths), rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_the_graph_follows_the_flip_setting(tiny_dataset, model_path, tmp_path):
    paths = synthetic_images(tiny_dataset[1])[:4]
    export_model(model_path, "onnx", tmp_path / "noflip.onnx", flip=False)
    extractor = FeatureExtractor(model_path, flip=False)
    out = run_onnx(tmp_path / "noflip.onnx", normalised(extractor, paths))
    np.testing.assert_allclose(out, extractor(paths).numpy(), rtol=0, atol=TOLERANCE)
    assert not np.allclose(out, FeatureExtractor(model_path)(paths).numpy(), atol=TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mgn", "abd"])
def test_multi_branch_families_export_too(family, tiny_dataset, tmp_path):
    # MGN's stripe pools are adaptive max pools, which ONNX lacks: the export rewrites them.
    _, manifest = tiny_dataset
    exp = tiny_experiment()
    cfg = ModelConfig(family=family, backbone="resnet18", base_width=8)
    model = build_model(cfg, 8, load_pretrained=False)
    ModelFile(cfg, 8, list(range(8)), model.state_dict(),
              {"input": ModelFile.load(write_model_file(tmp_path / "b.pt", manifest, exp)).meta["input"]}
              ).save(tmp_path / "m.pt")
    export_model(tmp_path / "m.pt", "onnx", tmp_path / "m.onnx")
    paths = synthetic_images(manifest)[:5]
    extractor = FeatureExtractor(tmp_path / "m.pt")
    np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx", normalised(extractor, paths)), extractor(paths).numpy(),
                               rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("size", [(3, 1), (2, 1), (4, 3), (1, 1)])
@pytest.mark.parametrize("shape", [(16, 8), (17, 9), (5, 3)])
def test_window_max_pool_is_adaptive_max_pool(size, shape):
    x = torch.randn(2, 4, *shape)
    assert torch.equal(_WindowMaxPool(size)(x), nn.AdaptiveMaxPool2d(size)(x))


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx", "--model", "{tmp}/nothing.pt"], "{tmp}/nothing.pt does not exist"),
    (["--format", "onnx", "--model", "{tmp}/text.pt"], "{tmp}/text.pt: not a readable torch file"),
    (["--format", "onnx", "--out", "{tmp}/taken.onnx"], "--out {tmp}/taken.onnx: is a folder; expected a file path"),
    # Under a file, so that no one (root included) can write there; the message names --out, not
    # the temporary file beside it.
    (["--format", "torchscript", "--out", "{tmp}/a_file/m.pt"],
     "{tmp}/a_file/m.pt: cannot be written ({tmp}/a_file is not a folder)"),
])
def test_export_errors_name_the_file(args, message, tmp_path, capsys, model_path):
    (tmp_path / "text.pt").write_text("weights")
    (tmp_path / "taken.onnx").mkdir()
    (tmp_path / "a_file").write_text("")
    defaults = ["--model", str(model_path), "--out", str(tmp_path / "m.onnx")]
    assert main(["export", *defaults, *(a.format(tmp=tmp_path) for a in args)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clusteralign export: error: ") and len(err.strip().splitlines()) == 1
    assert message.format(tmp=tmp_path) in err
    assert not (tmp_path / "m.onnx").exists() and not list(tmp_path.glob(".*.tmp"))
